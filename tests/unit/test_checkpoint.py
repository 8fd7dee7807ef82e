"""Checkpoints: exact round trip; corrupt or mismatched files fail loudly; nothing is unpickled."""

from __future__ import annotations

import json

import pytest
import torch

from bastion.data import Dataset
from bastion.errors import CheckpointError
from bastion.models import checkpoint
from bastion.models.registry import Architecture, build_model


@pytest.fixture
def saved(tmp_path, digits: Dataset):
    arch = Architecture(
        name="mlp", input_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.4,), options={"hidden": [32]}
    )
    model = build_model(arch, seed=1)
    checkpoint.save_model(model, arch, digits.spec, tmp_path / "m")
    return model, tmp_path / "m"


def test_round_trip_is_exact(saved, digits: Dataset) -> None:
    model, path = saved
    loaded = checkpoint.load_model(path)
    assert not loaded.training
    assert torch.equal(model(digits.test.x), loaded(digits.test.x))
    assert checkpoint.load_spec(path).fingerprint() == digits.spec.fingerprint()


def test_truncated_weights_are_detected(saved) -> None:
    _, path = saved
    w = path / checkpoint.WEIGHTS
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        checkpoint.load_model(path)


def test_garbage_weights_with_matching_checksum_are_detected(saved) -> None:
    import hashlib

    _, path = saved
    blob = b"not a safetensors file at all"
    (path / checkpoint.WEIGHTS).write_bytes(blob)
    d = json.loads((path / checkpoint.DESCRIPTION).read_text())
    d["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    (path / checkpoint.DESCRIPTION).write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match="cannot read safetensors"):
        checkpoint.load_model(path)


def test_architecture_mismatch_is_detected(saved) -> None:
    _, path = saved
    d = json.loads((path / checkpoint.DESCRIPTION).read_text())
    d["architecture"]["options"]["hidden"] = [64]
    (path / checkpoint.DESCRIPTION).write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match="does not fit the architecture"):
        checkpoint.load_model(path)


def test_bad_description_and_missing_paths(saved, tmp_path) -> None:
    _, path = saved
    (path / checkpoint.DESCRIPTION).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        checkpoint.load_model(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load_model(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no model"):
        checkpoint.load_model(tmp_path / "empty")
