"""Fast Gradient Sign Method (Goodfellow et al. 2015, arXiv:1412.6572): one step of size eps."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion._typing import Classifier, Loss
from bastion.attacks.base import Attack, loss_gradient
from bastion.attacks.losses import cross_entropy
from bastion.goals import Goal
from bastion.threat import ThreatModel


@dataclass(frozen=True, kw_only=True)
class FGSM(Attack):
    """A single steepest-ascent step of length eps (sign step for L-inf, normalised gradient for L2)."""

    loss: Loss = cross_entropy
    early_stop: bool = True
    name = "fgsm"

    def _perturb(
        self, model: Classifier, x: Tensor, goal: Goal, threat: ThreatModel, rng: torch.Generator | None
    ) -> Tensor:
        _, grad, _ = loss_gradient(model, x, goal, self.loss)
        return x + threat.eps * threat.steepest(grad)
