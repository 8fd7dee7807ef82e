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

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bastion.data.formats.image import UPLOAD_FORMATS, decode_image_bytes, resize, to_rgb
from bastion.data.spec import DatasetSpec
from bastion.data.tabular.preprocess import raw_violations
from bastion.data.tabular.schema import FeatureKind, TabularSchema
from bastion.errors import BastionError

Loc = tuple[str | int, ...]
#: Largest uploaded image, in pixels, decoded before resizing (16 megapixels).
MAX_IMAGE_PIXELS = 1 << 24


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: where (FastAPI-style ``loc``), what, and a stable kind."""

    loc: Loc
    msg: str
    kind: str = "value_error"

    def to_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.kind}


#: Most problems one answer lists: a body of a thousand bad records gets a bounded reply.
MAX_PROBLEMS = 50


class RequestError(Exception):
    """A client error: HTTP ``status`` with FastAPI-style detail ``[{loc, msg, type}]``, one item per problem."""

    def __init__(self, msg: str, *, loc: Loc = ("body",), status: int = 422, kind: str = "value_error") -> None:
        super().__init__(msg)
        self.msg, self.loc, self.status, self.kind = msg, loc, status, kind
        self.problems: tuple[Problem, ...] = (Problem(loc, msg, kind),)

    @classmethod
    def of(cls, problems: Sequence[Problem], *, status: int = 422) -> RequestError:
        """Every problem found (at most MAX_PROBLEMS, then one item counting the rest)."""
        if not problems:
            raise ValueError("RequestError.of needs at least one problem")
        err = cls(problems[0].msg, loc=problems[0].loc, status=status, kind=problems[0].kind)
        shown = tuple(problems[:MAX_PROBLEMS])
        if len(problems) > MAX_PROBLEMS:
            rest = len(problems) - MAX_PROBLEMS
            shown += (Problem(("body",), f"{rest} more problem(s) not listed", "too_many_errors"),)
        err.problems = shown
        return err

    def detail(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.problems]


def _where(loc: Loc) -> str:
    if len(loc) == 3 and loc[1] == "line":  # a text/csv record
        return f"line {loc[2]}"
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


def _check_domain(x: Tensor, spec: DatasetSpec, locs: Sequence[Loc], named: frozenset[int] = frozenset()) -> None:
    """Every input inside the model's domain; ``named``: positions that came as raw records (their hint
    differs: the schema checks passed, so a rule of the domain's constraint set is broken)."""
    bad = ~spec.domain.is_feasible(x)
    if bad.any():
        i = int(bad.nonzero()[0])
        lower, upper = getattr(spec.domain, "lower", None), getattr(spec.domain, "upper", None)
        if spec.modality == "image" and lower is not None and upper is not None:
            hint = f"values must lie in [{float(lower.min()):g}, {float(upper.max()):g}]"
        elif i in named:
            hint = "the record passes the schema but breaks a rule of the model's constraint set"
        else:
            hint = "not a legal model-space row; send an object with named fields instead"
        raise RequestError(f"{_where(locs[i])}: outside the model's input domain ({hint})", loc=locs[i])


#: Names where a problem lies, for messages: field None is the record itself.
Where = Callable[[str | None], str]


@dataclass(frozen=True)
class _Record:
    """One named-field record of a request: its location, how messages name it, and its raw values."""

    loc: Loc
    where: Where
    values: Mapping[str, Any]


def _preprocessor(spec: DatasetSpec, what: str, loc: Loc) -> Any:
    pre = getattr(spec.domain, "preprocessor", None)
    if pre is None:
        raise RequestError(
            f"{what}: this {spec.modality} model takes nested lists of shape {list(spec.input_shape)}, not objects",
            loc=loc,
        )
    return pre


