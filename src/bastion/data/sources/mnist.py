"""``mnist:PATH``: a folder of MNIST IDX files (gzipped or not), scaled to [0, 1], shape (1, 28, 28).

The same loader serves ``fashion-mnist`` (:mod:`bastion.data.sources.fashion_mnist`): same files,
other class names.
"""

from __future__ import annotations

import numpy as np

from bastion.data.catalog import DATASETS
from bastion.data.formats.idx import load_mnist_split
from bastion.data.images import image_spec
from bastion.data.source import DataSource
from bastion.data.spec import Dataset
from bastion.data.splits import official_test_dataset, pool_dataset

MNIST_CLASSES = tuple(str(c) for c in range(10))
#: Splits of the 10,000 test images when the training files are absent.
TEST_ONLY_FRACTIONS = (0.72, 0.08, 0.2)


def load_idx_dataset(source: DataSource, seed: int, classes: tuple[str, ...]) -> Dataset:
    """With both ``train`` and ``t10k`` files, the official test set is the test split and 10% of the
    training set (stratified, by seed) is the validation split. With the test files only (as in
    ../shared/data/mnist), the 10,000 images are split 72/8/20: 8,000 to train on, 2,000 to evaluate.
    """
    source.typed_options({})
    root = source.location("a folder (holding the IDX files)")
    spec = image_spec(source.name, source.text, classes, (1, 28, 28))
    test_x, test_y = load_mnist_split(root, "t10k")
    if not any(root.glob("train-images*")):
        return pool_dataset(spec, _scaled(test_x), test_y, seed, TEST_ONLY_FRACTIONS)
    train_x, train_y = load_mnist_split(root, "train")
    method = "official test set; stratified validation from train"
    return official_test_dataset(spec, (_scaled(train_x), train_y), (_scaled(test_x), test_y), seed, method)


def _scaled(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0)[:, None, :, :]


@DATASETS.register("mnist")
def load_mnist(source: DataSource, seed: int) -> Dataset:
    """MNIST handwritten digits, classes "0" to "9"."""
    return load_idx_dataset(source, seed, MNIST_CLASSES)
