"""Readers for tabular security datasets: every row is checked against a schema or reported by line.

A row is never mis-parsed in silence: a wrong field count, a non-number in a numeric column, a value
outside its bounds or allowed values, an unknown category or label, NaN or infinity make it a *bad row*
(line number and reason), which is dropped or fatal. Blank rows and header rows repeated inside a file are
*skipped* and counted separately. Lines are 1-based physical lines of the file.

Dataset readers (NSL-KDD, UCI phishing CSV/ARFF, ClaMP, UNSW-NB15, CIC-IDS2017) only add a schema, a
file layout and a label table to the generic ``read_csv_with_schema`` / ``read_arff_with_schema``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from bastion.data.tabular.schema import Feature, FeatureKind, LinearRelation, TabularSchema
from bastion.errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = [
    "CIC_IDS2017_LABELS",
    "NSL_KDD_FAMILIES",
    "UNSW_NB15_CATEGORIES",
    "ArffAttribute",
    "ArffData",
    "AttackDrift",
    "BadRows",
    "TabularTable",
    "attack_drift",
    "cic_ids2017_schema",
    "clamp_schema",
    "nsl_kdd_schema",
    "phishing_schema",
    "read_arff",
    "read_arff_with_schema",
    "read_cic_ids2017",
    "read_clamp",
    "read_csv_with_schema",
    "read_nsl_kdd",
    "read_phishing",
    "read_phishing_arff",
    "read_phishing_csv",
    "read_unsw_nb15",
    "unsw_nb15_schema",
]

OnBadRows = Literal["drop", "raise"]
UnknownAttack = Literal["bad", "attack"]

_CHUNK_ROWS = 50_000
_MISSING_TEXT = frozenset({"", "?"})
_EXACT_INT = 2.0**53


@dataclass(frozen=True)
class BadRows:
    """What a reader refused (bad rows) or passed over on purpose (skipped rows), by file line."""

    rows: tuple[tuple[int, str], ...] = ()
    skipped: tuple[tuple[int, str], ...] = ()

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    @property
    def lines(self) -> tuple[int, ...]:
        return tuple(line for line, _ in self.rows)

    def summary(self, limit: int = 5) -> str:
        """One line per shown bad row, e.g. for a log message."""
        shown = "; ".join(f"line {line}: {reason}" for line, reason in self.rows[:limit])
        more = f" (+{self.count - limit} more)" if self.count > limit else ""
        return f"{self.count} bad rows, {self.n_skipped} skipped" + (f": {shown}{more}" if shown else "")


@dataclass(frozen=True, eq=False)
class TabularTable:
    """Raw records of one file that passed the schema, with their provenance.

    Attributes:
        schema: the schema the file was read with.
        features: (N, F) raw features in schema order: float64 for continuous, int64 for integer, binary
            and integral discrete features, object (str) for categorical ones.
        labels: (N,) int64 index into schema.classes.
        line_numbers: (N,) int64 1-based line of each kept row in the file.
        bad_rows: refused and skipped lines.
        raw_labels: (N,) object, the label text as read (e.g. the NSL-KDD attack name).
        extras: schema.extras columns found in the file, as (N,) object text arrays.
        source: the file path.
        meta: reader-specific facts, e.g. ``clip_values`` used for non-finite values.
    """

    schema: TabularSchema
    features: pd.DataFrame
    labels: np.ndarray
    line_numbers: np.ndarray
    bad_rows: BadRows
    raw_labels: np.ndarray
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)
    source: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, index: np.ndarray | Sequence[int]) -> TabularTable:
        """Rows by position or boolean mask (e.g. a train split); provenance and the report are kept."""
        index = np.asarray(index)
        return TabularTable(
            schema=self.schema,
            features=self.features.iloc[index].reset_index(drop=True),
            labels=self.labels[index],
            line_numbers=self.line_numbers[index],
            bad_rows=self.bad_rows,
            raw_labels=self.raw_labels[index],
            extras={k: v[index] for k, v in self.extras.items()},
            source=self.source,
            meta=self.meta,
        )


# --------------------------------------------------------------------------------------------------------
# Generic machinery


@dataclass
class _Events:
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


def _check_option(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _open_check(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: file not found")
    return path


def _decoded_lines(path: Path, encoding: str) -> Iterator[tuple[int, str | None, str]]:
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


def _split(text: str, delimiter: str) -> list[str]:
    """Fields of one line, stripped of surrounding spaces; double quotes as in the csv module."""
    fields = next(csv.reader([text], delimiter=delimiter)) if '"' in text else text.split(delimiter)
    if " " in text or "\t" in text:
        return [f.strip() for f in fields]
    return fields


def _dedupe(names: list[str]) -> list[str]:
    """Second and later copies of a name become 'name.1', 'name.2' (CIC-IDS2017 repeats one column)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        k = seen.get(name, 0)
        seen[name] = k + 1
        out.append(name if k == 0 else f"{name}.{k}")
    return out


def _csv_events(
    path: Path,
    *,
    header: bool,
    columns: Sequence[str] | None,
    delimiter: str,
    encoding: str,
    rename_duplicates: bool,
) -> _Events:
    lines = _decoded_lines(path, encoding)
    bad: list[tuple[int, str]] = []
    skipped: list[tuple[int, str]] = []
    header_fields: list[str] | None = None
    name_lines: dict[str, int] = {}
    if header:
        for number, text, problem in lines:
            if text is None:
                raise DataFormatError(f"{path}:{number}: header line is {problem}")
            if not text.strip():
                skipped.append((number, "blank line"))
                continue
            header_fields = _split(text, delimiter)
            if any(not f for f in header_fields):
                raise DataFormatError(f"{path}:{number}: empty column name in the header")
            names = _dedupe(header_fields) if rename_duplicates else header_fields
            if len(set(names)) != len(names):
                dupes = sorted({n for n in names if names.count(n) > 1})
                raise DataFormatError(f"{path}:{number}: duplicate column names {dupes} in the header")
            name_lines = dict.fromkeys(names, number)
            break
        else:
            raise DataFormatError(f"{path}: empty file, expected a header line")
    else:
        if columns is None:
            raise ConfigError("a header-less file needs its column order")
        names = list(columns)

    def rows() -> Iterator[tuple[int, list[str]]]:
        n_fields = len(names)
        for number, text, problem in lines:
            if text is None:
                bad.append((number, problem))
                continue
            if not text.strip():
                skipped.append((number, "blank line"))
                continue
            fields = _split(text, delimiter)
            if not any(fields):
                skipped.append((number, "blank row (separators only)"))
                continue
            if header_fields is not None and fields == header_fields:
                skipped.append((number, "repeated header row"))
                continue
            if len(fields) != n_fields:
                bad.append((number, f"expected {n_fields} fields, found {len(fields)}"))
                continue
            yield number, fields

    return _Events(names=names, name_lines=name_lines, rows=rows(), bad=bad, skipped=skipped)


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


