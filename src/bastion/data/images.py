"""Image dataset SPECs: ``gtsrb:PATH``, ``cifar10:PATH``, ``fashion-mnist:PATH``, ``imagefolder:PATH``, ``npz:PATH``.

The format readers in :mod:`bastion.data.formats` turn files into validated uint8 arrays; this module
turns those into the same :class:`Dataset` as ``digits``: (C, H, W) float32 in [0, 1], train / val / test
splits rebuilt identically from the seed. Options follow the path as a query string, e.g.
``gtsrb:/data/gtsrb?size=48&roi=1``, so the SPEC recorded in a run folder rebuilds exactly the same data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bastion.data.sources import DATASETS, index_digest, load_idx_images, stratified_split
from bastion.data.spec import Dataset, DatasetSpec, Split
from bastion.domain import BoxDomain
from bastion.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)

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
#: GTSRB fractions of each class's physical tracks: (train, val, test) without an official test set,
#: (train, val) with one. Tracks, not images: 30 frames of one sign are near-duplicates.
GTSRB_TRACK_FRACTIONS = (0.7, 0.1, 0.2)
GTSRB_VAL_FRACTION = 0.1
#: Validation share of an official training set (CIFAR-10), class-stratified.
VAL_FRACTION = 0.1
#: Splits of a single pool (image folders, .npz): stratified by class.
POOL_FRACTIONS = (0.7, 0.1, 0.2)


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 0/1/true/false, got {text!r}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be >= 1, got {value}")
    return value


def split_options(name: str, path: str | None, allowed: dict[str, Callable[[str], Any]]) -> tuple[Path, dict[str, Any]]:
    """``PATH?key=value&...`` -> (path, options); unknown keys and bad values are errors naming them."""
    if path is None:
        raise ConfigError(f"{name} needs a path: {name}:PATH")
    bare, _, query = path.partition("?")
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ConfigError(f"unknown option {key!r} in {name} SPEC (options: {known})")
        if not sep:
            raise ConfigError(f"option {key!r} in {name} SPEC needs a value: {key}=VALUE")
        try:
            options[key] = allowed[key](value)
        except ValueError as exc:
            raise ConfigError(f"bad value for option {key!r} in {name} SPEC: {exc}") from None
    return Path(bare).expanduser(), options


def to_unit_chw(images: NDArray[Any]) -> torch.Tensor:
    """(N, H, W[, C]) uint8 in [0, 255] -> (N, C, H, W) float32 in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.dim() == 3:
        x = x.unsqueeze(-1)
    return x.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _take(x: torch.Tensor, y: NDArray[np.int64], idx: NDArray[np.int64]) -> Split:
    ix = torch.from_numpy(idx)
    return Split(x[ix].contiguous(), torch.from_numpy(y[idx]).long())


def _allocate(n_groups: int, held_out: tuple[float, ...]) -> list[int]:
    """How many of a class's n groups go to each held-out split; training keeps at least one."""
    counts = []
    for fraction in held_out:
        k = round(n_groups * fraction)
        if fraction > 0 and k == 0 and n_groups > len(held_out):
            k = 1  # a rare class still appears in every split
        counts.append(k)
    while sum(counts) > max(n_groups - 1, 0):
        counts[counts.index(max(counts))] -= 1
    return counts


def grouped_split(
    y: NDArray[np.int64], groups: NDArray[np.int64], held_out: tuple[float, ...], seed: int
) -> list[NDArray[np.int64]]:
    """Index arrays (train, *held_out splits): whole groups per split, each class's groups divided by ``held_out``.

    Every group (a GTSRB physical track) lands in exactly one split, so near-duplicate frames never sit
    on both sides. Groups must not span classes. Deterministic in ``seed``; indices come out shuffled.

    Raises:
        ValueError: a group holds examples of two classes, or the fractions leave nothing to train on.
    """
    if sum(held_out) >= 1 or any(f < 0 for f in held_out):
        raise ValueError(f"held-out fractions must be >= 0 and sum to < 1, got {held_out}")
    unique_groups, first = np.unique(groups, return_index=True)
    group_class = y[first]
    inverse = np.searchsorted(unique_groups, groups)
    if (group_class[inverse] != y).any():
        bad = int(groups[np.flatnonzero(group_class[inverse] != y)[0]])
        raise ValueError(f"group {bad} holds examples of more than one class")
    rng = np.random.default_rng(seed)
    assignment = np.zeros(len(unique_groups), dtype=np.int64)  # 0 = train, k = held_out[k - 1]
    for label in np.unique(group_class):
        members = np.flatnonzero(group_class == label)
        members = members[rng.permutation(len(members))]
        start = 0
        for k, count in enumerate(_allocate(len(members), held_out), start=1):
            assignment[members[start : start + count]] = k
            start += count
    example_split = assignment[inverse]
    parts = [np.flatnonzero(example_split == k) for k in range(len(held_out) + 1)]
    return [part[rng.permutation(len(part))] for part in parts]


def _image_spec(
    name: str,
    source: str,
    classes: tuple[str, ...],
    shape: tuple[int, ...],
    *,
    flip: bool,
    preprocessing: dict[str, Any] | None = None,
) -> DatasetSpec:
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


