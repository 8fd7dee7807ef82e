"""Saving and loading models: safetensors weights + a JSON description. Loading never executes code.

A model folder holds ``weights.safetensors`` and ``model.json`` (architecture, dataset spec, training
record, and the SHA-256 of the weights file, checked on load).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from bastion.data.spec import DatasetSpec
from bastion.errors import CheckpointError
from bastion.io import atomic_write_bytes, atomic_write_json
from bastion.models.registry import Architecture, build_model

WEIGHTS = "weights.safetensors"
DESCRIPTION = "model.json"
FORMAT_VERSION = 1


def save_model(
    model: nn.Module,
    arch: Architecture,
    spec: DatasetSpec,
    directory: str | Path,
    *,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the model folder atomically (weights first, then the description that vouches for them)."""
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = st_save(state)
    atomic_write_bytes(directory / WEIGHTS, blob)
    description = {
        "format": FORMAT_VERSION,
        "architecture": arch.to_dict(),
        "dataset": spec.to_dict(),
        "dataset_fingerprint": spec.fingerprint(),
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        **(extra or {}),
    }
    atomic_write_json(directory / DESCRIPTION, description)
    return directory


def read_description(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / DESCRIPTION
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a bastion model folder: {DESCRIPTION} is missing")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(d, dict) or d.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported or missing format version (expected {FORMAT_VERSION})")
    return d


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Load a saved model in eval mode: inputs in the dataset's domain -> logits.

    ``path`` is a model folder, or a run folder holding exactly one model under ``models/``.

    Raises:
        CheckpointError: missing files, checksum mismatch, or weights that do not fit the architecture.
    """
    directory = resolve_model_dir(path)
    d = read_description(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{directory}: {WEIGHTS} is missing")
    blob = weights.read_bytes()
    if hashlib.sha256(blob).hexdigest() != d.get("weights_sha256"):
        raise CheckpointError(f"{weights}: checksum mismatch (file corrupt or replaced)")
    try:
        state = st_load(blob)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{weights}: cannot read safetensors data: {exc}") from exc
    model = build_model(Architecture.from_dict(d["architecture"]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} does not fit the architecture in {DESCRIPTION}: {exc}") from exc
    return model.to(device).eval()


def load_spec(path: str | Path) -> DatasetSpec:
    """The dataset spec a saved model was trained on."""
    return DatasetSpec.from_dict(read_description(resolve_model_dir(path))["dataset"])


def resolve_model_dir(path: str | Path) -> Path:
    """A model folder as given, or the only model folder of a run folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model path does not exist: {path}")
    if (path / DESCRIPTION).is_file():
        return path
    candidates = sorted(p.parent for p in (path / "models").glob(f"*/{DESCRIPTION}"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise CheckpointError(f"{path} holds no model ({DESCRIPTION} not found, nor models/*/{DESCRIPTION})")
    names = ", ".join(p.name for p in candidates)
    raise CheckpointError(f"{path} holds several models ({names}); name one: {path}/models/NAME")


def model_dirs(path: str | Path) -> dict[str, Path]:
    """Name -> folder for every model in a run folder, or the single model a model folder is."""
    path = Path(path)
    if (path / DESCRIPTION).is_file():
        return {path.name: path}
    found = {p.parent.name: p.parent for p in sorted((path / "models").glob(f"*/{DESCRIPTION}"))}
    if not found:
        raise CheckpointError(f"{path} holds no model ({DESCRIPTION} not found, nor models/*/{DESCRIPTION})")
    return found
