"""Several detectors as one anomaly score, calibrated jointly to one false-positive rate.

Raw scores live on different scales (a squared distance, an L1 gap, a z-score), so each member's score
is first normalized on clean held-out data: ``z_i = (s_i - median_i) / (q_i - median_i)`` with ``q_i``
the member's clean (1 - target_fpr) quantile, so z_i = 1 is where that member alone would flag. The
combined score is ``max_i z_i`` and its threshold is calibrated on the same clean data, so the union
of members flags the target share of clean inputs, not the sum of their FPRs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bastion.defenses.detectors.base import Detector, check_fpr, require_fitted, threshold_for_fpr
from bastion.errors import ConfigError, InputValidationError, NotFittedError


class CombinedDetector:
    """``score = max_i (s_i - median_i) / (q_i - median_i)`` over member detectors (see module doc).

    Args:
        members: detectors; ``fit`` fits them all on the same clean training data.
        target_fpr: share of clean inputs the combined score flags after ``calibrate``.
    """

    kind = "combined"

    def __init__(self, members: Sequence[Detector], *, target_fpr: float = 0.05) -> None:
        if not members:
            raise ConfigError("CombinedDetector needs at least one member detector")
        self.members = list(members)
        self.target_fpr = check_fpr(target_fpr)
        self.center_: Tensor | None = None
        self.scale_: Tensor | None = None
        self.threshold_: float | None = None

    @property
    def randomized(self) -> bool:
        return any(bool(getattr(m, "randomized", False)) for m in self.members)

    def fit(self, x: Tensor, y: Tensor) -> CombinedDetector:
        for m in self.members:
            m.fit(x, y)
        return self

    def calibrate(self, x_clean: Tensor) -> CombinedDetector:
        """Per-member normalization and member thresholds, then the combined threshold, all on x_clean."""
        raw = torch.stack([m.score(x_clean).double() for m in self.members], dim=1)  # (N, M)
        for m, s in zip(self.members, raw.T, strict=True):
            m.threshold_ = threshold_for_fpr(s, m.target_fpr)
        self.center_ = raw.median(dim=0).values
        q = torch.stack([torch.tensor(threshold_for_fpr(s, self.target_fpr), dtype=s.dtype) for s in raw.T])
        spread = raw.std(dim=0).clamp_min(1e-12)
        self.scale_ = torch.maximum(q.to(raw.device) - self.center_, 1e-3 * spread).clamp_min(1e-12)
        self.threshold_ = threshold_for_fpr(self._combine(raw), self.target_fpr)
        return self

    def _combine(self, raw: Tensor) -> Tensor:
        if self.center_ is None or self.scale_ is None:
            raise NotFittedError("CombinedDetector used before calibrate")
        center, scale = self.center_.to(raw.device, raw.dtype), self.scale_.to(raw.device, raw.dtype)
        return ((raw - center) / scale).amax(dim=1)

    @torch.no_grad()
    def score(self, x: Tensor) -> Tensor:
        return self._combine(torch.stack([m.score(x).double() for m in self.members], dim=1)).float()

    def soft_score(self, x: Tensor) -> Tensor:
        """Differentiable where members are (members without ``soft_score`` contribute constants)."""
        parts = []
        for m in self.members:
            fn = getattr(m, "soft_score", None)
            parts.append(fn(x) if fn is not None else m.score(x).to(x.dtype))
        return self._combine(torch.stack(parts, dim=1))

    def predict(self, x: Tensor) -> Tensor:
        return self.score(x) > require_fitted(self.threshold_, "CombinedDetector")

    def state_dict(self) -> dict[str, Any]:
        if self.center_ is None or self.scale_ is None:
            raise NotFittedError("cannot save an uncalibrated CombinedDetector")
        return {
            "kind": self.kind,
            "target_fpr": self.target_fpr,
            "threshold": self.threshold_,
            "center": self.center_.cpu(),
            "scale": self.scale_.cpu(),
            "members": [m.state_dict() for m in self.members],
        }

    def load_state_dict(self, state: dict[str, Any]) -> CombinedDetector:
        if state.get("kind") != self.kind:
            raise InputValidationError(f"not a combined detector state: kind={state.get('kind')!r}")
        self.target_fpr = check_fpr(float(state["target_fpr"]))
        self.threshold_ = None if state["threshold"] is None else float(state["threshold"])
        self.center_ = torch.as_tensor(state["center"], dtype=torch.float64)
        self.scale_ = torch.as_tensor(state["scale"], dtype=torch.float64)
        return self
