"""Training-time augmentation in plain torch: batched, on the batch's device, driven by a passed generator.

Dataset-aware: random crop with padding for every image set, horizontal flip only where the spec says a
mirror image keeps its label (CIFAR-10), never for digits or traffic signs ("turn left" mirrored is
"turn right"). The output stays inside [0, 1] when the input does: padding is zeros and crops and flips
only move pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from bastion.data.spec import DatasetSpec
from bastion.errors import ConfigError

#: What the trainer calls on each training batch: (x, generator) -> augmented x of the same shape.
Augment = Callable[[Tensor, torch.Generator], Tensor]
AugmentName = Literal["none", "crop", "crop-flip", "auto"]


@dataclass(frozen=True, kw_only=True)
class RandomCropFlip:
    """Zero-pad by ``padding`` and crop back to the input size at a random offset; mirror with prob. 1/2.

    The usual CIFAR recipe (pad 4, crop 32, flip) as one batched gather: no per-image Python loop.

    Args:
        padding: pixels of zero padding on each side; 0 disables the crop.
        flip: mirror left-right with probability 1/2 (only for label-preserving data).
    """

    padding: int = 4
    flip: bool = False

    def __post_init__(self) -> None:
        if self.padding < 0:
            raise ConfigError(f"crop padding must be >= 0, got {self.padding}")

    def __call__(self, x: Tensor, rng: torch.Generator) -> Tensor:
        """x (N, C, H, W) -> (N, C, H, W); random numbers drawn from ``rng`` on ``rng``'s device."""
        if x.dim() != 4:
            raise ValueError(f"augmentation expects images (N, C, H, W), got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        out = x
        if self.padding > 0:
            p = self.padding
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            offsets = torch.randint(0, 2 * p + 1, (2, n), generator=rng, device=rng.device).to(x.device)
            rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = (offsets[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]
            batch = torch.arange(n, device=x.device)[:, None, None, None]
            channel = torch.arange(c, device=x.device)[None, :, None, None]
            out = padded[batch, channel, rows, cols]
        if self.flip:
            mirror = torch.rand(n, generator=rng, device=rng.device).to(x.device) < 0.5
            out = torch.where(mirror[:, None, None, None], out.flip(-1), out)
        return out


def default_padding(spec: DatasetSpec) -> int:
    """An eighth of the image side: 4 px at 32x32 (the CIFAR convention), 1 px at 8x8."""
    return max(1, min(spec.input_shape[1:]) // 8)


def build_augment(name: str, spec: DatasetSpec) -> Augment | None:
    """The augmentation ``name`` for ``spec``'s data, or None for ``"none"``.

    ``crop`` crops only; ``crop-flip`` adds mirroring and is refused when the spec says mirroring
    changes the label; ``auto`` crops and mirrors exactly where the spec allows it.

    Raises:
        ConfigError: unknown name, non-image data, or flips asked for on data they would mislabel.
    """
    if name == "none":
        return None
    if name not in ("crop", "crop-flip", "auto"):
        raise ConfigError(f"unknown augmentation {name!r}; expected none, crop, crop-flip or auto")
    if spec.modality != "image" or len(spec.input_shape) != 3:
        raise ConfigError(f"augmentation {name!r} needs image data; {spec.name} is {spec.modality}")
    if name == "crop-flip" and not spec.flip_preserves_label:
        raise ConfigError(
            f"horizontal flips change the label of {spec.name} images (e.g. mirrored signs or digits); "
            "use augment: crop or auto"
        )
    flip = name == "crop-flip" or (name == "auto" and spec.flip_preserves_label)
    return RandomCropFlip(padding=default_padding(spec), flip=flip)
