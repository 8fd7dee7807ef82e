"""Constraints beyond boxes: implication rules, the data's own decimal grids and linear relations, as a file.

A schema says what a single value may be; a constraint set says what a *record* may be, so that an
adversarial record is one a real system could have logged: ``flag in {REJ, S0} => dst_bytes = 0``,
rates on the file's 2-decimal grid, ``root_shell <= logged_in``. The file format (YAML, validated by
pydantic, unknown keys rejected) is documented in docs/tabular.md:

```yaml
format: bastion-constraints/1
dataset: nsl-kdd                        # schema names starting with this
grids:
  - {features: [serror_rate, rerror_rate], decimals: 2, text: fixed}
rules:
  - name: rejected connections carry no reply bytes
    if: {flag: {in: [REJ, S0]}}
    then: {dst_bytes: {eq: 0}}
    support: 2216                       # optional: training rows where `if` holds
    confidence: 1.0                     # optional: share of those where `then` holds
relations:                              # the schema's linear form
  - {name: urgent <= wrong, terms: {urgent: 1, wrong_fragment: -1}, bound: 0}
```

Rules and grids bind an adversarial row *relative to its clean row*: a rule (or a grid cell) the clean
row breaks is not required of its adversarial version, as for linear relations. The attack domain
repairs toward the clean row (:mod:`bastion.data.tabular.domain`), ``validate_raw`` re-checks every
rule on the raw records, and :mod:`bastion.data.tabular.mining` audits the written records against
rules mined independently from training data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bastion.data.tabular.schema import OTHER, FeatureKind, LinearRelation, TabularSchema
from bastion.errors import ConfigError, DataNotFoundError
from bastion.io import atomic_write_text

__all__ = [
    "FORMAT",
    "Atom",
    "ConstraintSet",
    "Grid",
    "Rule",
    "shipped_constraints",
]

FORMAT = "bastion-constraints/1"
OPS = ("eq", "ne", "in", "le", "lt", "ge", "gt")
#: Relative slack of numeric comparisons and grid checks: absorbs float32 model-space rounding only.
TOLERANCE = 1e-6

Value = float | str


# ---- the file, as pydantic models (validation and clear errors only)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _ConditionFile(_Strict):
    eq: Value | None = None
    ne: Value | None = None
    in_: list[Value] | None = Field(default=None, alias="in")
    le: float | None = None
    lt: float | None = None
    ge: float | None = None
    gt: float | None = None

    @model_validator(mode="after")
    def _one_op(self) -> _ConditionFile:
        given = [op for op in OPS if getattr(self, "in_" if op == "in" else op) is not None]
        if not given:
            raise ValueError(f"a condition needs one of {', '.join(OPS)}")
        if self.in_ is not None and not self.in_:
            raise ValueError("'in' needs at least one value")
        return self


class _RuleFile(_Strict):
    name: str = Field(min_length=1)
    if_: dict[str, _ConditionFile] = Field(alias="if", min_length=1)
    then: dict[str, _ConditionFile] = Field(min_length=1)
    support: int | None = Field(default=None, ge=0)
    confidence: float | None = Field(default=None, ge=0, le=1)
    why: str = ""


class _GridFile(_Strict):
    features: list[str] = Field(min_length=1)
    decimals: int = Field(ge=0, le=12)
    text: Literal["fixed", "shortest"] = "shortest"


class _File(_Strict):
    format: Literal["bastion-constraints/1"]
    dataset: str = Field(min_length=1)
    description: str = ""
    grids: list[_GridFile] = Field(default_factory=list)
    rules: list[_RuleFile] = Field(default_factory=list)
    relations: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[_RuleFile]) -> list[_RuleFile]:
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate rule names {dupes}")
        return rules


def _pydantic_message(err: ValidationError, source: str) -> str:
    errors = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")  # a typo explains the rest
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "file"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = f"unknown key '{first['loc'][-1]}'"
        where = ".".join(str(p) for p in first["loc"][:-1]) or "file"
    more = f" (and {err.error_count() - 1} more problem(s))" if err.error_count() > 1 else ""
    return f"{source}: {where}: {msg}{more}"


# ---- the runtime form


@dataclass(frozen=True)
class Atom:
    """``feature op value``; ``in`` takes a tuple. Categorical features compare as text."""

    feature: str
    op: str
    value: Any

    def evaluate(self, column: np.ndarray) -> np.ndarray:
        """(N,) bool on one raw column (text for categoricals, numbers otherwise; see ``prepared``)."""
        if column.dtype.kind in "OUS" and self._textual():
            text = column.astype(str) if column.dtype.kind == "O" else column
            if self.op == "in":
                return np.isin(text, [str(v) for v in self.value])
            same = text == str(self.value)
            return same if self.op == "eq" else ~same
        x = column if column.dtype.kind == "f" else prepared(column)
        with np.errstate(invalid="ignore"):
            if self.op == "in":
                return np.any([_close(x, float(v)) for v in self.value], axis=0)
            v = float(self.value)
            slack = TOLERANCE * (1.0 + abs(v))
            if self.op == "eq":
                return _close(x, v)
            if self.op == "ne":
                return ~_close(x, v)
            if self.op == "le":
                return x <= v + slack
            if self.op == "lt":
                return x < v - slack
            if self.op == "ge":
                return x >= v - slack
            return x > v + slack

    def _textual(self) -> bool:
        values = self.value if isinstance(self.value, tuple) else (self.value,)
        return all(isinstance(v, str) for v in values)

    def text(self) -> str:
        shown = "{" + ", ".join(map(str, self.value)) + "}" if self.op == "in" else str(self.value)
        symbol = {"eq": "=", "ne": "!=", "in": "in", "le": "<=", "lt": "<", "ge": ">=", "gt": ">"}[self.op]
        return f"{self.feature} {symbol} {shown}"

    def to_dict(self) -> dict[str, Any]:
        return {self.op: list(self.value) if self.op == "in" else self.value}


def prepared(column: Any) -> np.ndarray:
    """A raw column as atoms compare it: float64 for numbers (NaN where not one), str for text."""
    values = np.asarray(column)
    if values.dtype.kind in "biuf":
        return values.astype(np.float64)
    if values.dtype.kind in "US" or (len(values) and isinstance(values.flat[0], str)):
        return values.astype(str)
    return np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=np.float64)


def _close(x: np.ndarray, v: float) -> np.ndarray:
    return np.abs(x - v) <= TOLERANCE * (1.0 + abs(v))


@dataclass(frozen=True)
class Rule:
    """``if`` (every atom) implies ``then`` (every atom); support and confidence as mined, if known."""

    name: str
    when: tuple[Atom, ...]
    then: tuple[Atom, ...]
    support: int | None = None
    confidence: float | None = None
    why: str = ""

    @property
    def antecedent_features(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.feature for a in self.when))

    @property
    def consequent_features(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.feature for a in self.then))

    def text(self) -> str:
        return " and ".join(a.text() for a in self.when) + " => " + " and ".join(a.text() for a in self.then)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        d["if"] = _conditions_dict(self.when)
        d["then"] = _conditions_dict(self.then)
        if self.support is not None:
            d["support"] = self.support
        if self.confidence is not None:
            d["confidence"] = self.confidence
        if self.why:
            d["why"] = self.why
        return d


def _conditions_dict(atoms: Sequence[Atom]) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    for a in atoms:
        out.setdefault(a.feature, {}).update(a.to_dict())
    return out


@dataclass(frozen=True)
class Grid:
    """Values of a feature are multiples of 10**-decimals; ``text`` is how the file writes them
    (``fixed``: always that many decimals, as NSL-KDD's ``0.50``; ``shortest``: trailing zeros dropped)."""

    decimals: int
    text: str = "shortest"

    def on_grid(self, x: np.ndarray) -> np.ndarray:
        """(N,) bool, up to float32 rounding of the value (relative TOLERANCE)."""
        scaled = np.asarray(x, dtype=np.float64) * 10.0**self.decimals
        with np.errstate(invalid="ignore"):
            return np.abs(scaled - np.round(scaled)) <= TOLERANCE * (1.0 + np.abs(scaled))

    def format(self, value: float) -> str:
        """The value as the data file writes it: rounded to the grid, in the file's decimal style."""
        text = f"{round(float(value), self.decimals):.{self.decimals}f}"
        if self.text == "shortest" and "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text


@dataclass(frozen=True)
class ConstraintSet:
    """Rules, grids and relations of one dataset (see the module docstring)."""

    dataset: str
    rules: tuple[Rule, ...] = ()
    grids: Mapping[str, Grid] = field(default_factory=dict)
    relations: tuple[LinearRelation, ...] = ()
    description: str = ""

    # ---- reading and writing

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "<dict>") -> ConstraintSet:
        """Build from the file form; a malformed file is a ConfigError naming the key and the problem."""
        try:
            parsed = _File.model_validate(d)
        except ValidationError as err:
            raise ConfigError(_pydantic_message(err, source)) from None
        grids: dict[str, Grid] = {}
        for g in parsed.grids:
            for name in g.features:
                if name in grids:
                    raise ConfigError(f"{source}: grids: feature '{name}' is listed twice")
                grids[name] = Grid(g.decimals, g.text)
        rules = tuple(
            Rule(
                name=r.name,
                when=_atoms(r.if_),
                then=_atoms(r.then),
                support=r.support,
                confidence=r.confidence,
                why=r.why,
            )
            for r in parsed.rules
        )
        relations = tuple(
            LinearRelation.from_dict(rel, source=source, index=i) for i, rel in enumerate(parsed.relations)
        )
        return cls(parsed.dataset, rules, grids, relations, parsed.description)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ConstraintSet:
        path = Path(path)
        if not path.is_file():
            raise DataNotFoundError(f"{path}: constraint file not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        by_style: dict[tuple[int, str], list[str]] = {}
        for name, g in self.grids.items():
            by_style.setdefault((g.decimals, g.text), []).append(name)
        d: dict[str, Any] = {"format": FORMAT, "dataset": self.dataset}
        if self.description:
            d["description"] = self.description
        d["grids"] = [{"features": names, "decimals": dec, "text": text} for (dec, text), names in by_style.items()]
        d["rules"] = [r.to_dict() for r in self.rules]
        d["relations"] = [r.to_dict() for r in self.relations]
        return d

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=110))
        return path

    def set_hash(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def merged(self, other: ConstraintSet) -> ConstraintSet:
        """Both sets' rules (``other``'s renamed if a name clashes), grids (``other`` wins) and relations."""
        names = {r.name for r in self.rules}
        extra = tuple(r if r.name not in names else _renamed(r, f"{r.name} ({other.dataset})") for r in other.rules)
        return ConstraintSet(
            self.dataset,
            self.rules + extra,
            {**self.grids, **other.grids},
            self.relations + tuple(r for r in other.relations if r not in self.relations),
            self.description,
        )

    # ---- against a schema and on records

    def check_schema(self, schema: TabularSchema) -> ConstraintSet:
        """Self, if every name and value fits ``schema``; else a ConfigError naming the rule and the problem."""
        where = f"constraints '{self.dataset}'"
        for rule in self.rules:
            for atom in (*rule.when, *rule.then):
                feature = _feature(schema, atom.feature, f"{where}: rule '{rule.name}'")
                values = atom.value if atom.op == "in" else (atom.value,)
                if feature.kind is FeatureKind.CATEGORICAL:
                    if atom.op not in ("eq", "ne", "in"):
                        raise ConfigError(f"{where}: rule '{rule.name}': '{atom.feature}' is categorical, use eq/ne/in")
                    known = feature.values  # learned categories end in OTHER: an unseen one just never matches
                    open_feature = known is None or OTHER in known
                    bad = [v for v in values if not open_feature and str(v) not in known]
                    if bad:
                        raise ConfigError(f"{where}: rule '{rule.name}': {bad} not categories of '{atom.feature}'")
                elif any(isinstance(v, str) for v in values):
                    raise ConfigError(f"{where}: rule '{rule.name}': '{atom.feature}' is numeric, got text {values}")
        for name in self.grids:
            feature = _feature(schema, name, f"{where}: grids")
            if feature.kind is not FeatureKind.CONTINUOUS:
                raise ConfigError(f"{where}: grids: '{name}' is {feature.kind.value}; grids are for continuous ones")
        for rel in self.relations:
            for term, _ in rel.terms:
                _feature(schema, LinearRelation.split_term(term)[0], f"{where}: relation '{rel.name}'")
        return self

    @property
    def features(self) -> tuple[str, ...]:
        """Every feature a rule or a relation reads."""
        names: list[str] = []
        for rule in self.rules:
            names += [*rule.antecedent_features, *rule.consequent_features]
        for rel in self.relations:
            names += list(rel.features)
        return tuple(dict.fromkeys(names))

    def rules_hold(self, columns: Mapping[str, np.ndarray] | pd.DataFrame) -> np.ndarray:
        """(N, R) bool: rule r holds on row i (its ``if`` fails or its ``then`` holds)."""
        n = len(columns) if isinstance(columns, pd.DataFrame) else len(next(iter(columns.values()), ()))
        if not self.rules:
            return np.ones((n, 0), dtype=bool)
        atoms, when, then = self._atom_index
        ready = {f: prepared(columns[f]) for f in dict.fromkeys(a.feature for a in atoms)}
        # (A, N): one contiguous row per atom, so gathering a rule's atoms copies whole rows
        values = np.stack([a.evaluate(ready[a.feature]) for a in atoms], axis=0)
        return (~_all_of(values, when) | _all_of(values, then)).T

    @property
    def _atom_index(self) -> tuple[list[Atom], list[list[int]], list[list[int]]]:
        """Distinct atoms, and per rule the indices of its ``if`` and ``then`` atoms (computed once)."""
        cached = self.__dict__.get("_atoms_cache")
        if cached is None:
            index: dict[Atom, int] = {}
            for rule in self.rules:
                for a in (*rule.when, *rule.then):
                    index.setdefault(a, len(index))
            when = [[index[a] for a in r.when] for r in self.rules]
            then = [[index[a] for a in r.then] for r in self.rules]
            cached = (list(index), when, then)
            object.__setattr__(self, "_atoms_cache", cached)
        return cached

    def relations_hold(self, frame: pd.DataFrame) -> np.ndarray:
        """(N, L) bool per linear relation of this set."""
        out = np.ones((len(frame), len(self.relations)), dtype=bool)
        for k, rel in enumerate(self.relations):
            out[:, k] = rel.holds(frame)
        return out

    def grids_hold(self, columns: Mapping[str, np.ndarray] | pd.DataFrame) -> np.ndarray:
        """(N, G) bool per grid feature (in ``self.grids`` order)."""
        n = len(columns) if isinstance(columns, pd.DataFrame) else len(next(iter(columns.values()), ()))
        out = np.ones((n, len(self.grids)), dtype=bool)
        for k, (name, grid) in enumerate(self.grids.items()):
            out[:, k] = grid.on_grid(np.asarray(columns[name], dtype=np.float64))
        return out

    def violations(self, records: pd.DataFrame, reference: pd.DataFrame | None = None) -> list[tuple[str, np.ndarray]]:
        """(what, (N,) bool violated) per rule, relation and grid; with ``reference`` (row-aligned clean
        records) only what the clean row satisfies is required."""
        checks = [
            *((f"rule '{r.name}'", self.rules_hold, k) for k, r in enumerate(self.rules)),
            *((f"relation '{r.name}'", self.relations_hold, k) for k, r in enumerate(self.relations)),
            *(
                (f"grid of '{n}' ({g.decimals} decimals)", self.grids_hold, k)
                for k, (n, g) in enumerate(self.grids.items())
            ),
        ]
        results: dict[Callable[..., np.ndarray], tuple[np.ndarray, np.ndarray | None]] = {}
        out = []
        for what, fn, k in checks:
            if fn not in results:
                results[fn] = (fn(records), None if reference is None else fn(reference))
            now, before = results[fn]
            violated = ~now[:, k] if before is None else before[:, k] & ~now[:, k]
            out.append((what, violated))
        return out

    def rounded(self, records: pd.DataFrame) -> pd.DataFrame:
        """A copy with every grid feature rounded to its decimals (drops float32 noise before writing)."""
        out = records.copy()
        for name, grid in self.grids.items():
            if name in out.columns:
                out[name] = np.round(pd.to_numeric(out[name]).to_numpy(dtype=np.float64), grid.decimals)
        return out

    def formatters(self) -> dict[str, Callable[[Any], str]]:
        """feature -> how the data file writes its values (grid features only)."""
        return {name: grid.format for name, grid in self.grids.items()}


def _all_of(values: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """(R, N) from (A, N) atom values: per group of atom indices, whether all hold; single-atom groups in
    one row gather."""
    out = np.empty((len(groups), values.shape[1]), dtype=bool)
    single = [k for k, g in enumerate(groups) if len(g) == 1]
    if single:
        out[single] = values[[groups[k][0] for k in single]]
    for k, g in enumerate(groups):
        if len(g) != 1:
            out[k] = values[g].all(axis=0)
    return out


def _atoms(conditions: Mapping[str, _ConditionFile]) -> tuple[Atom, ...]:
    atoms = []
    for feature, cond in conditions.items():
        for op in OPS:
            value = getattr(cond, "in_" if op == "in" else op)
            if value is not None:
                atoms.append(Atom(feature, op, tuple(value) if op == "in" else value))
    return tuple(atoms)


def _renamed(rule: Rule, name: str) -> Rule:
    return Rule(name, rule.when, rule.then, rule.support, rule.confidence, rule.why)


def _feature(schema: TabularSchema, name: str, where: str) -> Any:
    try:
        return schema.feature(name)
    except ConfigError:
        raise ConfigError(f"{where}: unknown feature '{name}' (not in schema '{schema.name}')") from None


# ---- the shipped files

#: schema-name prefix -> shipped constraint file (package data in bastion/data/tabular/constraint_sets).
SHIPPED = {
    "nsl-kdd": "nsl-kdd.yaml",
    "uci-phishing": "phishing.yaml",
    "clamp": "pe-malware.yaml",
    "unsw-nb15": "unsw-nb15.yaml",
    "cic-ids2017": "cic-ids2017.yaml",
}


def shipped_constraints(schema: TabularSchema) -> ConstraintSet | None:
    """The shipped constraint set of ``schema`` (longest matching name prefix), checked against it; None
    when bastion ships none (e.g. a user's ``csv:`` schema)."""
    matches = [prefix for prefix in SHIPPED if schema.name.startswith(prefix)]
    if not matches:
        return None
    filename = SHIPPED[max(matches, key=len)]
    text = resources.files("bastion.data.tabular").joinpath("constraint_sets", filename).read_text(encoding="utf-8")
    constraints = ConstraintSet.from_dict(yaml.safe_load(text), source=f"constraint_sets/{filename}")
    return constraints.check_schema(schema)


def accepted_rules(mined: Any, dataset: str) -> ConstraintSet:
    """A constraint set of a miner's hard rules and grids (``MinedConstraints.to_constraint_dict``), accepted
    as they are: what a user does after reviewing the list."""
    return ConstraintSet.from_dict(mined.to_constraint_dict(dataset), source=f"rules mined for {dataset}")
