"""Small, untrained artifacts for the hostile-input suite: built in a second, never trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hostile_fixtures import make_run

from bastion.data import Dataset
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


@pytest.fixture
def tiny_run(tmp_path: Path, digits: Dataset, tiny_arch: Architecture, tiny_model: torch.nn.Module) -> Path:
    return make_run(tmp_path / "run", digits, tiny_arch, tiny_model)
