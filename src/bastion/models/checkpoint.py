"""Saving and loading models: safetensors weights + a JSON description. Loading never executes code.

A model folder holds ``weights.safetensors`` and ``model.json`` (architecture, dataset spec, training
record, and the SHA-256 of the weights file, checked on load).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from bastion.data.spec import DatasetSpec
from bastion.errors import CheckpointError
from bastion.io import atomic_write_bytes, atomic_write_json, read_json_file, read_verified, sha256_hex
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
        "weights_sha256": sha256_hex(blob),
        **(extra or {}),
    }
    atomic_write_json(directory / DESCRIPTION, description)
    return directory


def read_description(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / DESCRIPTION
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a bastion model folder: {DESCRIPTION} is missing")
    d = read_json_file(path, what="model description")
    if not isinstance(d, dict) or d.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported or missing format version (expected {FORMAT_VERSION})")
    for key in ("architecture", "dataset"):
        if not isinstance(d.get(key), dict):
            raise CheckpointError(f"{path}: key {key!r} is missing or not an object")
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
    blob = read_verified(weights, d.get("weights_sha256"), what="model weights")
    try:
        state = st_load(blob)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{weights}: cannot read safetensors data: {exc}") from exc
    arch = read_architecture(directory, d)
    check_weights_fit(arch, state, weights)
    model = build_model(arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} does not fit the architecture in {DESCRIPTION}: {exc}") from exc
    return model.to(device).eval()


def read_architecture(directory: Path, d: dict[str, Any]) -> Architecture:
    """The architecture block of a model.json, checked for consistency before anything is built."""
    where = directory / DESCRIPTION
    if not isinstance(d.get("architecture"), dict):
        raise CheckpointError(f"{where}: key 'architecture' is missing or not an object")
    arch = Architecture.from_dict(d["architecture"])
    if not arch.input_shape or any(s < 1 for s in arch.input_shape):
        raise CheckpointError(f"{where}: architecture.input_shape {list(arch.input_shape)} must be positive sizes")
    if arch.num_classes < 2:
        raise CheckpointError(f"{where}: architecture.num_classes must be >= 2, got {arch.num_classes}")
    stats = arch.input_shape[0] if len(arch.input_shape) == 3 else math.prod(arch.input_shape)
    for key, values in (("mean", arch.mean), ("std", arch.std)):
        if len(values) != stats:
            raise CheckpointError(
                f"{where}: architecture.{key} has {len(values)} values, the input shape "
                f"{list(arch.input_shape)} needs {stats}"
            )
        if not all(math.isfinite(v) for v in values):
            raise CheckpointError(f"{where}: architecture.{key} holds NaN or infinite values")
    if any(v <= 0 for v in arch.std):
        raise CheckpointError(f"{where}: architecture.std values must be > 0")
    return arch


def check_weights_fit(arch: Architecture, state: dict[str, torch.Tensor], weights: Path) -> None:
    """Refuse a description whose architecture does not match the (verified) weights' tensor shapes.

    The architecture is built on the ``meta`` device first, which allocates no memory: options such as a
    huge hidden width are caught here, against the weights, before any real allocation.
    """
    with torch.device("meta"):
        skeleton = build_model(arch)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        diff = sorted(set(expected) ^ set(found)) or [k for k in expected if expected[k] != found[k]]
        key = diff[0]
        raise CheckpointError(
            f"{weights} does not fit the architecture in {DESCRIPTION}: tensor {key!r} is "
            f"{found.get(key, 'missing')} in the weights, the architecture needs {expected.get(key, 'none')}"
        )


def load_spec(path: str | Path) -> DatasetSpec:
    """The dataset spec a saved model was trained on."""
    directory = resolve_model_dir(path)
    d = read_description(directory)
    if not isinstance(d.get("dataset"), dict):
        raise CheckpointError(f"{directory / DESCRIPTION}: key 'dataset' is missing or not an object")
    try:
        return DatasetSpec.from_dict(d["dataset"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{directory / DESCRIPTION}: malformed 'dataset' block: {exc!r}") from exc


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
