"""Input transformations (feature squeezing) for the runtime defense: ``x -> x`` inside the domain.

Non-differentiable squeezers pass gradients straight through (BPDA with the identity, Athalye et al.
2018): an attack on the defended model then sees useful gradients, which is what an adaptive attacker
would do. ``differentiable = False`` records that the gradient is this approximation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.errors import ConfigError
from bastion.registry import Registry


class InputTransform(Protocol):
    differentiable: bool

    def __call__(self, x: Tensor) -> Tensor: ...

    def to_dict(self) -> dict[str, Any]: ...


def straight_through(x: Tensor, squeezed: Tensor) -> Tensor:
    """Forward: ``squeezed``; backward: identity (BPDA)."""
    return x + (squeezed - x).detach()


@dataclass(frozen=True)
class BitDepth:
    """Reduce each value to ``bits`` bits: round(x * (2^bits - 1)) / (2^bits - 1) (Xu et al. 2018).

    Assumes inputs in [0, 1] (images).
    """

    bits: int = 4
    differentiable: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 16:
            raise ConfigError(f"bits must be in 1..16, got {self.bits}")

    def __call__(self, x: Tensor) -> Tensor:
        levels = 2**self.bits - 1
        return straight_through(x, torch.round(x * levels) / levels)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "bit-depth", "bits": self.bits}


@dataclass(frozen=True)
class MedianFilter:
    """k x k median smoothing per channel with reflect padding (Xu et al. 2018), for (N, C, H, W) images.

    The median selects one input value per window, so gradients flow to it: differentiable almost
    everywhere, no approximation needed.
    """

    size: int = 2
    differentiable: bool = True

    def __post_init__(self) -> None:
        if self.size < 2:
            raise ConfigError(f"median filter size must be >= 2, got {self.size}")

    def __call__(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ConfigError(f"median filter needs (N, C, H, W) images, got shape {tuple(x.shape)}")
        k = self.size
        pad_before, pad_after = (k - 1) // 2, k // 2
        padded = F.pad(x, (pad_before, pad_after, pad_before, pad_after), mode="reflect")
        patches = padded.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H, W, k, k)
        return patches.reshape(*patches.shape[:4], k * k).median(dim=-1).values

    def to_dict(self) -> dict[str, Any]:
        return {"name": "median", "size": self.size}


TRANSFORMS: Registry[InputTransform] = Registry("input transform")
TRANSFORMS.register("bit-depth")(BitDepth)
TRANSFORMS.register("median")(MedianFilter)


def transform_from_dict(d: dict[str, Any]) -> InputTransform:
    options = {k: v for k, v in d.items() if k != "name"}
    return TRANSFORMS.create(str(d.get("name")), **options)
