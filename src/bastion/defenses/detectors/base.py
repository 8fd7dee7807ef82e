"""Detector contract (scikit-learn style): ``__init__`` stores, ``fit`` learns on clean data, ``calibrate``
sets ``threshold_`` so that the given share of clean held-out inputs is flagged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from bastion.errors import ConfigError, InputValidationError, NotFittedError

#: Scores are computed in chunks of this many inputs (memory, not semantics).
CHUNK = 256


class Detector(Protocol):
    """``score`` is (N,) with higher = more suspicious; ``predict`` is ``score > threshold_``."""

    target_fpr: float
    threshold_: float | None

    def fit(self, x: Tensor, y: Tensor) -> Detector: ...

    def calibrate(self, x_clean: Tensor) -> Detector: ...

    def score(self, x: Tensor) -> Tensor: ...

    def predict(self, x: Tensor) -> Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...


def check_fpr(target_fpr: float) -> float:
    if not 0 < target_fpr < 1:
        raise ConfigError(f"target_fpr must be in (0, 1), got {target_fpr}")
    return float(target_fpr)


def threshold_for_fpr(scores: Tensor, target_fpr: float) -> float:
    """The smallest threshold t with mean(scores > t) <= target_fpr (an order statistic, no interpolation).

    Flagging is ``score > t``; with n calibration scores, at most floor(n * target_fpr) of them exceed t.
    """
    if scores.numel() == 0:
        raise InputValidationError("cannot calibrate a detector on zero clean examples")
    if not torch.isfinite(scores).all():
        raise InputValidationError("calibration scores contain NaN or infinite values")
    s = scores.detach().flatten().double().sort().values
    n = s.numel()
    allowed = int(n * target_fpr)  # how many clean scores may lie above the threshold
    return float(s[n - allowed - 1])


def require_fitted(threshold: float | None, name: str) -> float:
    if threshold is None:
        raise NotFittedError(f"{name} is not calibrated: call fit(...) then calibrate(...) first")
    return threshold


@runtime_checkable
class DifferentiableDetector(Protocol):
    """A detector whose score has a useful gradient wrt x: ``soft_score`` keeps the autograd graph.

    Detector-aware attacks descend it (Carlini & Wagner 2017, "Adversarial examples are not easily
    detected"). ``randomized = True`` means the score draws fresh noise per call (use EOT).
    """

    def soft_score(self, x: Tensor) -> Tensor: ...


def chunked(fn: Callable[[Tensor], Tensor], x: Tensor, size: int = CHUNK) -> Tensor:
    """fn over x in chunks, concatenated: bounds memory for detectors with (N, R) distance matrices."""
    if len(x) == 0:
        raise InputValidationError("cannot score an empty batch")
    return torch.cat([fn(x[i : i + size]) for i in range(0, len(x), size)])


def model_device(model: Any) -> torch.device:
    params = list(model.parameters()) if hasattr(model, "parameters") else []
    return params[0].device if params else torch.device("cpu")
