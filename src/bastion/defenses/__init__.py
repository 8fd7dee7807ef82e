"""Phase two: the runtime defense (input transforms, detectors, the defended classifier)."""

from bastion.defenses.detectors import Detector, MahalanobisDetector
from bastion.defenses.pipeline import Decision, DefendedClassifier
from bastion.defenses.transforms import TRANSFORMS, BitDepth, InputTransform, MedianFilter

__all__ = [
    "TRANSFORMS",
    "BitDepth",
    "Decision",
    "DefendedClassifier",
    "Detector",
    "InputTransform",
    "MahalanobisDetector",
    "MedianFilter",
]
