"""``gtsrb:PATH``: the German Traffic Sign Recognition Benchmark, resized RGB, split by physical track.

PATH holds the official PPM layout (``Final_Training`` and/or ``Final_Test``, or ``GTSRB/`` with them)
or the PNG re-packaging (``Train.csv`` / ``Test.csv``). Options: ``size`` (side in pixels, default 32)
and ``roi`` (1 = crop to the annotated sign box first; it changes the pixels, so it enters the spec's
fingerprint).
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import NDArray

from bastion.data.catalog import DATASETS
from bastion.data.formats.gtsrb import GTSRB_CLASS_NAMES, load_gtsrb
from bastion.data.images import image_spec, to_unit_chw
from bastion.data.source import DataSource, image_side, yes_no
from bastion.data.spec import Dataset
from bastion.data.splits import grouped_split, index_digest, take

log = logging.getLogger(__name__)

#: Fractions of each class's physical tracks: (train, val, test) without an official test set,
#: (train, val) with one. Tracks, not images: 30 frames of one sign are near-duplicates.
GTSRB_TRACK_FRACTIONS = (0.7, 0.1, 0.2)
GTSRB_VAL_FRACTION = 0.1
DEFAULT_SIZE = 32


@DATASETS.register("gtsrb")
def load_gtsrb_dataset(source: DataSource, seed: int) -> Dataset:
    """GTSRB as (3, size, size) floats in [0, 1], split by physical track.

    With ``Final_Test`` (or ``Test.csv``) the test split is the official test set and 10% of each class's
    training tracks validate; without it, each class's tracks are split 70/10/20. A folder holding only the
    test set loads with empty train and validation splits, for ``bastion evaluate --data``.
    """
    options = source.typed_options({"size": image_side, "roi": yes_no})
    root = source.location()
    size, roi = options.get("size", DEFAULT_SIZE), options.get("roi", False)
    raw = load_gtsrb(root, size=size, roi_crop=roi)
    spec = image_spec("gtsrb", source.text, GTSRB_CLASS_NAMES, (3, size, size), preprocessing={"roi_crop": roi})
    x = to_unit_chw(raw.train_x)
    n_tracks = len(np.unique(raw.train_tracks))
    if raw.test_x is not None and raw.test_y is not None:
        train, val = grouped_split(raw.train_y, raw.train_tracks, (GTSRB_VAL_FRACTION,), seed)
        order = np.random.default_rng(seed).permutation(len(raw.test_y))
        test = take(to_unit_chw(raw.test_x), raw.test_y, order)
        method = "official test set; validation = 10% of each class's physical tracks"
        parts: tuple[NDArray[np.int64], ...] = (train, val)
    else:
        train, val, held = grouped_split(raw.train_y, raw.train_tracks, GTSRB_TRACK_FRACTIONS[1:], seed)
        test = take(x, raw.train_y, held)
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
    return Dataset(spec, take(x, raw.train_y, train), take(x, raw.train_y, val), test, seed, info)
