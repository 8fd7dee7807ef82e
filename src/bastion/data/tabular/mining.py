"""Rules mined from training records, and an audit of written records against them.

A rule that no training row breaks is a candidate hard constraint: ``flag = REJ => dst_bytes = 0`` held
on all 2,216 REJ rows of NSL-KDD's 20% training file, so an "adversarial" REJ connection with reply
bytes is a record no real system logs. The miner lists such rules with their support (training rows
where the ``if`` holds) and confidence (share of those where the ``then`` holds) for a user to accept
into a constraint file (:mod:`bastion.data.tabular.constraints`, ``to_constraint_dict``), and the
smallest number of decimals that writes each continuous column exactly (the data's own grid).

This module reads raw records only and evaluates its rules itself (pandas/numpy), sharing no code with
the constraint language, the attack domain or the attacks, so :func:`audit` is an independent check of
what an attack wrote: a record violates a mined rule if the rule held on its clean row but not on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bastion.data.tabular.schema import FeatureKind, TabularSchema
from bastion.errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = ["MinedConstraints", "MinedRule", "audit", "mine", "rule_id"]

_ATOL = 1e-9


@dataclass(frozen=True)
class MinedRule:
    """``when_feature = when_value => then_feature = then_value``, with its training counts."""

    when_feature: str
    when_value: Any
    then_feature: str
    then_value: Any
    support: int
    confidence: float
    then_op: str = "eq"

    @property
    def name(self) -> str:
        symbol = {"eq": "=", "le": "<=", "ge": ">="}[self.then_op]
        return f"{self.when_feature} = {self.when_value} => {self.then_feature} {symbol} {self.then_value}"

    @property
    def id(self) -> str:
        """A short stable id of the rule (:func:`rule_id` of its name), to reject it by."""
        return rule_id(self.name)

    def holds(self, records: pd.DataFrame) -> np.ndarray:
        """(N,) bool: the ``if`` fails or the ``then`` holds."""
        if self.then_op == "eq":
            then = _equals(records[self.then_feature], self.then_value)
        else:
            x = np.asarray(pd.to_numeric(records[self.then_feature], errors="coerce"), dtype=np.float64)
            slack = _ATOL * (1.0 + abs(float(self.then_value)))
            then = x <= self.then_value + slack if self.then_op == "le" else x >= self.then_value - slack
        return ~_equals(records[self.when_feature], self.when_value) | then

    def to_dict(self) -> dict[str, Any]:
        """The constraint-file form of this rule."""
        return {
            "name": self.name,
            "if": {self.when_feature: {"eq": self.when_value}},
            "then": {self.then_feature: {self.then_op: self.then_value}},
            "support": self.support,
            "confidence": round(self.confidence, 6),
        }


def _equals(column: pd.Series, value: Any) -> np.ndarray:
    if isinstance(value, str):
        return np.asarray(column.astype(str).to_numpy() == value, dtype=bool)
    x = np.asarray(pd.to_numeric(column, errors="coerce"), dtype=np.float64)
    return np.abs(x - float(value)) <= _ATOL * (1.0 + abs(float(value)))


@dataclass(frozen=True)
class MinedConstraints:
    """What :func:`mine` found on ``n_rows`` training rows."""

    rules: tuple[MinedRule, ...]
    decimals: Mapping[str, int] = field(default_factory=dict)
    n_rows: int = 0
    min_support: int = 0

    def hard(self) -> tuple[MinedRule, ...]:
        """The rules no training row breaks: candidate hard constraints."""
        return tuple(r for r in self.rules if r.confidence >= 1.0)

    def without(self, rejected: Iterable[str]) -> MinedConstraints:
        """The same candidates minus the rules named in ``rejected`` (by id or by full name).

        Raises:
            ConfigError: an entry names no mined rule (a typo, or a rule mined from other data); the
                message lists them, so a rejection never silently does nothing.
        """
        wanted = {str(r).strip() for r in rejected} - {""}
        known = {r.id for r in self.rules} | {r.name for r in self.rules}
        unknown = sorted(wanted - known)
        if unknown:
            raise ConfigError(
                f"no mined rule has the id or name {unknown} ({len(self.rules)} rules mined from {self.n_rows} rows; "
                "`python -m bastion.app.constraints mine DATA` lists them with their ids)"
            )
        return replace(self, rules=tuple(r for r in self.rules if r.id not in wanted and r.name not in wanted))

    def to_constraint_dict(self, dataset: str, *, text: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A constraint file (bastion-constraints/1) of the hard rules and the grids, for a user to review.

        Args:
            text: per feature, ``fixed`` or ``shortest`` decimals in the written file (default shortest).
        """
        styles = text or {}
        grids: dict[tuple[int, str], list[str]] = {}
        for name, dec in self.decimals.items():
            grids.setdefault((dec, styles.get(name, "shortest")), []).append(name)
        return {
            "format": "bastion-constraints/1",
            "dataset": dataset,
            "description": f"mined from {self.n_rows} training rows (support >= {self.min_support}, confidence 1)",
            "grids": [{"features": names, "decimals": d, "text": t} for (d, t), names in grids.items()],
            "rules": [r.to_dict() for r in self.hard()],
        }


