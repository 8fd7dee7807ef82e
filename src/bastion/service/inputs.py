"""Request bodies -> a model-space batch, or a RequestError naming the offending field.

Three input forms, all validated against the bundle's dataset spec before anything is queued:
- a nested list in the model's input shape, values inside the input domain (images, or model-space rows);
- an object with one named field per raw feature (tabular models), checked against the feature schema
  and mapped through the bundle's fitted preprocessing;
- an uploaded PNG, JPEG, BMP or PPM/PGM (multipart; other formats are refused before decoding), decoded,
  converted to the model's channels and resized to its size;
- a binary ``.npy`` array (N, *input_shape) of floats (``application/x-npy``): no per-number parsing,
  for clients that batch many inputs. Read with ``allow_pickle=False``: object arrays are refused.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bastion.data.formats.image import UPLOAD_FORMATS, decode_image_bytes, resize, to_rgb
from bastion.data.spec import DatasetSpec
from bastion.data.tabular.preprocess import raw_violations
from bastion.data.tabular.schema import FeatureKind
from bastion.errors import BastionError

Loc = tuple[str | int, ...]
#: Largest uploaded image, in pixels, decoded before resizing (16 megapixels).
MAX_IMAGE_PIXELS = 1 << 24


class RequestError(Exception):
    """A client error: HTTP ``status`` with FastAPI-style detail ``[{loc, msg, type}]``."""

    def __init__(self, msg: str, *, loc: Loc = ("body",), status: int = 422, kind: str = "value_error") -> None:
        super().__init__(msg)
        self.msg, self.loc, self.status, self.kind = msg, loc, status, kind

    def detail(self) -> list[dict[str, Any]]:
        return [{"loc": list(self.loc), "msg": self.msg, "type": self.kind}]


def _where(loc: Loc) -> str:
    out = ""
    for part in loc[1:]:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


_NUMBER_TYPES = frozenset({int, float})


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_nested(obj: Any, shape: Sequence[int], loc: Loc) -> None:
    """obj is a nested list of exactly ``shape`` whose leaves are JSON numbers."""
    if not isinstance(obj, list) or len(obj) != shape[0]:
        got = f"a list of length {len(obj)}" if isinstance(obj, list) else type(obj).__name__
        want = f"a list of length {shape[0]}"
        raise RequestError(f"{_where(loc)}: expected {want} (input shape {list(shape)}), got {got}", loc=loc)
    if len(shape) == 1:
        if {type(v) for v in obj} <= _NUMBER_TYPES:  # the common case, checked at C speed
            return
        j, v = next((j, v) for j, v in enumerate(obj) if not _is_number(v))
        raise RequestError(f"{_where((*loc, j))}: expected a number, got {type(v).__name__}", loc=(*loc, j))
    for j, row in enumerate(obj):
        _check_nested(row, shape[1:], (*loc, j))


def _array(obj: list[Any], shape: Sequence[int], loc: Loc) -> np.ndarray:
    _check_nested(obj, shape, loc)
    try:
        arr = np.asarray(obj, dtype=np.float64)
    except OverflowError:
        raise RequestError(f"{_where(loc)}: a number is too large", loc=loc) from None
    if not np.isfinite(arr).all():
        raise RequestError(f"{_where(loc)}: NaN or infinite values are not allowed", loc=loc)
    return arr


def _check_domain(x: Tensor, spec: DatasetSpec, locs: Sequence[Loc]) -> None:
    bad = ~spec.domain.is_feasible(x)
    if bad.any():
        i = int(bad.nonzero()[0])
        lower, upper = getattr(spec.domain, "lower", None), getattr(spec.domain, "upper", None)
        if spec.modality == "image" and lower is not None and upper is not None:
            hint = f"values must lie in [{float(lower.min()):g}, {float(upper.max()):g}]"
        else:
            hint = "not a legal model-space row; send an object with named fields instead"
        raise RequestError(f"{_where(locs[i])}: outside the model's input domain ({hint})", loc=locs[i])


def _records(items: list[tuple[int, dict[str, Any]]], spec: DatasetSpec) -> np.ndarray:
    """Named-field records -> (len(items), D) model space through the bundle's fitted preprocessing."""
    pre = getattr(spec.domain, "preprocessor", None)
    if pre is None:
        i = items[0][0]
        raise RequestError(
            f"inputs[{i}]: this {spec.modality} model takes nested lists of shape {list(spec.input_shape)}, "
            "not objects",
            loc=("body", "inputs", i),
        )
    schema = pre.schema
    names = schema.names
    for i, record in items:
        loc: Loc = ("body", "inputs", i)
        for key in record:
            if key not in names:
                raise RequestError(
                    f"inputs[{i}].{key}: unknown field (schema '{schema.name}' has {len(names)} fields; "
                    "GET /v1/model lists them)",
                    loc=(*loc, key),
                    kind="extra_forbidden",
                )
        for feature in schema.features:
            if feature.name not in record:
                raise RequestError(
                    f"inputs[{i}].{feature.name}: missing field", loc=(*loc, feature.name), kind="missing"
                )
            value = record[feature.name]
            if feature.kind is FeatureKind.CATEGORICAL:
                ok, want = isinstance(value, str), "a category text"
            else:
                ok, want = _is_number(value) and math.isfinite(value), "a finite number"
            if not ok:
                raise RequestError(
                    f"inputs[{i}].{feature.name}: expected {want}, got {value!r}"[:300], loc=(*loc, feature.name)
                )
    df = pd.DataFrame([record for _, record in items], columns=list(names))
    problems = raw_violations(df, schema, relations=True, limit=1)
    if problems:
        row, reason = problems[0]
        i = items[row][0]
        raise RequestError(f"inputs[{i}]: {reason}"[:500], loc=("body", "inputs", i))
    try:
        return pre.transform(df)
    except BastionError as exc:
        raise RequestError(f"inputs: {exc}"[:500], loc=("body", "inputs")) from None


