"""Kernel density + Bayesian uncertainty detector (Feinman et al. 2017, arXiv:1703.00410).

Density: a Gaussian kernel density of the penultimate features, per class, fitted on clean training
features; an input is scored under the class the model predicts for it. Adversarial inputs moved into a
wrong class tend to sit in low-density regions of that class. Uncertainty: the variance of the softmax
output over T stochastic forward passes, ``U = 1/T sum_t p_t.p_t - pbar.pbar``.

Feinman et al. obtain the T passes from MC dropout. When the model has no dropout layer (bastion's
SmallCNN has none), this detector says so in ``uncertainty_source_`` and uses Gaussian input noise of
standard deviation ``noise_sigma`` instead (the same variance, over random input perturbations rather
than random weights). Feinman et al. combine the two features with a logistic regression trained on
adversarial examples; fitting here sees clean data only, so the score is the sum of the two features
standardized by their clean mean and standard deviation.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from bastion.attacks.base import evaluating
from bastion.defenses.detectors.base import check_fpr, chunked, model_device, require_fitted, threshold_for_fpr
from bastion.defenses.detectors.lid import pairwise_distance
from bastion.errors import ConfigError, InputValidationError, NotFittedError

UncertaintySource = Literal["auto", "dropout", "noise", "none"]


def has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())


class KDEDetector:
    """Score = z(-log density under the predicted class) + z(uncertainty).

    Args:
        model: classifier with ``features(x)`` and ``head``.
        target_fpr: share of clean inputs flagged after ``calibrate``.
        n_per_class: clean training features kept per class for the density.
        bandwidth: kernel width in feature units; None = the median distance between reference features
            of the same class (a standard heuristic; Feinman et al. tuned it per dataset).
        uncertainty: "dropout" (MC dropout; the model must have dropout), "noise" (input noise), "none",
            or "auto" (dropout when the model has it, else noise).
        n_passes: stochastic passes T for the uncertainty.
        noise_sigma: input noise for ``uncertainty="noise"``.
    """

    kind = "kde"

    def __init__(
        self,
        model: Any,
        *,
        target_fpr: float = 0.05,
        n_per_class: int = 100,
        bandwidth: float | None = None,
        uncertainty: UncertaintySource = "auto",
        n_passes: int = 8,
        noise_sigma: float = 0.1,
    ) -> None:
        self.model = model
        self.target_fpr = check_fpr(target_fpr)
        self.n_per_class = n_per_class
        self.bandwidth = bandwidth
        self.uncertainty = uncertainty
        self.n_passes = n_passes
        self.noise_sigma = noise_sigma
        self.reference_: Tensor | None = None  # (K, M, D) class reference features
        self.bandwidth_: float | None = None
        self.uncertainty_source_: str | None = None
        self.mean_: Tensor | None = None  # (2,) clean means of (negative log density, uncertainty)
        self.std_: Tensor | None = None
        self.threshold_: float | None = None

    @property
    def randomized(self) -> bool:
        return self.uncertainty_source_ in ("dropout", "noise")

    def _resolve_source(self) -> str:
        if self.uncertainty not in ("auto", "dropout", "noise", "none"):
            raise ConfigError(f"unknown uncertainty source {self.uncertainty!r}")
        dropout = has_dropout(self.model)
        if self.uncertainty == "dropout" and not dropout:
            raise ConfigError("uncertainty='dropout' needs a model with dropout layers; use 'noise' or 'auto'")
        if self.uncertainty == "auto":
            return "dropout" if dropout else "noise"
        return self.uncertainty

    def fit(self, x: Tensor, y: Tensor) -> KDEDetector:
        """Keep up to ``n_per_class`` clean features per class; standardize on the remaining clean inputs."""
        self.uncertainty_source_ = self._resolve_source()
        with torch.no_grad(), evaluating(self.model):
            feats = chunked(self.model.features, x)
        classes = int(y.max()) + 1
        counts = torch.bincount(y, minlength=classes)
        m = min(self.n_per_class, int(counts.min()))
        if m < 2:
            raise InputValidationError(f"KDE needs at least 2 clean examples per class, got counts {counts.tolist()}")
        keep = torch.zeros(len(y), dtype=torch.bool, device=y.device)
        refs = []
        for c in range(classes):
            idx = (y == c).nonzero().squeeze(1)[:m]
            keep[idx] = True
            refs.append(feats[idx])
        self.reference_ = torch.stack(refs)
        if self.bandwidth is not None:
            self.bandwidth_ = float(self.bandwidth)
        else:
            dists = torch.stack([pairwise_distance(r, r) for r in self.reference_])
            off_diag = ~torch.eye(m, dtype=torch.bool, device=dists.device).expand_as(dists)
            self.bandwidth_ = float(dists[off_diag].median())
        if not (math.isfinite(self.bandwidth_) and self.bandwidth_ > 0):
            raise InputValidationError(f"KDE bandwidth must be > 0, got {self.bandwidth_}")
        rest = x[~keep][: 10 * m]
        if len(rest) < 10:
            rest = x
        self.mean_, self.std_ = torch.zeros(2, device=x.device), torch.ones(2, device=x.device)
        with torch.no_grad(), evaluating(self.model):
            raw = chunked(self._raw, rest)
        self.mean_ = raw.mean(dim=0)
        self.std_ = raw.std(dim=0).clamp_min(1e-6)
        return self

    def _raw(self, x: Tensor) -> Tensor:
        """(N, 2): negative log kernel density under the predicted class, and the predictive variance."""
        if self.reference_ is None or self.bandwidth_ is None:
            raise NotFittedError("KDEDetector used before fit")
        feats = self.model.features(x)
        logits = self.model.head(feats)
        refs = self.reference_[logits.argmax(dim=1).detach()]  # (N, M, D)
        d2 = ((feats[:, None, :] - refs) ** 2).sum(dim=2)
        log_density = torch.logsumexp(-d2 / (2 * self.bandwidth_**2), dim=1) - math.log(refs.shape[1])
        return torch.stack([-log_density, self._uncertainty(x, logits)], dim=1)

    def _uncertainty(self, x: Tensor, logits: Tensor) -> Tensor:
        if self.uncertainty_source_ == "none":
            return torch.zeros_like(logits[:, 0])
        probs = []
        dropout = [m for m in self.model.modules() if isinstance(m, nn.Dropout)]
        modes = [m.training for m in dropout]
        try:
            for _ in range(self.n_passes):
                if self.uncertainty_source_ == "dropout":
                    for m in dropout:
                        m.train()
                    probs.append(self.model(x).softmax(dim=1))
                else:
                    probs.append(self.model(x + self.noise_sigma * torch.randn_like(x)).softmax(dim=1))
        finally:
            for m, mode in zip(dropout, modes, strict=True):
                m.training = mode
        p = torch.stack(probs)  # (T, N, C)
        return (p * p).sum(dim=2).mean(dim=0) - (p.mean(dim=0) ** 2).sum(dim=1)

    def soft_score(self, x: Tensor) -> Tensor:
        """(N,) standardized density + uncertainty score, with its autograd graph wrt x (randomized)."""
        if self.mean_ is None or self.std_ is None:
            raise NotFittedError("KDEDetector used before fit")
        mean, std = self.mean_, self.std_
        return chunked(lambda xs: ((self._raw(xs) - mean) / std).sum(dim=1), x)

    @torch.no_grad()
    def score(self, x: Tensor) -> Tensor:
        with evaluating(self.model):
            return self.soft_score(x).float()

    def calibrate(self, x_clean: Tensor) -> KDEDetector:
        self.threshold_ = threshold_for_fpr(self.score(x_clean), self.target_fpr)
        return self

    def predict(self, x: Tensor) -> Tensor:
        return self.score(x) > require_fitted(self.threshold_, "KDEDetector")

    def state_dict(self) -> dict[str, Any]:
        if self.reference_ is None or self.mean_ is None or self.std_ is None:
            raise NotFittedError("cannot save an unfitted KDEDetector")
        return {
            "kind": self.kind,
            "target_fpr": self.target_fpr,
            "n_per_class": self.n_per_class,
            "bandwidth": self.bandwidth_,
            "uncertainty": self.uncertainty_source_,
            "n_passes": self.n_passes,
            "noise_sigma": self.noise_sigma,
            "threshold": self.threshold_,
            "reference": self.reference_.cpu(),
            "mean": self.mean_.cpu(),
            "std": self.std_.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> KDEDetector:
        if state.get("kind") != self.kind:
            raise InputValidationError(f"not a KDE detector state: kind={state.get('kind')!r}")
        device = model_device(self.model)
        self.target_fpr = check_fpr(float(state["target_fpr"]))
        self.n_per_class = int(state["n_per_class"])
        self.bandwidth = self.bandwidth_ = float(state["bandwidth"])
        self.uncertainty = self.uncertainty_source_ = state["uncertainty"]
        self.n_passes, self.noise_sigma = int(state["n_passes"]), float(state["noise_sigma"])
        self.threshold_ = None if state["threshold"] is None else float(state["threshold"])
        self.reference_ = torch.as_tensor(state["reference"]).to(device)
        self.mean_ = torch.as_tensor(state["mean"]).to(device)
        self.std_ = torch.as_tensor(state["std"]).to(device)
        return self