def _field_problems(record: _Record, schema: TabularSchema) -> tuple[list[Problem], set[str]]:
    """Unknown, missing and mistyped fields of one record, and the fields whose values cannot be checked."""
    problems: list[Problem] = []
    unusable: set[str] = set()
    names = schema.names
    for key in record.values:
        if key not in names:
            msg = (
                f"{record.where(key)}: unknown field (schema '{schema.name}' has {len(names)} fields; "
                "GET /v1/model lists them)"
            )
            problems.append(Problem((*record.loc, key), msg[:300], "extra_forbidden"))
    for feature in schema.features:
        loc = (*record.loc, feature.name)
        if feature.name not in record.values:
            problems.append(Problem(loc, f"{record.where(feature.name)}: missing field", "missing"))
            unusable.add(feature.name)
            continue
        value = record.values[feature.name]
        if value is None:
            problems.append(Problem(loc, f"{record.where(feature.name)}: missing value", "missing"))
            unusable.add(feature.name)
            continue
        if feature.kind is FeatureKind.CATEGORICAL:
            ok, want = isinstance(value, str), "a category text"
        else:
            ok, want = _is_number(value) and math.isfinite(value), "a finite number"
        if not ok:
            problems.append(Problem(loc, f"{record.where(feature.name)}: expected {want}, got {value!r}"[:300]))
            unusable.add(feature.name)
    return problems, unusable


def _concerns(message: str, schema: TabularSchema) -> frozenset[str]:
    """The features one ``raw_violations`` message is about (its column, relation or one-hot group)."""
    for feature in schema.features:
        if message.startswith(f"column '{feature.name}': "):
            return frozenset({feature.name})
    for rel in schema.relations:
        if message.startswith(f"relation '{rel.name}': "):
            return frozenset(rel.features)
    for group in {f.group for f in schema.features if f.group is not None}:
        if message.startswith(f"one-hot group '{group}': "):
            return frozenset(f.name for f in schema.features if f.group == group)
    return frozenset()


def _check_records(records: Sequence[_Record], spec: DatasetSpec, what: str) -> tuple[np.ndarray | None, list[Problem]]:
    """Named-field records -> ((N, D) model space through the bundle's fitted preprocessing, []), or
    (None, every problem).

    Every fault of every record is found, each naming its field: unknown, missing and mistyped fields
    first, then what the raw validator finds (bounds, integer and discrete grids, categories, one-hot
    groups, relations) on the fields that could be read.
    """
    pre = _preprocessor(spec, records[0].where(None), records[0].loc)
    schema = pre.schema
    per_record: list[list[Problem]] = []
    unusable: list[set[str]] = []
    rows = []
    for record in records:
        problems, bad = _field_problems(record, schema)
        per_record.append(problems)
        unusable.append(bad)
        row = {}
        for feature in schema.features:
            value = None if feature.name in bad else record.values[feature.name]
            row[feature.name] = (np.nan if value is None else value) if feature.is_numeric else value
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(schema.names))
    for i, message in raw_violations(df, schema, relations=True):
        if _concerns(message, schema) & unusable[i]:
            continue  # already reported as missing or mistyped
        per_record[i].append(Problem(records[i].loc, f"{records[i].where(None)}: {message}"[:500]))
    problems = [p for ps in per_record for p in ps]
    if problems:
        return None, problems
    try:
        return pre.transform(df), []
    except BastionError as exc:
        raise RequestError(f"{what}: {exc}"[:500], loc=("body", what)) from None


def _json_where(i: int) -> Where:
    return lambda field: f"inputs[{i}]" if field is None else f"inputs[{i}].{field}"


def _records(items: list[tuple[int, dict[str, Any]]], spec: DatasetSpec) -> np.ndarray:
    """JSON objects with named raw fields -> (len(items), D) model space."""
    records = [_Record(("body", "inputs", i), _json_where(i), record) for i, record in items]
    x, problems = _check_records(records, spec, "inputs")
    if x is None:
        raise RequestError.of(problems)
    return x


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
    named = frozenset(i for i, _ in records)
    _check_domain(batch, spec, [("body", "inputs", i) for i in range(len(inputs))], named)
    return batch


#: Field texts a data file uses for a missing value (what the tabular readers treat as missing).
_MISSING_TEXT = frozenset({"", "?"})


def _csv_value(text: str, numeric: bool) -> Any:
    """A CSV field as a record value: a float for a numeric feature when the text is a plain number
    (otherwise the text, which the type check then names), None for a missing value."""
    if text in _MISSING_TEXT:
        return None
    if not numeric:
        return text
    if not text.isascii() or "_" in text:
        return text
    try:
        return float(text)
    except ValueError:
        return text


def _line_where(n: int) -> Where:
    return lambda field: f"line {n}" if field is None else f"line {n}, column '{field}'"


