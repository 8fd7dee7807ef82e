"""Decoding and resizing shared by the folder-based readers (GTSRB, image folders).

Netpbm files go through bastion's own parser; PNG, JPEG and BMP go through pillow. Every image comes
out as (H, W, C) uint8 with C = 1 (grey) or 3 (RGB), so callers handle exactly two shapes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from bastion.data.formats.files import read_bytes
from bastion.data.formats.ppm import read_ppm
from bastion.errors import DataFormatError

_NETPBM_TYPES = (b"P2", b"P3", b"P5", b"P6")
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def _flatten_alpha(rgba: NDArray[np.uint8], name: str) -> NDArray[np.uint8]:
    """Drop an alpha channel only when it is fully opaque; anything else would change the picture."""
    if (rgba[..., -1] != 255).any():
        raise DataFormatError(f"{name}: image has transparent pixels; flatten it onto a background before loading")
    return rgba[..., :-1]


def _pillow_to_array(image: Image.Image, name: str) -> NDArray[np.uint8]:
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("L", "1"):
        return np.array(image.convert("L"), dtype=np.uint8)[..., None]
    if mode == "RGB":
        return np.array(image, dtype=np.uint8)
    if mode in ("RGBA", "LA"):
        return _flatten_alpha(np.array(image, dtype=np.uint8), name).reshape(image.height, image.width, -1)
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.array(image.convert("RGB"), dtype=np.uint8)
    if mode in _SIXTEEN_BIT_MODES:
        wide = np.array(image, dtype=np.int64)
        if wide.min(initial=0) < 0 or wide.max(initial=0) > 65535:
            raise DataFormatError(f"{name}: {mode} image has values outside 0..65535")
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)[..., None]
    raise DataFormatError(f"{name}: unsupported image mode {mode!r}; expected grey or RGB pixels")


def decode_image(path: Path) -> NDArray[np.uint8]:
    """Decode one image file, choosing the decoder from its content rather than its extension.

    Returns:
        (H, W, C) uint8, C in {1, 3}.
    Raises:
        DataNotFoundError: the file does not exist.
        DataFormatError: the content is not a readable grey/RGB image (or has real transparency).
    """
    return decode_image_bytes(read_bytes(path, "an image file"), str(path))


#: Pillow formats an untrusted upload may be decoded with (Netpbm is read by bastion's own reader).
#: Everything else (EPS through Ghostscript, PSD, TIFF codecs, ...) is refused before a decoder runs.
UPLOAD_FORMATS = ("PNG", "JPEG", "BMP")


def decode_image_bytes(
    data: bytes, name: str, *, max_pixels: int | None = None, formats: Sequence[str] | None = None
) -> NDArray[np.uint8]:
    """Decode an image held in memory (an upload): same decoders and result as :func:`decode_image`.

    ``max_pixels`` refuses larger images before their pixels are decompressed (a small PNG can
    expand to gigabytes); a Netpbm raster is never larger than ``data`` itself. ``formats`` limits the
    pillow decoders tried (e.g. :data:`UPLOAD_FORMATS`); None allows any pillow can open.

    Raises:
        DataFormatError: the content is not a readable grey/RGB image, or is too large; the message
            starts with ``name``.
    """
    if data[:2] in _NETPBM_TYPES:
        return read_ppm(data, name=name)
    allowed = None if formats is None else [f.upper() for f in formats]
    try:
        with Image.open(io.BytesIO(data), formats=allowed) as image:
            if allowed is not None and image.format not in allowed:
                raise DataFormatError(f"{name}: image format {image.format} is not accepted ({', '.join(allowed)})")
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise DataFormatError(
                    f"{name}: image is {image.width}x{image.height}, more than the {max_pixels} pixels allowed"
                )
            image.load()
            return _pillow_to_array(image, name)
    except UnidentifiedImageError as exc:
        if allowed is not None:
            kinds = ", ".join([*allowed, "PPM/PGM"])
            raise DataFormatError(f"{name}: not an image in an accepted format ({kinds})") from exc
        raise DataFormatError(f"{name}: cannot decode image: {exc}") from exc
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, DataFormatError):
            raise
        raise DataFormatError(f"{name}: cannot decode image: {exc}") from exc


def resize(image: NDArray[np.uint8], height: int, width: int) -> NDArray[np.uint8]:
    """Bilinear resize of (H, W, C) uint8 to (height, width, C); pillow widens the filter when shrinking."""
    if image.shape[:2] == (height, width):
        return image
    channels = image.shape[2]
    plane: NDArray[Any] = image[..., 0] if channels == 1 else image
    resized = Image.fromarray(np.ascontiguousarray(plane)).resize((width, height), Image.Resampling.BILINEAR)
    return np.array(resized, dtype=np.uint8).reshape(height, width, channels)


def to_rgb(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """(H, W, 1) grey to (H, W, 3) by replication, which loses nothing; RGB passes through."""
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