def rule_id(name: str) -> str:
    """``r`` and the first 8 hex digits of the SHA-256 of a rule's name: the same rule gets the same id on
    any file and in any run, so a rejection list stays valid when the training data grows."""
    return "r" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]


def read_rejections(path: str | Path) -> list[str]:
    """Rule ids or names, one a line, from a review file (``#`` starts a comment; blank lines are skipped).

    Raises:
        DataNotFoundError: the file does not exist.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataNotFoundError(f"rejected-rules file {file} does not exist")
    out = []
    for line in file.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            out.append(entry)
    return out


def _atoms(df: pd.DataFrame, schema: TabularSchema, min_support: int) -> tuple[list[tuple[str, Any]], np.ndarray]:
    """(feature, value) equality atoms and their (N, A) bool matrix: each category or grid value of
    categorical / binary / discrete features, and ``= 0`` of continuous and integer ones."""
    atoms: list[tuple[str, Any]] = []
    columns: list[np.ndarray] = []
    for feature in schema.features:
        col = df[feature.name]
        if feature.kind is FeatureKind.CATEGORICAL:
            text = col.astype(str).to_numpy()
            values, counts = np.unique(text, return_counts=True)
            for value, count in zip(values.tolist(), counts.tolist(), strict=True):
                if count >= min_support:
                    atoms.append((feature.name, str(value)))
                    columns.append(text == value)
            continue
        x = np.asarray(pd.to_numeric(col, errors="coerce"), dtype=np.float64)
        if feature.kind in (FeatureKind.BINARY, FeatureKind.DISCRETE):
            candidates = np.unique(x[np.isfinite(x)])
        else:
            candidates = np.array([0.0])
        for value in candidates.tolist():
            hit = np.abs(x - value) <= _ATOL * (1.0 + abs(value))
            if hit.sum() >= min_support:
                atoms.append((feature.name, int(value) if float(value).is_integer() else float(value)))
                columns.append(hit)
    matrix = np.stack(columns, axis=1) if columns else np.zeros((len(df), 0), dtype=bool)
    return atoms, matrix


def _range_rules(
    records: pd.DataFrame, schema: TabularSchema, atoms: list[tuple[str, Any]], matrix: np.ndarray
) -> list[MinedRule]:
    """``atom => Y <= max(Y | atom)`` and ``atom => Y >= min(Y | atom)`` for every continuous or integer Y
    whose range on the atom's rows is a proper, non-degenerate part of its training range."""
    numeric = [f.name for f in schema.features if f.kind in (FeatureKind.CONTINUOUS, FeatureKind.INTEGER)]
    if not numeric:
        return []
    values = np.stack([np.asarray(pd.to_numeric(records[c], errors="coerce"), dtype=np.float64) for c in numeric], 1)
    finite = np.isfinite(values)
    lo_all = np.where(finite, values, np.inf).min(axis=0)
    hi_all = np.where(finite, values, -np.inf).max(axis=0)
    out: list[MinedRule] = []
    for a, (feature, value) in enumerate(atoms):
        rows = matrix[:, a]
        support = int(rows.sum())
        sub, ok = values[rows], finite[rows]
        lo = np.where(ok, sub, np.inf).min(axis=0)
        hi = np.where(ok, sub, -np.inf).max(axis=0)
        for j, name in enumerate(numeric):
            if name == feature or not (np.isfinite(lo[j]) and lo[j] < hi[j]):
                continue
            for op, bound, edge in (("le", hi[j], hi_all[j]), ("ge", lo[j], lo_all[j])):
                if bound != edge:
                    shown = int(bound) if float(bound).is_integer() else float(bound)
                    out.append(MinedRule(feature, value, name, shown, support, 1.0, then_op=op))
    return out


