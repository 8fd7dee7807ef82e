"""Architectures by name, and the JSON description that rebuilds a model without executing code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bastion.errors import CheckpointError, ConfigError
from bastion.models.base import MLP, ImageClassifier, SmallCNN
from bastion.models.resnet import WideResNet, preact_resnet18
from bastion.registry import Registry

MODELS: Registry[ImageClassifier] = Registry("model")
MODELS.register("mlp")(MLP)
MODELS.register("cnn")(SmallCNN)
MODELS.register("preact-resnet18")(preact_resnet18)
MODELS.register("wrn")(WideResNet)


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """Everything needed to rebuild a model's structure: name, options, shapes, normalization stats."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "mean": list(self.mean),
            "std": list(self.std),
            "options": dict(self.options),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Architecture:
        try:
            return cls(
                name=str(d["name"]),
                input_shape=tuple(int(s) for s in d["input_shape"]),
                num_classes=int(d["num_classes"]),
                mean=tuple(float(v) for v in d["mean"]),
                std=tuple(float(v) for v in d["std"]),
                options=dict(d.get("options", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"malformed architecture description: {exc!r}") from exc


def normalization_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (images, x of shape (N, C, H, W)) or per-feature mean/std of training inputs."""
    dims = (0, 2, 3) if x.dim() == 4 else (0,)
    mean = x.mean(dim=dims).flatten()
    std = x.std(dim=dims).flatten().clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


#: The most parameters a model may have (2**28, 1 GiB of float32): options are checked against it on the
#: ``meta`` device, before any memory is allocated.
MAX_PARAMETERS = 1 << 28


def build_model(arch: Architecture, *, seed: int | None = None) -> ImageClassifier:
    """Instantiate ``arch``; with a seed, initialization is deterministic and the global RNG is untouched.

    Raises:
        ConfigError: unknown options, impossible sizes (``hidden: [-5]``), or more than
            :data:`MAX_PARAMETERS` parameters (``hidden: [10000000]``), found before allocating.
    """
    if torch.empty(0).device.type != "meta":
        check_buildable(arch)
    return _build(arch, seed)


def check_buildable(arch: Architecture) -> int:
    """Build ``arch`` on the ``meta`` device (no memory) and return its parameter count.

    Raises:
        ConfigError: bad options, or more than :data:`MAX_PARAMETERS` parameters.
    """
    with torch.device("meta"):
        skeleton = _build(arch, None)
    n_params = sum(p.numel() for p in skeleton.parameters())
    if n_params > MAX_PARAMETERS:
        raise ConfigError(
            f"model {arch.name!r} with options {arch.options} would have {n_params:,} parameters, "
            f"more than the limit of {MAX_PARAMETERS:,}"
        )
    return n_params


def _build(arch: Architecture, seed: int | None) -> ImageClassifier:
    factory = MODELS.get(arch.name)
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.options.items()}
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = factory(
                input_shape=arch.input_shape,
                num_classes=arch.num_classes,
                mean=torch.tensor(arch.mean),
                std=torch.tensor(arch.std),
                **options,
            )
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise ConfigError(f"bad options for model {arch.name!r} ({arch.options}): {exc}"[:500]) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model factory {arch.name!r} did not return an nn.Module")
    return model
