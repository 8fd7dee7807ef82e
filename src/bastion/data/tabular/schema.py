"""What a tabular security dataset looks like in raw units: typed features, labels and linear relations.

A schema is declarative data: readers check files against it, the preprocessor maps it to model space,
and constrained attacks read immutables, bounds, one-hot groups and relations from it. It round-trips
through a dict / YAML file and hashes to a stable id for provenance.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from bastion.errors import ConfigError, DataNotFoundError

__all__ = ["OTHER", "Feature", "FeatureKind", "LinearRelation", "TabularSchema"]

OTHER = "__other__"
"""Category that a learned (open) categorical feature uses for values unseen in training."""

_INF = math.inf


class FeatureKind(StrEnum):
    """How a raw column is typed, validated and mapped to model space."""

    CONTINUOUS = "continuous"
    INTEGER = "integer"
    BINARY = "binary"
    CATEGORICAL = "categorical"
    DISCRETE = "discrete"


@dataclass(frozen=True, kw_only=True)
class Feature:
    """One raw column.

    Attributes:
        name: column name in the file.
        kind: see FeatureKind.
        bounds: inclusive raw-unit limits; +-inf for an open side; None for none at all. Binary features
            always have (0, 1) and discrete ones default to (min(values), max(values)).
        values: categories (str) for CATEGORICAL, or None for categories learned from training data (an
            "open" feature, with OTHER for unseen values); allowed numbers for DISCRETE, e.g. (-1, 0, 1).
        mutable: False when an attacker cannot change it without breaking the attack (e.g. protocol).
        log_scale: model space uses log1p of the value (heavy-tailed counts, byte sizes); needs bounds
            with a lower limit >= 0.
        group: binary features sharing a group form a one-hot block already in the file (exactly one 1).
    """

    name: str
    kind: FeatureKind
    bounds: tuple[float, float] | None = None
    values: tuple[Any, ...] | None = None
    mutable: bool = True
    log_scale: bool = False
    group: str | None = None

    def __post_init__(self) -> None:
        where = f"feature '{self.name}'"
        if not isinstance(self.name, str) or not self.name or "=" in self.name:
            raise ConfigError(f"feature name must be a non-empty string without '=', got {self.name!r}")
        try:
            object.__setattr__(self, "kind", FeatureKind(self.kind))
        except ValueError:
            allowed = ", ".join(k.value for k in FeatureKind)
            raise ConfigError(f"{where}: unknown type {self.kind!r} (allowed: {allowed})") from None
        if self.bounds is not None:
            object.__setattr__(self, "bounds", _check_bounds(self.bounds, where))
        if self.kind is FeatureKind.CATEGORICAL:
            self._check_categorical(where)
        elif self.kind is FeatureKind.DISCRETE:
            self._check_discrete(where)
        elif self.values is not None:
            raise ConfigError(f"{where}: 'values' is only for discrete or categorical features")
        if self.kind is FeatureKind.BINARY:
            if self.bounds not in (None, (0.0, 1.0)):
                raise ConfigError(f"{where}: a binary feature has bounds [0, 1], got {list(self.bounds)}")
            object.__setattr__(self, "bounds", (0.0, 1.0))
        if self.group is not None and self.kind is not FeatureKind.BINARY:
            raise ConfigError(f"{where}: 'group' (a one-hot block in the file) needs type binary")
        if self.log_scale:
            if self.kind not in (FeatureKind.CONTINUOUS, FeatureKind.INTEGER):
                raise ConfigError(f"{where}: log_scale applies to continuous or integer features only")
            if self.bounds is None or self.bounds[0] < 0:
                raise ConfigError(f"{where}: log_scale needs bounds with a lower limit >= 0")
        if not isinstance(self.mutable, bool) or not isinstance(self.log_scale, bool):
            raise ConfigError(f"{where}: 'mutable' and 'log_scale' must be true or false")

    def _check_categorical(self, where: str) -> None:
        if self.bounds is not None or self.log_scale:
            raise ConfigError(f"{where}: a categorical feature takes 'categories', not bounds or log_scale")
        if self.values is None:
            return
        cats = tuple(_category_text(v, where) for v in self.values)
        if not cats:
            raise ConfigError(f"{where}: empty category list (omit it to learn categories from training)")
        if len(set(cats)) != len(cats):
            raise ConfigError(f"{where}: duplicate categories")
        object.__setattr__(self, "values", cats)

    def _check_discrete(self, where: str) -> None:
        if not self.values:
            raise ConfigError(f"{where}: a discrete feature needs its allowed 'values'")
        try:
            values = tuple(sorted(float(v) for v in self.values))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: discrete values must be numbers, got {list(self.values)}") from None
        if len(set(values)) != len(values) or not all(math.isfinite(v) for v in values):
            raise ConfigError(f"{where}: discrete values must be distinct finite numbers")
        object.__setattr__(self, "values", values)
        if self.bounds is None:
            object.__setattr__(self, "bounds", (values[0], values[-1]))
        elif values[0] < self.bounds[0] or values[-1] > self.bounds[1]:
            raise ConfigError(f"{where}: discrete values {list(values)} leave bounds {list(self.bounds)}")

    @property
    def is_numeric(self) -> bool:
        return self.kind is not FeatureKind.CATEGORICAL

    @property
    def is_open(self) -> bool:
        """A categorical feature whose categories are learned from training data."""
        return self.kind is FeatureKind.CATEGORICAL and self.values is None

    @property
    def lower(self) -> float:
        return -_INF if self.bounds is None else self.bounds[0]

    @property
    def upper(self) -> float:
        return _INF if self.bounds is None else self.bounds[1]

    def to_dict(self) -> dict[str, Any]:
        """YAML/JSON form; defaults are left out so files stay short."""
        d: dict[str, Any] = {"type": self.kind.value}
        if self.bounds is not None and self.kind is not FeatureKind.BINARY:
            d["bounds"] = [_finite_or_none(b) for b in self.bounds]
        if self.values is not None:
            if self.kind is FeatureKind.CATEGORICAL:
                d["categories"] = list(self.values)
            else:
                d["values"] = [_plain_number(v) for v in self.values]
        if not self.mutable:
            d["mutable"] = False
        if self.log_scale:
            d["log_scale"] = True
        if self.group is not None:
            d["group"] = self.group
        return d

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any], *, source: str = "<dict>", line: int | None = None) -> Feature:
        """Build from the YAML form; ``line`` is where the feature's name stands in the file."""
        what = f"feature '{name}'"
        if not isinstance(d, Mapping):
            raise ConfigError(f"{_loc(source, line)}: {what}: expected a mapping, got {type(d).__name__}")
        _reject_unknown(d, _FEATURE_KEYS, source, what)
        here = _loc(source, _first_line(d) or line)
        if "type" not in d:
            raise ConfigError(f"{here}: {what}: missing key 'type'")
        if "values" in d and "categories" in d:
            raise ConfigError(f"{here}: {what}: give either 'values' or 'categories', not both")
        values = d.get("categories", d.get("values"))
        bounds = d.get("bounds")
        if bounds is not None:
            if not isinstance(bounds, Sequence) or isinstance(bounds, str) or len(bounds) != 2:
                raise ConfigError(f"{_loc(source, _line_of(d, 'bounds'))}: {what}: bounds must be [low, high]")
            bounds = (-_INF if bounds[0] is None else bounds[0], _INF if bounds[1] is None else bounds[1])
        if values is not None and (isinstance(values, str) or not isinstance(values, Sequence)):
            raise ConfigError(f"{here}: {what}: values/categories must be a list")
        try:
            return cls(
                name=name,
                kind=d["type"],
                bounds=bounds,
                values=None if values is None else tuple(values),
                mutable=d.get("mutable", True),
                log_scale=d.get("log_scale", False),
                group=d.get("group"),
            )
        except ConfigError as err:
            raise ConfigError(f"{here}: {err}") from None


