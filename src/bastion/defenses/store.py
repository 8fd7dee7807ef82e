"""Build, save and load a runtime defense around a saved model (JSON + safetensors, never pickle).

``defense.json`` holds the transforms, the policy and each detector's scalar state; every tensor of the
detector state goes to ``detector.safetensors`` under a path-like key and is referenced from the JSON
as ``{"$tensor": KEY}``. Format 1 (Mahalanobis only, from bastion 0.1) is still read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from bastion.data.spec import Split
from bastion.defenses.config import DefenseConfig
from bastion.defenses.detectors.registry import build_detector, detector_from_state
from bastion.defenses.ensemble import AdaptiveEnsemble
from bastion.defenses.pipeline import DefendedClassifier, Defense
from bastion.defenses.transforms import transform_from_dict
from bastion.domain import BoxDomain, InputDomain
from bastion.errors import CheckpointError
from bastion.io import atomic_write_bytes, atomic_write_json

FORMAT = 2


def build_defense(
    model: nn.Module, cfg: DefenseConfig, train: Split, val: Split, *, domain: InputDomain | None = None
) -> Defense:
    """Transforms from cfg (through TRANSFORMS); detectors (through DETECTORS) fitted on clean train data,
    calibrated on clean val data."""
    transforms = [transform_from_dict(spec) for spec in cfg.transform_specs()]
    detectors = [build_detector(name, model, cfg.target_fpr) for name in cfg.detectors]
    defense = Defense(
        model,
        transforms,
        detectors,
        domain=domain,
        target_fpr=cfg.target_fpr,
        reject_fpr=cfg.reject_fpr,
    )
    return defense.fit(train.x, train.y).calibrate(val.x)


def _split_tensors(obj: Any, key: str, tensors: dict[str, Tensor]) -> Any:
    """Replace every tensor in a nested state by a reference; collect the tensors."""
    if isinstance(obj, Tensor):
        tensors[key] = obj.detach().cpu().contiguous()
        return {"$tensor": key}
    if isinstance(obj, dict):
        return {k: _split_tensors(v, f"{key}.{k}" if key else k, tensors) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_split_tensors(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join_tensors(obj: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"$tensor"}:
            if obj["$tensor"] not in tensors:
                raise CheckpointError(f"detector tensor {obj['$tensor']!r} missing from detector.safetensors")
            return tensors[obj["$tensor"]]
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def save_defense(defended: DefendedClassifier, directory: Path) -> Path:
    """Write defense.json + detector.safetensors. The model itself is saved separately (bastion.models.checkpoint)."""
    if isinstance(defended.model, AdaptiveEnsemble):
        raise CheckpointError("a defense around an AdaptiveEnsemble cannot be saved yet: save each member model")
    tensors: dict[str, Tensor] = {}
    detector = None if defended.detector is None else _split_tensors(defended.detector.state_dict(), "", tensors)
    policy: dict[str, Any] = {}
    if isinstance(defended, Defense):
        domain = defended.domain
        policy = {
            "target_fpr": defended.target_fpr,
            "reject_fpr": defended.reject_fpr,
            "reject_threshold": defended.reject_threshold_,
            "score_center": defended.score_center_,
            "domain": domain.to_dict() if domain is not None else None,
        }
    atomic_write_bytes(directory / "detector.safetensors", st_save(tensors or {"empty": torch.zeros(0)}))
    atomic_write_json(
        directory / "defense.json",
        {
            "format": FORMAT,
            "transforms": [t.to_dict() for t in defended.transforms],
            "detector": detector,
            "policy": policy,
        },
    )
    return directory


def load_defense(directory: Path, model: nn.Module) -> Defense:
    try:
        d = json.loads((directory / "defense.json").read_text())
        tensors = st_load((directory / "detector.safetensors").read_bytes())
    except (OSError, json.JSONDecodeError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read defense in {directory}: {exc}") from exc
    fmt = d.get("format")
    if fmt not in (1, FORMAT):
        raise CheckpointError(f"{directory}/defense.json: unsupported format {fmt!r}")
    transforms = [transform_from_dict(t) for t in d["transforms"]]
    state: dict[str, Any] | None
    if fmt == 1:
        state = {**d["detector"], **tensors}
    else:
        state = None if d["detector"] is None else _join_tensors(d["detector"], tensors)
    detector = None if state is None else detector_from_state(state, model)
    policy: dict[str, Any] = d.get("policy") or {}
    target_fpr = float(policy.get("target_fpr", detector.target_fpr if detector is not None else 0.05))
    domain = BoxDomain.from_dict(policy["domain"]) if policy.get("domain") else None
    defense = Defense(
        model,
        transforms,
        [detector] if detector is not None else [],
        domain=domain,
        target_fpr=target_fpr,
        reject_fpr=policy.get("reject_fpr"),
    )
    if detector is not None:
        if policy.get("reject_threshold") is not None:
            defense.reject_threshold_ = float(policy["reject_threshold"])
            defense.score_center_ = None if policy.get("score_center") is None else float(policy["score_center"])
        else:  # format 1 had no reject policy: reject only what it flagged
            defense.reject_threshold_ = detector.threshold_
    return defense
