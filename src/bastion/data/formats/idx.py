"""IDX reader (the MNIST / Fashion-MNIST container), written from the format description on LeCun's page.

An IDX file is a 4-byte magic (0x00 0x00 type ndim), ndim big-endian uint32 sizes, then the values in
row-major order, big-endian. Files are usually gzipped; gzip is detected from its magic bytes, never from
the file name, because renamed and pre-extracted copies are common.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bastion.data.formats.files import read_bytes
from bastion.errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = ["MNIST_SPLITS", "load_mnist_split", "read_idx"]

logger = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MNIST_SPLITS = ("train", "t10k")
_N_DIGITS = 10


#: Largest IDX payload read (4 GiB; MNIST's training images are 47 MB).
MAX_IDX_BYTES = 1 << 32
#: Deflate cannot expand data more than about 1032:1, so a gzipped header declaring more is refused
#: before decompressing. Peak memory of a gzipped IDX file is thus at most its size x (1 + 1032).
MAX_GZIP_RATIO = 1032


def _declared_bytes(header: bytes, name: str) -> int:
    """The payload bytes an IDX header declares; Python ints, so huge dims cannot overflow."""
    if len(header) < 4:
        raise DataFormatError(f"{name}: {len(header)} bytes is too short for an IDX magic number (4 bytes)")
    type_code, ndim = header[2], header[3]
    dtype = _IDX_DTYPES.get(type_code)
    header_len = 4 + 4 * ndim
    if dtype is None or len(header) < header_len:
        return 0  # _parse_idx names the problem
    dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return math.prod(dims) * dtype.itemsize


def _read_maybe_gzipped(path: Path) -> bytes:
    """The IDX bytes; a gzipped file is decompressed only as far as its header declares (plus one byte to
    detect trailing data), after checking that size against :data:`MAX_IDX_BYTES` and the deflate limit."""
    raw = read_bytes(path, "an IDX file")
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            head = stream.read(4)
            head += stream.read(4 * head[3]) if len(head) == 4 else b""
            payload = _declared_bytes(head, str(path))
            limit = min(MAX_IDX_BYTES, MAX_GZIP_RATIO * len(raw))
            if payload > limit:
                raise DataFormatError(
                    f"{path}: IDX header declares {payload} bytes of data, more than this {len(raw)}-byte gzip "
                    f"file can hold or than the limit of {MAX_IDX_BYTES} bytes"
                )
            return head + stream.read(payload + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{path}: corrupt or truncated gzip stream: {exc}") from exc


def _parse_idx(raw: bytes, name: str) -> NDArray[Any]:
    if len(raw) < 4:
        raise DataFormatError(f"{name}: {len(raw)} bytes is too short for an IDX magic number (4 bytes)")
    zero0, zero1, type_code, ndim = raw[:4]
    if zero0 != 0 or zero1 != 0:
        raise DataFormatError(f"{name}: bad IDX magic number 0x{raw[:4].hex()}: the first two bytes must be 0x00 0x00")
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise DataFormatError(f"{name}: unknown IDX data type code 0x{type_code:02X}; expected one of {known}")
    if ndim == 0:
        raise DataFormatError(f"{name}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataFormatError(
            f"{name}: truncated IDX header: {ndim} dimensions need {header_len} bytes, file has {len(raw)}"
        )
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: dims whose product overflows int64 are fine
    actual = len(raw) - header_len
    if actual < expected:
        raise DataFormatError(
            f"{name}: truncated IDX data: shape {shape} of {dtype.newbyteorder('=').name} needs "
            f"{expected} bytes after the header, found {actual}"
        )
    if actual > expected:
        raise DataFormatError(
            f"{name}: IDX data is {actual} bytes but shape {shape} of {dtype.newbyteorder('=').name} "
            f"declares {expected}; {actual - expected} trailing bytes (a gzipped file is read only that far)"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    return values.astype(dtype.newbyteorder("="))  # native byte order, writable copy


def read_idx(path: str | os.PathLike[str]) -> NDArray[Any]:
    """Read an IDX file, plain or gzipped, into a native-byte-order array of the declared shape.

    Returns:
        (d1, ..., dn) array of uint8, int8, int16, int32, float32 or float64, as the type code says.
    Raises:
        DataNotFoundError: the file does not exist.
        DataFormatError: corrupt gzip, magic not 0x00 0x00 type ndim, unknown type code, or a payload
            whose length differs from the declared shape (truncated or trailing bytes).
    """
    path = Path(path)
    return _parse_idx(_read_maybe_gzipped(path), str(path))


def _find_member(root: Path, split: str, kind: str, rank: int) -> Path:
    """The first existing spelling of `{split}-{kind}-idx{rank}-ubyte`, plain or with .gz."""
    candidates = [root / f"{split}-{kind}-idx{rank}-ubyte{suffix}" for suffix in ("", ".gz")] + [
        root / f"{split}-{kind}.idx{rank}-ubyte{suffix}" for suffix in ("", ".gz")
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(candidate.name for candidate in candidates)
    raise DataNotFoundError(f"{root}: no MNIST {split} {kind} file; looked for {tried}")


def load_mnist_split(root: str | os.PathLike[str], split: str) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Load one MNIST-format split (MNIST, Fashion-MNIST) from the four-file IDX layout.

    Args:
        root: folder holding `{split}-images-idx3-ubyte[.gz]` and `{split}-labels-idx1-ubyte[.gz]`
            (the `{split}-images.idx3-ubyte` spelling is accepted too).
        split: "train" or "t10k".
    Returns:
        images (N, 28, 28) uint8 in [0, 255], labels (N,) int64 in 0..9.
    Raises:
        ConfigError: unknown split.
        DataNotFoundError: root or one of the two files is missing.
        DataFormatError: malformed IDX, wrong dtype or shape, image and label counts differ, or a label
            outside 0..9.
    """
    if split not in MNIST_SPLITS:
        raise ConfigError(f"unknown MNIST split {split!r}; expected one of {MNIST_SPLITS}")
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"{root}: MNIST folder does not exist")
    images_path = _find_member(root, split, "images", 3)
    labels_path = _find_member(root, split, "labels", 1)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataFormatError(
            f"{images_path}: expected uint8 images of shape (N, 28, 28), found {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataFormatError(
            f"{labels_path}: expected uint8 labels of shape (N,), found {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise DataFormatError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    bad = np.flatnonzero(labels >= _N_DIGITS)
    if bad.size:
        raise DataFormatError(
            f"{labels_path}: label {int(labels[bad[0]])} at index {int(bad[0])} is outside 0..9 "
            f"({bad.size} such labels)"
        )
    logger.debug("read %d MNIST %s images from %s", len(images), split, root)
    return images, labels.astype(np.int64)
