"""Carlini-Wagner L2 (Carlini & Wagner 2017, arXiv:1608.04644): a minimum-norm attack.

Minimises ``||x_adv - x||_2^2 + c * max(margin, -kappa)`` with Adam, in tanh space so the input box
holds without clipping, and binary-searches the trade-off c per example. The box comes from the threat
model's domain; a domain without box bounds is handled by projecting each iterate instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion._typing import Classifier, Norm
from bastion.attacks.base import Attack, Perturbation
from bastion.errors import ConfigError
from bastion.goals import Diverge, Goal, Reach
from bastion.threat import ThreatModel


def _margin_term(logits: Tensor, goal: Goal, kappa: float) -> Tensor:
    """(n,) ``max(z_y - max_{j!=y} z_j, -kappa)`` (targeted: ``max_{j!=t} z_j - z_t``); <= 0 once reached."""
    ref = goal.reference
    chosen = logits.gather(1, ref[:, None]).squeeze(1)
    others = logits.scatter(1, ref[:, None], -math.inf).amax(dim=1)
    gap = others - chosen if isinstance(goal, Reach) else chosen - others
    return gap.clamp_min(-kappa)


@dataclass(frozen=True, kw_only=True)
class CW(Attack):
    """CW-L2 with a binary search on c; ``min_norm`` in the result is the L2 norm of the smallest success.

    For a fixed-eps evaluation the base then projects the found example onto the eps-ball and re-checks
    it, so a success only counts if it is within eps.

    Args:
        n_steps: Adam iterations per value of c.
        n_search: binary-search rounds over c (per example).
        c_init: first value of c (x10 per round until a success bounds it).
        kappa: confidence margin (0 = just across the boundary).
        lr: Adam learning rate in tanh space.
        early_stop: skip examples already satisfying the goal.
    """

    n_steps: int = 100
    n_search: int = 6
    c_init: float = 0.1
    kappa: float = 0.0
    lr: float = 0.01
    early_stop: bool = True
    name = "cw"
    norms = frozenset({Norm.L2})

    def __post_init__(self) -> None:
        if self.n_steps < 1 or self.n_search < 1:
            raise ConfigError(f"n_steps and n_search must be >= 1, got {self.n_steps} and {self.n_search}")
        if not self.c_init > 0 or not self.lr > 0 or self.kappa < 0:
            raise ConfigError(f"need c_init > 0, lr > 0, kappa >= 0; got {self.c_init}, {self.lr}, {self.kappa}")

    def check(self, goal: Goal, threat: ThreatModel, n_classes: int) -> None:
        if threat.norm is not Norm.L2:
            raise ConfigError(
                f"CW-L2 minimises the L2 norm; the threat model is {threat.norm.value} (use DeepFool or APGD)"
            )
        if isinstance(goal, Diverge):
            raise ConfigError("CW attacks labels (Misclassify or Reach goals), not a Diverge goal")

    def _perturb(
        self, model: Classifier, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Perturbation:
        self.check(goal, threat, 0)
        n, view = x.shape[0], (-1, *[1] * (x.dim() - 1))
        lower = getattr(threat.domain, "lower", None)
        upper = getattr(threat.domain, "upper", None)
        boxed = isinstance(lower, Tensor) and isinstance(upper, Tensor)
        if boxed:
            lo, hi = lower.to(x.device, x.dtype), upper.to(x.device, x.dtype)  # type: ignore[union-attr]
            span = (hi - lo).clamp_min(1e-12)
            unit = ((x - lo) / span * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)
            w0 = torch.atanh(unit)

            def to_input(w: Tensor) -> Tensor:
                return lo + span * (torch.tanh(w) + 1) / 2

        else:
            w0 = torch.zeros_like(x)

            def to_input(w: Tensor) -> Tensor:
                return threat.domain.project(x + w, x)

        c = torch.full((n,), self.c_init, device=x.device)
        c_low = torch.zeros(n, device=x.device)
        c_high = torch.full((n,), math.inf, device=x.device)
        best_x, best_dist = x.clone(), torch.full((n,), math.inf, device=x.device)
        for _ in range(self.n_search):
            # Adam by hand (beta 0.9 / 0.999): a few lines, and no torch.optim import cost per call.
            w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            for t in range(1, self.n_steps + 1):
                w.requires_grad_(True)
                x_adv = to_input(w)
                logits = model(x_adv)
                dist = (x_adv - x).flatten(1).pow(2).sum(dim=1)
                loss = (dist + c * _margin_term(logits, goal, self.kappa)).sum()
                (grad,) = torch.autograd.grad(loss, w)
                with torch.no_grad():
                    hit = goal.satisfied(logits)
                    better = hit & (dist < best_dist)
                    best_dist = torch.where(better, dist, best_dist)
                    best_x = torch.where(better.view(view), x_adv.detach(), best_x)
                    found |= hit
                    m = 0.9 * m + 0.1 * grad
                    v = 0.999 * v + 0.001 * grad * grad
                    w = w.detach() - self.lr * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
            c_high = torch.where(found, torch.minimum(c_high, c), c_high)
            c_low = torch.where(found, c_low, torch.maximum(c_low, c))
            c = torch.where(torch.isinf(c_high), c * 10, (c_low + c_high) / 2)
        return Perturbation(best_x, min_norm=best_dist.sqrt())
