"""The engine behind every tabular reader: text rows in, a schema-checked :class:`TabularTable` out.

A format parser (:mod:`bastion.data.formats.csv`, :mod:`bastion.data.formats.arff`) turns a file into a
:class:`RowStream` of (line, fields); this module converts the fields column by column against the
schema. A row is never mis-parsed in silence: a wrong field count, a non-number in a numeric column, a
value outside its bounds or allowed values, an unknown category or label, NaN or infinity make it a *bad
row* (line number and reason), which is dropped or fatal. Blank rows and header rows repeated inside a
file are *skipped* and counted separately. Lines are 1-based physical lines of the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bastion.data.tabular.schema import Feature, FeatureKind, TabularSchema
from bastion.data.tabular.table import BadRows, TabularTable
from bastion.errors import ConfigError, DataFormatError, DataNotFoundError

_CHUNK_ROWS = 50_000
_MISSING_TEXT = frozenset({"", "?"})
_EXACT_INT = 2.0**53


@dataclass
class RowStream:
    """Rows of one file as (line, fields), plus the lines refused or skipped before value checks."""

    names: list[str]
    name_lines: dict[str, int]
    rows: Iterator[tuple[int, list[str]]]
    bad: list[tuple[int, str]]
    skipped: list[tuple[int, str]]
    allowed_text: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass
class _Piece:
    numeric: dict[str, np.ndarray]
    text: dict[str, np.ndarray]
    labels: np.ndarray
    raw_labels: np.ndarray
    lines: np.ndarray
    reasons: dict[int, list[str]]


def check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    """A reader argument outside ``allowed`` is a ConfigError naming it (Python callers get no SPEC parser)."""
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")


def existing_file(path: str | Path) -> Path:
    """``path`` as a Path; DataNotFoundError naming it unless it is a file."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: file not found")
    return path


