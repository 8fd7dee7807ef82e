"""Momentum iterative FGSM (Dong et al. 2018, arXiv:1710.06081): PGD-like steps along an accumulated,
L1-normalised gradient, which transfers better and oscillates less than plain iterates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion._typing import Classifier, Loss
from bastion.attacks.base import Attack, keep_best, loss_gradient
from bastion.attacks.losses import cross_entropy
from bastion.errors import ConfigError
from bastion.goals import Goal
from bastion.threat import ThreatModel


@dataclass(frozen=True, kw_only=True)
class MIFGSM(Attack):
    """``g <- decay * g + grad / ||grad||_1``; ``x <- P(x + step * steepest(g))`` with ``step = eps / n_steps``.

    Args:
        n_steps: iterations (the paper uses 10).
        decay: momentum factor mu (the paper's 1.0).
        loss: per-sample loss.
        early_stop: skip examples already satisfying the goal; keep the first iterate that satisfies it.
    """

    n_steps: int = 10
    decay: float = 1.0
    loss: Loss = cross_entropy
    early_stop: bool = True
    name = "mifgsm"

    def __post_init__(self) -> None:
        if self.n_steps < 1:
            raise ConfigError(f"n_steps must be >= 1, got {self.n_steps}")
        if self.decay < 0:
            raise ConfigError(f"decay must be >= 0, got {self.decay}")

    def _perturb(
        self, model: Classifier, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Tensor:
        step = threat.eps / self.n_steps
        x_adv, best = x.clone(), x.clone()
        momentum = torch.zeros_like(x)
        live = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.n_steps):
            _, grad, logits = loss_gradient(model, x_adv, goal.subset(live), self.loss)
            if self.early_stop:
                hit = goal.subset(live).satisfied(logits)
                best[live] = keep_best(best[live], x_adv, hit)
                keep = ~hit
                live, x_adv, grad = live[keep], x_adv[keep], grad[keep]
                if live.numel() == 0:
                    return best
            l1 = grad.abs().flatten(1).sum(dim=1).clamp_min(1e-12)
            momentum[live] = self.decay * momentum[live] + grad / l1.view(-1, *[1] * (grad.dim() - 1))
            x_adv = threat.project(x_adv + step * threat.steepest(momentum[live]), x[live])
        best[live] = x_adv
        return best
