"""The plain evaluation: every attack of a suite on every test example, independently, at every eps.

Results keep per-example outcomes so worst cases over attacks are exact, and every accuracy carries n
and a Wilson interval.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from bastion.attacks import Attack
from bastion.data.spec import Split
from bastion.evaluation.accuracy import RobustResult, predict
from bastion.evaluation.record import ENSEMBLE, Evaluation, eps_key, put, stored_seconds, worst_case
from bastion.evaluation.runner import EveryExample, model_device
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)


def clean_evaluation(model: nn.Module, test: Split) -> tuple[Evaluation, Tensor]:
    """The record before any attack (clean accuracy, per-example correctness and labels) and the (N,)
    correctness on ``test``'s device (``test`` on the model's device)."""
    clean_correct = predict(model, test.x) == test.y
    ev = Evaluation(clean_accuracy=float(clean_correct.float().mean()), n_examples=len(test))
    ev.clean_correct, ev.labels = clean_correct.cpu(), test.y.cpu()
    return ev, clean_correct


def cost_entry(forward: float, backward: float, wall_time_s: float) -> dict[str, float]:
    """One cell's ``attack_cost``: passes spent and wall-clock seconds."""
    return {"forward_passes": forward, "backward_passes": backward, "wall_time_s": stored_seconds(wall_time_s)}


@dataclass(kw_only=True)
class ImageCells:
    """What the image measures share: the model, the test split (on the model's device), the threat model,
    the record they fill and, with ``keep_adversarial``, each cell's adversarial inputs in ``adversarial``."""

    model: nn.Module
    test: Split
    threat: ThreatModel
    ev: Evaluation
    clean_correct: Tensor
    seed: int = 0
    batch_size: int = 256
    keep_adversarial: bool = False
    adversarial: dict[tuple[str, float], Tensor] = field(default_factory=dict)


@dataclass(kw_only=True)
class AccuracyCells(ImageCells):
    """Measure: robust accuracy of each attack on every example; the ensemble is the per-example worst case."""

    always_ensemble: bool = False

    @property
    def target(self) -> EveryExample:
        return EveryExample(self.test)

    def cell(
        self, name: str, attack: Attack, eps: float, *, done: Tensor | None = None, prior_score: Tensor | None = None
    ) -> RobustResult:
        """``done``: (N,) inputs an earlier attack already broke; they are not attacked and count as broken
        (the caller puts their breaking inputs into ``x_adv``). ``prior_score`` (N,): the lowest margin
        earlier attacks reached per input, for an attack that spends its budget nearest-first."""
        target, rows = self.target, None
        if done is not None and bool(done.any()):
            rows = (~done).nonzero().squeeze(1)
            target = EveryExample(Split(self.test.x[rows], self.test.y[rows]))
            prior_score = prior_score[rows] if prior_score is not None else None
        result, robust = target.attack(
            self.model,
            attack,
            self.threat.with_eps(eps),
            seed=self.seed,
            batch_size=self.batch_size,
            prior_score=prior_score,
        )
        if rows is not None:
            result = widen(result, rows, self.test.x)
            robust = result.correct
        self.ev.record(name, eps, robust)
        put(self.ev.attack_cost, name, eps, cost_entry(result.n_forward, result.n_backward, result.wall_time_s))
        if self.keep_adversarial:
            self.adversarial[(name, eps)] = result.x_adv
        log.info("%s eps=%s: robust accuracy %.4f", name, eps_key(eps), result.accuracy)
        return result

    def ensemble(self, eps: float, cells: Sequence[RobustResult]) -> None:
        self.record_worst(eps, [result.correct for result in cells])

    def record_worst(self, eps: float, robust: Sequence[Tensor]) -> None:
        """The suite's per-example worst case at ``eps``: robust only where every attack failed."""
        self.ev.record(ENSEMBLE, eps, worst_case(robust, self.clean_correct))


def widen(result: RobustResult, rows: Tensor, x: Tensor) -> RobustResult:
    """A result on ``x[rows]`` as one on all of ``x``: the other inputs unperturbed and counted as broken."""
    x_adv = x.clone()
    x_adv[rows] = result.x_adv
    correct = torch.zeros(len(x), dtype=torch.bool, device=result.correct.device)
    correct[rows] = result.correct
    return RobustResult(x_adv, correct, result.n_forward, result.n_backward, result.wall_time_s)


CellsT = TypeVar("CellsT", bound=ImageCells)


def start_cells(
    kind: type[CellsT],
    model: nn.Module,
    test: Split,
    threat: ThreatModel,
    *,
    seed: int,
    batch_size: int,
    keep_adversarial: bool = False,
    **extra: Any,
) -> CellsT:
    """An image measure of ``kind`` for ``model`` on ``test`` (moved to the model's device), its clean
    record filled; ``extra`` are the measure's own fields."""
    test = test.to(model_device(model))
    ev, clean_correct = clean_evaluation(model, test)
    return kind(
        model=model,
        test=test,
        threat=threat,
        ev=ev,
        clean_correct=clean_correct,
        seed=seed,
        batch_size=batch_size,
        keep_adversarial=keep_adversarial,
        **extra,
    )
