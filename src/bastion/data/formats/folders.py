"""Generic image sources: one sub-folder per class, or an .npz of arrays `x` and `y`.

These are the escape hatches for data that has no dedicated reader. Both validate as strictly as the
dedicated readers: a mixed-size folder or a ragged .npz fails with the offending file named rather than
being padded, cropped or guessed.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bastion.data.formats.image import decode_image, resize, to_rgb
from bastion.errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = ["IMAGE_SUFFIXES", "ImageFolderData", "NpzData", "load_image_folder", "load_npz"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm"})
_NPZ_KEYS = frozenset({"x", "y", "class_names"})


@dataclass(frozen=True)
class ImageFolderData:
    """Images of a class-per-folder tree.

    Attributes:
        x: (N, H, W, C) uint8, C = 1 for an all-grey folder, else 3.
        y: (N,) int64 index into class_names.
        class_names: the sub-folder names, sorted.
        files: (N,) paths relative to the root, in the order of x.
    """

    x: NDArray[np.uint8]
    y: NDArray[np.int64]
    class_names: tuple[str, ...]
    files: tuple[str, ...]


@dataclass(frozen=True)
class NpzData:
    """Arrays from an .npz file.

    Attributes:
        x: (N, H, W) or (N, H, W, C), uint8 or floating (finite), as stored.
        y: (N,) int64, >= 0.
        class_names: from an optional `class_names` string array, else None.
    """

    x: NDArray[np.generic]
    y: NDArray[np.int64]
    class_names: tuple[str, ...] | None


def load_image_folder(root: str | os.PathLike[str], *, size: int | None = None) -> ImageFolderData:
    """Load `root/<class>/<image>` trees (PNG, JPEG, BMP, PPM, PGM); classes are the sorted folder names.

    Files with other suffixes and hidden entries are skipped. Without `size` every image must already
    have the same shape; with it, images are resized bilinearly to size x size, and when grey and
    colour images are mixed the grey ones are replicated to RGB (lossless).

    Raises:
        ConfigError: size < 1.
        DataNotFoundError: root missing, or no class folders / no images at all.
        DataFormatError: an undecodable image, or (without size) images of different shapes.
    """
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError(f"image folder size must be a positive integer or None, got {size!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"{root}: image folder does not exist")
    class_dirs = sorted(
        (entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: entry.name,
    )
    if not class_dirs:
        raise DataNotFoundError(f"{root}: no class sub-folders")
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        images = sorted(
            entry
            for entry in class_dir.iterdir()
            if entry.is_file() and not entry.name.startswith(".") and entry.suffix.lower() in IMAGE_SUFFIXES
        )
        if not images:
            logger.warning("class folder %s holds no images; class %d will have no samples", class_dir, label)
        files += images
        labels += [label] * len(images)
    if not files:
        raise DataNotFoundError(f"{root}: no images with suffix {', '.join(sorted(IMAGE_SUFFIXES))}")
    decoded = [decode_image(path) for path in files]
    if size is None:
        first_shape = decoded[0].shape
        for path, image in zip(files, decoded, strict=True):
            if image.shape != first_shape:
                raise DataFormatError(
                    f"{path}: shape {image.shape} differs from {files[0]}'s {first_shape}; "
                    "pass size= to resize all images"
                )
    else:
        decoded = [resize(image, size, size) for image in decoded]
        if len({image.shape[2] for image in decoded}) > 1:
            logger.info("%s mixes grey and colour images; grey ones are replicated to RGB", root)
            decoded = [to_rgb(image) for image in decoded]
    return ImageFolderData(
        x=np.stack(decoded),
        y=np.asarray(labels, dtype=np.int64),
        class_names=tuple(class_dir.name for class_dir in class_dirs),
        files=tuple(path.relative_to(root).as_posix() for path in files),
    )


#: Most classes a labelled array may declare (labels are 0..K-1; {0, 1e6} would mean a million outputs).
MAX_CLASSES = 10_000


def load_npz(path: str | os.PathLike[str]) -> NpzData:
    """Load and validate an .npz holding `x` (N, H, W[, C]), `y` (N,) and optionally `class_names` (K,).

    Pickled (object) arrays are never loaded. Unknown keys are an error, so a misnamed array is not
    silently ignored.

    Raises:
        DataNotFoundError: the file does not exist.
        DataFormatError: not an .npz, object arrays, missing or unknown keys, wrong ranks or dtypes,
            non-finite float pixels, length mismatch, negative labels, or labels >= len(class_names).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: .npz file does not exist")
    # The handle is ours so it is closed even when numpy fails half-way through opening the archive.
    with path.open("rb") as handle:
        try:
            loaded = np.load(handle, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataFormatError(f"{path}: cannot read as .npz without pickle: {exc}") from exc
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataFormatError(f"{path}: expected an .npz archive, found a single .npy array")
        with loaded as npz:
            keys = set(npz.files)
            unknown, missing = keys - _NPZ_KEYS, {"x", "y"} - keys
            if missing or unknown:
                raise DataFormatError(
                    f"{path}: arrays {sorted(keys)}; needs x and y"
                    + (f", missing {sorted(missing)}" if missing else "")
                    + (f", unknown {sorted(unknown)} (allowed: {sorted(_NPZ_KEYS)})" if unknown else "")
                )
            try:
                x, y = npz["x"], npz["y"]
                names = npz["class_names"] if "class_names" in keys else None
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                raise DataFormatError(f"{path}: cannot read arrays without pickle: {exc}") from exc
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] < 1):
        raise DataFormatError(f"{path}: x must be (N, H, W) or (N, H, W, C), found shape {x.shape}")
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise DataFormatError(f"{path}: x must be uint8 or floating, found {x.dtype}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise DataFormatError(f"{path}: x has NaN or infinite values")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: y must be a 1-D integer array, found {y.dtype} {y.shape}")
    if len(y) != len(x):
        raise DataFormatError(f"{path}: x has {len(x)} samples but y has {len(y)}")
    if y.size and int(y.min()) < 0:
        raise DataFormatError(f"{path}: label {int(y.min())} is negative")
    if names is None and y.size and int(y.max()) >= MAX_CLASSES:
        raise DataFormatError(
            f"{path}: label {int(y.max())} implies {int(y.max()) + 1} classes, more than the limit of {MAX_CLASSES}; "
            "labels must be 0..K-1 (add class_names for K classes)"
        )
    class_names: tuple[str, ...] | None = None
    if names is not None:
        if len(names) > MAX_CLASSES:
            raise DataFormatError(f"{path}: {len(names)} class_names, more than the limit of {MAX_CLASSES}")
        if names.ndim != 1 or names.dtype.kind != "U":
            raise DataFormatError(f"{path}: class_names must be a 1-D string array, found {names.dtype} {names.shape}")
        class_names = tuple(str(name) for name in names)
        if y.size and int(y.max()) >= len(class_names):
            raise DataFormatError(f"{path}: label {int(y.max())} has no entry in the {len(class_names)} class_names")
    return NpzData(x=x, y=y.astype(np.int64), class_names=class_names)
