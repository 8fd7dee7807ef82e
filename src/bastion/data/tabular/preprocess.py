"""Invertible map between raw tabular records and the model's [0, 1] feature space, and a raw validator.

Model space, per raw feature (in schema order):
- continuous / integer: ``(f(x) - f(lo)) / (f(hi) - f(lo))`` with f = log1p for log_scale features, else
  identity; lo / hi are the schema bounds where finite, else the training min / max.
- binary: the value itself (0 or 1).
- discrete: min-max over its allowed values, so the model-space grid is those values rescaled.
- categorical: one 0/1 column per category (learned features get a trailing "__other__" column).

The inverse snaps back to the raw grid (integers rounded, discrete to the nearest allowed value, one-hot
blocks by argmax) and clips to the fitted range, so the inverse of any point of the model-space box is a
record that validate_raw accepts (linear relations aside: repairing those is the attack domain's job).

Precision: inversion is exact in float64. In float32, continuous features keep ~7 significant digits and
integer features whose fitted range spans more than ~2^23 model-space steps (e.g. byte counts in the
hundreds of millions) may come back off by a few units; use ``transform(..., dtype=np.float64)`` when the
raw value must survive the round trip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any, Literal, Self, TypeAlias

import numpy as np
import pandas as pd

from bastion.data.tabular.constraints import ConstraintSet
from bastion.data.tabular.schema import OTHER, Feature, FeatureKind, TabularSchema
from bastion.data.tabular.table import TabularTable
from bastion.errors import ConfigError, DataFormatError, InputValidationError, NotFittedError

__all__ = ["TabularPreprocessor", "raw_violations", "validate_raw"]

_FORMAT = "bastion.tabular-preprocessor"
_VERSION = 1
_STATE_KEYS = frozenset(
    {"format", "version", "schema", "schema_hash", "out_of_range", "ranges", "categories", "feature_order", "columns"}
)

Data: TypeAlias = pd.DataFrame | TabularTable


# --------------------------------------------------------------------------------------------------------
# Raw validation


def _frame(data: Data) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The feature frame and, for a TabularTable, the file line of each row (for messages)."""
    if isinstance(data, TabularTable):
        return data.features, data.line_numbers
    if not isinstance(data, pd.DataFrame):
        raise InputValidationError(f"expected a pandas DataFrame or TabularTable, got {type(data).__name__}")
    return data, None


def _row_name(i: int, df: pd.DataFrame, lines: np.ndarray | None) -> str:
    return f"line {int(lines[i])}" if lines is not None else f"row {df.index[i]!r}"


def _numeric(df: pd.DataFrame, name: str) -> np.ndarray:
    column = df[name]
    if column.dtype.kind in "biuf":
        return np.asarray(column, dtype=np.float64)
    return np.asarray(pd.to_numeric(column.astype(object), errors="coerce"), dtype=np.float64)


def _text(df: pd.DataFrame, name: str) -> np.ndarray:
    return np.asarray(df[name], dtype=object)


Check = tuple[str, np.ndarray, Callable[[int], str]]


def _show(x: Any) -> str:
    """A raw value for a message: 11 rather than np.float64(11.0), text quoted."""
    if isinstance(x, str):
        return repr(x)
    try:
        value = float(x)
    except (TypeError, ValueError):
        return repr(x)
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _reason(template: str, *columns: np.ndarray) -> Callable[[int], str]:
    """Lazy message for row i: the template filled with each column's value at i."""

    def describe(i: int) -> str:
        return template.format(*(_show(c[i]) for c in columns))

    return describe


def _relation_reason(lhs: np.ndarray, bound: float) -> Callable[[int], str]:
    def describe(i: int) -> str:
        return f"left side {lhs[i]:.6g} exceeds the bound {bound:.6g}"

    return describe


