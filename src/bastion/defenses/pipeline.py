"""The hybrid runtime defense around a trained model: transforms -> model, plus a detector gate.

``DefendedClassifier`` is itself a classifier (an ``nn.Module`` mapping x to logits), so every attack
can target the whole defense; ``decide`` is what a deployment returns per input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks.base import evaluating
from bastion.defenses.detectors.base import Detector
from bastion.defenses.transforms import InputTransform


@dataclass(frozen=True)
class Decision:
    """Per input: label, softmax confidence, anomaly score (nan without a detector) and flag."""

    labels: Tensor
    confidence: Tensor
    scores: Tensor
    flagged: Tensor


class DefendedClassifier(nn.Module):
    """``logits(x) = model(t_k(...t_1(x)))``; the detector scores the raw input.

    Args:
        model: the (adversarially trained) classifier.
        transforms: input squeezers applied in order before the model.
        detector: a fitted, calibrated detector, or None.
    """

    def __init__(
        self, model: nn.Module, transforms: Sequence[InputTransform] = (), detector: Detector | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.transforms = tuple(transforms)
        self.detector = detector

    def forward(self, x: Tensor) -> Tensor:
        for t in self.transforms:
            x = t(x)
        return self.model(x)

    @torch.no_grad()
    def decide(self, x: Tensor) -> Decision:
        with evaluating(self):
            probs = self(x).softmax(dim=1)
        confidence, labels = probs.max(dim=1)
        if self.detector is None:
            scores = torch.full_like(confidence, float("nan"))
            flagged = torch.zeros_like(labels, dtype=torch.bool)
        else:
            scores = self.detector.score(x)
            flagged = self.detector.predict(x)
        return Decision(labels, confidence, scores, flagged)

    def describe(self) -> dict[str, Any]:
        detector = None
        if self.detector is not None:
            detector = {
                "kind": type(self.detector).__name__,
                "target_fpr": self.detector.target_fpr,
                "threshold": self.detector.threshold_,
            }
        return {"transforms": [t.to_dict() for t in self.transforms], "detector": detector}
