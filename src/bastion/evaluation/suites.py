"""Named attack suites. Attack names here are the keys of ``robust_accuracy`` in results.json.

Every suite's per-example worst case is reported as the extra attack ``ensemble``: an example counts as
robust only if it survives every attack in the suite.
"""

from __future__ import annotations

from collections.abc import Callable

from bastion.attacks import FGSM, PGD, Attack
from bastion.registry import Registry

SUITES: Registry[Callable[[], dict[str, Attack]]] = Registry("attack suite")


@SUITES.register("quick")
def quick() -> dict[str, Attack]:
    """CI-sized: FGSM and a 10-step PGD with random start."""
    return {"fgsm": FGSM(), "pgd-10": PGD(n_steps=10)}


@SUITES.register("default")
def default() -> dict[str, Attack]:
    """FGSM and PGD-50 with two random restarts (step 2.5 eps / 50)."""
    return {"fgsm": FGSM(), "pgd-50x2": PGD(n_steps=50, n_restarts=2)}


@SUITES.register("tabular")
def tabular() -> dict[str, Attack]:
    """Constrained tabular evasion: PGD-50 (relaxed steps, repaired once) and the gradient-free search."""
    from bastion.attacks.search import CoordinateSearch

    return {"pgd-50": PGD(n_steps=50), "search": CoordinateSearch(n_iters=30, n_candidates=16)}


def build_suite(name: str) -> dict[str, Attack]:
    return SUITES.get(name)()
