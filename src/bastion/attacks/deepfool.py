"""DeepFool (Moosavi-Dezfooli et al. 2016, arXiv:1511.04599): a minimum-norm attack by linearisation.

Each step linearises the classifier around the iterate, moves to the nearest linearised boundary among
the top candidate classes (L2: distance |f| / ||w||_2; L-inf: |f| / ||w||_1), and overshoots slightly at
the end. Iterates are kept inside the input domain, not inside the eps-ball: the norm found is reported,
and the base projects onto the ball for the fixed-eps verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion._typing import Classifier, Norm
from bastion.attacks.base import Attack, Perturbation
from bastion.errors import ConfigError
from bastion.goals import Goal, Misclassify
from bastion.threat import ThreatModel


@dataclass(frozen=True, kw_only=True)
class DeepFool(Attack):
    """Untargeted DeepFool, L2 or L-inf (the threat model's norm).

    Args:
        n_steps: maximum linearisation steps per example.
        n_candidates: classes considered (the top ones by clean logits, the true class included).
        overshoot: final scale 1 + overshoot on the accumulated step, to land past the boundary.
        early_stop: stop on an example once it is misclassified (always true for DeepFool's logic).
    """

    n_steps: int = 50
    n_candidates: int = 10
    overshoot: float = 0.02
    early_stop: bool = True
    name = "deepfool"

    def __post_init__(self) -> None:
        if self.n_steps < 1:
            raise ConfigError(f"n_steps must be >= 1, got {self.n_steps}")
        if self.n_candidates < 2:
            raise ConfigError(f"n_candidates must be >= 2, got {self.n_candidates}")
        if self.overshoot < 0:
            raise ConfigError(f"overshoot must be >= 0, got {self.overshoot}")

    def check(self, goal: Goal, threat: ThreatModel, n_classes: int) -> None:
        if not isinstance(goal, Misclassify):
            raise ConfigError(f"DeepFool is untargeted: it needs a Misclassify goal, got {type(goal).__name__}")

    def _perturb(
        self, model: Classifier, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Perturbation:
        self.check(goal, threat, 0)
        n, y = x.shape[0], goal.reference
        with torch.no_grad():
            clean_logits = model(x)
        k = min(self.n_candidates, clean_logits.shape[1])
        candidates = clean_logits.scatter(1, y[:, None], math.inf).topk(k, dim=1).indices  # y first
        r_total = torch.zeros_like(x)
        x_adv = x.clone()
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        live = torch.arange(n, device=x.device)
        for _ in range(self.n_steps):
            xi = x_adv[live].detach().requires_grad_(True)
            logits = model(xi)
            hit = logits.argmax(dim=1) != y[live]
            done[live] |= hit
            keep = ~hit
            if not keep.any():
                break
            picked = logits.gather(1, candidates[live])  # (m, k), column 0 is the true class
            grads = torch.stack(
                [torch.autograd.grad(picked[:, j].sum(), xi, retain_graph=j < k - 1)[0] for j in range(k)], dim=1
            )
            live, picked, grads = live[keep], picked[keep].detach(), grads[keep]
            f = picked[:, 1:] - picked[:, :1]  # (m, k-1) < 0 while still correct
            w = (grads[:, 1:] - grads[:, :1]).flatten(2)  # (m, k-1, d)
            dual = w.abs().sum(dim=2) if threat.norm is Norm.LINF else w.norm(dim=2)
            dist = f.abs() / dual.clamp_min(1e-12)
            best = dist.argmin(dim=1)
            w_l = w[torch.arange(len(live)), best]
            f_l = f.abs()[torch.arange(len(live)), best] + 1e-4
            if threat.norm is Norm.LINF:
                step = (f_l / w_l.abs().sum(dim=1).clamp_min(1e-12))[:, None] * w_l.sign()
            else:
                step = (f_l / w_l.pow(2).sum(dim=1).clamp_min(1e-12))[:, None] * w_l
            r_total[live] += step.view(-1, *x.shape[1:])
            x_adv[live] = threat.domain.project(x[live] + (1 + self.overshoot) * r_total[live], x[live])
        with torch.no_grad():
            rest = (~done).nonzero().squeeze(1)
            if rest.numel():
                done[rest] |= model(x_adv[rest]).argmax(dim=1) != y[rest]
        found = threat.distance(x_adv, x)
        min_norm = torch.where(done, found, torch.full_like(found, math.inf))
        return Perturbation(x_adv.detach(), min_norm=min_norm)
