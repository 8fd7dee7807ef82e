"""Training checkpoints: every tensor in one safetensors file, everything else as JSON in its metadata.

One file means one atomic rename: a checkpoint is either complete or absent, never half-written. Loading
parses the safetensors header and JSON only, so a checkpoint can never execute code (no pickle).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from bastion.errors import CheckpointError
from bastion.io import atomic_write_bytes

LAST = "last.safetensors"
BEST = "best.safetensors"
_META_KEY = "bastion"
FORMAT_VERSION = 1


def save_state(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Write tensors plus JSON metadata atomically (temp file, fsync, rename)."""
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    blob = st_save(cpu, metadata={_META_KEY: json.dumps({"format": FORMAT_VERSION, **meta}, allow_nan=False)})
    return atomic_write_bytes(path, blob)


def load_state(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors on CPU, metadata) from a file written by :func:`save_state`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training checkpoint not found: {path}")
    blob = path.read_bytes()
    try:
        tensors = st_load(blob)
        (header_len,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8 : 8 + header_len])
        meta = json.loads(header["__metadata__"][_META_KEY])
    except (SafetensorError, ValueError, KeyError, struct.error) as exc:
        raise CheckpointError(f"{path} is not a bastion training checkpoint: {exc}") from exc
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format')!r}")
    return tensors, meta


def prefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    head = prefix + "."
    return {k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors and JSON (param groups and scalar state)."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any], device: torch.device
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        # Adam's step counter stays on the CPU unless capturable/fused; everything else follows the params.
        state.setdefault(int(pid), {})[key] = value if key == "step" else value.to(device)
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