@DATASETS.register("gtsrb")
def load_gtsrb_dataset(path: str | None, seed: int, source: str) -> Dataset:
    """GTSRB (official PPM layout or the PNG re-packaging), resized RGB, split by physical track.

    Options: ``size`` (side in pixels, default 32), ``roi`` (1 = crop to the annotated sign box first).
    With ``Final_Test`` (or ``Test.csv``) the test split is the official test set and 10% of each class's
    training tracks validate; without it, each class's tracks are split 70/10/20. A folder holding only the
    test set loads with empty train and validation splits, for ``bastion evaluate --data``.
    """
    from bastion.data.formats import GTSRB_CLASS_NAMES, load_gtsrb

    root, options = split_options("gtsrb", path, {"size": _positive_int, "roi": _flag})
    size, roi = options.get("size", 32), options.get("roi", False)
    raw = load_gtsrb(root, size=size, roi_crop=roi)
    spec = _image_spec("gtsrb", source, GTSRB_CLASS_NAMES, (3, size, size), flip=False, preprocessing={"roi_crop": roi})
    x = to_unit_chw(raw.train_x)
    n_tracks = len(np.unique(raw.train_tracks))
    if raw.test_x is not None and raw.test_y is not None:
        train, val = grouped_split(raw.train_y, raw.train_tracks, (GTSRB_VAL_FRACTION,), seed)
        order = np.random.default_rng(seed).permutation(len(raw.test_y))
        test = _take(to_unit_chw(raw.test_x), raw.test_y, order)
        method = "official test set; validation = 10% of each class's physical tracks"
        parts: tuple[NDArray[np.int64], ...] = (train, val)
    else:
        train, val, held = grouped_split(raw.train_y, raw.train_tracks, GTSRB_TRACK_FRACTIONS[1:], seed)
        test = _take(x, raw.train_y, held)
        method = "by physical track, class-stratified 70/10/20 of each class's tracks"
        parts = (train, val, held)
    if len(raw.train_y) == 0:
        log.warning("GTSRB at %s has no training set: train and validation splits are empty", root)
    info = {
        "method": method,
        "n_tracks": n_tracks,
        "n_size_mismatches": raw.n_size_mismatches,
        "index_digest": index_digest(*parts),
    }
    return Dataset(spec, _take(x, raw.train_y, train), _take(x, raw.train_y, val), test, seed, info)


@DATASETS.register("cifar10")
def load_cifar10_dataset(path: str | None, seed: int, source: str) -> Dataset:
    """CIFAR-10 python batches (folder or the original .tar.gz): official test set, 10% stratified validation."""
    from bastion.data.formats import load_cifar10

    root, _ = split_options("cifar10", path, {})
    raw = load_cifar10(root)
    spec = _image_spec("cifar10", source, raw.class_names, (3, 32, 32), flip=True)
    from sklearn.model_selection import train_test_split

    train, val = train_test_split(
        np.arange(len(raw.train_y)), test_size=VAL_FRACTION, stratify=raw.train_y, random_state=seed
    )
    x = to_unit_chw(raw.train_x)
    order = np.random.default_rng(seed).permutation(len(raw.test_y))
    info = {
        "method": "official test set; stratified 10% validation from train",
        "index_digest": index_digest(train, val),
    }
    return Dataset(
        spec,
        _take(x, raw.train_y, train),
        _take(x, raw.train_y, val),
        _take(to_unit_chw(raw.test_x), raw.test_y, order),
        seed,
        info,
    )


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(path: str | None, seed: int, source: str) -> Dataset:
    """Fashion-MNIST: MNIST's IDX layout and splits with the ten clothing classes."""
    return load_idx_images(path, seed, source, name="fashion-mnist", classes=FASHION_MNIST_CLASSES)


def _pool_dataset(spec: DatasetSpec, x: torch.Tensor, y: NDArray[np.int64], seed: int, what: str) -> Dataset:
    """Stratified 70/10/20 split of one pool; a class too small to stratify is an error naming it."""
    counts = np.bincount(y, minlength=spec.num_classes)
    if (counts[counts > 0] < 5).any():
        small = [spec.classes[i] for i in np.flatnonzero((counts > 0) & (counts < 5))]
        raise DataFormatError(f"{what}: classes {small} have fewer than 5 examples; a 70/10/20 split needs 5")
    try:
        train, val, test = stratified_split(y, POOL_FRACTIONS, seed)
    except ValueError as exc:  # sklearn: a split would be smaller than the number of classes
        raise DataFormatError(f"{what}: {len(y)} examples are too few for a stratified 70/10/20 split: {exc}") from None
    info = {"method": "stratified", "fractions": list(POOL_FRACTIONS), "index_digest": index_digest(train, val, test)}
    return Dataset(spec, _take(x, y, train), _take(x, y, val), _take(x, y, test), seed, info)


@DATASETS.register("imagefolder")
def load_image_folder_dataset(path: str | None, seed: int, source: str) -> Dataset:
    """One sub-folder per class. Options: ``size`` (resize to size x size), ``flip`` (1 if mirroring keeps labels)."""
    from bastion.data.formats import load_image_folder

    root, options = split_options("imagefolder", path, {"size": _positive_int, "flip": _flag})
    raw = load_image_folder(root, size=options.get("size"))
    x = to_unit_chw(raw.x)
    spec = _image_spec("imagefolder", source, raw.class_names, tuple(x.shape[1:]), flip=options.get("flip", False))
    return _pool_dataset(spec, x, raw.y, seed, str(root))


@DATASETS.register("npz")
def load_npz_dataset(path: str | None, seed: int, source: str) -> Dataset:
    """An .npz with ``x`` (N, H, W[, C]) uint8 or float in [0, 1], ``y`` and optional ``class_names``.

    Option ``flip`` (1 if mirroring keeps labels). Float pixels outside [0, 1] are refused rather than
    rescaled by a guess.
    """
    from bastion.data.formats import load_npz

    root, options = split_options("npz", path, {"flip": _flag})
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
    spec = _image_spec("npz", source, classes, tuple(x.shape[1:]), flip=options.get("flip", False))
    return _pool_dataset(spec, x, raw.y, seed, str(root))
