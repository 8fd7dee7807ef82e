"""What the image datasets share: uint8 pixels to (C, H, W) floats in [0, 1], their spec, a checked pool split.

The format readers in :mod:`bastion.data.formats` turn files into validated uint8 arrays; the dataset
modules in :mod:`bastion.data.sources` turn those into the same :class:`Dataset` as ``digits`` with
these helpers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bastion.data.spec import Dataset, DatasetSpec
from bastion.data.splits import POOL_FRACTIONS, pool_dataset
from bastion.domain import BoxDomain
from bastion.errors import DataFormatError


def to_unit_chw(images: NDArray[Any]) -> torch.Tensor:
    """(N, H, W[, C]) uint8 in [0, 255] -> (N, C, H, W) float32 in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.dim() == 3:
        x = x.unsqueeze(-1)
    return x.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def image_spec(
    name: str,
    source: str,
    classes: tuple[str, ...],
    shape: tuple[int, ...],
    *,
    flip: bool = False,
    preprocessing: dict[str, Any] | None = None,
) -> DatasetSpec:
    """The spec of an image dataset: pixels in the unit box, ``flip`` if a mirror image keeps its class."""
    return DatasetSpec(
        name=name,
        source=source,
        modality="image",
        classes=classes,
        input_shape=shape,
        domain=BoxDomain.unit(),
        flip_preserves_label=flip,
        preprocessing=preprocessing or {},
    )


def checked_pool_dataset(spec: DatasetSpec, x: torch.Tensor, y: NDArray[np.int64], seed: int, what: str) -> Dataset:
    """Stratified 70/10/20 split of one user-made pool; a class too small to stratify is an error naming it."""
    counts = np.bincount(y, minlength=spec.num_classes)
    if (counts[counts > 0] < 5).any():
        small = [spec.classes[i] for i in np.flatnonzero((counts > 0) & (counts < 5))]
        raise DataFormatError(f"{what}: classes {small} have fewer than 5 examples; a 70/10/20 split needs 5")
    try:
        return pool_dataset(spec, x, y, seed, POOL_FRACTIONS)
    except ValueError as exc:  # sklearn: a split would be smaller than the number of classes
        raise DataFormatError(f"{what}: {len(y)} examples are too few for a stratified 70/10/20 split: {exc}") from None
