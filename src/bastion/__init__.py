"""bastion: adversarial robustness for security-sensitive models, trained and evaluated honestly.

The public API is imported lazily so ``import bastion`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "bastion.models.checkpoint",
    "save_model": "bastion.models.checkpoint",
    "load_dataset": "bastion.data.catalog",
    "Dataset": "bastion.data.spec",
    "DatasetSpec": "bastion.data.spec",
    "Split": "bastion.data.spec",
    "BoxDomain": "bastion.domain",
    "ThreatModel": "bastion.threat",
    "Norm": "bastion._typing",
    "Misclassify": "bastion.goals",
    "Reach": "bastion.goals",
    "Diverge": "bastion.goals",
    "FGSM": "bastion.attacks",
    "PGD": "bastion.attacks",
    "ATTACKS": "bastion.attacks",
    "DefendedClassifier": "bastion.defenses",
    "MahalanobisDetector": "bastion.defenses",
    "BitDepth": "bastion.defenses",
    "MedianFilter": "bastion.defenses",
    "fit": "bastion.training",
    "progressive": "bastion.training",
    "evaluate": "bastion.evaluation.evaluate",
    "evaluate_defense": "bastion.evaluation.evaluate",
    "evaluate_module": "bastion.app.evaluate",
}

__all__ = [
    "ATTACKS",
    "FGSM",
    "PGD",
    "BitDepth",
    "BoxDomain",
    "Dataset",
    "DatasetSpec",
    "DefendedClassifier",
    "Diverge",
    "MahalanobisDetector",
    "MedianFilter",
    "Misclassify",
    "Norm",
    "Reach",
    "Split",
    "ThreatModel",
    "__version__",
    "evaluate",
    "evaluate_defense",
    "evaluate_module",
    "fit",
    "load_dataset",
    "load_model",
    "progressive",
    "save_model",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bastion' has no attribute {name!r}")


if TYPE_CHECKING:
    from bastion._typing import Norm
    from bastion.app.evaluate import evaluate_module
    from bastion.attacks import ATTACKS, FGSM, PGD
    from bastion.data.catalog import load_dataset
    from bastion.data.spec import Dataset, DatasetSpec, Split
    from bastion.defenses import BitDepth, DefendedClassifier, MahalanobisDetector, MedianFilter
    from bastion.domain import BoxDomain
    from bastion.evaluation.evaluate import evaluate, evaluate_defense
    from bastion.goals import Diverge, Misclassify, Reach
    from bastion.models.checkpoint import load_model, save_model
    from bastion.threat import ThreatModel
    from bastion.training import fit, progressive
