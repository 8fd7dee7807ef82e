"""The one attack x eps loop every evaluation runs, and what a suite attacks.

An evaluator is a :class:`Measure`: what one (attack, eps) cell measures, and what the per-example worst case
over the suite at one eps records. :func:`run_grid` walks the grid in the one order results.json is written
in (eps outer, attacks inner) and reports progress. The plain evaluation, the sequential (worst-case) suites,
the runtime-defense evaluation and the tabular evasion evaluation are measures; the sanity checks attack
through the same :class:`Target` the evaluation attacked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch
from torch import Tensor, nn

from bastion import progress
from bastion.attacks import Attack
from bastion.data.spec import Split
from bastion.evaluation.accuracy import RobustResult, predict, robust_accuracy
from bastion.evaluation.record import check_eps_keys, eps_key
from bastion.goals import Goal, Misclassify
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)

#: Called once per finished (attack, eps) cell with (cells done, cells total).
CellHook = Callable[[int, int], None]

A = TypeVar("A", contravariant=True)
C = TypeVar("C")


class Measure(Protocol[A, C]):
    """What an evaluation measures per (attack, eps) cell, and over the whole suite at one eps."""

    #: Record the worst case even for a one-attack suite (a sequence's last step is its worst case).
    always_ensemble: bool

    def cell(self, name: str, attack: A, eps: float) -> C:
        """Run ``attack`` at ``eps`` and record what it did; return what :meth:`ensemble` needs of it."""
        ...

    def ensemble(self, eps: float, cells: Sequence[C]) -> None:
        """Record the per-example worst case over the suite's ``cells`` at ``eps``."""
        ...


def run_grid(
    attacks: Mapping[str, A],
    eps_values: Sequence[float],
    measure: Measure[A, C],
    *,
    on_cell: CellHook | None = None,
) -> None:
    """Every attack at every eps (eps outer), then the suite's worst case per eps when it has several attacks.

    ``on_cell`` hears of each finished cell; the loops inside a cell report through :mod:`bastion.progress`.
    """
    check_eps_keys(eps_values)
    total, done = len(attacks) * len(eps_values), 0
    for eps in eps_values:
        cells = []
        for name, attack in attacks.items():
            with progress.task(f"{name} eps {eps_key(eps)}"):
                cells.append(measure.cell(name, attack, eps))
            done += 1
            if on_cell is not None:
                on_cell(done, total)
        if len(cells) > 1 or measure.always_ensemble:
            measure.ensemble(eps, cells)


def seeded(device: torch.device, seed: int) -> torch.Generator:
    """The attack generator of one cell: every cell starts from the same seed, so cells are independent."""
    return torch.Generator(device=device).manual_seed(seed)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class Target(Protocol):
    """The examples a suite attacks, the goal it pursues on them, and when the model holds against it."""

    @property
    def split(self) -> Split: ...

    #: Why an attack with an unbounded budget need not win everywhere on this target, or None if it must.
    @property
    def unbounded_exemption(self) -> str | None: ...

    def goal(self, y: Tensor) -> Goal: ...

    def attack(
        self, model: nn.Module, attack: Attack, threat: ThreatModel, *, seed: int, batch_size: int = 256
    ) -> tuple[RobustResult, Tensor]:
        """Run ``attack`` on every example: the attack's result and (N,) bool, where the model held."""
        ...

    def holds(self, model: nn.Module, x: Tensor) -> Tensor:
        """(N,) bool: the model holds on inputs ``x`` standing in for the target's examples."""
        ...

    def take(self, n: int) -> Target:
        """The first ``n`` examples."""
        ...

    def on(self, device: torch.device) -> Target:
        """The same target with its examples on ``device``."""
        ...


@dataclass(frozen=True)
class EveryExample:
    """Untargeted attacks on every example: the model holds where it still predicts the true label."""

    split: Split
    unbounded_exemption: str | None = None

    def goal(self, y: Tensor) -> Goal:
        return Misclassify(y)

    def attack(
        self,
        model: nn.Module,
        attack: Attack,
        threat: ThreatModel,
        *,
        seed: int,
        batch_size: int = 256,
        prior_score: Tensor | None = None,
    ) -> tuple[RobustResult, Tensor]:
        rng = seeded(self.split.x.device, seed)
        result = robust_accuracy(
            model, self.split, attack, threat, rng=rng, batch_size=batch_size, prior_score=prior_score
        )
        return result, result.correct

    def holds(self, model: nn.Module, x: Tensor) -> Tensor:
        return predict(model, x) == self.split.y

    def take(self, n: int) -> EveryExample:
        return EveryExample(self.split.take(n))

    def on(self, device: torch.device) -> EveryExample:
        return EveryExample(self.split.to(device))
