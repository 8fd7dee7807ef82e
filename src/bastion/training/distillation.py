"""Defensive distillation (Papernot et al. 2016, arXiv:1511.04508) and seed ensembles, usable on any data.

Distillation trains a student on a teacher's softmax at temperature T and deploys it at T = 1, which
scales its logits up by about T: gradients through a saturated softmax become tiny, so gradient attacks
with cross-entropy can fail without the model being robust (Carlini & Wagner 2016, arXiv:1607.04311).
Evaluate distilled models with margin losses and the gradient-free search attack, which do not depend
on the softmax's scale. (A minimal objective for the tabular track; a generic distillation objective
may replace it.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion.errors import ConfigError
from bastion.training.objectives import LossOutput


@dataclass(frozen=True)
class Distillation:
    """Cross-entropy between the teacher's and the student's softmax at ``temperature`` (times T^2, so
    gradient magnitudes do not shrink with T, as in Hinton et al. 2015)."""

    teacher: nn.Module
    temperature: float = 20.0
    name: str = "distillation"

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")

    def __call__(self, model, x, y, stage, threat, rng):
        t = self.temperature
        with torch.no_grad():
            self.teacher.eval()
            soft = (self.teacher(x) / t).softmax(dim=1)
        logits = model(x)
        loss = -(soft * F.log_softmax(logits / t, dim=1)).sum(dim=1).mean() * t * t
        acc = float((logits.argmax(1) == y).float().mean())
        return LossOutput(loss, {"loss": float(loss.detach()), "acc": acc})


class AverageEnsemble(nn.Module):
    """Average of member probabilities; returns log-probabilities (valid logits for every attack loss).

    ``features`` concatenates the members' features, so feature-space detectors apply unchanged.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        probs = torch.stack([m(x).softmax(dim=1) for m in self.members]).mean(dim=0)
        return probs.clamp_min(1e-12).log()

    def features(self, x: Tensor) -> Tensor:
        return torch.cat([m.features(x) for m in self.members], dim=1)  # type: ignore[operator]