def decoded_lines(path: Path, encoding: str) -> Iterator[tuple[int, str | None, str]]:
    """(line, text without newline, '') or (line, None, reason) when the bytes do not decode."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as err:
                yield number, None, f"not valid {encoding} text (byte {err.start} of the line)"
                continue
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield number, text.rstrip("\r\n"), ""


class _Converter:
    """Turns blocks of text rows into typed columns and per-row reasons, against one schema."""

    def __init__(
        self,
        schema: TabularSchema,
        names: list[str],
        *,
        label_normalizer: Callable[[str], str] | None,
        allowed_text: Mapping[str, frozenset[str]],
        clip_nonfinite: bool,
        name_lines: Mapping[str, int],
    ) -> None:
        self.schema = schema
        self.position = {n: i for i, n in enumerate(names)}
        self.label_normalizer = label_normalizer
        self.allowed_text = allowed_text
        self.clip_nonfinite = clip_nonfinite
        self.name_lines = name_lines
        self.extras = [e for e in schema.extras if e in self.position]

    def convert(self, rows: list[list[str]], lines: list[int]) -> _Piece:
        table = np.array(rows, dtype=object).reshape(len(rows), len(self.position))
        reasons: dict[int, list[str]] = {}

        def flag(mask: np.ndarray, column: str, problem: Callable[[int], str]) -> None:
            for i in np.flatnonzero(mask):
                reasons.setdefault(int(i), []).append(f"column '{column}': {problem(int(i))}")

        numeric: dict[str, np.ndarray] = {}
        text: dict[str, np.ndarray] = {}
        for feature in self.schema.features:
            raw = table[:, self.position[feature.name]]
            self._check_declared(raw, feature.name, flag)
            if feature.is_numeric:
                numeric[feature.name] = self._numeric(raw, feature, flag)
            else:
                text[feature.name] = self._categorical(raw, feature, flag)
        for extra in self.extras:
            text[extra] = table[:, self.position[extra]]
        raw_labels = table[:, self.position[self.schema.label]]
        self._check_declared(raw_labels, self.schema.label, flag)
        if self.label_normalizer is not None:
            raw_labels = np.array([self.label_normalizer(t) for t in raw_labels], dtype=object)
        labels = np.array([self.schema.class_index(t) if t else None for t in raw_labels], dtype=object)
        unknown = np.array([v is None for v in labels], dtype=bool)
        flag(
            unknown,
            self.schema.label,
            lambda i: "empty label" if not raw_labels[i] else f"unknown label '{raw_labels[i]}'",
        )
        labels[unknown] = -1
        return _Piece(
            numeric=numeric,
            text=text,
            labels=labels.astype(np.int64),
            raw_labels=raw_labels,
            lines=np.asarray(lines, dtype=np.int64),
            reasons=reasons,
        )

    def _check_declared(self, raw: np.ndarray, column: str, flag: Callable[..., None]) -> None:
        allowed = self.allowed_text.get(column)
        if allowed is None:
            return
        bad = np.array([t not in allowed and t not in _MISSING_TEXT for t in raw], dtype=bool)
        line = self.name_lines.get(column)
        flag(bad, column, lambda i: f"value '{raw[i]}' is not declared in its @attribute (line {line})")

    def _numeric(self, raw: np.ndarray, feature: Feature, flag: Callable[..., None]) -> np.ndarray:
        values = _to_float(raw)
        nan = np.isnan(values)
        if nan.any():
            missing = nan & np.isin(raw, list(_MISSING_TEXT))
            nan_text = nan & np.array([t.lower().lstrip("+-") == "nan" for t in raw], dtype=bool)
            flag(missing, feature.name, lambda i: f"missing value {raw[i]!r}")
            flag(nan_text, feature.name, lambda i: f"non-finite value '{raw[i]}'")
            flag(nan & ~missing & ~nan_text, feature.name, lambda i: f"'{raw[i]}' is not a number")
        inf = np.isinf(values)
        if inf.any() and not self.clip_nonfinite:
            flag(inf, feature.name, lambda i: f"non-finite value '{raw[i]}'")
        finite = np.isfinite(values)
        with np.errstate(invalid="ignore"):
            if feature.kind in (FeatureKind.INTEGER, FeatureKind.BINARY):
                not_int = finite & ((values != np.round(values)) | (np.abs(values) >= _EXACT_INT))
                flag(not_int, feature.name, lambda i: f"'{raw[i]}' is not an integer")
                finite &= ~not_int
            if feature.kind is FeatureKind.BINARY:
                flag(finite & ~np.isin(values, (0.0, 1.0)), feature.name, lambda i: f"'{raw[i]}' is not 0 or 1")
            elif feature.kind is FeatureKind.DISCRETE:
                allowed = np.asarray(feature.values, dtype=np.float64)
                off = finite & ~np.isin(values, allowed)
                flag(off, feature.name, lambda i: f"'{raw[i]}' is not one of {_fmt_values(feature.values)}")
            else:
                lo, hi = feature.lower, feature.upper
                out = finite & ((values < lo) | (values > hi))
                flag(out, feature.name, lambda i: f"{raw[i]} is outside bounds [{_fmt(lo)}, {_fmt(hi)}]")
        return values

    def _categorical(self, raw: np.ndarray, feature: Feature, flag: Callable[..., None]) -> np.ndarray:
        empty = np.array([t == "" for t in raw], dtype=bool)
        flag(empty, feature.name, lambda i: "missing value ''")
        if feature.values is not None:
            known = frozenset(feature.values)
            unknown = np.array([t not in known for t in raw], dtype=bool) & ~empty
            flag(unknown, feature.name, lambda i: f"unknown category '{raw[i]}'")
        return raw


def _to_float(raw: np.ndarray) -> np.ndarray:
    """float64 of number texts, NaN where a text is not a number.

    Python's float() also takes '1_000' and non-ASCII digits, so the fast path is used only when no
    text has them; pandas' stricter parser handles the rest.
    """
    joined = "".join(raw)
    if joined.isascii() and "_" not in joined:
        try:
            return raw.astype(np.float64)
        except ValueError:
            pass
    return np.asarray(pd.to_numeric(pd.Series(raw, dtype=object), errors="coerce"), dtype=np.float64)


def _fmt(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and float(x).is_integer() else str(x)


def _fmt_values(values: Sequence[Any] | None) -> str:
    return "{" + ", ".join(_fmt(float(v)) for v in values or ()) + "}"


def _check_columns(path: Path, schema: TabularSchema, events: RowStream, *, header_like: bool) -> None:
    """Every feature and the label must be present; every other column must be a declared extra."""
    names = events.names
    required = [*schema.names, schema.label]
    missing = [n for n in required if n not in names]
    where = f"{path}:{min(events.name_lines.values())}" if events.name_lines else str(path)
    if missing:
        shown = ", ".join(f"'{m}'" for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise DataFormatError(f"{where}: missing column(s) {shown} of schema '{schema.name}'")
    known = {*required, *schema.extras}
    for name in names:
        if name not in known:
            line = events.name_lines.get(name)
            at = f"{path}:{line}" if line is not None else str(path)
            hint = "list it under extras to keep it" if header_like else "check the column order"
            raise DataFormatError(f"{at}: column '{name}' is not in schema '{schema.name}' ({hint})")


def collect(
    path: Path,
    schema: TabularSchema,
    events: RowStream,
    *,
    header_like: bool,
    on_bad_rows: str,
    nonfinite: str = "bad",
    clip_values: Mapping[str, tuple[float, float]] | None = None,
    label_normalizer: Callable[[str], str] | None = None,
    row_check: Callable[[TabularTable], list[tuple[int, str]]] | None = None,
    needs: Mapping[str, str] | None = None,
) -> TabularTable:
    """Check the columns, convert the rows in chunks, apply the non-finite policy and an optional whole-row check.

    Args:
        header_like: the column names came from the file (a header, ARFF attributes), not from the schema.
        needs: extra columns ``row_check`` reads, each with why: a file without one is a DataFormatError.
    """
    _check_columns(path, schema, events, header_like=header_like)
    for column, why in (needs or {}).items():
        if column not in events.names:
            raise DataFormatError(f"{path}: column '{column}' is needed {why}")
    converter = _Converter(
        schema,
        events.names,
        label_normalizer=label_normalizer,
        allowed_text=events.allowed_text,
        clip_nonfinite=nonfinite == "clip",
        name_lines=events.name_lines,
    )
    pieces = _convert_in_chunks(converter, events.rows)
    bad = list(events.bad)
    line_all = np.concatenate([p.lines for p in pieces])
    bad_mask = np.zeros(len(line_all), dtype=bool)
    offset = 0
    for piece in pieces:
        for i, reasons in piece.reasons.items():
            bad_mask[offset + i] = True
            bad.append((int(piece.lines[i]), "; ".join(reasons)))
        offset += len(piece.lines)
    numeric = {n: np.concatenate([p.numeric[n] for p in pieces]) for n in pieces[0].numeric}
    text = {n: np.concatenate([p.text[n] for p in pieces]) for n in pieces[0].text}
    labels = np.concatenate([p.labels for p in pieces])
    raw_labels = np.concatenate([p.raw_labels for p in pieces])

    meta: dict[str, Any] = {}
    if nonfinite == "clip":
        used = _clip_nonfinite(numeric, bad_mask, line_all, bad, schema, clip_values)
        meta["clip_values"] = used

    keep = ~bad_mask
    features = _typed_frame(schema, numeric, text, keep)
    extras = {e: text[e][keep] for e in schema.extras if e in text}
    table = TabularTable(
        schema=schema,
        features=features,
        labels=labels[keep],
        line_numbers=line_all[keep],
        bad_rows=BadRows(),
        raw_labels=raw_labels[keep],
        extras=extras,
        source=str(path),
        meta=meta,
    )
    if row_check is not None and len(table):
        wrong = row_check(table)
        bad.extend((int(table.line_numbers[i]), reason) for i, reason in wrong)
        keep_rows = np.ones(len(table), dtype=bool)
        keep_rows[[i for i, _ in wrong]] = False
        table = table.select(np.flatnonzero(keep_rows))

    bad.sort(key=lambda item: item[0])
    if on_bad_rows == "raise" and bad:
        line, reason = bad[0]
        raise DataFormatError(f"{path}:{line}: {reason} ({len(bad)} bad row(s) in total, first shown)")
    return replace(table, bad_rows=BadRows(rows=tuple(bad), skipped=tuple(sorted(events.skipped))))


def _convert_in_chunks(converter: _Converter, rows: Iterator[tuple[int, list[str]]]) -> list[_Piece]:
    """Convert ``_CHUNK_ROWS`` rows at a time, so a large file never holds all its text fields at once."""
    pieces: list[_Piece] = []
    block: list[list[str]] = []
    lines: list[int] = []
    for number, fields in rows:
        block.append(fields)
        lines.append(number)
        if len(block) >= _CHUNK_ROWS:
            pieces.append(converter.convert(block, lines))
            block, lines = [], []
    if block or not pieces:
        pieces.append(converter.convert(block, lines))
    return pieces


def _clip_nonfinite(
    numeric: dict[str, np.ndarray],
    bad_mask: np.ndarray,
    lines: np.ndarray,
    bad: list[tuple[int, str]],
    schema: TabularSchema,
    given: Mapping[str, tuple[float, float]] | None,
) -> dict[str, list[float]]:
    """Replace +-inf by the finite max/min of the column (or the given training values); NaN stays bad."""
    used: dict[str, list[float]] = {}
    for name, values in numeric.items():
        inf = np.isinf(values)
        if not inf.any():
            continue
        if given is not None and name in given:
            lo, hi = (float(v) for v in given[name])
            feature = schema.feature(name)
            if not (feature.lower <= lo <= hi <= feature.upper):
                raise ConfigError(f"clip_values for '{name}' [{lo}, {hi}] leave its bounds {feature.bounds}")
        else:
            finite = values[np.isfinite(values) & ~bad_mask]
            if finite.size == 0:
                for i in np.flatnonzero(inf & ~bad_mask):
                    bad_mask[i] = True
                    bad.append((int(lines[i]), f"column '{name}': infinite value and no finite value to clip to"))
                continue
            lo, hi = float(finite.min()), float(finite.max())
        numeric[name] = np.where(values == np.inf, hi, np.where(values == -np.inf, lo, values))
        used[name] = [lo, hi]
    return used


def _typed_frame(
    schema: TabularSchema, numeric: Mapping[str, np.ndarray], text: Mapping[str, np.ndarray], keep: np.ndarray
) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    for feature in schema.features:
        if not feature.is_numeric:
            columns[feature.name] = pd.Series(text[feature.name][keep], dtype=object)
            continue
        values = numeric[feature.name][keep]
        if _integral_kind(feature):
            columns[feature.name] = values.astype(np.int64)
        else:
            columns[feature.name] = values
    return pd.DataFrame(columns, columns=list(schema.names))


def _integral_kind(feature: Feature) -> bool:
    """Integer, binary, and discrete features whose allowed values are all integers are stored as int64."""
    if feature.kind in (FeatureKind.INTEGER, FeatureKind.BINARY):
        return True
    return feature.kind is FeatureKind.DISCRETE and all(float(v).is_integer() for v in feature.values or ())
