"""Dataset-aware augmentation: crops move pixels without changing them, flips only where labels survive."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.app.config import TrainConfig
from bastion.app.runtime import resolve_device
from bastion.app.train import train_model
from bastion.data import Dataset, DatasetSpec
from bastion.data.augment import RandomCropFlip, build_augment
from bastion.domain import BoxDomain
from bastion.errors import ConfigError
from bastion.models.registry import Architecture, build_model
from bastion.threat import ThreatModel
from bastion.training import MethodConfig, TrainSettings, build_method, fit


def image_spec(name: str, shape: tuple[int, int, int], flip: bool) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        source=name,
        modality="image",
        classes=tuple("abc"),
        input_shape=shape,
        domain=BoxDomain.unit(),
        flip_preserves_label=flip,
    )


GTSRB = image_spec("gtsrb", (3, 32, 32), flip=False)
CIFAR = image_spec("cifar10", (3, 32, 32), flip=True)


def windows(x: torch.Tensor, padding: int, flip: bool) -> list[torch.Tensor]:
    """Every crop (and mirrored crop, when allowed) the augmentation may produce from one image."""
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    h, w = x.shape[-2:]
    sources = [padded, padded.flip(-1)] if flip else [padded]
    return [
        s[..., i : i + h, j : j + w] for s in sources for i in range(2 * padding + 1) for j in range(2 * padding + 1)
    ]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 5),
    c=st.sampled_from([1, 3]),
    h=st.integers(2, 9),
    w=st.integers(2, 9),
    padding=st.integers(0, 3),
    flip=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_output_is_a_window_of_its_own_input(
    n: int, c: int, h: int, w: int, padding: int, flip: bool, seed: int
) -> None:
    x = torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))
    out = RandomCropFlip(padding=padding, flip=flip)(x, torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0  # stays in the [0, 1] domain
    for i in range(n):  # example i comes from input i: the order (and so the labels) is kept
        assert any(torch.equal(out[i], cand) for cand in windows(x[i], padding, flip))


def test_deterministic_in_the_generator() -> None:
    x = torch.rand(16, 3, 8, 8)
    aug = RandomCropFlip(padding=2, flip=True)
    a = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, aug(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, x)


def test_flips_happen_about_half_the_time_when_allowed() -> None:
    x = torch.rand(400, 1, 4, 4)
    out = RandomCropFlip(padding=0, flip=True)(x, torch.Generator().manual_seed(0))
    mirrored = (out == x.flip(-1)).flatten(1).all(1) & ~(out == x).flatten(1).all(1)
    assert 150 < int(mirrored.sum()) < 250


@pytest.mark.parametrize("name", ["auto", "crop"])
def test_traffic_signs_are_never_flipped(name: str) -> None:
    aug = build_augment(name, GTSRB)
    assert isinstance(aug, RandomCropFlip) and not aug.flip and aug.padding == 4
    arrow = torch.zeros(64, 3, 32, 32)
    arrow[:, :, 8:24, 2:14] = 1.0  # left-heavy even after a 4-pixel shift; a mirror image is right-heavy
    out = aug(arrow, torch.Generator().manual_seed(0))
    left, right = out[..., :16].sum(dim=(1, 2, 3)), out[..., 16:].sum(dim=(1, 2, 3))
    assert bool((left > right).all())


def test_flips_are_refused_where_they_change_the_label() -> None:
    with pytest.raises(ConfigError, match="horizontal flips change the label of gtsrb"):
        build_augment("crop-flip", GTSRB)
    aug = build_augment("auto", CIFAR)
    assert isinstance(aug, RandomCropFlip) and aug.flip
    assert build_augment("none", GTSRB) is None
    with pytest.raises(ConfigError, match="unknown augmentation 'rotate'"):
        build_augment("rotate", CIFAR)
    tabular = DatasetSpec(
        name="t", source="t", modality="tabular", classes=("a", "b"), input_shape=(5,), domain=BoxDomain.unit()
    )
    with pytest.raises(ConfigError, match="needs image data"):
        build_augment("crop", tabular)
    assert build_augment("crop", image_spec("digits", (1, 8, 8), flip=False)).padding == 1  # type: ignore[union-attr]


def test_config_key() -> None:
    assert TrainConfig.parse({"augment": "auto"}).augment == "auto"
    assert TrainConfig.parse({}).augment == "none"
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig.parse({"augment": "flip"})


def test_fit_augments_every_batch_with_its_own_generator(digits: Dataset) -> None:
    train = digits.train.take(100)
    arch = Architecture(name="cnn", input_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.4,))
    model = build_model(arch, seed=0)
    objective, schedule = build_method("standard", MethodConfig(epochs=2))
    seen: list[torch.Tensor] = []

    def augment(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        seen.append(x)
        return RandomCropFlip(padding=1)(x, rng)

    threat = ThreatModel(norm="linf", eps=0.1, domain=digits.spec.domain)
    fit(model, train, objective, schedule, threat, settings=TrainSettings(batch_size=32), seed=0, augment=augment)
    assert len(seen) == 2 * 4 and all(x.shape[1:] == (1, 8, 8) for x in seen)
    assert sum(len(x) for x in seen) == 2 * len(train)


def test_train_model_refuses_flips_on_digits(digits: Dataset) -> None:
    cfg = TrainConfig.parse({"method": "standard", "epochs": 1, "augment": "crop-flip", "val_examples": 0})
    with pytest.raises(ConfigError, match="horizontal flips change the label of digits"):
        train_model(cfg, digits, resolve_device("cpu"))