def decimals_of(values: np.ndarray, max_decimals: int = 12) -> int:
    """Smallest d <= max_decimals such that every finite value is a multiple of 10**-d (max_decimals if none)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    for d in range(max_decimals + 1):
        scaled = x * 10.0**d
        if np.all(np.abs(scaled - np.round(scaled)) <= 1e-6 * np.maximum(1.0, np.abs(scaled)) * 1e-3):
            return d
    return max_decimals


def mine(
    records: pd.DataFrame,
    schema: TabularSchema,
    *,
    min_support: int = 30,
    min_confidence: float = 1.0,
    max_decimals: int = 12,
    ranges: bool = False,
) -> MinedConstraints:
    """Implication rules between equality atoms and the decimal grids of continuous features (those with
    at least two distinct values).

    Args:
        records: raw training records (schema columns).
        min_support: fewest training rows where a rule's ``if`` holds; below it a rule at 100% proves little.
        min_confidence: lowest confidence listed (1.0: only rules no training row breaks).
        ranges: also list range rules ``atom => Y <= max`` / ``atom => Y >= min``: the range a numeric feature
            keeps on the rows where the atom holds, where it is narrower than on all training rows (and not a
            single value, which an equality rule already says). Off by default: they are many, and a maximum
            seen in training is a weaker promise than an equality never broken; review them before accepting.

    A rule is left out when its ``then`` holds on every training row anyway (a constant column: the box
    already says so) or reads the same feature as its ``if``.
    """
    if not 0 < min_confidence <= 1:
        raise ConfigError(f"min_confidence must be in (0, 1], got {min_confidence}")
    if min_support < 1:
        raise ConfigError(f"min_support must be >= 1, got {min_support}")
    missing = [n for n in schema.names if n not in records.columns]
    if missing:
        raise DataFormatError(f"records lack column(s) {missing} of schema '{schema.name}'")
    n = len(records)
    atoms, matrix = _atoms(records, schema, min_support)
    rules: list[MinedRule] = []
    if atoms and n:
        m = matrix.astype(np.float32)
        support = m.sum(axis=0)
        together = m.T @ m  # (A, A): rows where both atoms hold
        confidence = together / np.maximum(support[:, None], 1.0)
        always = support >= n
        features = np.array([f for f, _ in atoms], dtype=object)
        same = features[:, None] == features[None, :]
        keep = (confidence >= min_confidence - 1e-9) & ~same & ~always[None, :]
        for i, j in zip(*np.nonzero(keep), strict=True):
            rules.append(
                MinedRule(atoms[i][0], atoms[i][1], atoms[j][0], atoms[j][1], int(support[i]), float(confidence[i, j]))
            )
    if ranges and atoms and n:
        rules += _range_rules(records, schema, atoms, matrix)
    rules.sort(key=lambda r: (-r.confidence, -r.support, r.name))
    decimals = {}
    for f in schema.features:
        values = np.asarray(pd.to_numeric(records[f.name], errors="coerce"), dtype=np.float64)
        # A column with one value shows no grid (its box is fixed by the data's range anyway).
        if f.kind is FeatureKind.CONTINUOUS and len(np.unique(values[np.isfinite(values)])) >= 2:
            decimals[f.name] = decimals_of(values, max_decimals)
    return MinedConstraints(tuple(rules), decimals, n, min_support)


def audit(records: pd.DataFrame, originals: pd.DataFrame, mined: MinedConstraints) -> dict[str, Any]:
    """Check written records against the hard mined rules and grids, independently of the attack.

    Args:
        records: the written records as re-read from the file (raw values).
        originals: their clean rows, row-aligned.

    Returns:
        n_records; rules_checked; introduced (rule held on the clean row, fails on the record) and
        inherited (fails on both) violation counts; records_violating (rows with >= 1 introduced
        violation); off_grid_values (continuous values with more decimals than the training data);
        worst: up to 10 (rule, introduced count).
    """
    if len(records) != len(originals):
        raise DataFormatError(f"{len(records)} records for {len(originals)} original rows")
    records = records.reset_index(drop=True)
    originals = originals.reset_index(drop=True)
    hard = mined.hard()
    introduced = np.zeros(len(records), dtype=np.int64)
    inherited = 0
    per_rule: list[tuple[str, int]] = []
    for rule in hard:
        now, before = rule.holds(records), rule.holds(originals)
        new = before & ~now
        introduced += new
        inherited += int((~before & ~now).sum())
        if new.any():
            per_rule.append((rule.name, int(new.sum())))
    off_grid = 0
    for name, d in mined.decimals.items():
        x = np.asarray(pd.to_numeric(records[name], errors="coerce"), dtype=np.float64)
        off_grid += int((np.round(x, d) != x).sum())
    per_rule.sort(key=lambda item: -item[1])
    return {
        "n_records": len(records),
        "rules_checked": len(hard),
        "introduced": int(introduced.sum()),
        "inherited": inherited,
        "records_violating": int((introduced > 0).sum()),
        "off_grid_values": off_grid,
        "worst": [list(item) for item in per_rule[:10]],
    }


def rules_table(rules: Sequence[MinedRule], limit: int = 20) -> list[tuple[str, str, int, float]]:
    """(id, rule, support, confidence) of the first ``limit`` rules, for printing."""
    return [(r.id, r.name, r.support, r.confidence) for r in rules[:limit]]
