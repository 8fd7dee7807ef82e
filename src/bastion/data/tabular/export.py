"""Write (adversarial) raw records back in the input file's own format and column order.

The records file re-reads with the same reader (header-less CSV for NSL-KDD and the phishing CSV, ARFF
with the source's header for ARFF input, CSV with the source's header row otherwise); the label, the
extra columns (NSL-KDD attack name and difficulty) and every column the schema does not model are
copied from the original row. A sidecar ``FILE.lines.csv`` maps each written row to the line of the
original row in the source file, with the attack, budget and whether the row evaded the model. Both
files are written atomically. ``formats`` writes a feature as the data file does (NSL-KDD's rates as
``0.50``, from the constraint set's decimal grids), so no float32 echo like ``0.8500000238418579``
reaches the file.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bastion.data.tabular.table import TabularTable
from bastion.errors import DataFormatError
from bastion.io import atomic_write_text

__all__ = ["write_records"]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, np.integer | int):
        return str(int(value))
    f = float(value)
    if f.is_integer() and abs(f) < 2**53:
        return str(int(f))
    return repr(f) if math.isfinite(f) else str(f)


def _source_header(path: Path, encoding: str) -> list[str]:
    with path.open(encoding=encoding, newline="") as fh:
        for line in fh:
            if line.strip():
                return [c.strip() for c in next(csv.reader([line]))]
    raise DataFormatError(f"{path}: empty file, no header to copy")


def _arff_header(path: Path, encoding: str) -> list[str]:
    lines = []
    with path.open(encoding=encoding) as fh:
        for line in fh:
            lines.append(line.rstrip("\r\n"))
            if line.strip().lower().startswith("@data"):
                return lines
    raise DataFormatError(f"{path}: no @data line")


def write_records(
    path: str | Path,
    records: pd.DataFrame,
    table: TabularTable,
    *,
    header: bool,
    sidecar: dict[str, Sequence[Any]] | None = None,
    encoding: str = "utf-8",
    formats: Mapping[str, Callable[[Any], str]] | None = None,
) -> Path:
    """Write ``records`` (raw features, row-aligned with ``table``) in ``table.source``'s format.

    Args:
        records: raw feature columns (e.g. ``inverse_transform`` of adversarial rows).
        table: the original rows (label text, extras, line numbers, source file).
        header: whether the source file has a header row (its order is then copied).
        sidecar: extra columns for ``FILE.lines.csv`` beside ``line`` (e.g. attack, eps, evaded).
        formats: feature -> text of a value, for features the file writes in a fixed style.
    """
    path = Path(path)
    if len(records) != len(table):
        raise DataFormatError(f"{len(records)} records for {len(table)} original rows")
    schema = table.schema
    source = Path(table.source)
    arff = source.suffix.lower() == ".arff"
    columns: dict[str, Sequence[Any]] = {name: records[name].tolist() for name in schema.names}
    columns[schema.label] = table.raw_labels.tolist()
    for name, values in table.extras.items():
        columns[name] = values.tolist()
    if arff:
        order = [*schema.names, schema.label]
        prefix = "\n".join(_arff_header(source, encoding)) + "\n"
    elif header:
        order = _source_header(source, encoding)
        missing = [c for c in order if c not in columns]
        if missing:
            raise DataFormatError(f"cannot write {missing}: not modelled by schema '{schema.name}' nor kept as extras")
        prefix = ""
    else:
        order = [*schema.names, schema.label, *[e for e in schema.extras if e in table.extras]]
        prefix = ""
    buf = io.StringIO()
    buf.write(prefix)
    writer = csv.writer(buf, lineterminator="\n")
    if header and not arff:
        writer.writerow(order)
    style = {c: (formats or {}).get(c, _text) for c in order}
    for i in range(len(table)):
        writer.writerow([style[c](columns[c][i]) for c in order])
    atomic_write_text(path, buf.getvalue())
    side = io.StringIO()
    side_writer = csv.writer(side, lineterminator="\n")
    extra = sidecar or {}
    side_writer.writerow(["row", "line", *extra])
    for i, line in enumerate(table.line_numbers.tolist()):
        side_writer.writerow([i + 1, line, *(_text(v[i]) for v in extra.values())])
    atomic_write_text(path.with_name(path.name + ".lines.csv"), side.getvalue())
    return path
