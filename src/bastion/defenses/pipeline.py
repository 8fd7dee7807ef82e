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

from bastion.attacks.base import checked_logits, evaluating
from bastion.defenses.detectors.base import Detector, check_fpr, require_fitted, threshold_for_fpr
from bastion.defenses.detectors.combined import CombinedDetector
from bastion.defenses.transforms import InputTransform, check_in_domain, is_randomized
from bastion.domain import InputDomain
from bastion.errors import ConfigError, InputValidationError, NotFittedError

#: Decision policy outcomes, indexed by ``Decision.actions``.
ACTIONS = ("accept", "flag", "reject")
ACCEPT, FLAG, REJECT = 0, 1, 2


@dataclass(frozen=True)
class Decision:
    """Per input: label, softmax confidence, anomaly score (nan without a detector), flag, and action.

    ``actions`` (N,) int64 indexes ``ACTIONS``: accept, flag (return the label with a warning) or reject.
    A rejected input is also flagged. ``probabilities`` (N, C) is the softmax the label was taken from.
    """

    labels: Tensor
    confidence: Tensor
    scores: Tensor
    flagged: Tensor
    actions: Tensor | None = None
    probabilities: Tensor | None = None

    def action_names(self) -> list[str]:
        acts = self.actions if self.actions is not None else self.flagged.long()
        return [ACTIONS[int(a)] for a in acts]


def check_decide_batch(x: Tensor) -> None:
    """``decide`` takes a non-empty floating batch (N, ...); anything else is a clear error, not a traceback."""
    if not isinstance(x, Tensor):
        raise InputValidationError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputValidationError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise InputValidationError(f"x must be a non-empty batch of shape (N, ...), got shape {tuple(x.shape)}")


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
        check_decide_batch(x)
        with evaluating(self):
            probs = checked_logits(self, x, finite=False).softmax(dim=1)
        confidence, labels = probs.max(dim=1)
        broken = ~torch.isfinite(probs).all(dim=1)  # non-finite logits: never a usable label
        if self.detector is None:
            scores = torch.full_like(confidence, float("nan"))
            flagged = broken
        else:
            scores = self.detector.score(x)
            flagged = self.detector.predict(x) | ~torch.isfinite(scores) | broken  # fail closed
        return Decision(labels, confidence, scores, flagged, probabilities=probs)

    def detection_margin(self, x: Tensor) -> Tensor:
        """(N,) differentiable ``(score - threshold) / scale``: > 0 means flagged.

        The scale is the distance from the clean median score to the threshold when the defense was
        calibrated (so 0 = at the threshold, -1 = a typical clean input); else |threshold|. Detector-aware
        attacks descend it (``bastion.attacks.adaptive``).
        """
        detector = self.detector
        if detector is None:
            raise ConfigError("this defense has no detector")
        threshold = require_fitted(detector.threshold_, type(detector).__name__)
        center = getattr(self, "score_center_", None)
        scale = threshold - center if center is not None and threshold > center else max(abs(threshold), 1e-6)
        fn = getattr(detector, "soft_score", None)
        score = fn(x) if fn is not None else detector.score(x)
        return (score.to(x.dtype) - threshold) / scale

    def describe(self) -> dict[str, Any]:
        detector = None
        if self.detector is not None:
            detector = {
                "kind": type(self.detector).__name__,
                "target_fpr": self.detector.target_fpr,
                "threshold": self.detector.threshold_,
            }
        return {"transforms": [t.to_dict() for t in self.transforms], "detector": detector}