@dataclass(frozen=True, kw_only=True)
class LinearRelation:
    """``sum_i coef_i * term_i <= bound`` over raw values of named features.

    A term is a feature name, or ``"feature=category"`` for the 0/1 indicator of a categorical value, so
    ``packer + [packer_type=NoPacker] == 1`` is two relations. An equality is written as two of these.
    """

    name: str
    terms: tuple[tuple[str, float], ...]
    bound: float
    tolerance: float = 1e-6

    def __post_init__(self) -> None:
        if not self.terms:
            raise ConfigError(f"relation '{self.name}': needs at least one term")
        terms = tuple((str(t), float(c)) for t, c in self.terms)
        if len({t for t, _ in terms}) != len(terms):
            raise ConfigError(f"relation '{self.name}': a term appears twice")
        if not all(math.isfinite(c) and c != 0 for _, c in terms) or not math.isfinite(self.bound):
            raise ConfigError(f"relation '{self.name}': coefficients must be finite and non-zero")
        object.__setattr__(self, "terms", terms)
        object.__setattr__(self, "bound", float(self.bound))

    @classmethod
    def less_equal(cls, left: str, right: str, *, name: str | None = None) -> LinearRelation:
        """``left <= right``."""
        return cls(name=name or f"{left} <= {right}", terms=((left, 1.0), (right, -1.0)), bound=0.0)

    @staticmethod
    def split_term(term: str) -> tuple[str, str | None]:
        """``"f=c"`` -> ("f", "c"); ``"f"`` -> ("f", None)."""
        feature, sep, category = term.partition("=")
        return (feature, category) if sep else (feature, None)

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.split_term(t)[0] for t, _ in self.terms))

    def lhs(self, df: pd.DataFrame) -> np.ndarray:
        """(N,) float64 left-hand side on raw records; NaN where a numeric term is not a number."""
        total = np.zeros(len(df), dtype=np.float64)
        for term, coef in self.terms:
            feature, category = self.split_term(term)
            column = df[feature]
            if category is None:
                values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            else:
                values = (column.astype(object).to_numpy() == category).astype(np.float64)
            total += coef * values
        return total

    def holds(self, df: pd.DataFrame) -> np.ndarray:
        """(N,) bool; the tolerance absorbs float rounding only, not data slack: model space is float32,
        so a record written back from it is off by up to ~1e-7 per value, and a row at the bound (NSL-KDD's
        serror_rate 0.03 + rerror_rate 0.98 <= 1.01) reads ~2e-8 over it."""
        return self.lhs(df) <= self.bound + self.tolerance * (1.0 + abs(self.bound))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "terms": dict(self.terms), "bound": self.bound}
        if self.tolerance != 1e-6:
            d["tolerance"] = self.tolerance
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "<dict>", index: int = 0) -> LinearRelation:
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: relation {index}: expected a mapping with name, terms, bound")
        what = f"relation {d.get('name', index)!r}"
        _reject_unknown(d, _RELATION_KEYS, source, what)
        here = _loc(source, _first_line(d))
        for key in ("name", "terms", "bound"):
            if key not in d:
                raise ConfigError(f"{here}: {what}: missing key '{key}'")
        if not isinstance(d["terms"], Mapping):
            raise ConfigError(f"{_loc(source, _line_of(d, 'terms'))}: {what}: terms must map feature -> coefficient")
        try:
            return cls(
                name=str(d["name"]),
                terms=tuple((str(k), float(v)) for k, v in d["terms"].items()),
                bound=float(d["bound"]),
                tolerance=float(d.get("tolerance", 1e-6)),
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{here}: {what}: {err}") from None


@dataclass(frozen=True, kw_only=True)
class TabularSchema:
    """Features, label and relations of one tabular dataset, in raw (file) units.

    Attributes:
        name: dataset id, e.g. "nsl-kdd-binary".
        features: in model order; readers return columns in this order.
        label: the label column in the file.
        classes: class names; class 0 is benign in bastion's own schemas.
        benign: index of the benign class (attacks push malicious rows toward it).
        label_values: raw label text -> class name; empty means the raw text is the class name.
        unknown_label: class for raw label text not in label_values; None makes such rows bad rows.
        relations: linear relations every valid record satisfies.
        extras: other file columns readers keep as text (e.g. NSL-KDD difficulty); optional in files
            with a header.
        description: free text; not part of schema_hash.
    """

    name: str
    features: tuple[Feature, ...]
    label: str
    classes: tuple[str, ...]
    benign: int
    label_values: tuple[tuple[str, str], ...] = ()
    unknown_label: str | None = None
    relations: tuple[LinearRelation, ...] = ()
    extras: tuple[str, ...] = ()
    description: str = ""
    _by_name: dict[str, Feature] = field(init=False, repr=False, compare=False)
    _lookup: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"schema '{self.name}'"
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "relations", tuple(self.relations))
        object.__setattr__(self, "extras", tuple(self.extras))
        pairs = self.label_values.items() if isinstance(self.label_values, Mapping) else self.label_values
        object.__setattr__(self, "label_values", tuple((str(k), str(v)) for k, v in pairs))
        if not self.features:
            raise ConfigError(f"{where}: no features")
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"{where}: duplicate feature names {dupes}")
        columns = [*names, self.label, *self.extras]
        clash = sorted({n for n in columns if columns.count(n) > 1})
        if clash:
            raise ConfigError(f"{where}: the label or an extra column reuses the name(s) {clash}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"{where}: classes must be >= 2 distinct names, got {list(self.classes)}")
        if not 0 <= self.benign < len(self.classes):
            raise ConfigError(f"{where}: benign index {self.benign} is not a class index")
        for raw, cls_name in self.label_values:
            if cls_name not in self.classes:
                raise ConfigError(f"{where}: label value '{raw}' maps to unknown class '{cls_name}'")
        if self.unknown_label is not None and self.unknown_label not in self.classes:
            raise ConfigError(f"{where}: unknown_label '{self.unknown_label}' is not a class")
        by_name = {f.name: f for f in self.features}
        for rel in self.relations:
            for term, _ in rel.terms:
                feature, category = LinearRelation.split_term(term)
                if feature not in by_name:
                    raise ConfigError(f"{where}: relation '{rel.name}' uses unknown feature '{feature}'")
                kind = by_name[feature].kind
                if (category is None) == (kind is FeatureKind.CATEGORICAL):
                    need = "'feature=category' terms" if category is None else "plain numeric terms"
                    raise ConfigError(f"{where}: relation '{rel.name}': '{term}' is not valid, use {need}")
                cats = by_name[feature].values
                if category is not None and cats is not None and category not in cats:
                    raise ConfigError(f"{where}: relation '{rel.name}': '{category}' is not a category")
        object.__setattr__(self, "_by_name", by_name)
        pairs = self.label_values or tuple((c, c) for c in self.classes)
        lookup = {raw: self.classes.index(c) for raw, c in pairs}
        for raw, c in pairs:
            lookup.setdefault(_canonical_number(raw) or raw, self.classes.index(c))
        object.__setattr__(self, "_lookup", lookup)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def feature(self, name: str) -> Feature:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(f"schema '{self.name}' has no feature '{name}'") from None

    def class_index(self, raw: str) -> int | None:
        """Class index of a raw label text (already normalised), or None when unknown and not defaulted."""
        index = self._lookup.get(raw)
        if index is None:
            canonical = _canonical_number(raw)
            index = None if canonical is None else self._lookup.get(canonical)
        if index is None and self.unknown_label is not None:
            index = self.classes.index(self.unknown_label)
        return index

    def with_categories(self, categories: Mapping[str, Sequence[str]]) -> TabularSchema:
        """A copy where the given (open) categorical features get a fixed category list."""
        features = tuple(
            replace(f, values=tuple(categories[f.name])) if f.name in categories else f for f in self.features
        )
        return replace(self, features=features)

    def to_dict(self) -> dict[str, Any]:
        label: dict[str, Any] = {
            "column": self.label,
            "classes": list(self.classes),
            "benign": self.classes[self.benign],
        }
        if self.label_values:
            label["values"] = dict(self.label_values)
        if self.unknown_label is not None:
            label["unknown"] = self.unknown_label
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        d["label"] = label
        d["features"] = {f.name: f.to_dict() for f in self.features}
        if self.relations:
            d["relations"] = [r.to_dict() for r in self.relations]
        if self.extras:
            d["extras"] = list(self.extras)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "<dict>") -> TabularSchema:
        """Build from the to_dict / YAML form; unknown keys anywhere raise ConfigError naming them."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: a schema must be a mapping, got {type(d).__name__}")
        _reject_unknown(d, _SCHEMA_KEYS, source, "schema")
        for key in ("name", "label", "features"):
            if key not in d:
                raise ConfigError(f"{source}: schema: missing key '{key}'")
        label = d["label"]
        if not isinstance(label, Mapping):
            raise ConfigError(f"{_loc(source, _line_of(d, 'label'))}: schema: 'label' must be a mapping")
        _reject_unknown(label, _LABEL_KEYS, source, "label")
        for key in ("column", "classes", "benign"):
            if key not in label:
                raise ConfigError(f"{_loc(source, _line_of(d, 'label'))}: label: missing key '{key}'")
        classes = tuple(str(c) for c in label["classes"])
        benign = label["benign"]
        if isinstance(benign, str):
            if benign not in classes:
                raise ConfigError(f"{_loc(source, _line_of(label, 'benign'))}: label: '{benign}' is not a class")
            benign = classes.index(benign)
        features_d = d["features"]
        if not isinstance(features_d, Mapping):
            raise ConfigError(f"{_loc(source, _line_of(d, 'features'))}: 'features' must map name -> settings")
        features = tuple(
            Feature.from_dict(str(name), spec, source=source, line=_line_of(features_d, name))
            for name, spec in features_d.items()
        )
        relations_d = d.get("relations") or []
        if not isinstance(relations_d, Sequence) or isinstance(relations_d, str):
            raise ConfigError(f"{_loc(source, _line_of(d, 'relations'))}: 'relations' must be a list")
        relations = tuple(LinearRelation.from_dict(r, source=source, index=i) for i, r in enumerate(relations_d))
        values = label.get("values") or {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{_loc(source, _line_of(label, 'values'))}: label values must map raw -> class")
        try:
            return cls(
                name=str(d["name"]),
                features=features,
                label=str(label["column"]),
                classes=classes,
                benign=int(benign),
                label_values=tuple((str(k), str(v)) for k, v in values.items()),
                unknown_label=label.get("unknown"),
                relations=relations,
                extras=tuple(str(e) for e in d.get("extras") or ()),
                description=str(d.get("description", "")),
            )
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> TabularSchema:
        path = Path(path)
        if not path.is_file():
            raise DataNotFoundError(f"{path}: schema file not found")
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        except _DuplicateKey as err:
            raise ConfigError(f"{path}:{err.line}: duplicate key {err.key!r}") from None
        return cls.from_dict(data, source=str(path))

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))

    def schema_hash(self) -> str:
        """sha256 of the canonical JSON of everything but the description: same data contract, same hash."""
        d = self.to_dict()
        d.pop("description", None)
        text = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()


_FEATURE_KEYS = frozenset({"type", "bounds", "values", "categories", "mutable", "log_scale", "group"})
_RELATION_KEYS = frozenset({"name", "terms", "bound", "tolerance"})
_SCHEMA_KEYS = frozenset({"name", "description", "label", "features", "relations", "extras"})
_LABEL_KEYS = frozenset({"column", "classes", "benign", "values", "unknown"})


class _Located(dict[Any, Any]):
    """A YAML mapping that remembers the 1-based line of each key, for error messages."""

    lines: dict[Any, int]


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key, line)
        self.key, self.line = key, line


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings carry key line numbers and reject duplicate keys."""


