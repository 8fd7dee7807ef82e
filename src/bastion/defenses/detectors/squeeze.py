"""Feature-squeezing detector (Xu et al. 2018, arXiv:1704.01155).

Score = max over squeezers s of ``|| softmax(model(x)) - softmax(model(s(x))) ||_1``: a clean input's
prediction barely moves when squeezed, an adversarial perturbation is partly squeezed away and the
prediction jumps. Nothing to fit but the threshold (calibrated on clean held-out data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bastion.attacks.base import evaluating
from bastion.defenses.detectors.base import check_fpr, chunked, require_fitted, threshold_for_fpr
from bastion.defenses.transforms import BitDepth, InputTransform, MedianFilter, transform_from_dict
from bastion.errors import ConfigError, InputValidationError


class SqueezeDetector:
    """Args:
    model: the classifier.
    squeezers: transforms compared with the raw input (Xu et al. use 1-bit depth and 2x2 median on MNIST).
    target_fpr: share of clean inputs flagged after ``calibrate``.
    """

    kind = "squeeze"
    randomized = False

    def __init__(
        self, model: Any, *, squeezers: Sequence[InputTransform] | None = None, target_fpr: float = 0.05
    ) -> None:
        self.model = model
        self.squeezers = tuple(squeezers) if squeezers is not None else (BitDepth(3), MedianFilter(2))
        if not self.squeezers:
            raise ConfigError("SqueezeDetector needs at least one squeezer")
        self.target_fpr = check_fpr(target_fpr)
        self.threshold_: float | None = None

    def fit(self, x: Tensor, y: Tensor | None = None) -> SqueezeDetector:
        """Nothing to learn: the score has no parameters. Kept for the common detector contract."""
        return self

    def soft_score(self, x: Tensor) -> Tensor:
        """(N,) max L1 distance between predictions, with its autograd graph (squeezers pass BPDA gradients)."""

        def one(xs: Tensor) -> Tensor:
            p = self.model(xs).softmax(dim=1)
            gaps = [(p - self.model(s(xs)).softmax(dim=1)).abs().sum(dim=1) for s in self.squeezers]
            return torch.stack(gaps, dim=1).amax(dim=1)

        return chunked(one, x)

    @torch.no_grad()
    def score(self, x: Tensor) -> Tensor:
        with evaluating(self.model):
            return self.soft_score(x).float()

    def calibrate(self, x_clean: Tensor) -> SqueezeDetector:
        self.threshold_ = threshold_for_fpr(self.score(x_clean), self.target_fpr)
        return self

    def predict(self, x: Tensor) -> Tensor:
        return self.score(x) > require_fitted(self.threshold_, "SqueezeDetector")

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target_fpr": self.target_fpr,
            "squeezers": [s.to_dict() for s in self.squeezers],
            "threshold": self.threshold_,
        }

    def load_state_dict(self, state: dict[str, Any]) -> SqueezeDetector:
        if state.get("kind") != self.kind:
            raise InputValidationError(f"not a squeeze detector state: kind={state.get('kind')!r}")
        self.target_fpr = check_fpr(float(state["target_fpr"]))
        self.squeezers = tuple(transform_from_dict(d) for d in state["squeezers"])
        self.threshold_ = None if state["threshold"] is None else float(state["threshold"])
        return self
