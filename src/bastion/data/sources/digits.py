"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 17 grey levels), no download."""

from __future__ import annotations

import numpy as np

from bastion.data.catalog import DATASETS
from bastion.data.images import image_spec
from bastion.data.source import DataSource
from bastion.data.spec import Dataset
from bastion.data.splits import pool_dataset
from bastion.errors import ConfigError

FRACTIONS = (0.6, 0.2, 0.2)


@DATASETS.register("digits")
def load_digits(source: DataSource, seed: int) -> Dataset:
    """The digits scaled to [0, 1], shape (1, 8, 8); stratified 60/20/20."""
    source.typed_options({})
    if source.path is not None:
        raise ConfigError("the digits dataset is bundled with scikit-learn and takes no path")
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    spec = image_spec("digits", source.text, tuple(str(c) for c in range(10)), (1, 8, 8))
    return pool_dataset(spec, x, y, seed, FRACTIONS)
