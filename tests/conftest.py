"""Shared fixtures: the digits dataset and small seeded models trained once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bastion.data import Dataset, load_dataset
from bastion.models.registry import Architecture, build_model, normalization_stats
from bastion.threat import ThreatModel
from bastion.training import MethodConfig, TrainSettings, build_method, fit

# Under pytest-xdist every worker gets one intra-op thread: oversubscribed cores slow torch down badly.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]


def find_shared_data() -> Path | None:
    """../shared/data next to the repo (or $BASTION_DATA); None when absent, so data tests skip."""
    env = os.environ.get("BASTION_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real datasets folder; the test is skipped cleanly when it is absent."""
    root = find_shared_data()
    if root is None:
        pytest.skip("real datasets not available: ../shared/data (or $BASTION_DATA) is absent")
    return root.resolve()


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_dataset("digits", seed=0)


def train_digits(data: Dataset, method: str, epochs: int, eps: float = 0.2, seed: int = 0) -> torch.nn.Module:
    mean, std = normalization_stats(data.train.x)
    arch = Architecture(name="cnn", input_shape=data.spec.input_shape, num_classes=10, mean=mean, std=std)
    model = build_model(arch, seed=seed)
    objective, schedule = build_method(method, MethodConfig(epochs=epochs, eps=eps, n_steps=5, n_stages=3))
    threat = ThreatModel(norm="linf", eps=eps, domain=data.spec.domain)
    fit(
        model,
        data.train,
        objective,
        schedule,
        threat,
        settings=TrainSettings(batch_size=64, val_examples=0),
        seed=seed,
    )
    return model.eval()


@pytest.fixture(scope="session")
def standard_model(digits: Dataset) -> torch.nn.Module:
    return train_digits(digits, "standard", epochs=8)


@pytest.fixture(scope="session")
def trades_model(digits: Dataset) -> torch.nn.Module:
    return train_digits(digits, "progressive-trades", epochs=8)
