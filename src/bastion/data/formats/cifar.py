"""CIFAR-10 "python version" reader: pickled batches, from a folder or straight from the .tar.gz.

The batches are Python 2 cPickle files, and unpickling runs whatever callables a file names, so the
unpickler here resolves no real global at all: the five names a numpy array pickle uses
(`numpy.core.multiarray._reconstruct` or `numpy._core.multiarray._reconstruct`, `numpy.ndarray`,
`numpy.dtype`, and `_codecs.encode` for bytes written by Python 3 at protocol 2) map to small stand-ins
that only record their arguments. The pixels are then rebuilt with `np.frombuffer` from a whitelisted
plain dtype. Any other global, object dtypes, other codecs or malformed array states are refused before
anything runs.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bastion.errors import DataFormatError, DataNotFoundError

__all__ = ["CIFAR10_CLASS_NAMES", "CIFAR10Data", "load_cifar10", "read_cifar_batch"]

logger = logging.getLogger(__name__)

CIFAR10_CLASS_NAMES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCH = "test_batch"
_META = "batches.meta"
_MEMBERS = (*_TRAIN_BATCHES, _TEST_BATCH, _META)
_BATCH_DIR = "cifar-10-batches-py"
_ARCHIVE = "cifar-10-python.tar.gz"
_PIXELS = 32 * 32 * 3
# numpy dtype pickles name the type without byte order ('u1', 'i8'); the order comes in the state.
_PLAIN_DTYPES = frozenset({"b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8"})
_BYTE_ORDERS = {"|": "=", "=": "=", "<": "<", ">": ">"}


@dataclass(frozen=True)
class CIFAR10Data:
    """CIFAR-10 as uint8 images in [0, 255], channels last.

    Attributes:
        train_x: (50000, 32, 32, 3) for the full set (all five data batches, in order).
        train_y: (N,) int64 in 0..9.
        test_x: (10000, 32, 32, 3).
        test_y: (M,) int64 in 0..9.
        class_names: from batches.meta, indexed by label.
    """

    train_x: NDArray[np.uint8]
    train_y: NDArray[np.int64]
    test_x: NDArray[np.uint8]
    test_y: NDArray[np.int64]
    class_names: tuple[str, ...]


class _Refused(Exception):
    """The pickle asked for something outside the whitelist; becomes a DataFormatError naming the file."""


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, str):
        return value
    raise _Refused(f"expected a string in the array state, found {type(value).__name__}")


class _NDArrayType:
    """Stands for `numpy.ndarray`; it can only be passed to the `_reconstruct` stand-in."""


_NDARRAY = _NDArrayType()


class _DTypeStub:
    """Stands for `numpy.dtype(code, align, copy)`; accepts plain numeric types only."""

    def __init__(self, code: object, align: object = False, copy: object = True) -> None:
        self.code = _text(code)
        if self.code not in _PLAIN_DTYPES:
            raise _Refused(f"refusing dtype {self.code!r}; only plain numeric dtypes are allowed")
        self.byteorder = "="

    def __setstate__(self, state: object) -> None:
        # numpy's dtype state: (version, byteorder, subdescr, names, fields, elsize, alignment, flags, ...)
        if not isinstance(state, tuple) or len(state) < 5 or any(part is not None for part in state[2:5]):
            raise _Refused(f"refusing structured or malformed dtype state for {self.code!r}")
        order = _text(state[1])
        if order not in _BYTE_ORDERS:
            raise _Refused(f"unknown dtype byte order {order!r}")
        self.byteorder = _BYTE_ORDERS[order]

    def to_numpy(self) -> np.dtype[Any]:
        return np.dtype(self.byteorder + self.code)


class _ArrayStub:
    """Stands for `_reconstruct(numpy.ndarray, shape, typecode)`; BUILD hands it the array state."""

    def __init__(self, subtype: object, shape: object = (0,), typecode: object = b"b") -> None:
        if subtype is not _NDARRAY:
            raise _Refused("_reconstruct may only build numpy.ndarray")
        self.array: NDArray[Any] | None = None

    def __setstate__(self, state: object) -> None:
        # numpy's ndarray state: ([version,] shape, dtype, is_fortran, raw bytes)
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("malformed ndarray state")
        shape, dtype, is_fortran, raw = state[-4:]
        if not isinstance(shape, tuple) or not all(type(dim) is int and dim >= 0 for dim in shape):
            raise _Refused(f"malformed ndarray shape {shape!r}")
        if not isinstance(dtype, _DTypeStub) or not isinstance(is_fortran, bool):
            raise _Refused("malformed ndarray state")
        if not isinstance(raw, bytes | bytearray):
            raise _Refused("ndarray data must be raw bytes (object arrays are refused)")
        numpy_dtype = dtype.to_numpy()
        expected = int(np.prod(shape, dtype=np.int64)) * numpy_dtype.itemsize
        if len(raw) != expected:
            raise _Refused(f"ndarray of shape {shape} and dtype {numpy_dtype} needs {expected} bytes, found {len(raw)}")
        flat = np.frombuffer(bytes(raw), dtype=numpy_dtype)
        array = flat.reshape(shape, order="F" if is_fortran else "C")
        self.array = np.ascontiguousarray(array, dtype=numpy_dtype.newbyteorder("="))


def _latin1_encode(text: object, encoding: object = "utf-8") -> bytes:
    """Stands for `_codecs.encode`, which Python 3 protocol-2 pickles use to spell bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode is allowed only as encode(str, 'latin1')")
    return text.encode("latin-1")