def _csv_fields(text: str) -> list[str]:
    return [f.strip() for f in next(csv.reader([text]))]


def parse_csv(body: bytes, spec: DatasetSpec, *, max_inputs: int, header: bool | None = None) -> Tensor:
    """``text/csv``: one raw record per line, in the data file's own text form -> (N, D) model space.

    Without a header line the fields are the features in schema order (GET /v1/model), optionally followed
    by the label and the extra columns, as in a header-less data file (an NSL-KDD line pastes as is). A
    first line at least half of whose fields are schema column names is a header (``header=present`` /
    ``absent`` in the content type decides instead); the columns are then matched by name, and the label
    and extras are ignored.
    Blank lines are skipped. Every bad line is reported, each problem naming its line and field.

    Raises:
        RequestError: 415 for an image model; 413 above ``max_inputs`` records; 422 listing every problem,
            ``loc`` ``["body", "line", N]`` (N: 1-based line of the body).
    """
    pre = getattr(spec.domain, "preprocessor", None)
    if pre is None:
        raise RequestError(
            f"text/csv bodies are for tabular models; this {spec.modality} model takes application/json, "
            "application/x-npy or multipart/form-data",
            loc=("header", "content-type"),
            status=415,
        )
    schema: TabularSchema = pre.schema
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"body: not valid UTF-8 text (byte {exc.start})", kind="csv_invalid") from None
    lines = [(n, line) for n, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1) if line.strip()]
    if not lines:
        raise RequestError("body: no records (text/csv takes one raw record per line)", kind="missing")
    try:
        rows = [(n, _csv_fields(line)) for n, line in lines]
    except csv.Error as exc:
        raise RequestError(f"body: unreadable CSV: {exc}"[:300], kind="csv_invalid") from None
    known = [*schema.names, schema.label, *schema.extras]
    first_n, first = rows[0]
    if header is None:  # a record whose fields are mostly column names is implausible; a header is not
        header = 2 * sum(f in known for f in first) >= len(first)
    columns: list[str] | None = None
    if header:
        columns = first
        rows = rows[1:]
        loc: Loc = ("body", "line", first_n)
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        unknown = [c for c in columns if c not in known]
        missing = [c for c in schema.names if c not in columns]
        problems = [Problem(loc, f"line {first_n} (header): duplicate column(s) {dupes}"[:300])] if dupes else []
        problems += [
            Problem(loc, f"line {first_n} (header): column '{c}' is not in schema '{schema.name}'"[:300])
            for c in unknown
        ]
        if missing:
            shown = ", ".join(f"'{m}'" for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
            problems.append(Problem(loc, f"line {first_n} (header): missing column(s) {shown}"[:300], "missing"))
        if problems:
            raise RequestError.of(problems)
        if not rows:
            raise RequestError("body: a header line but no records", kind="missing")
    if len(rows) > max_inputs:
        raise RequestError(
            f"body: {len(rows)} records exceed the limit of {max_inputs} per request", status=413, kind="too_large"
        )
    layouts = {len(schema.names): "the features", len(schema.names) + 1: "the features and the label"}
    layouts.setdefault(len(known), "the features, the label and the extras")
    records: list[_Record] = []
    problems = []
    for n, fields in rows:
        names = columns if columns is not None else known[: len(fields)]
        if columns is not None and len(fields) != len(columns):
            problems.append(Problem(("body", "line", n), f"line {n}: {len(fields)} fields for {len(columns)} columns"))
            continue
        if columns is None and len(fields) not in layouts:
            want = " or ".join(f"{k} ({v})" for k, v in sorted(layouts.items()))
            problems.append(Problem(("body", "line", n), f"line {n}: expected {want} fields, found {len(fields)}"))
            continue
        values = {
            name: _csv_value(value, schema.feature(name).is_numeric)
            for name, value in zip(names, fields, strict=True)
            if name in schema.names
        }
        records.append(_Record(("body", "line", n), _line_where(n), values))
    x, found = _check_records(records, spec, "body") if records else (None, [])
    problems += found
    if x is None or problems:
        problems.sort(key=lambda p: int(p.loc[2]))  # line order; each line's problems keep their order
        raise RequestError.of(problems)
    batch = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    _check_domain(batch, spec, [r.loc for r in records], frozenset(range(len(records))))
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