def _construct_located(loader: _LineLoader, node: yaml.MappingNode) -> Iterator[_Located]:
    data = _Located()
    data.lines = {}
    yield data
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in data:
            raise _DuplicateKey(key, key_node.start_mark.line + 1)
        data[key] = loader.construct_object(value_node, deep=True)
        data.lines[key] = key_node.start_mark.line + 1


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_located)


def _line_of(d: Any, key: Any) -> int | None:
    return d.lines.get(key) if isinstance(d, _Located) else None


def _first_line(d: Any) -> int | None:
    if isinstance(d, _Located) and d.lines:
        return min(d.lines.values())
    return None


def _loc(source: str, line: int | None) -> str:
    return f"{source}:{line}" if line is not None else source


def _reject_unknown(d: Mapping[str, Any], allowed: frozenset[str], source: str, what: str) -> None:
    for key in d:
        if key not in allowed:
            raise ConfigError(
                f"{_loc(source, _line_of(d, key))}: {what}: unknown key '{key}' (allowed: {', '.join(sorted(allowed))})"
            )


def _check_bounds(bounds: Any, where: str) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: bounds must be two numbers (null for unbounded), got {bounds!r}") from None
    if math.isnan(lo) or math.isnan(hi) or lo > hi or lo == _INF or hi == -_INF:
        raise ConfigError(f"{where}: bounds must satisfy low <= high, got [{lo}, {hi}]")
    return lo, hi


def _category_text(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigError(f"{where}: categories must be strings (or integers), got {value!r}")
    return str(value)


def _finite_or_none(x: float) -> float | int | None:
    return _plain_number(x) if math.isfinite(x) else None


def _plain_number(x: float) -> float | int:
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else float(x)


def _canonical_number(text: str) -> str | None:
    """'1.0' -> '1', '-1' -> '-1'; None when text is not a finite number."""
    try:
        x = float(text)
    except ValueError:
        return None
    if not math.isfinite(x):
        return None
    return str(_plain_number(x))