def _checks(
    df: pd.DataFrame,
    schema: TabularSchema,
    *,
    reference: pd.DataFrame | None,
    relations: bool,
    constraints: ConstraintSet | None = None,
) -> Iterator[Check]:
    """(where, (N,) bool violated mask, reason for row i) for every rule a raw record must satisfy."""
    missing = [n for n in schema.names if n not in df.columns]
    if missing:
        raise DataFormatError(f"records lack column(s) {missing} of schema '{schema.name}'")
    groups: dict[str, list[str]] = {}
    for feature in schema.features:
        where = f"column '{feature.name}'"
        if feature.group is not None:
            groups.setdefault(feature.group, []).append(feature.name)
        if feature.kind is FeatureKind.CATEGORICAL:
            text = _text(df, feature.name)
            is_text = np.array([isinstance(t, str) and t != "" for t in text], dtype=bool)
            yield where, ~is_text, _reason("{} is not a category text", text)
            if feature.values is not None:
                known = frozenset(feature.values)
                unknown = np.array([t not in known for t in text], dtype=bool) & is_text
                yield where, unknown, _reason("unknown category {}", text)
            continue
        values = _numeric(df, feature.name)
        raw = df[feature.name].to_numpy()
        finite = np.isfinite(values)
        yield where, ~finite, _reason("{} is not a finite number", raw)
        with np.errstate(invalid="ignore"):
            if feature.kind in (FeatureKind.INTEGER, FeatureKind.BINARY):
                fractional = finite & (values != np.round(values))
                yield where, fractional, _reason("{} is not an integer", values)
            if feature.kind is FeatureKind.BINARY:
                off = finite & ~np.isin(values, (0.0, 1.0))
                yield where, off, _reason("{} is not 0 or 1", values)
            elif feature.kind is FeatureKind.DISCRETE:
                allowed = np.asarray(feature.values, dtype=np.float64)
                off = finite & ~np.isclose(values[:, None], allowed[None, :], rtol=0, atol=1e-9).any(axis=1)
                shown = "{{" + ", ".join(_show(a) for a in allowed) + "}}"  # braces escaped for format
                yield where, off, _reason("{} is not one of " + shown, values)
            else:
                out = finite & ((values < feature.lower) | (values > feature.upper))
                bounds = f"[{_show(feature.lower)}, {_show(feature.upper)}]"
                yield where, out, _reason("{} is outside bounds " + bounds, values)
    for group, names in groups.items():
        total = np.sum([_numeric(df, n) for n in names], axis=0)
        yield f"one-hot group '{group}'", total != 1, _reason("sums to {}, not 1", total)
    if relations:
        for rel in schema.relations:
            lhs = rel.lhs(df)
            yield (
                f"relation '{rel.name}'",
                ~rel.holds(df),
                _relation_reason(lhs, rel.bound),
            )
    if reference is not None:
        yield from _immutable_checks(df, schema, reference)
    if constraints is not None:
        for what, violated in constraints.violations(df, reference):
            yield what, violated, _constraint_reason(what, reference is not None)


def _constraint_reason(what: str, relative: bool) -> Callable[[int], str]:
    def describe(i: int) -> str:
        return "broken (it held on the clean row)" if relative else "broken"

    return describe


def _immutable_checks(df: pd.DataFrame, schema: TabularSchema, reference: pd.DataFrame) -> Iterator[Check]:
    if len(reference) != len(df):
        raise InputValidationError(f"reference has {len(reference)} rows, records have {len(df)}")
    for feature in schema.features:
        if feature.mutable:
            continue
        name = feature.name
        if feature.kind is FeatureKind.CATEGORICAL:
            now, before = _text(df, name), _text(reference, name)
            changed = now != before
        else:
            now, before = _numeric(df, name), _numeric(reference, name)
            changed = ~np.isclose(now, before, rtol=1e-9, atol=1e-12)
        yield (
            f"column '{name}'",
            changed,
            _reason("immutable feature changed from {} to {}", before, now),
        )


