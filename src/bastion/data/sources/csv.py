"""``csv:PATH?schema=SCHEMA.yaml``: any CSV described by a schema file (docs/tabular.md).

PATH is the file or a folder holding exactly one .csv; stratified 70/10/20. Options: ``schema`` (the
schema YAML, required) and ``header=yes|no`` (the file starts with a header row; default yes).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bastion.data.formats.csv import read_csv_with_schema
from bastion.data.source import verbatim, yes_no
from bastion.data.tabular.loading import TabularSource, register_tabular
from bastion.data.tabular.schema import TabularSchema
from bastion.data.tabular.table import TabularTable
from bastion.errors import ConfigError


def csv_schema(options: Mapping[str, Any]) -> TabularSchema:
    """The schema file named by option ``schema``; without one, a ConfigError showing the SPEC to write."""
    if "schema" not in options:
        raise ConfigError("csv:PATH needs its schema: csv:PATH?schema=SCHEMA.yaml")
    return TabularSchema.from_yaml(Path(options["schema"]).expanduser())


def read_schema_csv(path: Path, options: Mapping[str, Any]) -> TabularTable:
    """One CSV file read against the SPEC's schema, with or without a header row."""
    return read_csv_with_schema(
        path, csv_schema(options), header=options.get("header", True), on_bad_rows=options["on_bad_rows"]
    )


CSV = register_tabular(
    TabularSource(
        name="csv",
        read=read_schema_csv,
        options={"schema": verbatim, "header": yes_no},
        header=True,
    )
)
