"""Small, untrained artifacts for the hostile-input suite: built in a second, never trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bastion.data import Dataset
from bastion.defenses.config import DefenseConfig
from bastion.defenses.store import build_defense, save_defense
from bastion.models import checkpoint
from bastion.models.registry import Architecture, build_model, normalization_stats


@pytest.fixture(scope="session")
def tiny_arch(digits: Dataset) -> Architecture:
    mean, std = normalization_stats(digits.train.x)
    return Architecture(
        name="mlp",
        input_shape=digits.spec.input_shape,
        num_classes=digits.spec.num_classes,
        mean=mean,
        std=std,
        options={"hidden": [16]},
    )


@pytest.fixture(scope="session")
def tiny_model(tiny_arch: Architecture) -> torch.nn.Module:
    return build_model(tiny_arch, seed=0).eval()


def make_run(root: Path, digits: Dataset, arch: Architecture, model: torch.nn.Module, name: str = "mlp") -> Path:
    """A run folder with one model and its saved Mahalanobis + bit-depth defense."""
    checkpoint.save_model(model, arch, digits.spec, root / "models" / name, extra={"seed": 0})
    defense = build_defense(model, DefenseConfig(), digits.train, digits.val, domain=digits.spec.domain)
    save_defense(defense, root / "defenses" / name)
    return root


@pytest.fixture
def tiny_run(tmp_path: Path, digits: Dataset, tiny_arch: Architecture, tiny_model: torch.nn.Module) -> Path:
    return make_run(tmp_path / "run", digits, tiny_arch, tiny_model)