def validate_raw(
    df: pd.DataFrame,
    schema: TabularSchema,
    *,
    reference: pd.DataFrame | None = None,
    relations: bool = True,
    constraints: ConstraintSet | None = None,
) -> np.ndarray:
    """(N,) bool: which raw records satisfy the schema, independently of any preprocessing.

    Checks types (finite numbers, integers, 0/1, allowed discrete values, known categories unless the
    feature is open), bounds, one-hot groups, the linear relations (unless ``relations=False``) and, given
    ``reference`` (row-aligned original records), that immutable features are unchanged. With
    ``constraints``, every rule, decimal grid and relation of the set too (with ``reference``: each one the
    clean row satisfies).
    """
    ok = np.ones(len(df), dtype=bool)
    for _, violated, _ in _checks(df, schema, reference=reference, relations=relations, constraints=constraints):
        ok &= ~violated
    return ok


def raw_violations(
    df: pd.DataFrame,
    schema: TabularSchema,
    *,
    reference: pd.DataFrame | None = None,
    relations: bool = True,
    limit: int | None = None,
    constraints: ConstraintSet | None = None,
) -> list[tuple[int, str]]:
    """(row position, "column 'x': reason" / "relation 'r': ...") for each violation, in row order."""
    found: list[tuple[int, str]] = []
    for where, violated, reason in _checks(
        df, schema, reference=reference, relations=relations, constraints=constraints
    ):
        found.extend((int(i), f"{where}: {reason(int(i))}") for i in np.flatnonzero(violated))
    found.sort(key=lambda item: item[0])
    return found if limit is None else found[:limit]


# --------------------------------------------------------------------------------------------------------
# Preprocessor


