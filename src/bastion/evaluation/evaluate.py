"""Evaluate a model (or a defended model) under an attack suite at several budgets: the public entry points.

A plain suite runs every attack independently (:class:`~bastion.evaluation.plain.AccuracyCells`); an
:class:`~bastion.attacks.worst_case.AttackSequence` runs as a worst-case sequence
(:mod:`bastion.evaluation.sequential`); a runtime defense is evaluated by
:func:`~bastion.evaluation.defense.evaluate_defense`. All fill the one record,
:class:`~bastion.evaluation.record.Evaluation`, through the one loop, :func:`~bastion.evaluation.runner.run_grid`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from bastion.attacks import Attack
from bastion.attacks.worst_case import AttackSequence
from bastion.data.spec import Split
from bastion.evaluation.defense import evaluate_defense
from bastion.evaluation.plain import AccuracyCells, start_cells
from bastion.evaluation.record import ENSEMBLE, Evaluation, eps_key
from bastion.evaluation.runner import CellHook, run_grid
from bastion.evaluation.sequential import evaluate_sequential
from bastion.threat import ThreatModel

__all__ = ["ENSEMBLE", "CellHook", "Evaluation", "eps_key", "evaluate", "evaluate_defense"]


def evaluate(
    model: nn.Module,
    test: Split,
    attacks: dict[str, Attack],
    threat: ThreatModel,
    eps_values: Sequence[float],
    *,
    seed: int = 0,
    batch_size: int = 256,
    on_cell: CellHook | None = None,
    keep_adversarial: bool = False,
) -> tuple[Evaluation, dict[tuple[str, float], Tensor]]:
    """Run every attack at every eps on ``test``.

    Returns the evaluation and, when ``keep_adversarial``, the adversarial inputs per (attack, eps).
    An :class:`~bastion.attacks.worst_case.AttackSequence` runs as a worst-case sequence instead.
    """
    if isinstance(attacks, AttackSequence):
        return evaluate_sequential(
            model,
            test,
            attacks,
            threat,
            eps_values,
            seed=seed,
            batch_size=batch_size,
            on_cell=on_cell,
            keep_adversarial=keep_adversarial,
        )
    cells = start_cells(
        AccuracyCells, model, test, threat, seed=seed, batch_size=batch_size, keep_adversarial=keep_adversarial
    )
    run_grid(attacks, eps_values, cells, on_cell=on_cell)
    return cells.ev, cells.adversarial
