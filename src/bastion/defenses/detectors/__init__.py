"""Statistical detectors of adversarial inputs, fitted on clean data and calibrated to a target FPR."""

from bastion.defenses.detectors.base import Detector, DifferentiableDetector, threshold_for_fpr
from bastion.defenses.detectors.combined import CombinedDetector
from bastion.defenses.detectors.kde import KDEDetector
from bastion.defenses.detectors.lid import LIDDetector
from bastion.defenses.detectors.mahalanobis import MahalanobisDetector
from bastion.defenses.detectors.registry import DETECTORS, build_detector, detector_from_state
from bastion.defenses.detectors.squeeze import SqueezeDetector

__all__ = [
    "DETECTORS",
    "CombinedDetector",
    "Detector",
    "DifferentiableDetector",
    "KDEDetector",
    "LIDDetector",
    "MahalanobisDetector",
    "SqueezeDetector",
    "build_detector",
    "detector_from_state",
    "threshold_for_fpr",
]
