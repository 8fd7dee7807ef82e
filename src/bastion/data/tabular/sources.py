"""Tabular data SPECs: ``nsl-kdd:PATH``, ``phishing:PATH``, ``malware:PATH``, ``unsw-nb15:PATH``,
``cic-ids2017:PATH`` and ``csv:PATH?schema=SCHEMA.yaml``.

Options follow the path after ``?`` as ``key=value`` pairs joined by ``&`` (docs/data.md):
``labels=binary|family`` (nsl-kdd, unsw-nb15), ``train=FILE`` (nsl-kdd folder: the training file),
``on_bad_rows=drop|raise`` (all), ``schema=FILE`` and ``header=yes|no`` (csv).

The preprocessing is fitted on the training rows only and travels inside the spec's TabularDomain, so a
saved model carries it. ``load_tabular(..., preprocessor=P)`` reads a file through a model's own
preprocessing instead (``bastion evaluate MODEL --data nsl-kdd:FILE``): every row of the file is the
test split and nothing is refitted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion.data.spec import Dataset, DatasetSpec, Split
from bastion.data.tabular.domain import TabularDomain
from bastion.data.tabular.preprocess import TabularPreprocessor
from bastion.data.tabular.readers import (
    TabularTable,
    read_cic_ids2017,
    read_clamp,
    read_csv_with_schema,
    read_nsl_kdd,
    read_phishing,
    read_unsw_nb15,
)
from bastion.data.tabular.schema import TabularSchema
from bastion.errors import ConfigError, DataNotFoundError

log = logging.getLogger(__name__)

TABULAR_NAMES = ("nsl-kdd", "phishing", "malware", "unsw-nb15", "cic-ids2017", "csv")
_OPTIONS = {
    "nsl-kdd": {"labels", "train", "on_bad_rows"},
    "phishing": {"on_bad_rows"},
    "malware": {"on_bad_rows"},
    "unsw-nb15": {"labels", "on_bad_rows"},
    "cic-ids2017": {"on_bad_rows"},
    "csv": {"schema", "header", "on_bad_rows"},
}
_SPLIT = (0.7, 0.1, 0.2)


def split_options(path: str) -> tuple[str, dict[str, str]]:
    """``PATH?k=v&k2=v2`` -> (PATH, {k: v}); a bare PATH has no options."""
    base, sep, query = path.partition("?")
    options: dict[str, str] = {}
    if sep:
        for part in filter(None, query.split("&")):
            key, eq, value = part.partition("=")
            if not eq or not key or not value:
                raise ConfigError(f"data option {part!r} in {path!r} is not key=value")
            if key in options:
                raise ConfigError(f"data option {key!r} given twice in {path!r}")
            options[key] = value
    return base, options


@dataclass(frozen=True)
class TabularData:
    """A tabular Dataset with what evaluation and export need beside the tensors.

    Attributes:
        dataset: the spec (its domain holds the fitted preprocessor) and train/val/test splits.
        preprocessor: the fitted preprocessing (shared with ``dataset.spec.domain``).
        tables: raw records per split ("train", "val", "test"), row-aligned with the tensors, with their
            file line numbers and the file's extra columns (attack names, difficulty).
        kind: the SPEC name ("nsl-kdd", ...), which fixes the file format for ``--save-adversarial``.
    """

    dataset: Dataset
    preprocessor: TabularPreprocessor
    tables: dict[str, TabularTable]
    kind: str
    options: dict[str, str]


def _read(kind: str, path: Path, options: dict[str, str]) -> TabularTable:
    on_bad_rows = options.get("on_bad_rows", "drop")
    if on_bad_rows not in ("drop", "raise"):
        raise ConfigError(f"on_bad_rows must be drop or raise, got {on_bad_rows!r}")
    labels = options.get("labels", "binary")
    if labels not in ("binary", "family"):
        raise ConfigError(f"labels must be binary or family, got {labels!r}")
    table: TabularTable
    if kind == "nsl-kdd":
        table = read_nsl_kdd(path, labels=labels, on_bad_rows=on_bad_rows)  # type: ignore[arg-type]
    elif kind == "phishing":
        table = read_phishing(path, on_bad_rows=on_bad_rows)  # type: ignore[arg-type]
    elif kind == "malware":
        table = read_clamp(path, on_bad_rows=on_bad_rows)  # type: ignore[arg-type]
    elif kind == "unsw-nb15":
        table = read_unsw_nb15(path, labels=labels, on_bad_rows=on_bad_rows)  # type: ignore[arg-type]
    elif kind == "cic-ids2017":
        table = read_cic_ids2017(path, on_bad_rows=on_bad_rows)  # type: ignore[arg-type]
    else:
        table = read_csv_with_schema(
            path,
            csv_schema(options),
            header=_yes(options.get("header", "yes"), "header"),
            on_bad_rows=on_bad_rows,  # type: ignore[arg-type]
        )
    if table.bad_rows.count:
        log.warning("%s: %s", path, table.bad_rows.summary())
    return table


def _yes(value: str, key: str) -> bool:
    if value.lower() in ("yes", "true", "1"):
        return True
    if value.lower() in ("no", "false", "0"):
        return False
    raise ConfigError(f"data option {key} must be yes or no, got {value!r}")


def csv_schema(options: dict[str, str]) -> TabularSchema:
    if "schema" not in options:
        raise ConfigError("csv:PATH needs its schema: csv:PATH?schema=SCHEMA.yaml")
    return TabularSchema.from_yaml(Path(options["schema"]).expanduser())


def _files(kind: str, root: Path, options: dict[str, str]) -> tuple[Path, Path | None]:
    """(training file, official test file or None) for a file or folder PATH."""
    if root.is_file():
        return root, None
    if kind == "nsl-kdd":
        names = [options["train"]] if "train" in options else ["KDDTrain+.txt", "KDDTrain+_20Percent.txt"]
        train = next((root / n for n in names if (root / n).is_file()), None)
        if train is None:
            raise DataNotFoundError(f"{root} holds none of {names}")
        test = root / "KDDTest+.txt"
        return train, test if test.is_file() else None
    if kind == "unsw-nb15":
        train, test = root / "UNSW_NB15_training-set.csv", root / "UNSW_NB15_testing-set.csv"
        if not train.is_file():
            raise DataNotFoundError(f"{root} holds no UNSW_NB15_training-set.csv")
        return train, test if test.is_file() else None
    patterns = {
        "phishing": ("*.arff", "*.csv", "*.txt"),
        "malware": ("ClaMP*.csv", "*.csv"),
        "cic-ids2017": ("*.csv",),
        "csv": ("*.csv",),
    }[kind]
    for pattern in patterns:
        found = sorted(root.glob(pattern))
        if len(found) == 1:
            return found[0], None
        if len(found) > 1:
            raise ConfigError(f"{root} holds several {pattern} files ({', '.join(p.name for p in found)}); name one")
    raise DataNotFoundError(f"{root} holds no {kind} file ({', '.join(patterns)})")


def _spec(kind: str, source: str, pre: TabularPreprocessor) -> DatasetSpec:
    schema = pre.schema_
    return DatasetSpec(
        name=schema.name,
        source=source,
        modality="tabular",
        classes=tuple(schema.classes),
        input_shape=(int(pre.n_features_out_),),
        domain=TabularDomain(pre),
        benign=schema.benign,
        feature_names=tuple(pre.columns_),
    )


def _split(table: TabularTable, pre: TabularPreprocessor) -> Split:
    x = torch.from_numpy(pre.transform(table, dtype=np.float32))
    return Split(x, torch.from_numpy(table.labels.astype(np.int64)))


def load_tabular(
    spec: str,
    *,
    seed: int = 0,
    preprocessor: TabularPreprocessor | None = None,
    on_bad_rows: str | None = None,
) -> TabularData:
    """Read a tabular SPEC into splits (see the module docstring).

    Args:
        spec: ``NAME:PATH[?options]``.
        seed: drives the stratified splits.
        preprocessor: a model's fitted preprocessing; then every row of PATH (a file) is the test split,
            train and val are empty, and nothing is fitted.
        on_bad_rows: overrides the SPEC's ``on_bad_rows`` option.
    """
    from bastion.data.sources import index_digest, parse_spec, stratified_split

    kind, path = parse_spec(spec)
    if kind not in TABULAR_NAMES:
        raise ConfigError(f"{kind!r} is not a tabular dataset ({', '.join(TABULAR_NAMES)})")
    if path is None:
        raise ConfigError(f"{kind} needs a path: {kind}:PATH")
    base, options = split_options(path)
    unknown = sorted(set(options) - _OPTIONS[kind])
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for {kind} (allowed: {', '.join(sorted(_OPTIONS[kind]))})")
    if on_bad_rows is not None:
        options = {**options, "on_bad_rows": on_bad_rows}
    root = Path(base).expanduser()
    if not root.exists():
        raise DataNotFoundError(f"data path for {kind!r} does not exist: {base}")
    if preprocessor is not None:
        file = root
        if root.is_dir():
            train_file, test_file = _files(kind, root, options)
            file = test_file or train_file
        table = _read(kind, file, options)
        empty = table.select(np.zeros(0, dtype=np.int64))
        test = _split(table, preprocessor)
        none = Split(test.x[:0], test.y[:0])
        dataset = Dataset(
            _spec(kind, spec, preprocessor),
            none,
            none,
            test,
            seed,
            {"method": "every row of the file, through the model's own preprocessing", "file": str(file)},
        )
        return TabularData(dataset, preprocessor, {"train": empty, "val": empty, "test": table}, kind, options)
    train_file, test_file = _files(kind, root, options)
    table = _read(kind, train_file, options)
    if test_file is not None:
        test_table = _read(kind, test_file, options)
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(table))
        tr, va = train_test_split(idx, test_size=0.1, stratify=table.labels, random_state=seed)
        tables = {"train": table.select(tr), "val": table.select(va), "test": test_table}
        info: dict[str, Any] = {
            "method": f"official test file {test_file.name}; stratified 10% validation from {train_file.name}",
            "index_digest": index_digest(tr, va),
        }
    else:
        tr, va, te = stratified_split(table.labels, _SPLIT, seed)
        tables = {"train": table.select(tr), "val": table.select(va), "test": table.select(te)}
        info = {"method": "stratified", "fractions": list(_SPLIT), "index_digest": index_digest(tr, va, te)}
    pre = TabularPreprocessor(tables["train"].schema).fit(tables["train"])
    dataset = Dataset(
        _spec(kind, spec, pre),
        _split(tables["train"], pre),
        _split(tables["val"], pre),
        _split(tables["test"], pre),
        seed,
        {**info, "bad_rows": {"count": table.bad_rows.count, "lines": list(table.bad_rows.lines[:20])}},
    )
    return TabularData(dataset, pre, tables, kind, options)