_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _ArrayStub,
    ("numpy._core.multiarray", "_reconstruct"): _ArrayStub,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DTypeStub,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the whitelisted globals, to inert stand-ins; refuses everything else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"refusing to load global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("refusing persistent ids")


def _unpickle(data: bytes, name: str) -> dict[str, Any]:
    """Safely unpickle a CIFAR batch into a dict with str keys and numpy arrays for arrays."""
    try:
        loaded = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as exc:
        raise DataFormatError(f"{name}: {exc}") from None
    except Exception as exc:  # any failure inside a malformed pickle is a format error, whatever its type
        raise DataFormatError(f"{name}: not a valid pickle: {type(exc).__name__}: {exc}") from None
    if not isinstance(loaded, dict):
        raise DataFormatError(f"{name}: expected a pickled dict, found {type(loaded).__name__}")
    result: dict[str, Any] = {}
    for key, value in loaded.items():
        if not isinstance(key, bytes | str):
            raise DataFormatError(f"{name}: dict key {key!r} is not a string")
        if isinstance(value, _ArrayStub):
            if value.array is None:
                raise DataFormatError(f"{name}: array {key!r} was never given its data")
            value = value.array
        result[_text(key)] = value
    return result


def _labels(value: object, count: int, name: str) -> NDArray[np.int64]:
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "iu":
            raise DataFormatError(f"{name}: labels must be a 1-D integer array, found {value.dtype} {value.shape}")
        labels = value.astype(np.int64)
    elif isinstance(value, list) and all(type(label) is int for label in value):
        labels = np.asarray(value, dtype=np.int64) if value else np.empty(0, dtype=np.int64)
    else:
        raise DataFormatError(f"{name}: labels must be a list of ints")
    if len(labels) != count:
        raise DataFormatError(f"{name}: {count} images but {len(labels)} labels")
    bad = np.flatnonzero((labels < 0) | (labels >= len(CIFAR10_CLASS_NAMES)))
    if bad.size:
        raise DataFormatError(f"{name}: label {int(labels[bad[0]])} at index {int(bad[0])} is outside 0..9")
    return labels


