"""The worst case over a sequence of attacks, AutoAttack style: each attack only sees the examples every
earlier attack failed on, so the strong but expensive attacks run on few examples.

Each attack is also told, per survivor, the lowest goal score (margin) any earlier attack reached
(``prior_score``): the probed Square attacks the survivors APGD brought nearest to breaking first. On the
MNIST TRADES benchmark model every example Square broke was among the 4 nearest of 115-123 survivors by
that score, against ranks up to 39 by the clean cross-entropy.

The per-example record says which attack broke each example and what it cost. Robust accuracy "after"
an attack is the share still robust after it and all earlier ones (AutoAttack's convention), so it
never increases along the sequence and the last value is the ensemble's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion import progress
from bastion._typing import Classifier
from bastion.attacks.base import Attack, evaluating
from bastion.attacks.losses import goal_score
from bastion.errors import InputValidationError
from bastion.goals import Misclassify
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)

#: ``broken_by`` code for examples the model gets wrong without any attack.
CLEAN = "clean"


class AttackSequence(dict[str, Attack]):
    """Attacks in the order they run (cheapest first). An evaluation runs it as a worst-case sequence."""


@dataclass(frozen=True)
class WorstCaseResult:
    """Per-example outcome of a sequence on one batch.

    x_adv: (N, *S) the breaking input where an attack succeeded, else x.
    robust: (N,) bool, correct on x and unbroken by every attack.
    broken_by: (N,) names: the first attack that broke it, ``clean`` if misclassified unattacked, None if robust.
    robust_after: attack -> (N,) bool, robust after this attack and all earlier ones.
    forward, backward: (N,) float per-example passes over all attacks that ran on the example (exact for
        attacks reporting ``n_queries``; otherwise the attack's total split evenly over the examples it ran on).
    cost: attack -> totals (forward_passes, backward_passes, wall_time_s, examples_attacked).
    nearest: (N,) the lowest :func:`~bastion.attacks.losses.goal_score` (margin) reached on the example
        by any attack, or at the clean input; the ``prior_score`` the next attack would be given.
    """

    x_adv: Tensor
    robust: Tensor
    broken_by: list[str | None]
    robust_after: dict[str, Tensor]
    forward: Tensor
    backward: Tensor
    cost: dict[str, dict[str, float]]
    nearest: Tensor


def worst_case(
    model: Classifier,
    x: Tensor,
    y: Tensor,
    attacks: Mapping[str, Attack],
    threat: ThreatModel,
    *,
    rng: torch.Generator | None = None,
) -> WorstCaseResult:
    """Run ``attacks`` in order, each on the examples still robust, and keep the worst case per example."""
    if not attacks:
        raise InputValidationError("worst_case needs at least one attack")
    if y.shape[0] != x.shape[0]:
        raise InputValidationError(f"batch size mismatch: x has {x.shape[0]} examples, y has {y.shape[0]}")
    n = x.shape[0]
    with torch.no_grad(), evaluating(model):
        clean_logits = model(x)
    robust = clean_logits.argmax(dim=1) == y
    nearest = goal_score(clean_logits, Misclassify(y))
    broken_by: list[str | None] = [None if bool(r) else CLEAN for r in robust]
    x_adv = x.clone()
    forward = torch.ones(n, dtype=torch.float64, device=x.device)
    backward = torch.zeros(n, dtype=torch.float64, device=x.device)
    robust_after: dict[str, Tensor] = {}
    cost: dict[str, dict[str, float]] = {}
    for k, (name, attack) in enumerate(attacks.items()):
        progress.advance(k, len(attacks), "attacks", current=name)
        idx = robust.nonzero().squeeze(1)
        start = time.perf_counter()
        n_fwd = n_bwd = 0
        if idx.numel():
            goal = Misclassify(y[idx])
            result = attack(model, x[idx], goal, threat, rng=rng, prior_score=nearest[idx])
            if result.logits is not None:
                nearest[idx] = torch.minimum(nearest[idx], goal_score(result.logits, goal))
            n_fwd, n_bwd = result.n_forward, result.n_backward
            if result.n_queries is not None:
                forward[idx] += result.n_queries.to(forward)
            else:
                forward[idx] += n_fwd / idx.numel()
            backward[idx] += n_bwd / idx.numel()
            hit = idx[result.success]
            x_adv[hit] = result.x_adv[result.success]
            robust[hit] = False
            for i in hit.tolist():
                broken_by[i] = name
        robust_after[name] = robust.clone()
        cost[name] = {
            "forward_passes": n_fwd,
            "backward_passes": n_bwd,
            "wall_time_s": round(time.perf_counter() - start, 4),
            "examples_attacked": int(idx.numel()),
        }
        log.debug("%s: %d of %d still robust", name, int(robust.sum()), n)
    progress.advance(len(attacks), len(attacks), "attacks")
    return WorstCaseResult(x_adv, robust, broken_by, robust_after, forward, backward, cost, nearest)