class TabularPreprocessor:
    """Raw records <-> float model space for one schema, fitted on training data only.

    ``__init__`` only stores settings; ``fit`` learns the ranges of features without finite schema bounds
    and the categories of open categorical features. Fitted attributes end in ``_``:

    Attributes:
        schema_: the schema with learned categories filled in (each ending in "__other__").
        ranges_: raw (low, high) that maps to [0, 1] for each continuous / integer feature.
        columns_: model-space column names ("service=http" for one-hot columns).
        feature_slices_: raw feature name -> slice of its model-space columns.
        lower_, upper_: (D,) float64 model-space box (0 and 1, or 0 and 0 for a constant feature).
        immutable_mask_: (D,) bool, columns of immutable features.
        onehot_groups_: column-index arrays of each one-hot block (categorical features and binary groups).
        integer_columns_: columns of integer features (grid: see ``snap``).
        discrete_grids_: column -> sorted model-space values allowed (binary and discrete features).

    Args:
        schema: the raw schema.
        out_of_range: "clip" (default) maps a value outside the fitted range of a feature without finite
            bounds (e.g. a test byte count above the training max) to the range end, so model inputs stay
            in [0, 1] and the inverse returns the range end; "raise" raises DataFormatError instead.
            ``count_out_of_range`` reports how many values would be clipped.
    """

    def __init__(self, schema: TabularSchema, *, out_of_range: Literal["clip", "raise"] = "clip") -> None:
        if not isinstance(schema, TabularSchema):
            raise ConfigError(f"schema must be a TabularSchema, got {type(schema).__name__}")
        if out_of_range not in ("clip", "raise"):
            raise ConfigError(f"out_of_range must be 'clip' or 'raise', got {out_of_range!r}")
        self.schema = schema
        self.out_of_range = out_of_range

    # ---- fitting

    def fit(self, data: Data) -> Self:
        """Learn ranges and open categories from training records (which must satisfy the schema)."""
        df, lines = _frame(data)
        if len(df) == 0:
            raise DataFormatError(f"cannot fit a preprocessor for '{self.schema.name}' on 0 rows")
        self._raise_invalid(df, lines, what="fit")
        ranges: dict[str, tuple[float, float]] = {}
        categories: dict[str, tuple[str, ...]] = {}
        for feature in self.schema.features:
            if feature.kind in (FeatureKind.CONTINUOUS, FeatureKind.INTEGER):
                values = _numeric(df, feature.name)
                lo = feature.lower if math.isfinite(feature.lower) else float(values.min())
                hi = feature.upper if math.isfinite(feature.upper) else float(values.max())
                ranges[feature.name] = (lo, hi)
            elif feature.is_open:
                seen = sorted({str(t) for t in _text(df, feature.name)} - {OTHER})
                categories[feature.name] = (*seen, OTHER)
        self._set_state(ranges, categories)
        return self

    def _set_state(self, ranges: Mapping[str, tuple[float, float]], categories: Mapping[str, tuple[str, ...]]) -> None:
        """Derive every fitted attribute from the learned ranges and categories."""
        self.ranges_ = {k: (float(lo), float(hi)) for k, (lo, hi) in ranges.items()}
        self.categories_ = {k: tuple(v) for k, v in categories.items()}
        self.schema_ = self.schema.with_categories(self.categories_)
        columns: list[str] = []
        slices: dict[str, slice] = {}
        lower: list[float] = []
        upper: list[float] = []
        immutable: list[bool] = []
        kinds: list[FeatureKind] = []
        groups: list[np.ndarray] = []
        raw_groups: dict[str, list[int]] = {}
        integer_columns: list[int] = []
        grids: dict[int, np.ndarray] = {}
        for feature in self.schema_.features:
            start = len(columns)
            if feature.kind is FeatureKind.CATEGORICAL:
                cats = feature.values or ()
                columns += [f"{feature.name}={c}" for c in cats]
                groups.append(np.arange(start, start + len(cats)))
            else:
                columns.append(feature.name)
                if feature.kind is FeatureKind.INTEGER:
                    integer_columns.append(start)
                elif feature.kind is FeatureKind.BINARY:
                    grids[start] = np.array([0.0, 1.0])
                    if feature.group is not None:
                        raw_groups.setdefault(feature.group, []).append(start)
                elif feature.kind is FeatureKind.DISCRETE:
                    grids[start] = self._discrete_model(feature, np.asarray(feature.values, dtype=np.float64))
            stop = len(columns)
            slices[feature.name] = slice(start, stop)
            constant = feature.name in self.ranges_ and self._span(feature)[1] == 0
            constant |= feature.kind is FeatureKind.DISCRETE and len(feature.values or ()) == 1
            lower += [0.0] * (stop - start)
            upper += [0.0 if constant else 1.0] * (stop - start)
            immutable += [not feature.mutable] * (stop - start)
            kinds += [feature.kind] * (stop - start)
        groups += [np.asarray(g) for g in raw_groups.values()]
        self.columns_ = tuple(columns)
        self.feature_slices_ = slices
        self.n_features_out_ = len(columns)
        self.lower_ = np.asarray(lower, dtype=np.float64)
        self.upper_ = np.asarray(upper, dtype=np.float64)
        self.immutable_mask_ = np.asarray(immutable, dtype=bool)
        self.column_kinds_ = tuple(kinds)
        self.onehot_groups_ = tuple(groups)
        self.integer_columns_ = np.asarray(integer_columns, dtype=np.int64)
        self.discrete_grids_ = grids

    def _check_fitted(self) -> None:
        if not hasattr(self, "schema_"):
            raise NotFittedError(
                f"TabularPreprocessor for '{self.schema.name}' is not fitted: call fit(training rows) first"
            )

    def _raise_invalid(self, df: pd.DataFrame, lines: np.ndarray | None, *, what: str) -> None:
        """Records must satisfy the raw schema (open categories take any text; relations not checked)."""
        schema = self.schema
        bad: list[tuple[int, str]] = []
        for where, violated, reason in _checks(df, schema, reference=None, relations=False):
            bad.extend((int(i), f"{where}: {reason(int(i))}") for i in np.flatnonzero(violated))
        if bad:
            i, first = min(bad)
            n_rows = len({row for row, _ in bad})
            raise DataFormatError(
                f"{what}: {_row_name(i, df, lines)}: {first} ({n_rows} invalid row(s) of schema "
                f"'{schema.name}'; read files with a reader to drop them)"
            )

    # ---- numeric helpers

    def _span(self, feature: Feature) -> tuple[float, float]:
        """(offset, span) of a continuous / integer feature in (log-)space."""
        lo, hi = self.ranges_[feature.name]
        if feature.log_scale:  # numpy's log1p, as in _to_model: math.log1p may differ in the last bit
            lo, hi = float(np.log1p(lo)), float(np.log1p(hi))
        span = hi - lo
        # A subnormal span (a range like [0, 5e-324]) cannot be divided and multiplied back exactly:
        # such a feature is constant in model space.
        return lo, span if span >= np.finfo(np.float64).tiny else 0.0

    @staticmethod
    def _discrete_model(feature: Feature, values: np.ndarray) -> np.ndarray:
        allowed = np.asarray(feature.values, dtype=np.float64)
        span = allowed[-1] - allowed[0]
        return (values - allowed[0]) / span if span > 0 else np.zeros_like(values)

    def _to_model(self, feature: Feature, raw: np.ndarray) -> np.ndarray:
        offset, span = self._span(feature)
        scaled = np.log1p(raw) if feature.log_scale else raw
        return (scaled - offset) / span if span > 0 else np.zeros_like(raw)

    def _to_raw(self, feature: Feature, z: np.ndarray) -> np.ndarray:
        offset, span = self._span(feature)
        raw = z * span + offset
        if feature.log_scale:
            raw = np.expm1(raw)
        lo, hi = self.ranges_[feature.name]
        if feature.kind is FeatureKind.INTEGER:
            return np.clip(np.round(raw), math.ceil(lo), math.floor(hi))
        return np.clip(raw, lo, hi)

    # ---- transform

    def count_out_of_range(self, data: Data) -> dict[str, int]:
        """Per feature, how many values lie outside the fitted range (clipped by transform)."""
        self._check_fitted()
        df, _ = _frame(data)
        counts = {}
        for name, (lo, hi) in self.ranges_.items():
            values = _numeric(df, name)
            n = int(((values < lo) | (values > hi)).sum())
            if n:
                counts[name] = n
        return counts

    def transform(self, data: Data, *, dtype: type[np.floating[Any]] | np.dtype[Any] = np.float32) -> np.ndarray:
        """(N, D) model-space array; never refits. Invalid records raise DataFormatError naming the row."""
        self._check_fitted()
        df, lines = _frame(data)
        self._raise_invalid(df, lines, what="transform")
        out = np.zeros((len(df), self.n_features_out_), dtype=np.float64)
        for feature in self.schema_.features:
            cols = self.feature_slices_[feature.name]
            if feature.kind is FeatureKind.CATEGORICAL:
                out[:, cols] = self._one_hot(feature, _text(df, feature.name))
                continue
            raw = _numeric(df, feature.name)
            if feature.kind is FeatureKind.BINARY:
                out[:, cols.start] = raw
            elif feature.kind is FeatureKind.DISCRETE:
                out[:, cols.start] = self._discrete_model(feature, raw)
            else:
                out[:, cols.start] = self._scaled(feature, raw, df, lines)
        return out.astype(dtype)

    def _scaled(self, feature: Feature, raw: np.ndarray, df: pd.DataFrame, lines: np.ndarray | None) -> np.ndarray:
        lo, hi = self.ranges_[feature.name]
        outside = (raw < lo) | (raw > hi)
        if outside.any():
            if self.out_of_range == "raise":
                i = int(np.flatnonzero(outside)[0])
                raise DataFormatError(
                    f"transform: {_row_name(i, df, lines)}: column '{feature.name}': {_show(raw[i])} is "
                    f"outside the fitted range [{_show(lo)}, {_show(hi)}] ({int(outside.sum())} such values)"
                )
            raw = np.clip(raw, lo, hi)
        return np.asarray(np.clip(self._to_model(feature, raw), 0.0, 1.0))

    def _one_hot(self, feature: Feature, text: np.ndarray) -> np.ndarray:
        cats = feature.values or ()
        index = {c: i for i, c in enumerate(cats)}
        other = index.get(OTHER)
        # Declared categories were validated already; an unseen value of a learned feature goes to OTHER.
        codes = np.array([index.get(t, other) for t in text], dtype=np.int64)
        block = np.zeros((len(text), len(cats)), dtype=np.float64)
        block[np.arange(len(text)), codes] = 1.0
        return block

    def fit_transform(self, data: Data, *, dtype: type[np.floating[Any]] | np.dtype[Any] = np.float32) -> np.ndarray:
        return self.fit(data).transform(data, dtype=dtype)

    # ---- inverse

    def _check_model(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_features_out_:
            raise InputValidationError(f"expected shape (N, {self.n_features_out_}), got {tuple(x.shape)}")
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise InputValidationError("model-space input holds NaN or infinity")
        return np.asarray(np.clip(x, self.lower_, self.upper_))

    def inverse_transform(self, x: np.ndarray) -> pd.DataFrame:
        """Raw records from model-space rows: clipped to the box, then snapped to each feature's grid.

        Integers are rounded, discrete values go to the nearest allowed value, one-hot blocks (categorical
        features and binary groups) to their argmax; dtypes match the readers' (int64 / float64 / object).
        """
        self._check_fitted()
        x = self._check_model(x)
        columns: dict[str, Any] = {}
        group_winner = {tuple(g): g[np.argmax(x[:, g], axis=1)] for g in self.onehot_groups_}
        for feature in self.schema_.features:
            cols = self.feature_slices_[feature.name]
            if feature.kind is FeatureKind.CATEGORICAL:
                cats = np.asarray(feature.values or (), dtype=object)
                columns[feature.name] = pd.Series(cats[np.argmax(x[:, cols], axis=1)], dtype=object)
                continue
            z = x[:, cols.start]
            if feature.kind is FeatureKind.BINARY:
                if feature.group is not None:
                    winner = next(w for g, w in group_winner.items() if cols.start in g)
                    columns[feature.name] = (winner == cols.start).astype(np.int64)
                else:
                    columns[feature.name] = (z >= 0.5).astype(np.int64)
            elif feature.kind is FeatureKind.DISCRETE:
                grid = self.discrete_grids_[cols.start]
                allowed = np.asarray(feature.values, dtype=np.float64)
                values = allowed[np.argmin(np.abs(z[:, None] - grid[None, :]), axis=1)]
                integral = all(float(v).is_integer() for v in allowed)
                columns[feature.name] = values.astype(np.int64) if integral else values
            else:
                raw = self._to_raw(feature, z)
                columns[feature.name] = raw.astype(np.int64) if feature.kind is FeatureKind.INTEGER else raw
        return pd.DataFrame(columns, columns=list(self.schema_.names))

    def snap(self, x: np.ndarray) -> np.ndarray:
        """Nearest model-space point whose inverse is exact: box clip, one-hot argmax, grids for binary /
        discrete columns, and for integer columns the nearer (in model space) of the two neighbouring
        integers. Continuous columns are only clipped."""
        self._check_fitted()
        x = self._check_model(x).copy()
        for group in self.onehot_groups_:
            block = np.zeros((len(x), len(group)))
            block[np.arange(len(x)), np.argmax(x[:, group], axis=1)] = 1.0
            x[:, group] = block
        in_groups = {int(c) for g in self.onehot_groups_ for c in g}
        for col, grid in self.discrete_grids_.items():
            if col not in in_groups:
                x[:, col] = grid[np.argmin(np.abs(x[:, col, None] - grid[None, :]), axis=1)]
        for feature in self.schema_.features:
            if feature.kind is not FeatureKind.INTEGER:
                continue
            col = self.feature_slices_[feature.name].start
            offset, span = self._span(feature)
            if span == 0:
                continue
            raw = z_raw = x[:, col] * span + offset
            if feature.log_scale:
                raw = np.expm1(z_raw)
            lo, hi = self.ranges_[feature.name]
            down = np.clip(np.floor(raw), math.ceil(lo), math.floor(hi))
            up = np.clip(np.ceil(raw), math.ceil(lo), math.floor(hi))
            z_down, z_up = self._to_model(feature, down), self._to_model(feature, up)
            x[:, col] = np.where(np.abs(x[:, col] - z_down) <= np.abs(z_up - x[:, col]), z_down, z_up)
        return np.asarray(np.clip(x, self.lower_, self.upper_))

    # ---- state

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fitted state (schema, ranges, learned categories): no pickle needed."""
        self._check_fitted()
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "schema": self.schema.to_dict(),
            "schema_hash": self.schema.schema_hash(),
            "out_of_range": self.out_of_range,
            "ranges": {k: [lo, hi] for k, (lo, hi) in self.ranges_.items()},
            "categories": {k: list(v) for k, v in self.categories_.items()},
            # The schema's features are a mapping: JSON writers that sort keys would reorder them, and the
            # order is the model's column order, so it is stored (and checked) explicitly.
            "feature_order": list(self.schema.names),
            "columns": list(self.columns_),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> TabularPreprocessor:
        """Rebuild a fitted preprocessor; a state whose schema no longer hashes the same is refused."""
        if not isinstance(state, Mapping) or state.get("format") != _FORMAT:
            raise ConfigError(f"not a saved TabularPreprocessor (expected format '{_FORMAT}')")
        unknown = sorted(set(state) - _STATE_KEYS)
        if unknown:
            raise ConfigError(f"saved TabularPreprocessor: unknown key(s) {unknown}")
        if state.get("version") != _VERSION:
            raise ConfigError(f"saved TabularPreprocessor version {state.get('version')!r}, expected {_VERSION}")
        schema = TabularSchema.from_dict(state["schema"], source="saved TabularPreprocessor")
        order = state.get("feature_order")
        if order is None:  # a features mapping may have been reordered by a sorted-key JSON writer
            raise ConfigError("saved TabularPreprocessor lacks 'feature_order': its column order is unknown; refit it")
        if sorted(order) != sorted(schema.names):
            raise ConfigError("saved TabularPreprocessor: feature_order does not name the schema's features")
        by_name = {f.name: f for f in schema.features}
        schema = replace(schema, features=tuple(by_name[n] for n in order))
        if schema.schema_hash() != state.get("schema_hash"):
            raise ConfigError("saved TabularPreprocessor: schema does not match its recorded schema_hash")
        pre = cls(schema, out_of_range=state.get("out_of_range", "clip"))
        ranges = {str(k): (float(v[0]), float(v[1])) for k, v in state["ranges"].items()}
        categories = {str(k): tuple(str(c) for c in v) for k, v in state["categories"].items()}
        expected_ranges = {f.name for f in schema.features if f.kind in (FeatureKind.CONTINUOUS, FeatureKind.INTEGER)}
        expected_cats = {f.name for f in schema.features if f.is_open}
        if set(ranges) != expected_ranges or set(categories) != expected_cats:
            raise ConfigError("saved TabularPreprocessor: ranges / categories do not match the schema's features")
        pre._set_state(ranges, categories)
        if "columns" in state and list(state["columns"]) != list(pre.columns_):
            raise ConfigError("saved TabularPreprocessor: its model-space columns do not rebuild in the same order")
        return pre
