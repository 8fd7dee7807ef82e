"""Run an expensive attack where it can matter: first on a probe of the examples nearest the boundary, on
the rest only when the probe breaks one or the model's gradients are not healthy.

In an AutoAttack-style sequence the gradient-free attack (Square) is there to catch gradient masking: on a
model whose input gradients are finite and non-zero and whose survivors resisted APGD-CE and APGD-T, it
almost never breaks more (Croce & Hein 2020, table 2). A probe keeps that guarantee measurable instead of
assumed: the survivors nearest the boundary are attacked in full, in chunks that double in size (32, 64,
..., or 8, 16, ... when ordered by ``prior_score``) for as long as the last chunk yielded a success; any
sign of unhealthy gradients on the survivors sends the attack to every example. "Nearest" is the lowest
margin the earlier attacks of the sequence reached (``prior_score``) when they ran, else the clean
cross-entropy: the margin APGD left is the better guide (on the MNIST TRADES benchmark model the 5
examples Square broke ranked 0-3 of 115-123 survivors by it, and up to 39 by the clean loss). What was
skipped is logged and reported by the sequence (``examples_attacked``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion._typing import Classifier
from bastion.attacks.base import Attack, Perturbation, gradient_shares
from bastion.attacks.losses import cross_entropy
from bastion.errors import ConfigError
from bastion.goals import Diverge, Goal
from bastion.threat import ThreatModel

log = logging.getLogger(__name__)


def _chunk_starts(first: int, n: int) -> list[int]:
    """Where the chunks of sizes first, 2 first, 4 first, ... over n examples begin."""
    starts, start = [], 0
    while start < n:
        starts.append(start)
        start = 2 * start + first
    return starts


def boundary_order(logits: Tensor, goal: Goal) -> Tensor:
    """Indices from the example nearest its goal to the farthest (by cross-entropy toward the goal)."""
    if isinstance(goal, Diverge):
        return torch.arange(logits.shape[0], device=logits.device)
    loss = cross_entropy(logits, goal.reference)
    return loss.argsort(descending=goal.ascend)


@dataclass(frozen=True, kw_only=True)
class Probed(Attack):
    """``base`` on the ``n_probe`` examples nearest the boundary (by ``prior_score`` when given), then on
    the next 2x, 4x, ... as long as the last chunk had a success; on all of them if more than
    ``max_bad_gradient_share`` of the examples have zero or non-finite input gradients.

    Args:
        base: the attack to spend carefully (typically Square).
        n_probe: how many examples the probe attacks when they are ordered by the clean loss.
        n_probe_prior: how many when ``prior_score`` orders them: the margin earlier attacks left is the
            sharper guide, so the first chunk can be smaller.
        max_bad_gradient_share: above this share of unhealthy gradients the probe is bypassed.
    """

    base: Attack
    n_probe: int = 32
    n_probe_prior: int = 8
    max_bad_gradient_share: float = 0.0
    early_stop: bool = True
    name = "probed"

    def __post_init__(self) -> None:
        if self.n_probe < 1 or self.n_probe_prior < 1:
            raise ConfigError(f"n_probe and n_probe_prior must be >= 1, got {self.n_probe}, {self.n_probe_prior}")
        if not 0 <= self.max_bad_gradient_share <= 1:
            raise ConfigError(f"max_bad_gradient_share must be in [0, 1], got {self.max_bad_gradient_share}")

    def check(self, goal: Goal, threat: ThreatModel, n_classes: int) -> None:
        self.base.check(goal, threat, n_classes)

    def _perturb(
        self, model: Classifier, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Perturbation:
        return self._perturb_after(model, x, goal, threat, rng, None)

    def _perturb_after(
        self,
        model: Classifier,
        x: Tensor,
        goal: Goal,
        threat: ThreatModel,
        rng: torch.Generator | None,
        prior_score: Tensor | None,
    ) -> Perturbation:
        n = x.shape[0]
        zero, nonfinite, logits = gradient_shares(model, x, goal)
        order = boundary_order(logits, goal) if prior_score is None else prior_score.argsort(stable=True)
        unhealthy = max(zero, nonfinite) > self.max_bad_gradient_share
        x_adv = x.clone()
        queries = torch.ones(n, dtype=torch.long, device=x.device)
        if unhealthy:
            self._run(model, x, goal, threat, rng, order, x_adv, queries)
            return Perturbation(x_adv, n_queries=queries)
        first = self.n_probe if prior_score is None else self.n_probe_prior
        chunks = [order[start : 2 * start + first] for start in _chunk_starts(first, n)]
        chunked = getattr(self.base, "perturb_in_chunks", None)
        if chunked is not None:
            out = chunked(model, x, goal, threat, rng, chunks)
            x_adv, queries = out.x_adv, queries + out.n_queries
            start = int((out.n_queries > 0).sum())  # the rows of every chunk that joined
        else:
            start = 0
            for chunk in chunks:
                broken = self._run(model, x, goal, threat, rng, chunk, x_adv, queries)
                start += chunk.numel()
                if not broken:
                    break
        if start < n:
            log.info(
                "%s: the %d examples nearest the boundary ended with a chunk it broke none of, and gradients are "
                "healthy; %d examples not attacked",
                type(self.base).__name__,
                start,
                n - start,
            )
        return Perturbation(x_adv, n_queries=queries)

    def _run(
        self,
        model: Classifier,
        x: Tensor,
        goal: Goal,
        threat: ThreatModel,
        rng: torch.Generator | None,
        rows: Tensor,
        x_adv: Tensor,
        queries: Tensor,
    ) -> int:
        """Attack ``rows`` in place into ``x_adv``; how many it broke."""
        result = self.base(model, x[rows], goal.subset(rows), threat, rng=rng)
        x_adv[rows] = result.x_adv
        if result.n_queries is not None:
            queries[rows] += result.n_queries.to(queries)
        return int(result.success.sum())
