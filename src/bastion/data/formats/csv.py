"""Delimited text files (CSV) read against a schema: header handling, field splitting, duplicate names.

The rows go through :mod:`bastion.data.tabular.rows`, which checks every value; this module only knows
the text layout.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

from bastion.data.tabular.rows import RowStream, check_choice, collect, decoded_lines, existing_file
from bastion.data.tabular.schema import TabularSchema
from bastion.data.tabular.table import OnBadRows, TabularTable
from bastion.errors import ConfigError, DataFormatError


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


def csv_rows(
    path: Path,
    *,
    header: bool,
    columns: Sequence[str] | None,
    delimiter: str,
    encoding: str,
    rename_duplicates: bool,
) -> RowStream:
    """The column names (from the header, or ``columns``) and the rows, each split into its fields.

    Blank rows and repeats of the header are skipped; a line with the wrong field count or bytes that do
    not decode is a bad row. The values are checked later, by :func:`~bastion.data.tabular.rows.collect`.
    """
    lines = decoded_lines(path, encoding)
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

    return RowStream(names=names, name_lines=name_lines, rows=rows(), bad=bad, skipped=skipped)


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
    check_choice("on_bad_rows", on_bad_rows, ("drop", "raise"))
    check_choice("nonfinite", nonfinite, ("bad", "clip"))
    path = existing_file(path)
    if not header and columns is None:
        columns = [*schema.names, schema.label, *schema.extras]
    events = csv_rows(
        path,
        header=header,
        columns=columns,
        delimiter=delimiter,
        encoding=encoding,
        rename_duplicates=rename_duplicates,
    )
    return collect(
        path,
        schema,
        events,
        header_like=header,
        on_bad_rows=on_bad_rows,
        nonfinite=nonfinite,
        clip_values=clip_values,
        label_normalizer=label_normalizer,
    )
