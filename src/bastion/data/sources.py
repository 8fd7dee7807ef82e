"""Data SPEC strings -> datasets. ``NAME`` or ``NAME:PATH``; each loader is registered by name.

The syntax is fixed: ``digits`` (bundled with scikit-learn, no download), ``mnist:PATH`` (IDX files),
``gtsrb:PATH``, ``cifar10:PATH``, ``nsl-kdd:PATH``, ``phishing:PATH``, ``malware:PATH``. Names whose
loader is not installed in this version are listed by the error for unknown names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bastion.data.spec import Dataset, DatasetSpec, Split
from bastion.domain import BoxDomain
from bastion.errors import ConfigError, DataNotFoundError
from bastion.registry import Registry

#: name -> loader(path or None, seed, source string) -> Dataset
DATASETS: Registry[Dataset] = Registry("dataset")


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``NAME[:PATH]``; the path may itself contain colons."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("data SPEC must be a non-empty string such as 'digits' or 'mnist:/path/to/mnist'")
    name, sep, path = spec.strip().partition(":")
    name = name.strip().lower()
    if sep and not path:
        raise ConfigError(f"data SPEC {spec!r} has an empty path after ':'")
    return name, (path or None)


def load_dataset(spec: str, *, seed: int = 0) -> Dataset:
    """Load a dataset from its SPEC string with splits rebuilt identically from ``seed``.

    Raises:
        ConfigError: unknown dataset name or malformed SPEC.
        DataNotFoundError: the path does not exist.
    """
    name, path = parse_spec(spec)
    loader = DATASETS.get(name)
    # Image loaders take options after the path (``gtsrb:PATH?size=48``); the path alone must exist.
    bare = path.split("?", 1)[0] if path is not None else None
    if bare is not None and not Path(bare).expanduser().exists():
        raise DataNotFoundError(f"data path for {name!r} does not exist: {bare}")
    return loader(path, seed, spec)


def stratified_split(
    y: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled, class-stratified train/val/test index arrays (deterministic in ``seed``)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train_frac, val_frac, test_frac = fractions
    rest, test = train_test_split(idx, test_size=test_frac, stratify=y, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_frac / (train_frac + val_frac), stratify=y[rest], random_state=seed + 1
    )
    return train, val, test


def index_digest(*parts: np.ndarray) -> str:
    """Short hash of split indices: two runs with equal digests saw exactly the same examples."""
    h = hashlib.sha256()
    for p in parts:
        h.update(np.ascontiguousarray(p, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def make_dataset(
    spec: DatasetSpec, x: np.ndarray, y: np.ndarray, seed: int, fractions: tuple[float, float, float]
) -> Dataset:
    """Stratified random split of one pool of examples into a Dataset."""
    train, val, test = stratified_split(y, fractions, seed)

    def split(ix: np.ndarray) -> Split:
        return Split(torch.from_numpy(x[ix]).float(), torch.from_numpy(y[ix]).long())

    info = {
        "method": "stratified",
        "fractions": list(fractions),
        "index_digest": index_digest(train, val, test),
    }
    return Dataset(spec, split(train), split(val), split(test), seed, info)


@DATASETS.register("digits")
def load_digits(path: str | None, seed: int, source: str) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 17 grey levels) scaled to [0, 1]."""
    if path is not None:
        raise ConfigError("the digits dataset is bundled with scikit-learn and takes no path")
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    spec = DatasetSpec(
        name="digits",
        source=source,
        modality="image",
        classes=tuple(str(c) for c in range(10)),
        input_shape=(1, 8, 8),
        domain=BoxDomain.unit(),
    )
    return make_dataset(spec, x, y, seed, (0.6, 0.2, 0.2))


MNIST_CLASSES = tuple(str(c) for c in range(10))


@DATASETS.register("mnist")
def load_mnist(path: str | None, seed: int, source: str) -> Dataset:
    """MNIST / Fashion-MNIST IDX files in a folder, scaled to [0, 1], shape (1, 28, 28).

    With both ``train`` and ``t10k`` files, the official test set is the test split and 10% of the
    training set (stratified, by seed) is the validation split. With the test files only (as in
    ../shared/data/mnist), the 10,000 images are split 72/8/20: 8,000 to train on, 2,000 to evaluate.
    """
    return load_idx_images(path, seed, source, name="mnist", classes=MNIST_CLASSES)


def load_idx_images(path: str | None, seed: int, source: str, *, name: str, classes: tuple[str, ...]) -> Dataset:
    """The MNIST-format loader behind ``mnist`` and ``fashion-mnist`` (same files, other class names)."""
    from bastion.data.formats import load_mnist_split

    if path is None:
        raise ConfigError(f"{name} needs a folder: {name}:PATH (holding the IDX files)")
    root = Path(path).expanduser()
    spec = DatasetSpec(
        name=name,
        source=source,
        modality="image",
        classes=classes,
        input_shape=(1, 28, 28),
        domain=BoxDomain.unit(),
    )

    def scaled(images: np.ndarray) -> np.ndarray:
        return (images.astype(np.float32) / 255.0)[:, None, :, :]

    has_train = any(root.glob("train-images*"))
    test_x, test_y = load_mnist_split(root, "t10k")
    if not has_train:
        return make_dataset(spec, scaled(test_x), test_y, seed, (0.72, 0.08, 0.2))
    train_x, train_y = load_mnist_split(root, "train")
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(train_y))
    train, val = train_test_split(idx, test_size=0.1, stratify=train_y, random_state=seed)
    order = np.random.default_rng(seed).permutation(len(test_y))
    x, xt = scaled(train_x), scaled(test_x)
    info = {"method": "official test set; stratified validation from train", "index_digest": index_digest(train, val)}
    return Dataset(
        spec,
        Split(torch.from_numpy(x[train]), torch.from_numpy(train_y[train]).long()),
        Split(torch.from_numpy(x[val]), torch.from_numpy(train_y[val]).long()),
        Split(torch.from_numpy(xt[order]), torch.from_numpy(test_y[order]).long()),
        seed,
        info,
    )


def _tabular_loader(kind: str) -> Callable[[str | None, int, str], Dataset]:
    def load(path: str | None, seed: int, source: str) -> Dataset:
        from bastion.data.tabular.sources import load_tabular  # pandas only when tabular data is loaded

        return load_tabular(source, seed=seed).dataset

    load.__doc__ = f"``{kind}:PATH[?options]``: a tabular security dataset (docs/tabular.md)."
    return load


for _kind in ("nsl-kdd", "phishing", "malware", "unsw-nb15", "cic-ids2017", "csv"):
    DATASETS.register(_kind)(_tabular_loader(_kind))
