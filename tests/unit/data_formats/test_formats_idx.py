"""read_idx and load_mnist_split on IDX files written here from the format description."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from bastion.data.formats.idx import load_mnist_split, read_idx
from bastion.errors import ConfigError, DataFormatError, DataNotFoundError

TYPE_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(values: np.ndarray, type_code: int) -> bytes:
    header = bytes([0, 0, type_code, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
    return header + values.astype(TYPE_CODES[type_code]).tobytes()


def write(path: Path, data: bytes, *, gzipped: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


@st.composite
def idx_arrays(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    type_code = draw(st.sampled_from(sorted(TYPE_CODES)))
    dtype = np.dtype(TYPE_CODES[type_code]).newbyteorder("=")
    shape = draw(array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5))
    elements = st.floats(width=32, allow_nan=False) if dtype == np.float32 else None
    return draw(arrays(dtype, shape, elements=elements)), type_code


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=idx_arrays(), gzipped=st.booleans())
def test_round_trip_every_type_plain_and_gzipped(tmp_path: Path, case: tuple[np.ndarray, int], gzipped: bool) -> None:
    values, type_code = case
    result = read_idx(write(tmp_path / "a.idx", idx_bytes(values, type_code), gzipped=gzipped))
    assert result.shape == values.shape
    assert result.dtype == values.dtype and result.dtype.isnative
    np.testing.assert_array_equal(result, values)


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    values = np.arange(6, dtype=np.uint8).reshape(2, 3)
    data = idx_bytes(values, 0x08)
    np.testing.assert_array_equal(read_idx(write(tmp_path / "named-plain", data, gzipped=True)), values)
    np.testing.assert_array_equal(read_idx(write(tmp_path / "named.gz", data)), values)


def test_big_endian_multibyte_values(tmp_path: Path) -> None:
    data = bytes([0, 0, 0x0C, 1, 0, 0, 0, 2]) + bytes([0, 0, 1, 2, 0xFF, 0xFF, 0xFF, 0xFE])
    np.testing.assert_array_equal(read_idx(write(tmp_path / "ints", data)), [258, -2])


@pytest.mark.parametrize("magic", [b"\x01\x00\x08\x01", b"\x00\x01\x08\x01", b"\x1f\x00\x08\x01"])
def test_wrong_magic_number(tmp_path: Path, magic: bytes) -> None:
    path = write(tmp_path / "bad-magic", magic + b"\x00\x00\x00\x01\x05")
    with pytest.raises(DataFormatError, match=rf"bad-magic: bad IDX magic number 0x{magic.hex()}"):
        read_idx(path)


def test_unknown_type_code(tmp_path: Path) -> None:
    path = write(tmp_path / "t", b"\x00\x00\x0a\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataFormatError, match="unknown IDX data type code 0x0A"):
        read_idx(path)


def test_zero_dimensions(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="0 dimensions"):
        read_idx(write(tmp_path / "z", b"\x00\x00\x08\x00"))


@pytest.mark.parametrize("gzipped", [False, True])
def test_truncated_payload_names_expected_and_actual_bytes(tmp_path: Path, gzipped: bool) -> None:
    data = idx_bytes(np.zeros((3, 2, 2), dtype=np.int16), 0x0B)[:-3]
    path = write(tmp_path / "cut-idx3-ubyte", data, gzipped=gzipped)
    with pytest.raises(DataFormatError, match=r"cut-idx3-ubyte: truncated IDX data: .* needs 24 bytes .* found 21"):
        read_idx(path)


def test_trailing_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "long", idx_bytes(np.zeros(4, dtype=np.uint8), 0x08) + b"\x00\x00")
    with pytest.raises(DataFormatError, match="declares 4; 2 trailing bytes"):
        read_idx(path)


def test_truncated_header(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="truncated IDX header: 3 dimensions need 16 bytes"):
        read_idx(write(tmp_path / "h", b"\x00\x00\x08\x03\x00\x00\x00\x01"))
    with pytest.raises(DataFormatError, match="too short"):
        read_idx(write(tmp_path / "tiny", b"\x00\x00"))


def test_corrupt_gzip_stream(tmp_path: Path) -> None:
    compressed = gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8), 0x08))
    with pytest.raises(DataFormatError, match=r"broken\.gz: corrupt or truncated gzip"):
        read_idx(write(tmp_path / "broken.gz", compressed[: len(compressed) // 2]))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="IDX file does not exist"):
        read_idx(tmp_path / "absent")


def write_mnist(
    root: Path,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    gzipped: bool = True,
    dotted: bool = False,
) -> None:
    suffix = ".gz" if gzipped else ""
    image_name = f"{split}-images.idx3-ubyte" if dotted else f"{split}-images-idx3-ubyte"
    write(root / f"{image_name}{suffix}", idx_bytes(images, 0x08), gzipped=gzipped)
    write(root / f"{split}-labels-idx1-ubyte{suffix}", idx_bytes(labels, 0x08), gzipped=gzipped)


def mnist_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


@pytest.mark.parametrize(("split", "gzipped", "dotted"), [("train", True, False), ("t10k", False, True)])
def test_load_mnist_split(tmp_path: Path, split: str, gzipped: bool, dotted: bool) -> None:
    images, labels = mnist_like(7)
    write_mnist(tmp_path, split, images, labels, gzipped=gzipped, dotted=dotted)
    x, y = load_mnist_split(tmp_path, split)
    assert x.dtype == np.uint8 and x.shape == (7, 28, 28)
    assert y.dtype == np.int64 and y.shape == (7,)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_label_out_of_range(tmp_path: Path) -> None:
    images, labels = mnist_like(5)
    labels[3] = 10
    write_mnist(tmp_path, "train", images, labels)
    with pytest.raises(DataFormatError, match=r"train-labels-idx1-ubyte\.gz: label 10 at index 3 is outside 0\.\.9"):
        load_mnist_split(tmp_path, "train")


def test_count_mismatch(tmp_path: Path) -> None:
    images, labels = mnist_like(5)
    write_mnist(tmp_path, "train", images, labels[:4])
    with pytest.raises(DataFormatError, match=r"holds 5 images but .* holds 4 labels"):
        load_mnist_split(tmp_path, "train")


def test_wrong_image_shape_or_dtype(tmp_path: Path) -> None:
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((2, 27, 28), dtype=np.uint8), 0x08))
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(2, dtype=np.uint8), 0x08))
    with pytest.raises(
        DataFormatError, match=r"expected uint8 images of shape \(N, 28, 28\), found uint8 \(2, 27, 28\)"
    ):
        load_mnist_split(tmp_path, "train")
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((2, 28, 28), dtype=np.int32), 0x0C))
    with pytest.raises(DataFormatError, match="found int32"):
        load_mnist_split(tmp_path, "train")


def test_missing_labels_file(tmp_path: Path) -> None:
    write(
        tmp_path / "t10k-images-idx3-ubyte.gz",
        idx_bytes(np.zeros((1, 28, 28), dtype=np.uint8), 0x08),
        gzipped=True,
    )
    with pytest.raises(DataNotFoundError, match="no MNIST t10k labels file; looked for t10k-labels-idx1-ubyte"):
        load_mnist_split(tmp_path, "t10k")


def test_missing_root_and_bad_split(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="MNIST folder does not exist"):
        load_mnist_split(tmp_path / "none", "train")
    with pytest.raises(ConfigError, match="unknown MNIST split 'test'"):
        load_mnist_split(tmp_path, "test")


def test_real_mnist_t10k(shared_data_dir: Path) -> None:
    root = shared_data_dir / "mnist"
    if not (root / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"MNIST t10k not in {root}")
    x, y = load_mnist_split(root, "t10k")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10000,) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(10))
    assert x.max() == 255 and x.min() == 0
    np.testing.assert_array_equal(y[:5], [7, 2, 1, 0, 4])  # the well-known first test digits
