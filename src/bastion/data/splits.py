"""Train / validation / test splits, deterministic in the seed, and the digest that proves two runs saw the same ones.

Three shapes cover every dataset: one pool split stratified by class (:func:`pool_dataset`), an official
test set with a stratified validation share of the training set (:func:`official_test_dataset`), and
whole groups per split (:func:`grouped_split`, GTSRB's physical tracks).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bastion.data.spec import Dataset, DatasetSpec, Split
from bastion.errors import DataFormatError

#: Splits of a single pool: stratified by class.
POOL_FRACTIONS = (0.7, 0.1, 0.2)
#: Validation share of an official training set, class-stratified.
VAL_FRACTION = 0.1


#: Seeds are 0..2**32-1 (what every RNG bastion seeds accepts); derived seeds wrap around.
SEED_LIMIT = 2**32


def check_labels_splittable(y: np.ndarray, n_splits: int, what: str) -> None:
    """Refuse, with a message naming ``what``, labels no classifier can be trained and tested on:
    no examples, a single class, or a class with fewer examples than stratified splits need.

    Raises:
        DataFormatError: naming the count or the class.
    """
    if len(y) == 0:
        raise DataFormatError(f"{what}: no examples (the file or folder holds 0 rows / images)")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        only = f"label {int(classes[0])}" if len(classes) else "no label"
        raise DataFormatError(f"{what}: all {len(y)} examples are of {only}; a classifier needs at least 2 classes")
    if counts.min() < n_splits:
        small = classes[counts < n_splits].tolist()[:5]
        raise DataFormatError(
            f"{what}: classes {small} have fewer than {n_splits} examples; a stratified split needs "
            f"at least {n_splits} of each"
        )


def stratified_split(
    y: np.ndarray, fractions: tuple[float, float, float], seed: int, what: str = "data"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled, class-stratified train/val/test index arrays (deterministic in ``seed``).

    Raises:
        DataFormatError: see :func:`check_labels_splittable`, or too few examples for the fractions.
    """
    from sklearn.model_selection import train_test_split

    check_labels_splittable(y, 3, what)
    idx = np.arange(len(y))
    train_frac, val_frac, test_frac = fractions
    try:
        rest, test = train_test_split(idx, test_size=test_frac, stratify=y, random_state=seed % SEED_LIMIT)
        train, val = train_test_split(
            rest,
            test_size=val_frac / (train_frac + val_frac),
            stratify=y[rest],
            random_state=(seed + 1) % SEED_LIMIT,
        )
    except ValueError as exc:  # sklearn: a split would be smaller than the number of classes
        raise DataFormatError(f"{what}: {len(y)} examples are too few for a stratified split: {exc}") from None
    return train, val, test


def validation_split(y: np.ndarray, fraction: float, seed: int, what: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """Shuffled, class-stratified (train, val) index arrays of a training set that has an official test set.

    Raises:
        DataFormatError: see :func:`check_labels_splittable`, or too few examples for the fraction.
    """
    from sklearn.model_selection import train_test_split

    check_labels_splittable(y, 2, what)
    try:
        train, val = train_test_split(np.arange(len(y)), test_size=fraction, stratify=y, random_state=seed % SEED_LIMIT)
    except ValueError as exc:
        raise DataFormatError(f"{what}: {len(y)} examples are too few for a validation split: {exc}") from None
    return train, val


def index_digest(*parts: np.ndarray) -> str:
    """Short hash of split indices: two runs with equal digests saw exactly the same examples."""
    h = hashlib.sha256()
    for p in parts:
        h.update(np.ascontiguousarray(p, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


#: Inputs of one pool: a tensor, or a numpy array (indexed in numpy, see :func:`take`).
Inputs = torch.Tensor | NDArray[Any]


def take(x: Inputs, y: NDArray[Any], idx: NDArray[np.int64]) -> Split:
    """The examples at ``idx`` as a Split (float inputs, int64 labels).

    A numpy array is indexed in numpy and wrapped as it is, keeping its strides: a channel axis added
    with ``[:, None]`` keeps stride 1, which picks another convolution kernel than a contiguous copy and
    so changes the last bits of every result. Same data, same strides, same numbers for the same seed.
    """
    labels = torch.from_numpy(y[idx]).long()
    if isinstance(x, np.ndarray):
        return Split(torch.from_numpy(x[idx]).float(), labels)
    return Split(x[torch.from_numpy(idx)].float().contiguous(), labels)


def pool_dataset(
    spec: DatasetSpec, x: Inputs, y: NDArray[Any], seed: int, fractions: tuple[float, float, float]
) -> Dataset:
    """Stratified random split of one pool of examples into a Dataset."""
    train, val, test = stratified_split(y, fractions, seed, spec.source)
    info = {"method": "stratified", "fractions": list(fractions), "index_digest": index_digest(train, val, test)}
    return Dataset(spec, take(x, y, train), take(x, y, val), take(x, y, test), seed, info)


def official_test_dataset(
    spec: DatasetSpec,
    train: tuple[Inputs, NDArray[Any]],
    test: tuple[Inputs, NDArray[Any]],
    seed: int,
    method: str,
) -> Dataset:
    """The official test set (shuffled by seed) as the test split; validation is a stratified 10% of train."""
    (x, y), (xt, yt) = train, test
    tr, va = validation_split(y, VAL_FRACTION, seed, spec.source)
    if len(yt) == 0:
        raise DataFormatError(f"{spec.source}: the test set holds no examples")
    order = np.random.default_rng(seed).permutation(len(yt))
    info = {"method": method, "index_digest": index_digest(tr, va)}
    return Dataset(spec, take(x, y, tr), take(x, y, va), take(xt, yt, order), seed, info)


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
