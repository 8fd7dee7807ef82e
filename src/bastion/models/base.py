"""One uniform model surface: ``features(x)`` (penultimate layer) then ``head``; normalization inside.

Keeping the normalization inside the model means attacks and defenses always work in input space, where
the domain and the budget are defined.
"""

from __future__ import annotations

import math

from torch import Tensor, nn


class Normalize(nn.Module):
    """(x - mean) / std with per-channel (or per-feature) statistics stored as buffers."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        if std.device.type != "meta" and bool((std <= 0).any()):  # meta: shape-only skeletons (checkpoint)
            raise ValueError("normalization std must be > 0")
        self.register_buffer("mean", mean.clone().float())
        self.register_buffer("std", std.clone().float())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class ImageClassifier(nn.Module):
    """Base for classifiers: ``forward = head(features(normalize(x)))``.

    Subclasses set ``self.body`` (input -> feature vector) and ``self.head`` (features -> logits).
    Detectors read ``features``; attacks call ``forward``.
    """

    body: nn.Module
    head: nn.Module

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)

    def features(self, x: Tensor) -> Tensor:
        """(N, D) penultimate-layer activations."""
        return self.body(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def stat_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Per-channel statistics for images (C, 1, 1); per-feature for flat inputs (D,)."""
    return (input_shape[0], 1, 1) if len(input_shape) == 3 else tuple(input_shape)


class MLP(ImageClassifier):
    """Fully connected network on flattened inputs; the tabular default, fine for tiny images."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        mean: Tensor,
        std: Tensor,
        hidden: tuple[int, ...] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__(mean.reshape(stat_shape(input_shape)), std.reshape(stat_shape(input_shape)))
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)


class SmallCNN(ImageClassifier):
    """Two conv blocks (conv-ReLU-conv-ReLU-maxpool) and a dense layer: a CPU-sized image model."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        mean: Tensor,
        std: Tensor,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 128,
    ) -> None:
        super().__init__(mean.reshape(stat_shape(input_shape)), std.reshape(stat_shape(input_shape)))
        c_in, height, width = input_shape
        c1, c2 = channels
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c2, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * (height // 4) * (width // 4), hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden, num_classes)
