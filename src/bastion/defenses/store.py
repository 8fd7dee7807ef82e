"""Build, save and load a runtime defense around a saved model (JSON + safetensors, never pickle).

``defense.json`` holds the transforms, the policy and each detector's scalar state; every tensor of the
detector state goes to ``detector.safetensors`` under a path-like key and is referenced from the JSON
as ``{"$tensor": KEY}``.

Integrity (format 3): ``defense.json`` records the SHA-256 of ``detector.safetensors`` and a SHA-256 of its
own canonical content, both checked on load through :func:`bastion.io.read_verified` (the same check as
model weights), so a corrupted detector, transform list or policy is refused instead of silently yielding
NaN scores. Formats 1 (Mahalanobis only, bastion 0.1) and 2 carried no checksums; they are still read,
with a warning, and re-saving writes format 3.
"""

from __future__ import annotations

import logging
import math
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
from bastion.errors import BastionError, CheckpointError
from bastion.io import (
    atomic_write_bytes,
    atomic_write_json,
    canonical_json_sha256,
    read_json_file,
    read_verified,
    sha256_hex,
)

log = logging.getLogger(__name__)

FORMAT = 3
LEGACY_FORMATS = (1, 2)
CONFIG = "defense.json"
TENSORS = "detector.safetensors"


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
    blob = st_save(tensors or {"empty": torch.zeros(0)})
    doc: dict[str, Any] = {
        "format": FORMAT,
        "transforms": [t.to_dict() for t in defended.transforms],
        "detector": detector,
        "policy": policy,
        "detector_sha256": sha256_hex(blob),
    }
    doc["sha256"] = canonical_json_sha256(doc)
    atomic_write_bytes(directory / TENSORS, blob)
    atomic_write_json(directory / CONFIG, doc)  # written last: it vouches for the tensors
    return directory


def _read_verified_defense(directory: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """defense.json and the detector tensors, integrity-checked (format 3) before either is interpreted."""
    path = directory / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a saved defense: {CONFIG} is missing")
    d = read_json_file(path, what="defense config")
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(d).__name__}")
    fmt = d.get("format")
    if fmt == FORMAT:
        recorded = d.get("sha256")
        if recorded != canonical_json_sha256({k: v for k, v in d.items() if k != "sha256"}):
            raise CheckpointError(f"{path}: content checksum mismatch (file corrupt or edited)")
        blob = read_verified(directory / TENSORS, d.get("detector_sha256"), what="detector state")
    elif fmt in LEGACY_FORMATS:
        log.warning("%s: format %s carries no checksums; re-save the defense to protect it", path, fmt)
        try:
            blob = (directory / TENSORS).read_bytes()
        except OSError as exc:
            raise CheckpointError(f"cannot read {directory / TENSORS}: {exc}") from exc
    else:
        raise CheckpointError(f"{path}: unsupported format {fmt!r} (expected {FORMAT})")
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{directory / TENSORS}: cannot read safetensors data: {exc}") from exc
    if not isinstance(d.get("transforms"), list):
        raise CheckpointError(f"{path}: key 'transforms' is missing or not a list")
    if "detector" not in d or not (d["detector"] is None or isinstance(d["detector"], dict)):
        raise CheckpointError(f"{path}: key 'detector' is missing or not an object")
    if not isinstance(d.get("policy") or {}, dict):
        raise CheckpointError(f"{path}: key 'policy' is not an object")
    return d, tensors


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CheckpointError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def load_defense(directory: Path, model: nn.Module) -> Defense:
    """Rebuild a saved defense around ``model``, after verifying its files (see the module docstring).

    Raises:
        CheckpointError: missing, corrupt, edited or malformed files, or a non-finite threshold.
    """
    d, tensors = _read_verified_defense(directory)
    try:
        return _build_loaded(directory, d, tensors, model)
    except BastionError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as exc:
        raise CheckpointError(f"{directory / CONFIG}: malformed defense: {exc!r}"[:500]) from exc


def _build_loaded(directory: Path, d: dict[str, Any], tensors: dict[str, Tensor], model: nn.Module) -> Defense:
    fmt = d["format"]
    where = directory / CONFIG
    for i, t in enumerate(d["transforms"]):
        if not isinstance(t, dict):
            raise CheckpointError(f"{where}: transforms[{i}] is not an object")
    transforms = [transform_from_dict(t) for t in d["transforms"]]
    state: dict[str, Any] | None
    if fmt == 1:
        state = {**d["detector"], **tensors}
    else:
        state = None if d["detector"] is None else _join_tensors(d["detector"], tensors)
    detector = None if state is None else detector_from_state(state, model)
    if detector is not None:
        _finite(detector.threshold_, f"{where}: detector threshold")
    policy: dict[str, Any] = d.get("policy") or {}
    target_fpr = _finite(
        policy.get("target_fpr", detector.target_fpr if detector is not None else 0.05), f"{where}: policy.target_fpr"
    )
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
            defense.reject_threshold_ = _finite(policy["reject_threshold"], f"{where}: policy.reject_threshold")
            center = policy.get("score_center")
            defense.score_center_ = None if center is None else _finite(center, f"{where}: policy.score_center")
        else:  # format 1 had no reject policy: reject only what it flagged
            defense.reject_threshold_ = detector.threshold_
    return defense
