"""The headline: a run states one robustness figure per model, the worst case, and says what it is worth."""

from __future__ import annotations

import torch

from bastion.app.runtime import threat_record
from bastion.artifacts.results import new_results, validate_results
from bastion.evaluation.headline import headline
from bastion.evaluation.record import ENSEMBLE, Evaluation
from bastion.evaluation.suites import build_suite
from bastion.render.summary import accuracy_rows, to_markdown


def evaluation(weak: float = 0.8, worst: float = 0.4) -> Evaluation:
    ev = Evaluation(clean_accuracy=0.9, n_examples=10)
    ev.record("fgsm", 0.1, torch.arange(10) < int(10 * weak))
    ev.record(ENSEMBLE, 0.1, torch.arange(10) < int(10 * worst))
    return ev


def results_for(suite_name: str, ev: Evaluation) -> dict:
    suite = build_suite(suite_name)
    ev.headline = headline(ev, suite_name, suite)
    results = new_results(command="t", data="digits", seed=0, threat=threat_record("linf", [0.1], suite_name, suite))
    results["models"]["m"] = {"path": "m", **ev.to_dict()}
    validate_results(results)
    return results


def test_the_headline_is_the_worst_case_not_the_weakest_attack() -> None:
    h = headline(evaluation(), "standard", build_suite("standard"))
    assert h["robust_accuracy"] == {"0.1": 0.4} and h["attack"] == ENSEMBLE
    assert h["aa_grade"] is True and h["label"].startswith("AA-grade worst case")


def test_weak_suites_are_labelled_upper_bounds() -> None:
    h = headline(evaluation(), "quick", build_suite("quick"))
    assert h["aa_grade"] is False and h["label"] == "upper bound: fgsm, pgd-10 only"


def test_a_defense_without_adaptive_attacks_is_an_upper_bound_even_under_the_standard_suite() -> None:
    ev = evaluation()
    ev.defense = {"adaptive": False, "failure_rate": {ENSEMBLE: {"0.1": 0.3}}}
    h = headline(ev, "standard", build_suite("standard"))
    assert h["aa_grade"] is False and "not adaptive" in h["label"]
    assert h["failure_rate"] == {"0.1": 0.3}


def test_suspect_checks_travel_with_the_headline() -> None:
    ev = evaluation()
    ev.checks = {"attack-converged": {"status": "SUSPECT"}, "monotone-in-eps": {"status": "pass"}}
    assert headline(ev, "standard", build_suite("standard"))["suspect_checks"] == ["attack-converged"]


def test_tables_lead_with_the_headline_column_and_say_what_it_is() -> None:
    aa = results_for("standard", evaluation())
    header, rows = accuracy_rows(aa)
    assert header[:4] == ["model", "clean", "eps", "AA-grade"] and "ensemble" not in header
    assert rows[0][3] == "40.0%" and rows[0][header.index("fgsm")] == "80.0%"
    weak = results_for("quick", evaluation())
    header, _ = accuracy_rows(weak)
    assert header[3] == "upper bound"
    assert "not a robustness claim" in to_markdown(weak)
    assert "not a robustness claim" not in to_markdown(aa)


def test_results_written_before_headlines_still_render() -> None:
    results = new_results(command="t", data="digits", seed=0, threat={"suite": "default"})
    results["models"]["m"] = {"path": "m", **evaluation().to_dict()}
    header, rows = accuracy_rows(results)
    assert header[3] == "ensemble" and rows[0][3] == "40.0%"
