"""Helpers shared by the hostile-input tests (imported by name, as tests/unit/deploy does)."""

from __future__ import annotations

from pathlib import Path

import torch

from bastion.data import Dataset
from bastion.defenses.config import DefenseConfig
from bastion.defenses.store import build_defense, save_defense
from bastion.models import checkpoint
from bastion.models.registry import Architecture


def make_run(root: Path, digits: Dataset, arch: Architecture, model: torch.nn.Module, name: str = "mlp") -> Path:
    """A run folder with one model and its saved Mahalanobis + bit-depth defense."""
    checkpoint.save_model(model, arch, digits.spec, root / "models" / name, extra={"seed": 0})
    defense = build_defense(model, DefenseConfig(), digits.train, digits.val, domain=digits.spec.domain)
    save_defense(defense, root / "defenses" / name)
    return root
