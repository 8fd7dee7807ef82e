"""Statistical detectors of adversarial inputs, fitted on clean data and calibrated to a target FPR."""

from bastion.defenses.detectors.base import Detector, threshold_for_fpr
from bastion.defenses.detectors.mahalanobis import MahalanobisDetector

__all__ = ["Detector", "MahalanobisDetector", "threshold_for_fpr"]
