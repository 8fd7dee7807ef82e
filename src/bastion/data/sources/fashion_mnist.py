"""``fashion-mnist:PATH``: Fashion-MNIST, MNIST's IDX layout and splits with the ten clothing classes."""

from __future__ import annotations

from bastion.data.catalog import DATASETS
from bastion.data.source import DataSource
from bastion.data.sources.mnist import load_idx_dataset
from bastion.data.spec import Dataset

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(source: DataSource, seed: int) -> Dataset:
    """Fashion-MNIST from a folder of IDX files; splits as for ``mnist``."""
    return load_idx_dataset(source, seed, FASHION_MNIST_CLASSES)