def _check_columns(path: Path, schema: TabularSchema, events: _Events, *, header_like: bool) -> None:
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


def _collect(
    path: Path,
    schema: TabularSchema,
    events: _Events,
    *,
    on_bad_rows: str,
    nonfinite: str,
    clip_values: Mapping[str, tuple[float, float]] | None,
    label_normalizer: Callable[[str], str] | None,
    row_check: Callable[[TabularTable], list[tuple[int, str]]] | None = None,
) -> TabularTable:
    """Convert the rows in chunks, apply the non-finite policy and an optional whole-row check."""
    converter = _Converter(
        schema,
        events.names,
        label_normalizer=label_normalizer,
        allowed_text=events.allowed_text,
        clip_nonfinite=nonfinite == "clip",
        name_lines=events.name_lines,
    )
    pieces: list[_Piece] = []
    rows: list[list[str]] = []
    lines: list[int] = []
    for number, fields in events.rows:
        rows.append(fields)
        lines.append(number)
        if len(rows) >= _CHUNK_ROWS:
            pieces.append(converter.convert(rows, lines))
            rows, lines = [], []
    if rows or not pieces:
        pieces.append(converter.convert(rows, lines))

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
    report = BadRows(rows=tuple(bad), skipped=tuple(sorted(events.skipped)))
    if on_bad_rows == "raise" and bad:
        line, reason = bad[0]
        raise DataFormatError(f"{path}:{line}: {reason} ({len(bad)} bad row(s) in total, first shown)")
    return TabularTable(
        schema=table.schema,
        features=table.features,
        labels=table.labels,
        line_numbers=table.line_numbers,
        bad_rows=report,
        raw_labels=table.raw_labels,
        extras=table.extras,
        source=table.source,
        meta=table.meta,
    )


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


def read_csv_with_schema(
    path: str | Path,
    schema: TabularSchema,
    *,
    on_bad_rows: OnBadRows = "drop",
    header: bool = True,
    columns: Sequence[str] | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
    nonfinite: Literal["bad", "clip"] = "bad",
    clip_values: Mapping[str, tuple[float, float]] | None = None,
    rename_duplicates: bool = False,
    label_normalizer: Callable[[str], str] | None = None,
) -> TabularTable:
    """Read a delimited text file and check every row against ``schema``.

    Args:
        path: the file.
        schema: features, label column and label table.
        on_bad_rows: "drop" reports bad rows in ``table.bad_rows`` and drops them; "raise" raises
            DataFormatError naming the first bad line once the whole file is checked.
        header: the first non-blank line names the columns (leading/trailing spaces stripped); columns
            not in the schema must be listed in ``schema.extras``. Later rows equal to it are skipped.
        columns: column order of a header-less file; default features, label, then extras.
        delimiter: field separator; fields are stripped, double quotes follow the csv module.
        encoding: text encoding, checked line by line (an undecodable line is a bad row).
        nonfinite: "bad" makes +-inf a bad row; "clip" replaces +inf / -inf in numeric features by
            ``clip_values[name]`` (high / low) or else by this file's finite max / min, recorded in
            ``table.meta["clip_values"]`` so a test file can be read with the training values. NaN is
            always a bad row: there is no value to clip it to.
        rename_duplicates: repeated header names become "name.1", "name.2" instead of an error.
        label_normalizer: applied to the label text before the label table lookup.
    Returns:
        A TabularTable of the rows that passed.
    Raises:
        DataNotFoundError: no such file.  DataFormatError: bad header, or a bad row with "raise".
    """
    _check_option("on_bad_rows", on_bad_rows, ("drop", "raise"))
    _check_option("nonfinite", nonfinite, ("bad", "clip"))
    path = _open_check(path)
    if not header and columns is None:
        columns = [*schema.names, schema.label, *schema.extras]
    events = _csv_events(
        path,
        header=header,
        columns=columns,
        delimiter=delimiter,
        encoding=encoding,
        rename_duplicates=rename_duplicates,
    )
    _check_columns(path, schema, events, header_like=header)
    return _collect(
        path,
        schema,
        events,
        on_bad_rows=on_bad_rows,
        nonfinite=nonfinite,
        clip_values=clip_values,
        label_normalizer=label_normalizer,
    )


# --------------------------------------------------------------------------------------------------------
# ARFF (Weka attribute-relation file format): nominal and numeric attributes, dense data


@dataclass(frozen=True)
class ArffAttribute:
    """One ``@attribute``: kind is "nominal", "numeric", "string" or "date"; values for nominal ones."""

    name: str
    kind: str
    values: tuple[str, ...] | None
    line: int


@dataclass(frozen=True)
class ArffData:
    """A parsed ARFF file: header, data rows as text with their lines, and refused / skipped lines."""

    relation: str
    attributes: tuple[ArffAttribute, ...]
    rows: tuple[tuple[int, tuple[str, ...]], ...]
    bad_rows: BadRows


