"""Mahalanobis detector on penultimate-layer features (Lee et al. 2018, arXiv:1807.03888).

Class-conditional Gaussians with one shared covariance, fitted on clean training features; the score is
the distance to the closest class mean. Adversarial inputs tend to land far from every class cluster.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bastion.attacks.base import evaluating
from bastion.defenses.detectors.base import check_fpr, chunked, require_fitted, threshold_for_fpr
from bastion.errors import InputValidationError, NotFittedError


class MahalanobisDetector:
    """Needs a model with ``features(x) -> (N, D)`` (every bastion model has it).

    Args:
        model: the classifier whose features are scored.
        target_fpr: share of clean inputs flagged after ``calibrate``.
        shrinkage: ridge added to the covariance diagonal, relative to its mean variance.
    """

    def __init__(self, model: Any, *, target_fpr: float = 0.05, shrinkage: float = 1e-3) -> None:
        self.model = model
        self.target_fpr = check_fpr(target_fpr)
        self.shrinkage = shrinkage
        self.means_: Tensor | None = None
        self.precision_: Tensor | None = None
        self.threshold_: float | None = None

    @torch.no_grad()
    def _features(self, x: Tensor) -> Tensor:
        with evaluating(self.model):
            return torch.cat([self.model.features(x[i : i + 512]) for i in range(0, len(x), 512)]).double()

    def fit(self, x: Tensor, y: Tensor) -> MahalanobisDetector:
        feats = self._features(x)
        classes = torch.unique(y)
        means = torch.zeros(int(y.max()) + 1, feats.shape[1], dtype=feats.dtype, device=feats.device)
        centered = []
        for c in classes:
            fc = feats[y == c]
            means[c] = fc.mean(0)
            centered.append(fc - means[c])
        z = torch.cat(centered)
        cov = z.T @ z / max(len(z) - 1, 1)
        ridge = self.shrinkage * cov.diagonal().mean().clamp_min(1e-12)
        cov = cov + ridge * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        self.means_ = means[classes]
        self.precision_ = torch.linalg.inv(cov)
        return self

    kind = "mahalanobis"
    randomized = False

    def score(self, x: Tensor) -> Tensor:
        """(N,) squared Mahalanobis distance to the closest class mean; higher = more suspicious."""
        if self.means_ is None or self.precision_ is None:
            raise NotFittedError("MahalanobisDetector.score called before fit")
        return self._distance(self._features(x)).float()

    def soft_score(self, x: Tensor) -> Tensor:
        """The same score with its autograd graph wrt x (for detector-aware attacks)."""
        if self.means_ is None or self.precision_ is None:
            raise NotFittedError("MahalanobisDetector.soft_score called before fit")
        return chunked(lambda xs: self._distance(self.model.features(xs).double()).to(xs.dtype), x)

    def _distance(self, feats: Tensor) -> Tensor:
        assert self.means_ is not None and self.precision_ is not None
        # (f - m)' P (f - m) = f'Pf - 2 f'Pm + m'Pm, as matrix products instead of an (N, C, D) tensor.
        fp = feats @ self.precision_
        mp = self.means_ @ self.precision_
        d2 = (fp * feats).sum(1, keepdim=True) - 2 * fp @ self.means_.T + (mp * self.means_).sum(1)[None, :]
        return d2.clamp_min(0).min(dim=1).values

    def calibrate(self, x_clean: Tensor) -> MahalanobisDetector:
        self.threshold_ = threshold_for_fpr(self.score(x_clean), self.target_fpr)
        return self

    def predict(self, x: Tensor) -> Tensor:
        """(N,) bool: flagged as adversarial."""
        return self.score(x) > require_fitted(self.threshold_, "MahalanobisDetector")

    def state_dict(self) -> dict[str, Any]:
        if self.means_ is None or self.precision_ is None:
            raise NotFittedError("cannot save an unfitted MahalanobisDetector")
        return {
            "kind": "mahalanobis",
            "target_fpr": self.target_fpr,
            "shrinkage": self.shrinkage,
            "threshold": self.threshold_,
            "means": self.means_.cpu(),
            "precision": self.precision_.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> MahalanobisDetector:
        if state.get("kind") != "mahalanobis":
            raise InputValidationError(f"not a Mahalanobis detector state: kind={state.get('kind')!r}")
        self.target_fpr = check_fpr(float(state["target_fpr"]))
        self.shrinkage = float(state["shrinkage"])
        self.threshold_ = None if state["threshold"] is None else float(state["threshold"])
        self.means_ = torch.as_tensor(state["means"], dtype=torch.float64)
        self.precision_ = torch.as_tensor(state["precision"], dtype=torch.float64)
        return self
