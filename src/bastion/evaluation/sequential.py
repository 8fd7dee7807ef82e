"""Evaluate under an :class:`~bastion.attacks.worst_case.AttackSequence`: the AutoAttack-style worst case
with per-example records, sharded across ranks under torch.distributed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks.worst_case import AttackSequence, worst_case
from bastion.data.spec import Split
from bastion.evaluation import distributed
from bastion.evaluation.accuracy import predict
from bastion.evaluation.evaluate import ENSEMBLE, CellHook, Evaluation, _record, _set, eps_key
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)


def batch_seed(seed: int, start: int) -> int:
    """The attack seed of the batch starting at example ``start``: independent of how batches are sharded."""
    return seed * 1_000_003 + start


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
    device = next(model.parameters()).device
    test = test.to(device)
    n = len(test)
    clean_correct = predict(model, test.x) == test.y
    ev = Evaluation(clean_accuracy=float(clean_correct.float().mean()), n_examples=n)
    ev.clean_correct, ev.labels = clean_correct.cpu(), test.y.cpu()
    records: dict[str, Any] = {"index": list(range(n)), "label": test.y.tolist(), "eps": {}}
    adversarial: dict[tuple[str, float], Tensor] = {}
    names = list(attacks)
    total, done = len(names) * len(eps_values), 0
    for eps in eps_values:
        shard: list[dict[str, Any]] = []
        for start, stop in distributed.my_batches(n, batch_size):
            rng = torch.Generator(device=device).manual_seed(batch_seed(seed, start))
            r = worst_case(model, test.x[start:stop], test.y[start:stop], attacks, threat.with_eps(eps), rng=rng)
            shard.append(
                {
                    "start": start,
                    "robust_after": {k: v.cpu() for k, v in r.robust_after.items()},
                    "broken_by": r.broken_by,
                    "forward": r.forward.cpu(),
                    "backward": r.backward.cpu(),
                    "cost": r.cost,
                    "x_adv": r.x_adv.cpu() if keep_adversarial else None,
                }
            )
        parts = sorted((p for rank_parts in distributed.gather(shard) for p in rank_parts), key=lambda p: p["start"])
        for name in names:
            robust = torch.cat([p["robust_after"][name] for p in parts]) if parts else torch.zeros(0, dtype=torch.bool)
            _record(ev, name, eps, robust)
            _set(
                ev.attack_cost,
                name,
                eps,
                {
                    "forward_passes": sum(p["cost"][name]["forward_passes"] for p in parts),
                    "backward_passes": sum(p["cost"][name]["backward_passes"] for p in parts),
                    "wall_time_s": round(sum(p["cost"][name]["wall_time_s"] for p in parts), 4),
                    "examples_attacked": sum(p["cost"][name]["examples_attacked"] for p in parts),
                },
            )
            if keep_adversarial:
                adversarial[(name, eps)] = _cumulative_adv(parts, names.index(name), names, test.x)
            done += 1
            if on_cell is not None:
                on_cell(done, total)
        final = torch.cat([p["robust_after"][names[-1]] for p in parts]) if parts else torch.zeros(0, dtype=torch.bool)
        _record(ev, ENSEMBLE, eps, final)
        records["eps"][eps_key(eps)] = {
            "broken_by": [b for p in parts for b in p["broken_by"]],
            "forward_passes": [round(float(v), 2) for p in parts for v in p["forward"]],
            "backward_passes": [round(float(v), 2) for p in parts for v in p["backward"]],
        }
        log.info("ensemble eps=%s: robust accuracy %.4f", eps_key(eps), float(final.float().mean()))
    ev.records = records
    return ev, adversarial


def _cumulative_adv(parts: list[dict[str, Any]], upto: int, names: list[str], x: Tensor) -> Tensor:
    """Adversarial inputs after attack ``upto``: the breaking input where an attack up to it succeeded."""
    allowed = set(names[: upto + 1])
    x_adv = torch.cat([p["x_adv"] for p in parts]).to(x.device)
    broken = torch.tensor([b in allowed for p in parts for b in p["broken_by"]], device=x.device)
    return torch.where(broken.view(-1, *[1] * (x.dim() - 1)), x_adv, x)
