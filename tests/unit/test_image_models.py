"""Model zoo contract, driven by the registry: every registered model gets the same checks."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from bastion.errors import ConfigError
from bastion.models import MODELS, ImageClassifier
from bastion.models.registry import Architecture, build_model

#: Small options so the contract runs in seconds; the full-size defaults are checked separately.
CHEAP: dict[str, dict[str, Any]] = {
    "preact-resnet18": {"width": 4},
    "wrn": {"depth": 10, "width": 1},
}
#: (input shape, classes) per model family: convolutional models see images, the MLP tabular rows too.
SHAPES: dict[str, list[tuple[tuple[int, ...], int]]] = {
    "mlp": [((3, 8, 8), 5), ((12,), 2)],
}
DEFAULT_SHAPES = [((3, 8, 8), 5), ((1, 12, 10), 3)]


def arch_for(name: str, shape: tuple[int, ...], classes: int) -> Architecture:
    channels = shape[0]  # per-channel statistics for images, per-feature for rows
    return Architecture(
        name=name,
        input_shape=shape,
        num_classes=classes,
        mean=(0.4,) * channels,
        std=(0.2,) * channels,
        options=CHEAP.get(name, {}),
    )


def cases() -> list[Any]:
    out = []
    for name in MODELS.names():
        for shape, classes in SHAPES.get(name, DEFAULT_SHAPES):
            out.append(pytest.param(name, shape, classes, id=f"{name}-{'x'.join(map(str, shape))}"))
    return out


@pytest.mark.parametrize(("name", "shape", "classes"), cases())
def test_model_contract(name: str, shape: tuple[int, ...], classes: int) -> None:
    model = build_model(arch_for(name, shape, classes), seed=0).eval()
    assert isinstance(model, ImageClassifier)
    x = torch.rand(2, *shape)
    with torch.no_grad():
        logits = model(x)
        features = model.features(x)
        assert logits.shape == (2, classes) and torch.isfinite(logits).all()
        assert features.dim() == 2 and features.shape[0] == 2
        torch.testing.assert_close(model.head(features), logits)  # forward = head(features(x))
    # normalization lives inside: attacks differentiate with respect to raw [0, 1] inputs
    x_adv = x.clone().requires_grad_(True)
    model(x_adv).sum().backward()
    assert x_adv.grad is not None and x_adv.grad.abs().sum() > 0
    # same seed, same weights; the description rebuilds the structure
    again = build_model(Architecture.from_dict(arch_for(name, shape, classes).to_dict()), seed=0).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), logits)


@pytest.mark.parametrize(
    ("name", "options", "parameters"),
    [
        ("preact-resnet18", {}, 11_172_170),
        ("wrn", {"depth": 28, "width": 10}, 36_479_194),
        ("wrn", {"depth": 34, "width": 10}, 46_160_474),
    ],
)
def test_paper_architectures_have_their_published_size(name: str, options: dict[str, int], parameters: int) -> None:
    """WRN counts match the published 36.5M / 46.2M; PreAct ResNet-18 is the common CIFAR 11,171,146 plus
    the final BN (1,024) that He et al. 2016 add after the last unit."""
    arch = Architecture(
        name=name, input_shape=(3, 32, 32), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3, options=options
    )
    model = build_model(arch, seed=0)
    assert sum(p.numel() for p in model.parameters()) == parameters
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 8, 8)).shape == (1, 10)


def test_wide_resnet_depth_and_width_are_parameters() -> None:
    base = Architecture(name="wrn", input_shape=(3, 16, 16), num_classes=4, mean=(0.5,) * 3, std=(0.25,) * 3)

    def size(**options: Any) -> int:
        model = build_model(Architecture(**{**base.__dict__, "options": options}))
        return sum(p.numel() for p in model.parameters())

    assert size(depth=16, width=2) > size(depth=10, width=2) > size(depth=10, width=1)
    features = build_model(Architecture(**{**base.__dict__, "options": {"depth": 10, "width": 3}})).features
    assert features(torch.rand(1, 3, 16, 16)).shape == (1, 64 * 3)
    with pytest.raises(ConfigError, match="6n \\+ 4"):
        build_model(Architecture(**{**base.__dict__, "options": {"depth": 12}}))
    with pytest.raises(ConfigError, match="at least 8x8"):
        build_model(Architecture(**{**base.__dict__, "input_shape": (3, 4, 4)}))
