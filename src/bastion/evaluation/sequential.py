"""Evaluate under an :class:`~bastion.attacks.worst_case.AttackSequence`: the AutoAttack-style worst case
with per-example records, sharded across ranks under torch.distributed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bastion import progress
from bastion.attacks import Attack
from bastion.attacks.worst_case import AttackSequence, WorstCaseResult, worst_case_in_batches
from bastion.data.spec import Split
from bastion.evaluation import distributed
from bastion.evaluation.plain import ImageCells, cost_entry, start_cells
from bastion.evaluation.record import ENSEMBLE, Evaluation, eps_key, put, stored
from bastion.evaluation.runner import CellHook, run_grid, seeded
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)

#: Decimal places of the per-example passes in records.json.
PASSES_DIGITS = 2


def batch_seed(seed: int, start: int) -> int:
    """The attack seed of the batch starting at example ``start``: independent of how batches are sharded."""
    return seed * 1_000_003 + start


@dataclass(kw_only=True)
class SequenceCells(ImageCells):
    """Measure: at each eps the whole sequence runs once (on the first cell, batch by batch, sharded across
    ranks); each cell then reads "robust after this attack and all earlier ones"; the ensemble is the last."""

    attacks: AttackSequence
    always_ensemble: bool = True
    _eps: float | None = field(default=None, init=False)
    _parts: list[dict[str, Any]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        n = len(self.test)
        self.ev.records = {"index": list(range(n)), "label": self.test.y.tolist(), "eps": {}}

    def parts(self, eps: float) -> list[dict[str, Any]]:
        """Every batch's worst-case result at ``eps``, gathered from all ranks, in example order."""
        if self._eps != eps:
            self._parts, self._eps = self._run(eps), eps
        return self._parts

    def _run(self, eps: float) -> list[dict[str, Any]]:
        x, y = self.test.x, self.test.y
        n = len(self.test)
        with progress.task(f"eps {eps_key(eps)}, worst case", replace=True):
            whole = worst_case_in_batches(
                self.model,
                x,
                y,
                self.attacks,
                self.threat.with_eps(eps),
                batches=distributed.my_batches(n, self.batch_size),
                rng_of=lambda start: seeded(x.device, batch_seed(self.seed, start)),
                gather=lambda mine: [p for rank_parts in distributed.gather(mine) for p in rank_parts],
            )
        starts = range(0, n, self.batch_size)
        return [self._part(a, whole.rows(a, min(a + self.batch_size, n), first=a == 0)) for a in starts]

    def _part(self, start: int, r: WorstCaseResult) -> dict[str, Any]:
        """One batch's worst-case result, on the CPU, as :meth:`parts` keeps it."""
        return {
            "start": start,
            "robust_after": {k: v.cpu() for k, v in r.robust_after.items()},
            "broken_by": r.broken_by,
            "forward": r.forward.cpu(),
            "backward": r.backward.cpu(),
            "cost": r.cost,
            "x_adv": r.x_adv.cpu() if self.keep_adversarial else None,
        }

    def robust_after(self, name: str, eps: float) -> Tensor:
        parts = self.parts(eps)
        return torch.cat([p["robust_after"][name] for p in parts]) if parts else torch.zeros(0, dtype=torch.bool)

    def cell(self, name: str, attack: Attack, eps: float) -> Tensor:
        parts = self.parts(eps)
        robust = self.robust_after(name, eps)
        self.ev.record(name, eps, robust)
        cost = {k: sum(p["cost"][name][k] for p in parts) for k in ("forward_passes", "backward_passes")}
        entry = cost_entry(
            cost["forward_passes"], cost["backward_passes"], sum(p["cost"][name]["wall_time_s"] for p in parts)
        )
        put(
            self.ev.attack_cost,
            name,
            eps,
            {**entry, "examples_attacked": sum(p["cost"][name]["examples_attacked"] for p in parts)},
        )
        if self.keep_adversarial:
            names = list(self.attacks)
            self.adversarial[(name, eps)] = _cumulative_adv(parts, names.index(name), names, self.test.x)
        return robust

    def ensemble(self, eps: float, cells: Sequence[Tensor]) -> None:
        parts = self.parts(eps)
        final = self.robust_after(list(self.attacks)[-1], eps)
        self.ev.record(ENSEMBLE, eps, final)
        assert self.ev.records is not None
        self.ev.records["eps"][eps_key(eps)] = {
            "broken_by": [b for p in parts for b in p["broken_by"]],
            "forward_passes": [stored(v, PASSES_DIGITS) for p in parts for v in p["forward"]],
            "backward_passes": [stored(v, PASSES_DIGITS) for p in parts for v in p["backward"]],
        }
        log.info("ensemble eps=%s: robust accuracy %.4f", eps_key(eps), float(final.float().mean()))


def evaluate_sequential(
    model: nn.Module,
    test: Split,
    attacks: AttackSequence,
    threat: ThreatModel,
    eps_values: Sequence[float],
    *,
    seed: int = 0,
    batch_size: int = 256,
    on_cell: CellHook | None = None,
    keep_adversarial: bool = False,
) -> tuple[Evaluation, dict[tuple[str, float], Tensor]]:
    """Like :func:`~bastion.evaluation.evaluate.evaluate`, with each attack run only on the survivors.

    ``robust_accuracy[attack]`` is the accuracy after that attack and all earlier ones; ``ensemble`` is the
    final worst case. ``Evaluation.records`` holds per-example records per eps (which attack broke each
    example, forward/backward passes spent on it); they are not part of results.json.
    """
    cells = start_cells(
        SequenceCells,
        model,
        test,
        threat,
        seed=seed,
        batch_size=batch_size,
        keep_adversarial=keep_adversarial,
        attacks=attacks,
    )
    run_grid(attacks, eps_values, cells, on_cell=on_cell)
    return cells.ev, cells.adversarial


def _cumulative_adv(parts: list[dict[str, Any]], upto: int, names: list[str], x: Tensor) -> Tensor:
    """Adversarial inputs after attack ``upto``: the breaking input where an attack up to it succeeded."""
    allowed = set(names[: upto + 1])
    x_adv = torch.cat([p["x_adv"] for p in parts]).to(x.device)
    broken = torch.tensor([b in allowed for p in parts for b in p["broken_by"]], device=x.device)
    return torch.where(broken.view(-1, *[1] * (x.dim() - 1)), x_adv, x)