def read_cifar_batch(
    source: str | os.PathLike[str] | bytes, *, name: str | None = None
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Read one CIFAR-10 batch file (`data_batch_N` or `test_batch`) without trusting its pickle.

    Args:
        source: a path, or the file's content as bytes.
        name: what error messages call the batch; defaults to the path, or "<bytes>".
    Returns:
        images (N, 32, 32, 3) uint8, labels (N,) int64 in 0..9.
    Raises:
        DataNotFoundError: the path does not exist.
        DataFormatError: a refused global, a corrupt pickle, data not (N, 3072) uint8, or bad labels.
    """
    if isinstance(source, bytes):
        data, label = source, name or "<bytes>"
    else:
        path = Path(source)
        label = name or str(path)
        if not path.is_file():
            raise DataNotFoundError(f"{path}: CIFAR batch file does not exist")
        data = path.read_bytes()
    batch = _unpickle(data, label)
    if "data" not in batch or "labels" not in batch:
        raise DataFormatError(f"{label}: batch needs 'data' and 'labels' entries, found {sorted(batch)}")
    pixels = batch["data"]
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != _PIXELS:
        found = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise DataFormatError(f"{label}: 'data' must be a (N, {_PIXELS}) uint8 array, found {found}")
    labels = _labels(batch["labels"], len(pixels), label)
    # Each row is the red plane, then green, then blue, each 32x32 row-major.
    images = np.ascontiguousarray(pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def _class_names(data: bytes, name: str) -> tuple[str, ...]:
    meta = _unpickle(data, name)
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != len(CIFAR10_CLASS_NAMES):
        raise DataFormatError(f"{name}: 'label_names' must list 10 class names")
    if not all(isinstance(entry, bytes | str) for entry in names):
        raise DataFormatError(f"{name}: 'label_names' entries must be strings")
    return tuple(_text(entry) for entry in names)


def _read_folder(folder: Path) -> dict[str, tuple[bytes, str]]:
    missing = [member for member in _MEMBERS if not (folder / member).is_file()]
    if missing:
        raise DataNotFoundError(f"{folder}: missing CIFAR-10 file(s) {', '.join(missing)}")
    return {member: ((folder / member).read_bytes(), str(folder / member)) for member in _MEMBERS}


def _read_archive(archive: Path) -> dict[str, tuple[bytes, str]]:
    """Read the batch members from the tar into memory; nothing is extracted to disk."""
    found: dict[str, tuple[bytes, str]] = {}
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                basename = PurePosixPath(member.name).name
                if basename not in _MEMBERS or not member.isfile():
                    continue
                if basename in found:
                    raise DataFormatError(f"{archive}: more than one {basename} member; which one is meant?")
                handle = tar.extractfile(member)
                if handle is None:
                    raise DataFormatError(f"{archive}: member {member.name} cannot be read")
                found[basename] = (handle.read(), f"{archive}:{member.name}")
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{archive}: corrupt or truncated archive: {exc}") from exc
    except OSError as exc:  # gzip.BadGzipFile and read errors
        raise DataFormatError(f"{archive}: cannot read archive: {exc}") from exc
    missing = [member for member in _MEMBERS if member not in found]
    if missing:
        raise DataNotFoundError(f"{archive}: archive has no {', '.join(missing)} member(s)")
    return found


def load_cifar10(source: str | os.PathLike[str]) -> CIFAR10Data:
    """Load CIFAR-10 (python version) from its batch folder or from `cifar-10-python.tar.gz`.

    Args:
        source: the archive; a folder with data_batch_1..5, test_batch and batches.meta; or a folder
            holding `cifar-10-batches-py/` or `cifar-10-python.tar.gz`.
    Raises:
        DataNotFoundError: the source or one of the seven files is missing.
        DataFormatError: corrupt archive or pickle, a refused pickle global, or invalid arrays or labels.
    """
    path = Path(source)
    if path.is_file():
        members = _read_archive(path)
    elif path.is_dir():
        if all((path / member).is_file() for member in _MEMBERS):
            members = _read_folder(path)
        elif (path / _BATCH_DIR).is_dir():
            members = _read_folder(path / _BATCH_DIR)
        elif (path / _ARCHIVE).is_file():
            members = _read_archive(path / _ARCHIVE)
        else:
            members = _read_folder(path)  # raises, naming the missing files
    else:
        raise DataNotFoundError(f"{path}: CIFAR-10 source does not exist")
    train = [read_cifar_batch(members[batch][0], name=members[batch][1]) for batch in _TRAIN_BATCHES]
    test_x, test_y = read_cifar_batch(members[_TEST_BATCH][0], name=members[_TEST_BATCH][1])
    class_names = _class_names(*members[_META])
    logger.debug("read CIFAR-10 from %s: %d train, %d test images", path, sum(len(x) for x, _ in train), len(test_x))
    return CIFAR10Data(
        train_x=np.concatenate([x for x, _ in train]),
        train_y=np.concatenate([y for _, y in train]),
        test_x=test_x,
        test_y=test_y,
        class_names=class_names,
    )
