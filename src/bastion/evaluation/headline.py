"""The one robustness figure a run states about each model, and how far to trust it.

The headline is the per-example worst case over everything the evaluation ran (``ensemble``). It is a
robustness figure only when the suite is AA-grade (APGD-CE, APGD-T, a minimum-norm and a gradient-free
attack, after Croce & Hein 2020, arXiv:2003.01690) and, for a runtime defense, when adaptive attacks
targeted it. Anything weaker is labelled an upper bound: FGSM and PGD alone overstate robustness by tens
of points on models that mask gradients. Checks that came out SUSPECT are named beside the figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bastion.attacks import Attack
from bastion.evaluation.record import ENSEMBLE, Evaluation

#: Suites whose worst case is a robustness figure (bastion.evaluation.suites).
AA_GRADE_SUITES = frozenset({"standard", "binary"})

AA_GRADE = "AA-grade worst case"
UPPER_BOUND = "upper bound"


def is_aa_grade(suite_name: str) -> bool:
    return suite_name in AA_GRADE_SUITES


def grade_label(suite_name: str, attacks: Mapping[str, Attack]) -> str:
    """How the headline column is titled: ``AA-grade worst case`` or ``upper bound: fgsm, pgd-10 only``."""
    if is_aa_grade(suite_name):
        return f"{AA_GRADE} ({', '.join(attacks)})"
    return f"{UPPER_BOUND}: {', '.join(attacks)} only"


def headline(ev: Evaluation, suite_name: str, attacks: Mapping[str, Attack]) -> dict[str, Any]:
    """The ``headline`` block of a results.json model entry, from the evaluation's own worst case.

    A defense evaluated without adaptive attacks is an upper bound whatever the suite: attacks that ignore
    the detector do not measure what an attacker who knows it gets.
    """
    worst = ENSEMBLE if ENSEMBLE in ev.robust_accuracy else next(iter(ev.robust_accuracy), None)
    aa = is_aa_grade(suite_name)
    label = grade_label(suite_name, attacks)
    out: dict[str, Any] = {
        "attack": worst,
        "suite": suite_name,
        "aa_grade": aa,
        "label": label,
        "robust_accuracy": dict(ev.robust_accuracy.get(worst, {})) if worst else {},
        "robust_accuracy_ci": dict(ev.robust_accuracy_ci.get(worst, {})) if worst else {},
    }
    if ev.defense is not None:
        adaptive = bool(ev.defense.get("adaptive"))
        out["aa_grade"] = aa and adaptive
        if not adaptive:
            out["label"] = f"{UPPER_BOUND}: {', '.join(attacks)} only, not adaptive to the defense"
        out["failure_rate"] = dict(ev.defense.get("failure_rate", {}).get(ENSEMBLE, {}))
    if ev.checks:
        out["suspect_checks"] = [code for code, c in ev.checks.items() if c.get("status") == "SUSPECT"]
    return out
