"""Raw records of one tabular file that passed its schema, with their provenance (:class:`TabularTable`).

Every tabular reader returns one, the preprocessor fits and transforms one, and export writes one back
in the file's own format; :class:`BadRows` is what a reader refused or passed over, by file line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from bastion.data.tabular.schema import TabularSchema

#: What a reader does with a row that fails its schema: drop it (reported by line) or raise.
OnBadRows = Literal["drop", "raise"]
#: What a reader does with an attack name its label table lacks: a bad row, or the attack class.
UnknownAttack = Literal["bad", "attack"]


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
