"""A seed ensemble: several classifiers of the same task averaged into one, usable on any data."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bastion.errors import ConfigError


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