def parse_json(obj: Any, spec: DatasetSpec, *, max_inputs: int) -> Tensor:
    """``{"inputs": [...]}`` -> (N, *input_shape) float32 inside the domain.

    Raises:
        RequestError: 422 naming the field; 413 when there are more than ``max_inputs`` inputs.
    """
    if not isinstance(obj, dict):
        raise RequestError(f'body: expected a JSON object {{"inputs": [...]}}, got {type(obj).__name__}')
    for key in obj:
        if key != "inputs":
            raise RequestError(
                f"{key}: unknown field (allowed: inputs)"[:300], loc=("body", key), kind="extra_forbidden"
            )
    if "inputs" not in obj:
        raise RequestError("inputs: missing field", loc=("body", "inputs"), kind="missing")
    inputs = obj["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("inputs: expected a non-empty list", loc=("body", "inputs"))
    if len(inputs) > max_inputs:
        raise RequestError(
            f"inputs: {len(inputs)} inputs exceed the limit of {max_inputs} per request",
            loc=("body", "inputs"),
            status=413,
        )
    shape = spec.input_shape
    x = np.empty((len(inputs), *shape), dtype=np.float32)
    records: list[tuple[int, dict[str, Any]]] = []
    for i, item in enumerate(inputs):
        if isinstance(item, dict):
            records.append((i, item))
        else:
            x[i] = _array(item, shape, ("body", "inputs", i))
    if records:
        x[[i for i, _ in records]] = _records(records, spec).reshape(len(records), *shape)
    batch = torch.from_numpy(x)
    _check_domain(batch, spec, [("body", "inputs", i) for i in range(len(inputs))])
    return batch


def parse_images(files: Sequence[tuple[str, bytes]], spec: DatasetSpec, *, max_inputs: int) -> Tensor:
    """Uploaded PNG / JPEG / BMP / PPM / PGM files -> (N, C, H, W) in [0, 1]: grey is replicated for RGB models,
    sizes are resized bilinearly (as the folder readers do). Colour uploads to a grey model are refused."""
    if spec.modality != "image" or len(spec.input_shape) != 3:
        raise RequestError("files: this model takes JSON inputs, not image uploads", loc=("body", "files"))
    if not files:
        raise RequestError("files: no image uploaded (multipart field 'files')", loc=("body", "files"), kind="missing")
    if len(files) > max_inputs:
        raise RequestError(
            f"files: {len(files)} images exceed the limit of {max_inputs} per request",
            loc=("body", "files"),
            status=413,
        )
    channels, height, width = spec.input_shape
    x = np.empty((len(files), channels, height, width), dtype=np.float32)
    for i, (name, data) in enumerate(files):
        loc: Loc = ("body", "files", i)
        try:
            image = decode_image_bytes(
                data, f"files[{i}] ({name})"[:200], max_pixels=MAX_IMAGE_PIXELS, formats=UPLOAD_FORMATS
            )
        except BastionError as exc:
            raise RequestError(str(exc)[:500], loc=loc) from None
        if channels == 3:
            image = to_rgb(image)
        elif image.shape[2] != channels:
            raise RequestError(
                f"files[{i}]: {image.shape[2]}-channel image for a {channels}-channel model; convert it first",
                loc=loc,
            )
        x[i] = resize(image, height, width).transpose(2, 0, 1).astype(np.float32) / 255.0
    return torch.from_numpy(x)


NPY_MAGIC = b"\x93NUMPY"


def check_npy_header(body: bytes, spec: DatasetSpec, *, max_inputs: int) -> None:
    """Read only the .npy header and check its dtype, shape and size against the body before any array
    is allocated: a 1 kB body declaring a (10**12, ...) shape is a 4xx, never an allocation.

    Raises:
        RequestError: 422 for an unreadable header, a non-float dtype, a shape other than
            (N, *input_shape) or a size that disagrees with the bytes sent; 413 for N > ``max_inputs``.
    """
    loc: Loc = ("body",)
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            header_shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            header_shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise RequestError(f"body: unreadable .npy header: {exc}"[:300], loc=loc) from None
    shape = tuple(spec.input_shape)
    if dtype.hasobject:
        raise RequestError("body: object arrays are refused (.npy bodies are read with allow_pickle=False)", loc=loc)
    if dtype.kind != "f" or dtype.itemsize not in (4, 8):
        raise RequestError(f"body: expected a float32 or float64 array, got {dtype}", loc=loc)
    if len(header_shape) != len(shape) + 1 or tuple(header_shape[1:]) != shape or header_shape[0] < 1:
        want = ", ".join(map(str, shape))
        raise RequestError(f"body: expected shape (N, {want}) with N >= 1, got {tuple(header_shape)}", loc=loc)
    if header_shape[0] > max_inputs:
        raise RequestError(
            f"body: {header_shape[0]} inputs exceed the limit of {max_inputs} per request", loc=loc, status=413
        )
    declared = math.prod(header_shape) * dtype.itemsize
    sent = len(body) - stream.tell()
    if declared != sent:
        raise RequestError(
            f"body: the .npy header declares {declared} data bytes (shape {tuple(header_shape)}, {dtype}) "
            f"but {sent} were sent",
            loc=loc,
        )


def parse_npy(body: bytes, spec: DatasetSpec, *, max_inputs: int) -> Tensor:
    """A ``.npy`` float array (N, *input_shape) -> (N, *input_shape) float32 inside the domain."""
    loc: Loc = ("body",)
    if not body.startswith(NPY_MAGIC):
        raise RequestError("body: not a .npy array (magic number missing)", loc=loc)
    check_npy_header(body, spec, max_inputs=max_inputs)
    try:
        arr = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError, SyntaxError, MemoryError) as exc:
        raise RequestError(f"body: unreadable .npy array: {exc}"[:300], loc=loc) from None
    shape = tuple(spec.input_shape)
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
        raise RequestError(f"body: expected a float32 or float64 array, got {arr.dtype}", loc=loc)
    if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != shape or len(arr) == 0:
        want = ", ".join(map(str, shape))
        raise RequestError(f"body: expected shape (N, {want}) with N >= 1, got {tuple(arr.shape)}", loc=loc)
    if len(arr) > max_inputs:
        raise RequestError(f"body: {len(arr)} inputs exceed the limit of {max_inputs} per request", loc=loc, status=413)
    finite = np.isfinite(arr).reshape(len(arr), -1).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise RequestError(f"inputs[{i}]: NaN or infinite values are not allowed", loc=("body", "inputs", i))
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    _check_domain(x, spec, [("body", "inputs", i) for i in range(len(x))])
    return x
