"""``npz:PATH``: an .npz with ``x`` (N, H, W[, C]) uint8 or float in [0, 1], ``y``, optional ``class_names``.

Option ``flip`` (1 if a mirror image keeps its class); stratified 70/10/20.
"""

from __future__ import annotations

import numpy as np
import torch

from bastion.data.catalog import DATASETS
from bastion.data.formats.folders import load_npz
from bastion.data.images import checked_pool_dataset, image_spec, to_unit_chw
from bastion.data.source import DataSource, yes_no
from bastion.data.spec import Dataset
from bastion.errors import DataFormatError


@DATASETS.register("npz")
def load_npz_dataset(source: DataSource, seed: int) -> Dataset:
    """The arrays of one .npz file. Float pixels outside [0, 1] are refused rather than rescaled by a guess."""
    options = source.typed_options({"flip": yes_no})
    root = source.location()
    raw = load_npz(root)
    if raw.x.dtype == np.uint8:
        x = to_unit_chw(raw.x)
    else:
        lo, hi = float(raw.x.min(initial=0.0)), float(raw.x.max(initial=0.0))
        if lo < 0 or hi > 1:
            raise DataFormatError(f"{root}: float pixels must lie in [0, 1], found [{lo:.4g}, {hi:.4g}]")
        arr = raw.x if raw.x.ndim == 4 else raw.x[..., None]
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(0, 3, 1, 2).contiguous()
    n_classes = int(raw.y.max()) + 1 if raw.y.size else 0
    classes = raw.class_names or tuple(str(i) for i in range(n_classes))
    spec = image_spec("npz", source.text, classes, tuple(x.shape[1:]), flip=options.get("flip", False))
    return checked_pool_dataset(spec, x, raw.y, seed, str(root))
