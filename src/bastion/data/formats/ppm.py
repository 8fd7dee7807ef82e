"""Netpbm PPM/PGM reader written from the Netpbm format specification, in numpy only.

GTSRB ships ~39k P6 files, so this parser is the hot path of the GTSRB reader; it avoids an image library
and checks every header field, because a truncated or mislabelled file must fail loudly rather than
turn into a plausible-looking image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bastion.data.formats.files import read_bytes
from bastion.errors import DataFormatError

__all__ = ["read_ppm"]

# Netpbm "whitespace": blanks, TABs, CRs, LFs, and (per the spec) vertical tab and form feed.
_WHITESPACE = frozenset(b" \t\r\n\v\f")
_DIGITS = frozenset(b"0123456789")
# magic -> (channels, plain ASCII raster)
_KINDS: dict[bytes, tuple[int, bool]] = {
    b"P6": (3, False),
    b"P5": (1, False),
    b"P3": (3, True),
    b"P2": (1, True),
}


class _Header:
    """Cursor over the header bytes; every number is read the way libnetpbm reads it."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name
        self.pos = 2  # after the magic

    def _skip_comment(self) -> None:
        """Skip from '#' up to, not including, the next CR or LF."""
        while self.pos < len(self.data) and self.data[self.pos] not in (0x0A, 0x0D):
            self.pos += 1

    def number(self, field: str) -> int:
        """Read one decimal header field, skipping whitespace and comments before it."""
        data = self.data
        while self.pos < len(data):
            byte = data[self.pos]
            if byte in _WHITESPACE:
                self.pos += 1
            elif byte == 0x23:  # '#'
                self._skip_comment()
            else:
                break
        start = self.pos
        while self.pos < len(data) and data[self.pos] in _DIGITS:
            self.pos += 1
        if self.pos == start:
            found = data[start : start + 8]
            what = f"found {found!r}" if found else "the file ends there"
            raise DataFormatError(f"{self.name}: expected the {field} as a decimal number in the header, {what}")
        if self.pos < len(data) and data[self.pos] not in _WHITESPACE and data[self.pos] != 0x23:
            raise DataFormatError(
                f"{self.name}: the {field} in the header is not a number: "
                f"{data[start : self.pos + 1]!r} (byte offset {start})"
            )
        return int(data[start : self.pos])

    def raster_start(self) -> int:
        """Consume the single whitespace byte after maxval (a comment there ends at its newline)."""
        if self.pos >= len(self.data):
            raise DataFormatError(f"{self.name}: the file ends right after the maxval; no pixel data")
        if self.data[self.pos] == 0x23:
            self._skip_comment()
            if self.pos >= len(self.data):
                raise DataFormatError(f"{self.name}: the file ends inside the header comment; no pixel data")
        return self.pos + 1


def _source_bytes(source: str | os.PathLike[str] | bytes | bytearray, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray):
        return bytes(source), name or "<bytes>"
    path = Path(source)
    return read_bytes(path, "a PPM file"), name or str(path)


