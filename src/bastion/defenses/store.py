"""Build, save and load a runtime defense around a saved model (JSON + safetensors, never pickle)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from bastion.config import DefenseConfig
from bastion.data.spec import Split
from bastion.defenses.detectors.mahalanobis import MahalanobisDetector
from bastion.defenses.pipeline import DefendedClassifier
from bastion.defenses.transforms import BitDepth, InputTransform, MedianFilter, transform_from_dict
from bastion.errors import CheckpointError
from bastion.io import atomic_write_bytes, atomic_write_json


def build_defense(model: nn.Module, cfg: DefenseConfig, train: Split, val: Split) -> DefendedClassifier:
    """Squeezers from cfg; a Mahalanobis detector fitted on clean train data, calibrated on clean val data."""
    transforms: list[InputTransform] = []
    if cfg.bit_depth is not None:
        transforms.append(BitDepth(cfg.bit_depth))
    if cfg.median is not None:
        transforms.append(MedianFilter(cfg.median))
    detector = MahalanobisDetector(model, target_fpr=cfg.target_fpr).fit(train.x, train.y).calibrate(val.x)
    return DefendedClassifier(model, transforms, detector)


def save_defense(defended: DefendedClassifier, directory: Path) -> Path:
    detector = defended.detector
    if not isinstance(detector, MahalanobisDetector):
        raise CheckpointError("only Mahalanobis detectors can be saved in this version")
    state = detector.state_dict()
    tensors = {"means": state.pop("means").contiguous(), "precision": state.pop("precision").contiguous()}
    atomic_write_bytes(directory / "detector.safetensors", st_save(tensors))
    atomic_write_json(
        directory / "defense.json",
        {
            "format": 1,
            "transforms": [t.to_dict() for t in defended.transforms],
            "detector": state,
        },
    )
    return directory


def load_defense(directory: Path, model: nn.Module) -> DefendedClassifier:
    try:
        d = json.loads((directory / "defense.json").read_text())
        tensors = st_load((directory / "detector.safetensors").read_bytes())
    except (OSError, json.JSONDecodeError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read defense in {directory}: {exc}") from exc
    if d.get("format") != 1:
        raise CheckpointError(f"{directory}/defense.json: unsupported format {d.get('format')!r}")
    transforms = [transform_from_dict(t) for t in d["transforms"]]
    device = next(model.parameters()).device
    detector = MahalanobisDetector(model).load_state_dict({**d["detector"], **tensors})
    if detector.means_ is not None and detector.precision_ is not None:
        detector.means_ = detector.means_.to(device)
        detector.precision_ = detector.precision_.to(device)
    return DefendedClassifier(model, transforms, detector)
