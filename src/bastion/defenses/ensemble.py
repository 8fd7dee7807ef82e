"""An adaptive ensemble: members vote with per-input weights from their confidence and their detectors.

Weighting rule, per input x and member m with softmax output p_m(x):

    c_m(x) = max_j p_m(x)_j                                  member confidence
    e_m(x) = max(0, s_m(x) - t_m) / max(|t_m|, 1e-6)          relative excess of m's detector score over
                                                             its calibrated threshold (0 without detector)
    w_m(x) = a_m * c_m(x) ** gamma * exp(-beta * e_m(x))      a_m >= 0: fixed prior weight of the member
    p(x)   = sum_m w_m(x) p_m(x) / sum_m w_m(x)

``forward`` returns ``log p(x)``: log-probabilities (valid logits for softmax/argmax/cross-entropy,
since softmax(log p) = p). A member with a_m = 0 has no influence at all; a member that is confident on
an input dominates there and yields where it is uncertain; a member whose own detector fires is
discounted exponentially. Disagreement, ``D(x) = sum_m w~_m(x) * TV(p_m(x), p(x))`` (w~ normalized
weights, TV the total-variation distance), is in [0, 1] and feeds the anomaly score through
:class:`DisagreementDetector`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bastion.attacks.base import evaluating
from bastion.defenses.detectors.base import Detector, check_fpr, chunked, require_fitted, threshold_for_fpr
from bastion.errors import ConfigError, InputValidationError


@dataclass(frozen=True)
class EnsembleOutput:
    """Per input: log p (N, C), member probabilities (M, N, C), normalized weights (M, N), disagreement (N,)."""

    log_probs: Tensor
    member_probs: Tensor
    weights: Tensor
    disagreement: Tensor


class AdaptiveEnsemble(nn.Module):
    """A classifier (x -> log-probabilities) over ``members``, weighted per input (see module doc).

    Args:
        members: classifiers x -> logits (models, or DefendedClassifier with their own transforms).
        prior_weights: a_m >= 0, at least one > 0; default all 1.
        detectors: one fitted, calibrated detector (or None) per member, scoring the raw input.
        gamma: confidence exponent (0 = confidence ignored).
        beta: detector penalty strength (0 = detectors ignored).
    """

    def __init__(
        self,
        members: Sequence[nn.Module],
        *,
        prior_weights: Sequence[float] | None = None,
        detectors: Sequence[Detector | None] | None = None,
        gamma: float = 1.0,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        if len(members) < 1:
            raise ConfigError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        priors = [1.0] * len(members) if prior_weights is None else [float(a) for a in prior_weights]
        if len(priors) != len(members):
            raise ConfigError(f"{len(priors)} prior weights for {len(members)} members")
        if any(a < 0 for a in priors) or not any(a > 0 for a in priors):
            raise ConfigError(f"prior weights must be >= 0 with at least one > 0, got {priors}")
        self.register_buffer("prior", torch.tensor(priors))
        self.detectors = list(detectors) if detectors is not None else [None] * len(members)
        if len(self.detectors) != len(members):
            raise ConfigError(f"{len(self.detectors)} detectors for {len(members)} members")
        if gamma < 0 or beta < 0:
            raise ConfigError(f"gamma and beta must be >= 0, got gamma={gamma}, beta={beta}")
        self.gamma = gamma
        self.beta = beta

    @property
    def randomized(self) -> bool:
        return any(bool(getattr(d, "randomized", False)) for d in self.detectors if d is not None)

    def _excess(self, detector: Detector | None, x: Tensor) -> Tensor:
        if detector is None or self.beta == 0:
            return torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        threshold = require_fitted(detector.threshold_, type(detector).__name__)
        fn = getattr(detector, "soft_score", None)
        score = fn(x) if fn is not None else detector.score(x)
        return (score.to(x.dtype) - threshold).clamp_min(0) / max(abs(threshold), 1e-6)

    def explain(self, x: Tensor) -> EnsembleOutput:
        """Everything the weighting rule computes, with autograd graphs intact."""
        probs = torch.stack([m(x).softmax(dim=1) for m in self.members])  # (M, N, C)
        confidence = probs.amax(dim=2)
        prior = self._prior().to(x.dtype)[:, None]
        penalty = torch.stack([self._excess(d, x) for d in self.detectors])  # (M, N)
        raw = prior * confidence.pow(self.gamma) * torch.exp(-self.beta * penalty)
        weights = raw / raw.sum(dim=0, keepdim=True).clamp_min(1e-30)
        mixture = (weights[:, :, None] * probs).sum(dim=0)
        tv = 0.5 * (probs - mixture[None]).abs().sum(dim=2)  # (M, N)
        disagreement = (weights * tv).sum(dim=0)
        return EnsembleOutput(mixture.clamp_min(1e-12).log(), probs, weights, disagreement)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C) log-probabilities of the weighted vote."""
        return self.explain(x).log_probs

    def disagreement(self, x: Tensor) -> Tensor:
        """(N,) weighted total-variation distance of members from the vote, in [0, 1]."""
        return self.explain(x).disagreement

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features of the first member with positive prior weight (for feature detectors)."""
        return self.members[self._first()].features(x)  # type: ignore[operator]

    def head(self, feats: Tensor) -> Tensor:
        return self.members[self._first()].head(feats)  # type: ignore[operator]

    def _prior(self) -> Tensor:
        prior = self.prior
        assert isinstance(prior, Tensor)
        return prior

    def _first(self) -> int:
        """Index of the first member with positive prior weight."""
        return int((self._prior() > 0).nonzero()[0])


class DisagreementDetector:
    """Ensemble disagreement as an anomaly score: adversarial inputs rarely fool every member alike."""

    kind = "disagreement"

    def __init__(self, ensemble: Any, *, target_fpr: float = 0.05) -> None:
        self.ensemble = ensemble
        self.target_fpr = check_fpr(target_fpr)
        self.threshold_: float | None = None

    @property
    def randomized(self) -> bool:
        return bool(getattr(self.ensemble, "randomized", False))

    def fit(self, x: Tensor, y: Tensor | None = None) -> DisagreementDetector:
        """Nothing to learn; kept for the detector contract."""
        if not isinstance(self.ensemble, AdaptiveEnsemble):
            raise ConfigError("DisagreementDetector needs an AdaptiveEnsemble")
        return self

    def soft_score(self, x: Tensor) -> Tensor:
        return chunked(self.ensemble.disagreement, x)

    @torch.no_grad()
    def score(self, x: Tensor) -> Tensor:
        with evaluating(self.ensemble):
            return self.soft_score(x).float()

    def calibrate(self, x_clean: Tensor) -> DisagreementDetector:
        self.threshold_ = threshold_for_fpr(self.score(x_clean), self.target_fpr)
        return self

    def predict(self, x: Tensor) -> Tensor:
        return self.score(x) > require_fitted(self.threshold_, "DisagreementDetector")

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target_fpr": self.target_fpr, "threshold": self.threshold_}

    def load_state_dict(self, state: dict[str, Any]) -> DisagreementDetector:
        if state.get("kind") != self.kind:
            raise InputValidationError(f"not a disagreement detector state: kind={state.get('kind')!r}")
        self.target_fpr = check_fpr(float(state["target_fpr"]))
        self.threshold_ = None if state["threshold"] is None else float(state["threshold"])
        return self
