"""Phase two: the runtime defense (input transforms, detectors, adaptive ensemble, the defense pipeline)."""

from bastion.defenses.detectors import (
    CombinedDetector,
    Detector,
    KDEDetector,
    LIDDetector,
    MahalanobisDetector,
    SqueezeDetector,
)
from bastion.defenses.ensemble import AdaptiveEnsemble, DisagreementDetector
from bastion.defenses.pipeline import ACTIONS, Decision, DefendedClassifier, Defense, detection_margin
from bastion.defenses.transforms import (
    TRANSFORMS,
    BitDepth,
    DomainRepair,
    GaussianNoise,
    InputTransform,
    JPEGQuantize,
    MedianFilter,
    SmoothedClassifier,
)

__all__ = [
    "ACTIONS",
    "TRANSFORMS",
    "AdaptiveEnsemble",
    "BitDepth",
    "CombinedDetector",
    "Decision",
    "DefendedClassifier",
    "Defense",
    "Detector",
    "DisagreementDetector",
    "DomainRepair",
    "GaussianNoise",
    "InputTransform",
    "JPEGQuantize",
    "KDEDetector",
    "LIDDetector",
    "MahalanobisDetector",
    "MedianFilter",
    "SmoothedClassifier",
    "SqueezeDetector",
    "detection_margin",
]
