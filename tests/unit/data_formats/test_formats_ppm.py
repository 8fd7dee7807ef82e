"""read_ppm against files written here byte by byte from the Netpbm spec, and against pillow's writer."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from bastion.data.formats.ppm import read_ppm
from bastion.errors import DataFormatError, DataNotFoundError


def ppm_bytes(pixels: np.ndarray, *, maxval: int = 255, header: bytes | None = None) -> bytes:
    """Binary P6 (3 channels) or P5 (1 channel) with the canonical header unless one is given."""
    height, width, channels = pixels.shape
    magic = b"P6" if channels == 3 else b"P5"
    if header is None:
        header = magic + b"\n%d %d\n%d\n" % (width, height, maxval)
    dtype = np.uint8 if maxval < 256 else np.dtype(">u2")
    return header + pixels.astype(dtype).tobytes()


def plain_bytes(pixels: np.ndarray, *, maxval: int = 255) -> bytes:
    height, width, channels = pixels.shape
    magic = b"P3" if channels == 3 else b"P2"
    rows = [b" ".join(b"%d" % value for value in row.ravel()) for row in pixels]
    return magic + b"\n# plain\n%d %d\n%d\n" % (width, height, maxval) + b"\n".join(rows) + b"\n"


images = arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(3)))


@settings(max_examples=40, deadline=None)
@given(pixels=images)
def test_p6_round_trip(pixels: np.ndarray) -> None:
    result = read_ppm(ppm_bytes(pixels))
    assert result.dtype == np.uint8 and result.shape == pixels.shape
    np.testing.assert_array_equal(result, pixels)


@settings(max_examples=25, deadline=None)
@given(pixels=images)
def test_p3_round_trip(pixels: np.ndarray) -> None:
    np.testing.assert_array_equal(read_ppm(plain_bytes(pixels)), pixels)


@settings(max_examples=25, deadline=None)
@given(pixels=images)
def test_reads_what_pillow_writes(pixels: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PPM")
    np.testing.assert_array_equal(read_ppm(buffer.getvalue()), pixels)


def test_greyscale_keeps_one_channel() -> None:
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    for data in (ppm_bytes(pixels), plain_bytes(pixels)):
        result = read_ppm(data)
        assert result.shape == (3, 4, 1)
        np.testing.assert_array_equal(result, pixels)


def test_comments_and_odd_whitespace_in_header() -> None:
    pixels = np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint8)
    header = b"P6# after magic\n#full line\r\n 2\t# width\n\n1 \v\f255\n"
    np.testing.assert_array_equal(read_ppm(ppm_bytes(pixels, header=header)), pixels)


def test_comment_right_after_maxval_ends_at_its_newline() -> None:
    pixels = np.array([[[7, 8, 9]]], dtype=np.uint8)
    np.testing.assert_array_equal(read_ppm(ppm_bytes(pixels, header=b"P6 1 1 255#note\n")), pixels)


def test_exactly_one_whitespace_byte_after_maxval() -> None:
    # Raster bytes that look like whitespace must be read as pixels, not skipped.
    pixels = np.array([[[10, 32, 9], [13, 10, 10]]], dtype=np.uint8)
    np.testing.assert_array_equal(read_ppm(ppm_bytes(pixels, header=b"P6 2 1 255\n")), pixels)


def test_sixteen_bit_samples_are_big_endian_and_scaled() -> None:
    pixels = np.array([[[0, 65535, 32768], [257, 1, 65534]]], dtype=np.uint16)
    result = read_ppm(ppm_bytes(pixels, maxval=65535))
    np.testing.assert_array_equal(result, [[[0, 255, 128], [1, 0, 255]]])


def test_small_maxval_is_scaled_to_full_range() -> None:
    pixels = np.array([[[0, 1, 15]]], dtype=np.uint8)
    np.testing.assert_array_equal(read_ppm(ppm_bytes(pixels, maxval=15)), [[[0, 17, 255]]])
    np.testing.assert_array_equal(read_ppm(plain_bytes(pixels, maxval=15)), [[[0, 17, 255]]])


def test_result_is_a_writable_contiguous_copy() -> None:
    result = read_ppm(ppm_bytes(np.zeros((2, 2, 3), dtype=np.uint8)))
    assert result.flags.writeable and result.flags.c_contiguous
    result[0, 0, 0] = 1


def test_reads_from_path_and_names_it_in_errors(tmp_path: Path) -> None:
    pixels = np.full((2, 3, 3), 200, dtype=np.uint8)
    good = tmp_path / "good.ppm"
    good.write_bytes(ppm_bytes(pixels))
    np.testing.assert_array_equal(read_ppm(good), pixels)
    bad = tmp_path / "cut.ppm"
    bad.write_bytes(ppm_bytes(pixels)[:-1])
    with pytest.raises(DataFormatError, match=r"cut\.ppm: truncated pixel data: expected 18 bytes .* found 17"):
        read_ppm(bad)


def test_truncated_raster() -> None:
    data = ppm_bytes(np.zeros((4, 4, 3), dtype=np.uint8))[:-10]
    with pytest.raises(DataFormatError, match=r"img: truncated pixel data: expected 48 bytes"):
        read_ppm(data, name="img")


def test_truncated_sixteen_bit_raster_counts_two_bytes_per_sample() -> None:
    data = ppm_bytes(np.zeros((1, 2, 3), dtype=np.uint16), maxval=1000)[:-1]
    with pytest.raises(DataFormatError, match=r"expected 12 bytes .* found 11"):
        read_ppm(data)


def test_truncated_plain_raster() -> None:
    with pytest.raises(DataFormatError, match=r"expected 6 samples .* found 5"):
        read_ppm(b"P3 2 1 255\n1 2 3 4 5\n")


@pytest.mark.parametrize("magic", [b"P7", b"P4", b"\x89P", b"GI", b"p6", b""])
def test_bad_magic(magic: bytes) -> None:
    with pytest.raises(DataFormatError, match=r"x\.ppm: not a PPM/PGM image: magic number"):
        read_ppm(magic + b" 1 1 255\n\0\0\0", name="x.ppm")


@pytest.mark.parametrize(
    ("header", "field"),
    [
        (b"P6 a 1 255\n\0\0\0", "width"),
        (b"P6 3x 1 255\n\0\0\0", "width"),
        (b"P6 1 -1 255\n\0\0\0", "height"),
        (b"P6 1 1 2.5\n\0\0\0", "maxval"),
        (b"P6 1 1", "maxval"),
        (b"P6 1", "height"),
    ],
)
def test_non_numeric_or_missing_header_field(header: bytes, field: str) -> None:
    with pytest.raises(DataFormatError, match=rf"f\.ppm: .*{field}"):
        read_ppm(header, name="f.ppm")


def test_magic_must_be_followed_by_whitespace() -> None:
    with pytest.raises(DataFormatError, match="must be followed by whitespace"):
        read_ppm(b"P61 1 255\n\0\0\0")


@pytest.mark.parametrize("header", [b"P6 0 1 255\n", b"P6 1 0 255\n"])
def test_zero_size(header: bytes) -> None:
    with pytest.raises(DataFormatError, match="at least 1x1"):
        read_ppm(header)


@pytest.mark.parametrize("maxval", [0, 65536])
def test_maxval_out_of_range(maxval: int) -> None:
    with pytest.raises(DataFormatError, match=f"maxval {maxval} is outside 1..65535"):
        read_ppm(b"P6 1 1 %d\n\0\0\0\0\0\0" % maxval)


def test_sample_above_maxval() -> None:
    with pytest.raises(DataFormatError, match="sample value 200 exceeds the declared maxval 100"):
        read_ppm(ppm_bytes(np.full((1, 1, 3), 200, dtype=np.uint8), maxval=100))
    with pytest.raises(DataFormatError, match="exceeds the declared maxval 255"):
        read_ppm(b"P3 1 1 255\n1 2 256\n")


def test_no_pixel_data_after_maxval() -> None:
    with pytest.raises(DataFormatError, match="no pixel data"):
        read_ppm(b"P6 1 1 255")


def test_non_numeric_plain_sample() -> None:
    with pytest.raises(DataFormatError, match=r"sample 1 is not a decimal number: b'x'"):
        read_ppm(b"P2 2 1 255\n1 x\n")


def test_extra_plain_samples() -> None:
    with pytest.raises(DataFormatError, match="1 extra samples"):
        read_ppm(b"P2 1 1 255\n1 2\n")


def test_trailing_bytes_mean_a_wrong_header() -> None:
    data = ppm_bytes(np.zeros((2, 2, 3), dtype=np.uint8)) + b"\x01\x02\x03"
    with pytest.raises(DataFormatError, match="3 unexpected bytes after the 2x2x3 raster"):
        read_ppm(data)


def test_trailing_whitespace_or_second_image_is_allowed() -> None:
    first = np.full((1, 1, 3), 5, dtype=np.uint8)
    second = ppm_bytes(np.zeros((1, 1, 3), dtype=np.uint8))
    np.testing.assert_array_equal(read_ppm(ppm_bytes(first) + b"\n"), first)
    np.testing.assert_array_equal(read_ppm(ppm_bytes(first) + second), first)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"nope\.ppm: PPM file does not exist"):
        read_ppm(tmp_path / "nope.ppm")


def test_real_gtsrb_ppm_matches_pillow(shared_data_dir: Path) -> None:
    folder = shared_data_dir / "gtsrb" / "GTSRB" / "Final_Training" / "Images" / "00000"
    files = sorted(folder.glob("*.ppm"))[:5]
    if not files:
        pytest.skip(f"no GTSRB PPMs in {folder}")
    for path in files:
        with Image.open(path) as image:
            np.testing.assert_array_equal(read_ppm(path), np.asarray(image))
