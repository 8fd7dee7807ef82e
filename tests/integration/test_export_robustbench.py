"""``bastion export RUN --format robustbench``: a RobustBench-style model card from an AA-grade result only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bastion.app.runtime import threat_record
from bastion.artifacts.results import new_results, write_results
from bastion.artifacts.robustbench import eps_text, model_card
from bastion.cli import app
from bastion.errors import ConfigError
from bastion.evaluation.headline import headline
from bastion.evaluation.record import ENSEMBLE, Evaluation
from bastion.evaluation.suites import build_suite

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained digits MLP, evaluated with the AA-grade suite (in ``aa``) and the quick one (in ``quick``)."""
    work = tmp_path_factory.mktemp("rb")
    config = work / "eval.yaml"
    config.write_text("checks_examples: 0\n")  # the checks have their own tests; this one is about the card
    result = invoke("train", "--data", "digits", "--model", "mlp", "--method", "standard", "--epochs", "2",
                    "--out", str(work / "run"))  # fmt: skip
    assert result.exit_code == 0, result.output
    for suite, eps in (("standard", ["--eps", "0.1"]), ("quick", ["--eps", "0.1", "--eps", "0.2"])):
        result = invoke("evaluate", str(work / "run"), "--suite", suite, *eps, "--n-examples", "12",
                        "--config", str(config), "--out", str(work / suite))  # fmt: skip
        assert result.exit_code == 0, result.output
    return work


def test_card_from_an_aa_grade_evaluation(run: Path) -> None:
    out = run / "cards"
    result = invoke("export", str(run / "standard"), "--format", "robustbench", "--out", str(out))
    assert result.exit_code == 0, result.output
    card = json.loads((out / "standard.json").read_text())
    results = json.loads((run / "standard" / "results.json").read_text())
    entry = results["models"]["standard"]
    assert card["name"] == "standard" and card["dataset"] == "digits" and card["threat_model"] == "Linf"
    assert card["eps"] == "0.1" and card["architecture"] == "mlp" and card["n_examples"] == 12
    assert card["clean_acc"] == f"{100 * entry['clean_accuracy']:.2f}"
    assert card["autoattack_acc"] == f"{100 * entry['headline']['robust_accuracy']['0.1']:.2f}"
    assert card["autoattack_acc"] == f"{100 * entry['robust_accuracy'][ENSEMBLE]['0.1']:.2f}"
    assert card["attacks"] == ["apgd-ce", "apgd-t", "deepfool", "square"]
    assert card["additional_data"] is False and card["number_forward_passes"] == 1
    assert "not the AutoAttack package" in card["footnote"]
    assert card["bastion"]["autoattack_acc_ci"] == entry["headline"]["robust_accuracy_ci"]["0.1"]
    assert f"model card {out / 'standard.json'}" in result.output
    again = invoke("export", str(run / "standard"), "--format", "robustbench", "--out", str(out))
    assert again.exit_code == 2 and "exists; pass --force" in again.output
    assert (
        invoke("export", str(run / "standard"), "--format", "robustbench", "--out", str(out), "--force").exit_code == 0
    )
    named = run / "card.json"
    assert invoke("export", str(run / "standard"), "--format", "robustbench", "--out", str(named)).exit_code == 0
    assert json.loads(named.read_text()) == card


def test_a_run_without_an_aa_grade_result_is_refused(run: Path) -> None:
    for folder, message in (
        (run / "quick", "worst case is not AA-grade (upper bound: fgsm, pgd-10 only)"),
        (run / "run", "has no robustness evaluation in results.json"),  # train: clean accuracy only
    ):
        out = run / f"refused-{folder.name}"
        result = invoke("export", str(folder), "--format", "robustbench", "--out", str(out))
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
        assert "--suite standard" in result.output
        assert not out.exists()


def test_bad_options_are_clear(run: Path) -> None:
    cases = [
        (["--format", "robustbench", "--eps", "0.3"], "was not evaluated at eps 0.3; it was at 0.1"),
        (["--format", "robustbench", "--model", "nope"], "has no model 'nope'"),
        (["--format", "robustbench", "--onnx"], "--onnx adds graphs to a bundle"),
        (["--format", "zip"], "unknown --format 'zip'; choose bundle or robustbench"),
        (["--eps", "0.1"], "use it with --format robustbench"),
    ]
    for extra, message in cases:
        result = invoke("export", str(run / "standard"), *extra, "--out", str(run / "bad"))
        assert result.exit_code == 2, (extra, result.output)
        assert message in " ".join(result.output.split()), result.output


def _results(folder: Path, suite: str, eps: list[float], entry_extra: dict, name: str = "m") -> Path:
    attacks = build_suite(suite)
    ev = Evaluation(clean_accuracy=0.9, n_examples=10)
    for e in eps:
        ev.record(next(iter(attacks)), e, torch.arange(10) < 6)
        ev.record(ENSEMBLE, e, torch.arange(10) < 4)
    ev.headline = headline(ev, suite, attacks)
    results = new_results(command="evaluate", data="cifar10:/data/c10", seed=0,
                          threat=threat_record("linf", eps, suite, attacks))  # fmt: skip
    results["models"][name] = {"path": "module:pkg.mod:build", **ev.to_dict(), **entry_extra}
    folder.mkdir(parents=True, exist_ok=True)
    write_results(folder / "results.json", results)
    return folder


def test_card_of_a_user_module_and_eps_choice(tmp_path: Path) -> None:
    record = {"model": {"source": "module:pkg.mod:build", "class": "pkg.mod.WideNet", "parameters": 12}}
    folder = _results(tmp_path / "ev", "standard", [8 / 255, 16 / 255], record)
    with pytest.raises(ConfigError, match=r"evaluated at eps 0.0313725, 0.0627451; a card states one: choose it"):
        model_card(folder)
    card = model_card(folder, eps=8 / 255)
    assert card["eps"] == "8/255" and card["architecture"] == "pkg.mod.WideNet" and card["dataset"] == "cifar10"
    assert card["autoattack_acc"] == "40.00" and card["clean_acc"] == "90.00"
    assert "additional_data" not in card  # not known for a model bastion did not train


def test_a_runtime_defense_is_not_a_robustbench_entry(tmp_path: Path) -> None:
    folder = _results(tmp_path / "ev", "standard", [0.1], {}, name="m+defense")
    with pytest.raises(ConfigError, match=r"m\+defense is a detector-gated runtime defense.*--model m"):
        model_card(folder, model="m+defense")


def test_eps_text() -> None:
    assert eps_text(8 / 255, "linf") == "8/255" and eps_text(0.1, "linf") == "0.1" and eps_text(0.5, "l2") == "0.5"
