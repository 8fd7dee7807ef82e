"""Detectors by name: the one table the defense config validates against, ``build_defense`` builds from
and a saved defense is restored with.

A registered factory takes the defended model and ``target_fpr``. Two kinds are restored from a saved
state but never built by name: ``combined`` (made of other detectors, see :class:`CombinedDetector`) and
``disagreement`` (it reads an :class:`~bastion.defenses.ensemble.AdaptiveEnsemble`, not a plain model).
"""

from __future__ import annotations

from typing import Any

import torch

from bastion.defenses.detectors.base import Detector
from bastion.defenses.detectors.combined import CombinedDetector
from bastion.defenses.detectors.kde import KDEDetector
from bastion.defenses.detectors.lid import LIDDetector
from bastion.defenses.detectors.mahalanobis import MahalanobisDetector
from bastion.defenses.detectors.squeeze import SqueezeDetector
from bastion.defenses.ensemble import DisagreementDetector
from bastion.errors import InputValidationError
from bastion.registry import Registry

DETECTORS: Registry[Detector] = Registry("detector")
DETECTORS.register("mahalanobis")(MahalanobisDetector)
DETECTORS.register("lid")(LIDDetector)
DETECTORS.register("kde")(KDEDetector)
DETECTORS.register("squeeze")(SqueezeDetector)  # squeezing by 3-bit depth and a 2x2 median

#: Kinds a saved state may hold besides the registered names (see the module docstring).
RESTORED_ONLY: dict[str, Any] = {DisagreementDetector.kind: DisagreementDetector}


def build_detector(name: str, model: Any, target_fpr: float) -> Detector:
    """The registered detector ``name`` around ``model``, flagging ``target_fpr`` of clean inputs once calibrated."""
    return DETECTORS.create(name, model=model, target_fpr=target_fpr)


def detector_from_state(state: dict[str, Any], model: Any) -> Any:
    """Rebuild a fitted detector of any kind from ``state_dict()`` output (tensors already loaded)."""
    kind = state.get("kind")
    if kind == CombinedDetector.kind:
        members = [detector_from_state(s, model) for s in state["members"]]
        return CombinedDetector(members).load_state_dict(state)
    kinds = {**{name: DETECTORS.get(name) for name in DETECTORS.names()}, **RESTORED_ONLY}
    if kind not in kinds:
        known = ", ".join(sorted(kinds))
        raise InputValidationError(f"unknown detector kind {kind!r}; known: {known}, {CombinedDetector.kind}")
    detector = kinds[kind](model).load_state_dict(state)
    device = next(iter(model.parameters())).device if hasattr(model, "parameters") else torch.device("cpu")
    if isinstance(detector, MahalanobisDetector) and detector.means_ is not None and detector.precision_ is not None:
        detector.means_, detector.precision_ = detector.means_.to(device), detector.precision_.to(device)
    return detector
