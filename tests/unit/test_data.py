"""Datasets: SPEC parsing, deterministic disjoint splits, clear errors for bad specs and paths."""

from __future__ import annotations

import pytest
import torch

from bastion.data import load_dataset, parse_spec
from bastion.errors import ConfigError, DataNotFoundError, InputValidationError


def test_parse_spec() -> None:
    assert parse_spec("digits") == ("digits", None)
    assert parse_spec("MNIST:/data/mnist") == ("mnist", "/data/mnist")
    assert parse_spec("gtsrb:C:/x:y") == ("gtsrb", "C:/x:y")
    with pytest.raises(ConfigError, match="empty path"):
        parse_spec("mnist:")
    with pytest.raises(ConfigError, match="non-empty"):
        parse_spec("  ")


def test_digits_splits_are_deterministic_and_disjoint() -> None:
    a, b = load_dataset("digits", seed=3), load_dataset("digits", seed=3)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert a.split_info["index_digest"] == b.split_info["index_digest"]
    c = load_dataset("digits", seed=4)
    assert c.split_info["index_digest"] != a.split_info["index_digest"]
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    rows = {tuple(r.tolist()) for r in a.train.x.flatten(1)}
    overlap = sum(tuple(r.tolist()) in rows for r in a.test.x.flatten(1))
    assert overlap <= 5  # digits has a handful of exact duplicate images, no shared indices beyond them


def test_digits_spec(digits) -> None:
    spec = digits.spec
    assert spec.num_classes == 10 and spec.input_shape == (1, 8, 8) and spec.modality == "image"
    assert digits.train.x.min() >= 0 and digits.train.x.max() <= 1
    spec.check_inputs(digits.test.x)
    with pytest.raises(InputValidationError, match="expects"):
        spec.check_inputs(torch.rand(2, 64))
    with pytest.raises(InputValidationError, match="NaN"):
        spec.check_inputs(torch.full((1, 1, 8, 8), float("nan")))


def test_unknown_dataset_and_missing_path(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_dataset(f"digits:{tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match="takes no path"):
        load_dataset(f"digits:{tmp_path}")


def test_mnist_from_shared_data(shared_data_dir) -> None:
    root = shared_data_dir
    if not (root / "mnist").is_dir():
        pytest.skip("../shared/data/mnist is absent")
    data = load_dataset(f"mnist:{root / 'mnist'}", seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (7200, 800, 2000)
    assert data.spec.input_shape == (1, 28, 28) and data.spec.num_classes == 10
    assert data.train.x.min() >= 0 and data.train.x.max() <= 1


def test_mnist_needs_a_path() -> None:
    with pytest.raises(ConfigError, match="needs a folder"):
        load_dataset("mnist")
