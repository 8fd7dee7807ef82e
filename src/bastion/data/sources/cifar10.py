"""``cifar10:PATH``: CIFAR-10 python batches; PATH is the batch folder, its parent, or cifar-10-python.tar.gz.

The official test set is the test split and a stratified 10% of the training set validates. A mirror
image keeps its class, so augmentation may flip.
"""

from __future__ import annotations

from bastion.data.catalog import DATASETS
from bastion.data.formats.cifar import load_cifar10
from bastion.data.images import image_spec, to_unit_chw
from bastion.data.source import DataSource
from bastion.data.spec import Dataset
from bastion.data.splits import official_test_dataset


@DATASETS.register("cifar10")
def load_cifar10_dataset(source: DataSource, seed: int) -> Dataset:
    """CIFAR-10 (folder or the original .tar.gz, read in memory): official test set, 10% stratified validation."""
    source.typed_options({})
    raw = load_cifar10(source.location())
    spec = image_spec("cifar10", source.text, raw.class_names, (3, 32, 32), flip=True)
    train, test = (to_unit_chw(raw.train_x), raw.train_y), (to_unit_chw(raw.test_x), raw.test_y)
    return official_test_dataset(spec, train, test, seed, "official test set; stratified 10% validation from train")