class Defense(DefendedClassifier):
    """The hybrid runtime defense: domain check -> transforms -> model (or ensemble); detectors -> policy.

    ``forward`` (the attack surface) is ``model(transforms(x))``. ``decide`` returns per input the label,
    the confidence (max softmax), the anomaly score (one detector's score, or the combined normalized
    score of several, see :class:`CombinedDetector`), the flag and the action of the decision policy:

        score <= flag threshold            -> accept
        flag < score <= reject threshold   -> flag   (label returned with a warning)
        score > reject threshold           -> reject (no label should be used)
        score or logits NaN / infinite     -> reject (fail closed)

    The flag threshold is calibrated on clean held-out data to ``target_fpr``, the reject threshold to
    the stricter ``reject_fpr`` (so about ``reject_fpr`` of clean inputs are rejected).

    Args:
        model: classifier or AdaptiveEnsemble.
        transforms: input transforms applied in order before the model.
        detectors: fitted or unfitted detectors; several are combined into one CombinedDetector.
        domain: legal inputs; ``decide`` raises InputValidationError for anything outside it.
        target_fpr: flag rate on clean data.
        reject_fpr: reject rate on clean data; default target_fpr / 5.
    """

    def __init__(
        self,
        model: nn.Module,
        transforms: Sequence[InputTransform] = (),
        detectors: Sequence[Detector] = (),
        *,
        domain: InputDomain | None = None,
        target_fpr: float = 0.05,
        reject_fpr: float | None = None,
    ) -> None:
        self.target_fpr = check_fpr(target_fpr)
        self.reject_fpr = check_fpr(reject_fpr if reject_fpr is not None else target_fpr / 5)
        if self.reject_fpr > self.target_fpr:
            raise ConfigError(f"reject_fpr ({self.reject_fpr}) must not exceed target_fpr ({self.target_fpr})")
        detector: Detector | None
        if len(detectors) == 0:
            detector = None
        elif len(detectors) == 1:
            detector = detectors[0]
            detector.target_fpr = self.target_fpr
        else:
            detector = CombinedDetector(list(detectors), target_fpr=self.target_fpr)
        super().__init__(model, transforms, detector)
        self.domain = domain
        self.reject_threshold_: float | None = None
        self.score_center_: float | None = None

    @property
    def randomized(self) -> bool:
        parts = [*self.transforms, self.model, self.detector]
        return any(is_randomized(p) for p in parts if p is not None)

    def fit(self, x: Tensor, y: Tensor) -> Defense:
        """Fit the detectors on clean training data."""
        if self.detector is not None:
            self.detector.fit(x, y)
        return self

    def calibrate(self, x_clean: Tensor) -> Defense:
        """Flag and reject thresholds from clean held-out data."""
        if self.detector is None:
            return self
        self.detector.calibrate(x_clean)
        scores = self.detector.score(x_clean)
        self.reject_threshold_ = max(threshold_for_fpr(scores, self.reject_fpr), float(self.detector.threshold_ or 0))
        self.score_center_ = float(scores.double().median())
        return self

    def check(self, x: Tensor) -> None:
        """Raise InputValidationError if x is not a finite batch inside the domain."""
        if self.domain is not None:
            check_in_domain(x, self.domain)

    @torch.no_grad()
    def decide(self, x: Tensor) -> Decision:
        check_decide_batch(x)
        self.check(x)
        with evaluating(self):
            probs = checked_logits(self, x, finite=False).softmax(dim=1)
        confidence, labels = probs.max(dim=1)
        broken = ~torch.isfinite(probs).all(dim=1)  # non-finite logits: the label means nothing
        if self.detector is None:
            nan = torch.full_like(confidence, float("nan"))
            actions = torch.where(broken, REJECT, ACCEPT)
            return Decision(labels, confidence, nan, broken, actions.long(), probs)
        threshold = require_fitted(self.detector.threshold_, type(self.detector).__name__)
        if self.reject_threshold_ is None:
            raise NotFittedError("Defense is not calibrated: call fit(...) then calibrate(...) first")
        scores = self.detector.score(x)
        # Fail closed: a NaN or infinite score (a corrupted detector, an input it cannot score) rejects;
        # NaN compares False with every threshold, so without this it would be accepted.
        unscorable = ~torch.isfinite(scores) | broken
        flagged = (scores > threshold) | unscorable
        rejected = (scores > self.reject_threshold_) | unscorable
        actions = torch.where(rejected, REJECT, torch.where(flagged, FLAG, ACCEPT))
        return Decision(labels, confidence, scores, flagged, actions.long(), probs)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.detector is not None and out["detector"] is not None:
            out["detector"]["reject_fpr"] = self.reject_fpr
            out["detector"]["reject_threshold"] = self.reject_threshold_
            members = getattr(self.detector, "members", None)
            if members is not None:
                out["detector"]["members"] = [type(m).__name__ for m in members]
        out["model"] = type(self.model).__name__
        out["randomized"] = self.randomized
        return out


def detection_margin(defended: DefendedClassifier, x: Tensor) -> Tensor:
    """(N,) differentiable detection margin of ``defended`` at x (see :meth:`DefendedClassifier.detection_margin`)."""
    return defended.detection_margin(x)