def _to_uint8(samples: NDArray[np.unsignedinteger[Any]], maxval: int, name: str) -> NDArray[np.uint8]:
    """Check samples <= maxval and rescale [0, maxval] to [0, 255] with rounding."""
    peak = int(samples.max(initial=0))
    if peak > maxval:
        raise DataFormatError(f"{name}: a sample value {peak} exceeds the declared maxval {maxval}")
    if maxval == 255:
        return samples.astype(np.uint8)  # a copy: frombuffer views are read-only
    wide = samples.astype(np.uint32)
    return ((wide * 255 + maxval // 2) // maxval).astype(np.uint8)


def _binary_raster(
    data: bytes, start: int, shape: tuple[int, int, int], maxval: int, name: str
) -> NDArray[np.unsignedinteger[Any]]:
    height, width, channels = shape
    bytes_per_sample = 1 if maxval < 256 else 2
    expected = height * width * channels * bytes_per_sample
    available = len(data) - start
    if available < expected:
        raise DataFormatError(
            f"{name}: truncated pixel data: expected {expected} bytes for {width}x{height}x{channels} "
            f"at maxval {maxval}, found {max(available, 0)}"
        )
    trailing = data[start + expected :].lstrip(bytes(_WHITESPACE))
    # The spec allows several images in one file; anything else after the raster means a wrong header.
    if trailing and not (trailing[:1] == b"P" and trailing[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6")):
        raise DataFormatError(
            f"{name}: {len(data) - start - expected} unexpected bytes after the {width}x{height}x{channels} "
            "raster; the header dimensions do not match the pixel data"
        )
    dtype = np.dtype(np.uint8) if bytes_per_sample == 1 else np.dtype(">u2")
    samples: NDArray[np.unsignedinteger[Any]] = np.frombuffer(
        data, dtype=dtype, count=height * width * channels, offset=start
    )
    return samples.reshape(shape)


def _plain_raster(data: bytes, start: int, shape: tuple[int, int, int], name: str) -> NDArray[np.unsignedinteger[Any]]:
    height, width, channels = shape
    expected = height * width * channels
    body = data[start - 1 :]  # the delimiting whitespace is harmless for split()
    lines = [line.split(b"#", 1)[0] for line in body.replace(b"\r", b"\n").split(b"\n")]
    tokens = b" ".join(lines).split()
    for index, token in enumerate(tokens[:expected]):
        if not token.isdigit():
            raise DataFormatError(f"{name}: plain raster sample {index} is not a decimal number: {token!r}")
    if len(tokens) < expected:
        raise DataFormatError(
            f"{name}: truncated pixel data: expected {expected} samples for {width}x{height}x{channels}, "
            f"found {len(tokens)}"
        )
    if len(tokens) > expected:
        raise DataFormatError(
            f"{name}: {len(tokens) - expected} extra samples after the {width}x{height}x{channels} raster"
        )
    values = [int(token) for token in tokens]
    if max(values, default=0) > 65535:
        raise DataFormatError(f"{name}: a sample value {max(values)} exceeds 65535")
    return np.asarray(values, dtype=np.uint32).reshape(shape)


def read_ppm(source: str | os.PathLike[str] | bytes | bytearray, *, name: str | None = None) -> NDArray[np.uint8]:
    """Decode a Netpbm image: P6/P3 colour to (H, W, 3) uint8, P5/P2 greyscale to (H, W, 1) uint8.

    Greyscale keeps one channel on purpose: replicating it would hide what the file holds. Samples are
    rescaled from [0, maxval] to [0, 255] (maxval 1..65535; 16-bit samples are big-endian), so every
    result uses the same pixel range whatever the file's bit depth.

    Args:
        source: a file path, or the file's content as bytes.
        name: what error messages call the image; defaults to the path, or "<bytes>".
    Returns:
        A writable C-contiguous uint8 array; for a multi-image file, the first image.
    Raises:
        DataNotFoundError: the path does not exist.
        DataFormatError: bad magic, non-numeric or out-of-range header field, sample above maxval,
            truncated pixel data, or bytes after the raster that are not another image.
    """
    data, label = _source_bytes(source, name)
    magic = data[:2]
    if magic not in _KINDS:
        raise DataFormatError(f"{label}: not a PPM/PGM image: magic number {magic!r}, expected one of P6, P5, P3, P2")
    channels, plain = _KINDS[magic]
    if len(data) > 2 and data[2] not in _WHITESPACE and data[2] != 0x23:
        raise DataFormatError(f"{label}: magic number {magic!r} must be followed by whitespace")
    header = _Header(data, label)
    width = header.number("width")
    height = header.number("height")
    maxval = header.number("maxval")
    if width < 1 or height < 1:
        raise DataFormatError(f"{label}: image size {width}x{height} must be at least 1x1")
    if not 1 <= maxval <= 65535:
        raise DataFormatError(f"{label}: maxval {maxval} is outside 1..65535")
    start = header.raster_start()
    shape = (height, width, channels)
    samples = _plain_raster(data, start, shape, label) if plain else _binary_raster(data, start, shape, maxval, label)
    return _to_uint8(samples, maxval, label)