def _arff_tokens(text: str, path: Path, number: int, *, sep: str) -> list[str]:
    """Split on ``sep`` outside single or double quotes; quotes are removed, backslash escapes kept simple."""
    tokens: list[str] = []
    current: list[str] = []
    quote: str | None = None
    was_quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quote is not None:
            if ch == "\\" and i + 1 < len(text):
                current.append(text[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
            else:
                current.append(ch)
        elif ch in "'\"" and not "".join(current).strip():
            quote, was_quoted, current = ch, True, []
        elif (ch == sep) or (sep == " " and ch.isspace()):
            if current or was_quoted:
                tokens.append("".join(current) if was_quoted else "".join(current).strip())
            current, was_quoted = [], False
        else:
            current.append(ch)
        i += 1
    if quote is not None:
        raise DataFormatError(f"{path}:{number}: unterminated {quote} quote")
    if current or was_quoted:
        tokens.append("".join(current) if was_quoted else "".join(current).strip())
    return tokens


def _arff_name(rest: str, path: Path, number: int) -> tuple[str, str]:
    """Leading (possibly quoted) name and the remaining text."""
    rest = rest.strip()
    if not rest:
        raise DataFormatError(f"{path}:{number}: missing name")
    if rest[0] in "'\"":
        end = rest.find(rest[0], 1)
        while end > 0 and rest[end - 1] == "\\":
            end = rest.find(rest[0], end + 1)
        if end < 0:
            raise DataFormatError(f"{path}:{number}: unterminated {rest[0]} quote in name")
        return rest[1:end].replace("\\" + rest[0], rest[0]), rest[end + 1 :].strip()
    parts = rest.split(None, 1)
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def _arff_header(path: Path, lines: Iterator[tuple[int, str | None, str]]) -> tuple[str, list[ArffAttribute]]:
    relation: str | None = None
    attributes: list[ArffAttribute] = []
    for number, text, problem in lines:
        if text is None:
            raise DataFormatError(f"{path}:{number}: header line is {problem}")
        stripped = text.strip()
        if not stripped or stripped.startswith("%"):
            continue
        keyword = stripped.split(None, 1)[0].lower()
        rest = stripped[len(keyword) :]
        if keyword == "@relation":
            if relation is not None:
                raise DataFormatError(f"{path}:{number}: second @relation")
            relation, _ = _arff_name(rest, path, number)
        elif keyword == "@attribute":
            if relation is None:
                raise DataFormatError(f"{path}:{number}: @attribute before @relation")
            attributes.append(_arff_attribute(rest, path, number, attributes))
        elif keyword == "@data":
            if relation is None or not attributes:
                raise DataFormatError(f"{path}:{number}: @data before @relation and @attribute lines")
            return relation, attributes
        else:
            raise DataFormatError(f"{path}:{number}: expected @relation, @attribute or @data, got {stripped[:40]!r}")
    raise DataFormatError(f"{path}: no @data section")


def _arff_attribute(rest: str, path: Path, number: int, previous: list[ArffAttribute]) -> ArffAttribute:
    name, spec = _arff_name(rest, path, number)
    if any(a.name == name for a in previous):
        raise DataFormatError(f"{path}:{number}: attribute '{name}' declared twice")
    if not spec:
        raise DataFormatError(f"{path}:{number}: attribute '{name}' has no type")
    if spec.startswith("{"):
        if not spec.endswith("}"):
            raise DataFormatError(f"{path}:{number}: attribute '{name}': nominal list must end with '}}'")
        values = _arff_tokens(spec[1:-1], path, number, sep=",")
        if not values or any(v == "" for v in values):
            raise DataFormatError(f"{path}:{number}: attribute '{name}': empty nominal value list or value")
        return ArffAttribute(name=name, kind="nominal", values=tuple(values), line=number)
    kind = spec.split(None, 1)[0].lower()
    if kind in ("numeric", "real", "integer"):
        return ArffAttribute(name=name, kind="numeric", values=None, line=number)
    if kind in ("string", "date"):
        return ArffAttribute(name=name, kind=kind, values=None, line=number)
    raise DataFormatError(f"{path}:{number}: attribute '{name}': unsupported type {spec[:30]!r}")


def _arff_events(path: Path, encoding: str) -> tuple[str, list[ArffAttribute], _Events]:
    lines = _decoded_lines(path, encoding)
    relation, attributes = _arff_header(path, lines)
    bad: list[tuple[int, str]] = []
    skipped: list[tuple[int, str]] = []
    n_fields = len(attributes)

    def rows() -> Iterator[tuple[int, list[str]]]:
        for number, text, problem in lines:
            if text is None:
                bad.append((number, problem))
                continue
            stripped = text.strip()
            if not stripped:
                skipped.append((number, "blank line"))
                continue
            if stripped.startswith("%"):
                skipped.append((number, "comment"))
                continue
            if stripped.startswith("{"):
                bad.append((number, "sparse ARFF rows are not supported"))
                continue
            try:
                fields = _arff_tokens(stripped, path, number, sep=",")
            except DataFormatError as err:
                bad.append((number, str(err).split(": ", 1)[1]))
                continue
            if len(fields) != n_fields:
                bad.append((number, f"expected {n_fields} fields, found {len(fields)}"))
                continue
            yield number, fields

    allowed = {a.name: frozenset(a.values) for a in attributes if a.values is not None}
    events = _Events(
        names=[a.name for a in attributes],
        name_lines={a.name: a.line for a in attributes},
        rows=rows(),
        bad=bad,
        skipped=skipped,
        allowed_text=allowed,
    )
    return relation, attributes, events


def read_arff(path: str | Path, *, encoding: str = "utf-8") -> ArffData:
    """Parse an ARFF file without a schema: header errors raise, data line errors become bad rows."""
    path = _open_check(path)
    relation, attributes, events = _arff_events(path, encoding)
    declared = [(i, a.name, frozenset(a.values)) for i, a in enumerate(attributes) if a.values is not None]
    kept = []
    undeclared: list[tuple[int, str]] = []
    for number, fields in events.rows:
        wrong = [(name, fields[i]) for i, name, allowed in declared if fields[i] not in allowed | {"?"}]
        if wrong:
            name, value = wrong[0]
            undeclared.append((number, f"column '{name}': value '{value}' is not declared in its @attribute"))
        else:
            kept.append((number, tuple(fields)))
    bad = events.bad + undeclared  # events.bad is complete only once its rows are consumed
    return ArffData(
        relation=relation,
        attributes=tuple(attributes),
        rows=tuple(kept),
        bad_rows=BadRows(rows=tuple(sorted(bad)), skipped=tuple(events.skipped)),
    )


def read_arff_with_schema(
    path: str | Path,
    schema: TabularSchema,
    *,
    on_bad_rows: OnBadRows = "drop",
    encoding: str = "utf-8",
    label_normalizer: Callable[[str], str] | None = None,
) -> TabularTable:
    """Read an ARFF file against ``schema``: attribute names must be the schema's columns (any order);
    a value outside its @attribute's nominal list, or '?', is a bad row."""
    _check_option("on_bad_rows", on_bad_rows, ("drop", "raise"))
    path = _open_check(path)
    _, _, events = _arff_events(path, encoding)
    _check_columns(path, schema, events, header_like=True)
    return _collect(
        path,
        schema,
        events,
        on_bad_rows=on_bad_rows,
        nonfinite="bad",
        clip_values=None,
        label_normalizer=label_normalizer,
    )


def _words(text: str, sep: str | None = None) -> tuple[str, ...]:
    """Compact name lists: 'a b c' -> ('a', 'b', 'c')."""
    return tuple(text.split(sep))


# --------------------------------------------------------------------------------------------------------
# NSL-KDD (Tavallaee et al. 2009), feature names and types from the KDD Cup 1999 task description

_NSL_KDD_FEATURES = _words(
    "duration protocol_type service flag src_bytes dst_bytes land wrong_fragment urgent hot "
    "num_failed_logins logged_in num_compromised root_shell su_attempted num_root num_file_creations "
    "num_shells num_access_files num_outbound_cmds is_host_login is_guest_login count srv_count "
    "serror_rate srv_serror_rate rerror_rate srv_rerror_rate same_srv_rate diff_srv_rate "
    "srv_diff_host_rate dst_host_count dst_host_srv_count dst_host_same_srv_rate dst_host_diff_srv_rate "
    "dst_host_same_src_port_rate dst_host_srv_diff_host_rate dst_host_serror_rate "
    "dst_host_srv_serror_rate dst_host_rerror_rate dst_host_srv_rerror_rate"
)

NSL_KDD_PROTOCOLS = ("icmp", "tcp", "udp")
NSL_KDD_FLAGS = ("OTH", "REJ", "RSTO", "RSTOS0", "RSTR", "S0", "S1", "S2", "S3", "SF", "SH")
NSL_KDD_SERVICES = _words(
    "aol auth bgp courier csnet_ns ctf daytime discard domain domain_u echo eco_i ecr_i efs exec finger "
    "ftp ftp_data gopher harvest hostnames http http_2784 http_443 http_8001 imap4 IRC iso_tsap klogin "
    "kshell ldap link login mtp name netbios_dgm netbios_ns netbios_ssn netstat nnsp nntp ntp_u other "
    "pm_dump pop_2 pop_3 printer private red_i remote_job rje shell smtp sql_net ssh sunrpc supdup "
    "systat telnet tftp_u tim_i time urh_i urp_i uucp uucp_path vmnet whois X11 Z39_50"
)
"""The 70 services of NSL-KDD's KDDTrain+ and KDDTest+ (aol, harvest, http_2784 occur in KDDTrain+ only)."""


def _families(**names: str) -> dict[str, str]:
    return {name: family for family, text in names.items() for name in text.split()}


NSL_KDD_FAMILIES: Mapping[str, str] = {
    "normal": "normal",
    **_families(
        DoS="back land neptune pod smurf teardrop apache2 mailbomb processtable udpstorm",
        Probe="ipsweep nmap portsweep satan mscan saint",
        R2L="ftp_write guess_passwd imap multihop phf spy warezclient warezmaster named sendmail "
        "snmpgetattack snmpguess xlock xsnoop worm",
        U2R="buffer_overflow loadmodule perl rootkit httptunnel ps sqlattack xterm",
    ),
}
"""Attack name -> family for every name in KDDTrain+ and KDDTest+ (DARPA 1998/1999 categories).

httptunnel is filed under U2R, as in most NSL-KDD work (it gives the commonly quoted 200 U2R rows of
KDDTest+); some sources list it under R2L.
"""

_NSL_KDD_LOG = frozenset(_words("duration src_bytes dst_bytes hot num_compromised num_root num_file_creations"))
_NSL_KDD_BINARY = frozenset(_words("land logged_in root_shell is_host_login is_guest_login"))
_NSL_KDD_IMMUTABLE = frozenset({"protocol_type", "service", "flag"})


def _nsl_kdd_feature(name: str) -> Feature:
    if name in _NSL_KDD_IMMUTABLE:
        categories = {"protocol_type": NSL_KDD_PROTOCOLS, "service": NSL_KDD_SERVICES, "flag": NSL_KDD_FLAGS}
        return Feature(name=name, kind=FeatureKind.CATEGORICAL, values=categories[name], mutable=False)
    if name in _NSL_KDD_BINARY:
        return Feature(name=name, kind=FeatureKind.BINARY)
    if name.endswith("_rate"):
        return Feature(name=name, kind=FeatureKind.CONTINUOUS, bounds=(0.0, 1.0))
    upper = {"count": 511.0, "srv_count": 511.0, "dst_host_count": 255.0, "dst_host_srv_count": 255.0}
    return Feature(
        name=name,
        kind=FeatureKind.INTEGER,
        bounds=(0.0, upper.get(name, math.inf)),
        log_scale=name in _NSL_KDD_LOG,
    )


def _nsl_kdd_relations() -> tuple[LinearRelation, ...]:
    disjoint = [
        ("serror_rate", "rerror_rate"),
        ("srv_serror_rate", "srv_rerror_rate"),
        ("dst_host_serror_rate", "dst_host_rerror_rate"),
        ("dst_host_srv_serror_rate", "dst_host_srv_rerror_rate"),
    ]
    return (
        LinearRelation.less_equal("root_shell", "logged_in", name="root shell needs a login"),
        LinearRelation.less_equal("is_host_login", "logged_in", name="host login is a login"),
        *(LinearRelation(name=f"{a} + {b} <= 1", terms=((a, 1.0), (b, 1.0)), bound=1.01) for a, b in disjoint),
    )


def nsl_kdd_schema(
    labels: Literal["binary", "family"] = "binary", *, unknown_attack: UnknownAttack = "bad"
) -> TabularSchema:
    """NSL-KDD schema: 41 features, label column "attack" (the attack name), extra "difficulty".

    Categorical protocol_type / service / flag use fixed category lists (train and test agree) and are
    immutable: the protocol, the targeted service and the TCP connection status are what make the attack
    work, so an evasion that changes them is a different connection, not the same attack. su_attempted
    is an integer (NSL-KDD has the values 0, 1, 2), counts are non-negative integers, log-scaled when
    heavy-tailed, rates lie in [0, 1].

    Relations, checked on all 47,736 rows of KDDTrain+_20Percent and KDDTest+ (none violated):
    root_shell <= logged_in and is_host_login <= logged_in (a root shell and a host login happen inside a
    logged-in session), and for each of the four (S-error rate, REJ-error rate) pairs over the same
    connection window, sum <= 1.01 (the SYN-error and REJ states are disjoint; the files round rates to
    two decimals, whose worst case 1.01 occurs). Rejected because the data violates them:
    is_guest_login <= logged_in (98 rows, mostly guess_passwd), same_srv_rate + diff_srv_rate <= 1 (max
    1.5), su_attempted <= root_shell (7 rows).

    Args:
        labels: "binary" (normal, attack) or "family" (normal, DoS, Probe, R2L, U2R).
        unknown_attack: "bad" makes an attack name missing from NSL_KDD_FAMILIES a bad row; "attack" maps
            it to the attack class (binary labels only), never to normal.
    """
    _check_option("labels", labels, ("binary", "family"))
    _check_option("unknown_attack", unknown_attack, ("bad", "attack"))
    if labels == "family":
        if unknown_attack == "attack":
            raise ConfigError("unknown_attack='attack' needs labels='binary': an unknown name has no family")
        classes: tuple[str, ...] = ("normal", "DoS", "Probe", "R2L", "U2R")
        values = dict(NSL_KDD_FAMILIES)
    else:
        classes = ("normal", "attack")
        values = {name: "normal" if fam == "normal" else "attack" for name, fam in NSL_KDD_FAMILIES.items()}
    return TabularSchema(
        name=f"nsl-kdd-{labels}",
        features=tuple(_nsl_kdd_feature(n) for n in _NSL_KDD_FEATURES),
        label="attack",
        classes=classes,
        benign=0,
        label_values=tuple(values.items()),
        unknown_label="attack" if unknown_attack == "attack" else None,
        relations=_nsl_kdd_relations(),
        extras=("difficulty",),
        description="NSL-KDD (KDDTrain+, KDDTrain+_20Percent, KDDTest+, KDDTest-21): header-less CSV.",
    )


def read_nsl_kdd(
    path: str | Path,
    *,
    labels: Literal["binary", "family"] = "binary",
    unknown_attack: UnknownAttack = "bad",
    on_bad_rows: OnBadRows = "drop",
) -> TabularTable:
    """Read KDDTrain+.txt, KDDTrain+_20Percent.txt, KDDTest+.txt or KDDTest-21.txt (43 fields, no header).

    ``table.raw_labels`` holds the attack names (see attack_drift), ``table.extras["difficulty"]`` the
    difficulty level text.
    """
    schema = nsl_kdd_schema(labels, unknown_attack=unknown_attack)
    return read_csv_with_schema(path, schema, header=False, on_bad_rows=on_bad_rows)


@dataclass(frozen=True)
class AttackDrift:
    """Which attack names / families of a test set never occur in its training set."""

    train_names: tuple[str, ...]
    test_names: tuple[str, ...]
    unseen_names: tuple[str, ...]
    seen_families: tuple[str, ...]
    unseen_families: tuple[str, ...]
    n_unseen_rows: int


def attack_drift(
    train: TabularTable, test: TabularTable, families: Mapping[str, str] = NSL_KDD_FAMILIES
) -> AttackDrift:
    """Compare raw label names: on NSL-KDD, 18 of KDDTest+'s 38 names are absent from KDDTrain+_20Percent."""
    train_names = set(train.raw_labels.tolist())
    test_names = set(test.raw_labels.tolist())
    unseen = sorted(test_names - train_names)
    seen_fams = sorted({families.get(n, "unknown") for n in train_names})
    test_fams = {families.get(n, "unknown") for n in test_names}
    return AttackDrift(
        train_names=tuple(sorted(train_names)),
        test_names=tuple(sorted(test_names)),
        unseen_names=tuple(unseen),
        seen_families=tuple(seen_fams),
        unseen_families=tuple(sorted(test_fams - set(seen_fams))),
        n_unseen_rows=int(np.isin(test.raw_labels, unseen).sum()),
    )


# --------------------------------------------------------------------------------------------------------
# UCI Phishing Websites (Mohammad, Thabtah, McCluskey 2012)

_PHISHING_FEATURES = (
    ("having_IP_Address", "-1 1", True),
    ("URL_Length", "-1 0 1", True),
    ("Shortining_Service", "-1 1", True),
    ("having_At_Symbol", "-1 1", True),
    ("double_slash_redirecting", "-1 1", True),
    ("Prefix_Suffix", "-1 1", True),
    ("having_Sub_Domain", "-1 0 1", True),
    ("SSLfinal_State", "-1 0 1", False),
    ("Domain_registeration_length", "-1 1", True),
    ("Favicon", "-1 1", True),
    ("port", "-1 1", True),
    ("HTTPS_token", "-1 1", True),
    ("Request_URL", "-1 1", True),
    ("URL_of_Anchor", "-1 0 1", True),
    ("Links_in_tags", "-1 0 1", True),
    ("SFH", "-1 0 1", True),
    ("Submitting_to_email", "-1 1", True),
    ("Abnormal_URL", "-1 1", True),
    ("Redirect", "0 1", True),
    ("on_mouseover", "-1 1", True),
    ("RightClick", "-1 1", True),
    ("popUpWidnow", "-1 1", True),
    ("Iframe", "-1 1", True),
    ("age_of_domain", "-1 1", False),
    ("DNSRecord", "-1 1", False),
    ("web_traffic", "-1 0 1", False),
    ("Page_Rank", "-1 1", False),
    ("Google_Index", "-1 1", False),
    ("Links_pointing_to_page", "-1 0 1", False),
    ("Statistical_report", "-1 1", False),
)


def phishing_schema() -> TabularSchema:
    """UCI phishing schema: 30 discrete features, label Result (-1 phishing, 1 legitimate; benign class 0).

    Allowed values per feature are the feature definitions' outcomes (legitimate 1, suspicious 0,
    phishing -1; Redirect is 0/1), which are also the sets found in the published data.

    Mutable: what the author of a phishing page controls, i.e. the URL (IP address, length, shortener,
    '@', '//', '-', sub-domains, port, 'https' token), the page content (favicon, request / anchor /
    tag / form targets, mailto, redirects, mouse-over, right click, pop-ups, iframes), and the paid-for
    registration length and WHOIS identity (Domain_registeration_length, Abnormal_URL). Immutable:
    third-party observations that need time or reputation: age_of_domain, DNSRecord, web_traffic,
    Page_Rank, Google_Index, Links_pointing_to_page, Statistical_report, and SSLfinal_State, which
    requires a certificate from a trusted issuer at least a year old (it cannot be back-dated).
    """
    features = tuple(
        Feature(
            name=name,
            kind=FeatureKind.DISCRETE,
            values=tuple(float(v) for v in values.split()),
            mutable=mutable,
        )
        for name, values, mutable in _PHISHING_FEATURES
    )
    return TabularSchema(
        name="uci-phishing",
        features=features,
        label="Result",
        classes=("legitimate", "phishing"),
        benign=0,
        label_values=(("1", "legitimate"), ("-1", "phishing")),
        description="UCI Phishing Websites: header-less CSV (the ARFF data section) or the original ARFF.",
    )


def read_phishing_csv(path: str | Path, *, on_bad_rows: OnBadRows = "drop") -> TabularTable:
    """Header-less CSV: the 30 features in the documented order, then Result."""
    return read_csv_with_schema(path, phishing_schema(), header=False, on_bad_rows=on_bad_rows)


def read_phishing_arff(path: str | Path, *, on_bad_rows: OnBadRows = "drop") -> TabularTable:
    """The original ARFF file (``@attribute having_IP_Address { -1,1 }`` ... ``@data``)."""
    return read_arff_with_schema(path, phishing_schema(), on_bad_rows=on_bad_rows)


def read_phishing(path: str | Path, *, on_bad_rows: OnBadRows = "drop") -> TabularTable:
    """ARFF when the name ends in .arff, else the header-less CSV."""
    if str(path).lower().endswith(".arff"):
        return read_phishing_arff(path, on_bad_rows=on_bad_rows)
    return read_phishing_csv(path, on_bad_rows=on_bad_rows)


# --------------------------------------------------------------------------------------------------------
# ClaMP (Classification of Malware with PE headers, Kumar et al.), integrated feature set

_WORD = 65535.0
_DWORD = 4294967295.0
_IMAGE_SUBSYSTEMS = (0, 1, 2, 3, 5, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17)


def _clamp_features() -> tuple[Feature, ...]:
    def integer(name: str, upper: float, *, log: bool = False) -> Feature:
        return Feature(name=name, kind=FeatureKind.INTEGER, bounds=(0.0, upper), log_scale=log)

    def binary(name: str, *, mutable: bool = True) -> Feature:
        return Feature(name=name, kind=FeatureKind.BINARY, mutable=mutable)

    out = [
        integer("e_cblp", _WORD, log=True),
        integer("e_cp", _WORD, log=True),
        integer("e_cparhdr", _WORD, log=True),
        integer("e_maxalloc", _WORD),
        integer("e_sp", _WORD),
        integer("e_lfanew", _DWORD, log=True),
        integer("NumberOfSections", _WORD, log=True),
        binary("CreationYear"),
    ]
    # FH_charK is bit K of IMAGE_FILE_HEADER.Characteristics: bit 1 (executable image) is set in every row
    # and bit 13 (DLL) in none, as they must be for runnable .exe files; flipping either breaks the program.
    out += [binary(f"FH_char{k}", mutable=k not in (1, 13)) for k in range(15)]
    out += [integer("MajorLinkerVersion", 255.0), integer("MinorLinkerVersion", 255.0)]
    out += [
        integer(n, _DWORD, log=True)
        for n in (
            "SizeOfCode",
            "SizeOfInitializedData",
            "SizeOfUninitializedData",
            "AddressOfEntryPoint",
            "BaseOfCode",
            "BaseOfData",
        )
    ]
    out += [binary("ImageBase"), binary("SectionAlignment"), binary("FileAlignment")]
    out += [
        integer(n, _WORD, log=True)
        for n in (
            "MajorOperatingSystemVersion",
            "MinorOperatingSystemVersion",
            "MajorImageVersion",
            "MinorImageVersion",
            "MajorSubsystemVersion",
            "MinorSubsystemVersion",
        )
    ]
    out += [binary("SizeOfImage"), binary("SizeOfHeaders"), integer("CheckSum", _DWORD, log=True)]
    out.append(
        Feature(
            name="Subsystem",
            kind=FeatureKind.DISCRETE,
            values=tuple(float(v) for v in _IMAGE_SUBSYSTEMS),
            mutable=False,
        )
    )
    out += [binary(f"OH_DLLchar{k}") for k in range(11)]
    out += [
        integer(n, _DWORD, log=True)
        for n in ("SizeOfStackReserve", "SizeOfStackCommit", "SizeOfHeapReserve", "SizeOfHeapCommit")
    ]
    out += [binary("LoaderFlags"), integer("sus_sections", _WORD), integer("non_sus_sections", _WORD)]
    out += [binary("packer"), Feature(name="packer_type", kind=FeatureKind.CATEGORICAL)]
    out += [Feature(name=n, kind=FeatureKind.CONTINUOUS, bounds=(0.0, 8.0)) for n in ("E_text", "E_data")]
    out += [
        Feature(name="filesize", kind=FeatureKind.INTEGER, bounds=(0.0, math.inf), log_scale=True),
        Feature(name="E_file", kind=FeatureKind.CONTINUOUS, bounds=(0.0, 8.0)),
        binary("fileinfo"),
    ]
    return tuple(out)


def clamp_schema() -> TabularSchema:
    """ClaMP_Integrated schema: 69 PE-header features, label "class" (0 benign, 1 malware).

    Types follow the PE format and the file: DOS/optional-header WORD fields are integers in
    [0, 65535], DWORD sizes and addresses integers in [0, 2^32 - 1] (log-scaled), the *_char flags and the
    fields ClaMP stores as 0/1 (CreationYear, ImageBase, SectionAlignment, FileAlignment, SizeOfImage,
    SizeOfHeaders, LoaderFlags) binary, entropies E_* continuous in [0, 8] bits, Subsystem one of the
    IMAGE_SUBSYSTEM_* codes. packer_type is categorical with categories learned from the training rows
    (TabularPreprocessor.fit), unseen packers mapping to "__other__" at test time: the packer list is open
    ended, so no fixed list could be complete.

    Immutable: Subsystem (GUI / console / driver decides how the loader runs the program) and the
    executable-image and DLL characteristic bits (FH_char1, FH_char13).

    Relations, checked on all 5,210 rows (none violated): packer == 1 exactly when packer_type is not
    "NoPacker", and sus_sections + non_sus_sections == NumberOfSections (each written as two <=).
    """
    relations = (
        LinearRelation(name="packed iff a packer", terms=(("packer", 1.0), ("packer_type=NoPacker", 1.0)), bound=1),
        LinearRelation(
            name="packed iff a packer (>=)",
            terms=(("packer", -1.0), ("packer_type=NoPacker", -1.0)),
            bound=-1,
        ),
        LinearRelation(
            name="sections add up",
            terms=(("sus_sections", 1.0), ("non_sus_sections", 1.0), ("NumberOfSections", -1.0)),
            bound=0,
        ),
        LinearRelation(
            name="sections add up (>=)",
            terms=(("sus_sections", -1.0), ("non_sus_sections", -1.0), ("NumberOfSections", 1.0)),
            bound=0,
        ),
    )
    return TabularSchema(
        name="clamp-integrated",
        features=_clamp_features(),
        label="class",
        classes=("benign", "malware"),
        benign=0,
        label_values=(("0", "benign"), ("1", "malware")),
        relations=relations,
        description="ClaMP_Integrated CSV with a header row; rows of separators only are skipped.",
    )


def read_clamp(path: str | Path, *, on_bad_rows: OnBadRows = "drop") -> TabularTable:
    """ClaMP_Integrated-5184.csv: rows of commas only (2 in the published file) are skipped, not bad."""
    return read_csv_with_schema(path, clamp_schema(), header=True, on_bad_rows=on_bad_rows)


# --------------------------------------------------------------------------------------------------------
# UNSW-NB15 (Moustafa & Slay 2015), the training-set / testing-set CSV files

UNSW_NB15_CATEGORIES: Mapping[str, str] = {
    "Normal": "normal",
    "Fuzzers": "Fuzzers",
    "Analysis": "Analysis",
    "Backdoor": "Backdoor",
    "Backdoors": "Backdoor",
    "DoS": "DoS",
    "Exploits": "Exploits",
    "Generic": "Generic",
    "Reconnaissance": "Reconnaissance",
    "Shellcode": "Shellcode",
    "Worms": "Worms",
}
"""attack_cat text -> class; the four raw CSVs spell "Backdoors", the training/testing sets "Backdoor"."""

_UNSW_NB15_FEATURES: tuple[tuple[str, str, float | None, bool], ...] = (
    # name, kind (c continuous, i integer, b binary, k categorical), upper bound (None = inf), log_scale
    ("dur", "c", None, True),
    ("proto", "k", None, False),
    ("service", "k", None, False),
    ("state", "k", None, False),
    ("spkts", "i", None, True),
    ("dpkts", "i", None, True),
    ("sbytes", "i", None, True),
    ("dbytes", "i", None, True),
    ("rate", "c", None, True),
    ("sttl", "i", 255.0, False),
    ("dttl", "i", 255.0, False),
    ("sload", "c", None, True),
    ("dload", "c", None, True),
    ("sloss", "i", None, True),
    ("dloss", "i", None, True),
    ("sinpkt", "c", None, True),
    ("dinpkt", "c", None, True),
    ("sjit", "c", None, True),
    ("djit", "c", None, True),
    ("swin", "i", _WORD, False),
    ("stcpb", "i", _DWORD, False),
    ("dtcpb", "i", _DWORD, False),
    ("dwin", "i", _WORD, False),
    ("tcprtt", "c", None, True),
    ("synack", "c", None, True),
    ("ackdat", "c", None, True),
    ("smean", "i", None, True),
    ("dmean", "i", None, True),
    ("trans_depth", "i", None, True),
    ("response_body_len", "i", None, True),
    ("ct_srv_src", "i", None, True),
    ("ct_state_ttl", "i", None, False),
    ("ct_dst_ltm", "i", None, True),
    ("ct_src_dport_ltm", "i", None, True),
    ("ct_dst_sport_ltm", "i", None, True),
    ("ct_dst_src_ltm", "i", None, True),
    ("is_ftp_login", "i", None, False),
    ("ct_ftp_cmd", "i", None, False),
    ("ct_flw_http_mthd", "i", None, True),
    ("ct_src_ltm", "i", None, True),
    ("ct_srv_dst", "i", None, True),
    ("is_sm_ips_ports", "b", None, False),
)

_KINDS = {
    "c": FeatureKind.CONTINUOUS,
    "i": FeatureKind.INTEGER,
    "b": FeatureKind.BINARY,
    "k": FeatureKind.CATEGORICAL,
}


def unsw_nb15_schema(labels: Literal["binary", "family"] = "binary") -> TabularSchema:
    """UNSW-NB15 training/testing-set schema: 42 features; label "label" (binary) or "attack_cat" (family).

    proto, service and state are categorical with categories learned from training (the published files
    carry over a hundred protocol names, and the lists differ between releases); they are immutable for
    the same reason as NSL-KDD's protocol_type / service / flag. is_ftp_login is an integer because the
    published files hold values other than 0/1. No relations: none could be checked on real data here.
    """
    _check_option("labels", labels, ("binary", "family"))
    features = tuple(
        Feature(
            name=name,
            kind=_KINDS[kind],
            bounds=None if kind in "kb" else (0.0, math.inf if upper is None else upper),
            log_scale=log,
            mutable=kind != "k",
        )
        for name, kind, upper, log in _UNSW_NB15_FEATURES
    )
    classes: tuple[str, ...] = ("normal", "attack")
    label, values, extras = "label", {"0": "normal", "1": "attack"}, ("id", "attack_cat")
    if labels == "family":
        classes = ("normal", *dict.fromkeys(v for v in UNSW_NB15_CATEGORIES.values() if v != "normal"))
        label, values, extras = "attack_cat", dict(UNSW_NB15_CATEGORIES), ("id", "label")
    return TabularSchema(
        name=f"unsw-nb15-{labels}",
        features=features,
        label=label,
        classes=classes,
        benign=0,
        label_values=tuple(values.items()),
        extras=extras,
        description="UNSW-NB15 UNSW_NB15_training-set.csv / UNSW_NB15_testing-set.csv, with a header row.",
    )


def read_unsw_nb15(
    path: str | Path, *, labels: Literal["binary", "family"] = "binary", on_bad_rows: OnBadRows = "drop"
) -> TabularTable:
    """Read a UNSW-NB15 training/testing-set CSV; a row whose label and attack_cat disagree is bad."""
    schema = unsw_nb15_schema(labels)
    _check_option("on_bad_rows", on_bad_rows, ("drop", "raise"))
    path = _open_check(path)
    events = _csv_events(path, header=True, columns=None, delimiter=",", encoding="utf-8", rename_duplicates=False)
    _check_columns(path, schema, events, header_like=True)
    other = "attack_cat" if labels == "binary" else "label"
    if other not in events.names:
        raise DataFormatError(f"{path}: column '{other}' is needed to cross-check the label")

    def disagreements(table: TabularTable) -> list[tuple[int, str]]:
        cats = table.raw_labels if labels == "family" else table.extras["attack_cat"]
        bits = table.extras["label"] if labels == "family" else table.raw_labels
        return [
            (i, f"columns 'label' and 'attack_cat' disagree: label {bit} with attack_cat '{cat}'")
            for i, (cat, bit) in enumerate(zip(cats, bits, strict=True))
            if (cat.strip() == "Normal") == (bit.strip() != "0")
        ]

    return _collect(
        path,
        schema,
        events,
        on_bad_rows=on_bad_rows,
        nonfinite="bad",
        clip_values=None,
        label_normalizer=str.strip,
        row_check=disagreements,
    )


# --------------------------------------------------------------------------------------------------------
# CIC-IDS2017 (Sharafaldin et al. 2018), MachineLearningCVE per-day CSV files

_CIC_IDS2017_COLUMNS = _words(
    "Destination Port|Flow Duration|Total Fwd Packets|Total Backward Packets|Total Length of Fwd Packets|"
    "Total Length of Bwd Packets|Fwd Packet Length Max|Fwd Packet Length Min|Fwd Packet Length Mean|"
    "Fwd Packet Length Std|Bwd Packet Length Max|Bwd Packet Length Min|Bwd Packet Length Mean|"
    "Bwd Packet Length Std|Flow Bytes/s|Flow Packets/s|Flow IAT Mean|Flow IAT Std|Flow IAT Max|"
    "Flow IAT Min|Fwd IAT Total|Fwd IAT Mean|Fwd IAT Std|Fwd IAT Max|Fwd IAT Min|Bwd IAT Total|"
    "Bwd IAT Mean|Bwd IAT Std|Bwd IAT Max|Bwd IAT Min|Fwd PSH Flags|Bwd PSH Flags|Fwd URG Flags|"
    "Bwd URG Flags|Fwd Header Length|Bwd Header Length|Fwd Packets/s|Bwd Packets/s|Min Packet Length|"
    "Max Packet Length|Packet Length Mean|Packet Length Std|Packet Length Variance|FIN Flag Count|"
    "SYN Flag Count|RST Flag Count|PSH Flag Count|ACK Flag Count|URG Flag Count|CWE Flag Count|"
    "ECE Flag Count|Down/Up Ratio|Average Packet Size|Avg Fwd Segment Size|Avg Bwd Segment Size|"
    "Fwd Header Length.1|Fwd Avg Bytes/Bulk|Fwd Avg Packets/Bulk|Fwd Avg Bulk Rate|Bwd Avg Bytes/Bulk|"
    "Bwd Avg Packets/Bulk|Bwd Avg Bulk Rate|Subflow Fwd Packets|Subflow Fwd Bytes|Subflow Bwd Packets|"
    "Subflow Bwd Bytes|Init_Win_bytes_forward|Init_Win_bytes_backward|act_data_pkt_fwd|"
    "min_seg_size_forward|Active Mean|Active Std|Active Max|Active Min|Idle Mean|Idle Std|Idle Max|"
    "Idle Min",
    sep="|",
)

CIC_IDS2017_LABELS = (
    "BENIGN",
    "Bot",
    "DDoS",
    "DoS GoldenEye",
    "DoS Hulk",
    "DoS Slowhttptest",
    "DoS slowloris",
    "FTP-Patator",
    "Heartbleed",
    "Infiltration",
    "PortScan",
    "SSH-Patator",
    "Web Attack - Brute Force",
    "Web Attack - Sql Injection",
    "Web Attack - XSS",
)
"""Label texts of the MachineLearningCVE files after normalisation (the web-attack dash is byte 0x96)."""

_CIC_COUNTS = frozenset(
    {
        "Total Fwd Packets",
        "Total Backward Packets",
        "Subflow Fwd Packets",
        "Subflow Bwd Packets",
        "act_data_pkt_fwd",
        *(f"{d} {f} Flags" for d in ("Fwd", "Bwd") for f in ("PSH", "URG")),
        *(f"{f} Flag Count" for f in ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "CWE", "ECE")),
    }
)
_CIC_SIZES = frozenset(
    n
    for n in _CIC_IDS2017_COLUMNS
    if ("Length" in n and "Header" not in n) or "Segment Size" in n or "Bulk" in n or n == "Average Packet Size"
) | {"Subflow Fwd Bytes", "Subflow Bwd Bytes"}


def _cic_feature(name: str) -> Feature:
    if name == "Destination Port":
        return Feature(name=name, kind=FeatureKind.INTEGER, bounds=(0.0, _WORD), mutable=False)
    if name in _CIC_COUNTS:
        return Feature(name=name, kind=FeatureKind.INTEGER, bounds=(0.0, math.inf), log_scale="Packets" in name)
    if name in _CIC_SIZES:
        return Feature(name=name, kind=FeatureKind.CONTINUOUS, bounds=(0.0, math.inf), log_scale=True)
    return Feature(name=name, kind=FeatureKind.CONTINUOUS)


def cic_ids2017_schema(*, unknown_attack: UnknownAttack = "bad") -> TabularSchema:
    """CIC-IDS2017 MachineLearningCVE schema: 78 flow features, label "Label" (BENIGN vs attack).

    Column names are the published header with surrounding spaces stripped; its second "Fwd Header
    Length" is named "Fwd Header Length.1". Packet counts and flag counts are non-negative integers and
    packet / segment / bulk sizes non-negative; durations, inter-arrival times, rates, header lengths and
    Init_Win_bytes stay unbounded because CICFlowMeter writes negative values there (e.g. -1 windows).
    Destination Port is immutable (the attacked service). The flow-id columns of the
    GeneratedLabelledFlows release are accepted as extras. No relations: not checkable without the files.
    """
    _check_option("unknown_attack", unknown_attack, ("bad", "attack"))
    values = {name: "benign" if name == "BENIGN" else "attack" for name in CIC_IDS2017_LABELS}
    return TabularSchema(
        name="cic-ids2017",
        features=tuple(_cic_feature(n) for n in _CIC_IDS2017_COLUMNS),
        label="Label",
        classes=("benign", "attack"),
        benign=0,
        label_values=tuple(values.items()),
        unknown_label="attack" if unknown_attack == "attack" else None,
        extras=("Flow ID", "Source IP", "Source Port", "Destination IP", "Timestamp", "Protocol"),
        description="CIC-IDS2017 per-day CSV files with a header row (space-prefixed names).",
    )


def _cic_label(text: str) -> str:
    """'Web Attack \\x96 Brute Force' (cp1252 en dash read as latin-1) -> 'Web Attack - Brute Force'."""
    for dash in ("\x96", "\u2013", "\ufffd"):
        text = text.replace(dash, "-")
    return " ".join(text.split())


def read_cic_ids2017(
    path: str | Path,
    *,
    nonfinite: Literal["drop", "clip"] = "drop",
    clip_values: Mapping[str, tuple[float, float]] | None = None,
    unknown_attack: UnknownAttack = "bad",
    on_bad_rows: OnBadRows = "drop",
) -> TabularTable:
    """Read one CIC-IDS2017 day file (latin-1 text; repeated header rows are skipped and counted).

    Args:
        nonfinite: "drop" makes Infinity / NaN (in Flow Bytes/s and Flow Packets/s) bad rows; "clip" maps
            +-Infinity to the finite max / min, of this file or ``clip_values`` (pass the training
            ``table.meta["clip_values"]`` when reading a test file); NaN stays a bad row.
    """
    _check_option("nonfinite", nonfinite, ("drop", "clip"))
    return read_csv_with_schema(
        path,
        cic_ids2017_schema(unknown_attack=unknown_attack),
        header=True,
        encoding="latin-1",
        nonfinite="clip" if nonfinite == "clip" else "bad",
        clip_values=clip_values,
        rename_duplicates=True,
        label_normalizer=_cic_label,
        on_bad_rows=on_bad_rows,
    )
