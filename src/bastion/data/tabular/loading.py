"""What a tabular dataset registers in ``DATASETS`` (:class:`TabularSource`) and how its SPEC becomes splits.

Options follow the path after ``?`` (docs/data.md): ``on_bad_rows=drop|raise``, ``rules=auto|shipped|PATH``
and ``reject=ID,...`` (which mined rules training accepts, docs/tabular.md) for every tabular dataset, plus
what each one declares (``labels``, ``train``, ``schema``, ``header``).

The preprocessing is fitted on the training rows only and travels inside the spec's TabularDomain, so a
saved model carries it. ``load_tabular(..., preprocessor=P)`` reads a file through a model's own
preprocessing instead (``bastion evaluate MODEL --data nsl-kdd:FILE``): every row of the file is the
test split and nothing is refitted. ``load_dataset`` and ``load_tabular`` parse the SPEC the same way
and find the dataset in the same registry; ``load_tabular`` also hands back the raw records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion.data.catalog import DATASETS, open_source
from bastion.data.source import DataSource, OptionParsers, one_of, verbatim
from bastion.data.spec import Dataset, DatasetSpec, Split
from bastion.data.splits import POOL_FRACTIONS, VAL_FRACTION, index_digest, stratified_split, validation_split
from bastion.data.tabular.constraints import ConstraintSet, accepted_rules, shipped_constraints
from bastion.data.tabular.domain import TabularDomain
from bastion.data.tabular.mining import mine
from bastion.data.tabular.preprocess import TabularPreprocessor
from bastion.data.tabular.table import TabularTable
from bastion.errors import ConfigError, DataNotFoundError

log = logging.getLogger(__name__)

#: (file, typed options) -> the file's schema-checked records.
Reader = Callable[[Path, Mapping[str, Any]], TabularTable]


def _rule_ids(text: str) -> tuple[str, ...]:
    """``reject=r1a2b3c4d,r5e6f7a8b``: mined-rule ids, comma-separated."""
    ids = tuple(part.strip() for part in text.split(",") if part.strip())
    bad = [i for i in ids if not (len(i) == 9 and i[0] == "r" and all(c in "0123456789abcdef" for c in i[1:]))]
    if bad:
        raise ValueError(
            f"expected mined-rule ids like r1a2b3c4d (from `python -m bastion.app.constraints mine`), got {bad}"
        )
    return ids


#: Options every tabular dataset takes, and their defaults. ``rules``: which rules training accepts besides
#: the shipped set: ``auto`` (every mined rule with support >= MINED_SUPPORT), ``shipped`` (none), or the path
#: of a reviewed constraint file (bastion-constraints/1, e.g. written by ``constraints mine --out``), used as
#: it is. ``reject``: mined-rule ids left out of ``auto``.
COMMON_OPTIONS: OptionParsers = {"on_bad_rows": one_of("drop", "raise"), "rules": verbatim, "reject": _rule_ids}
COMMON_DEFAULTS: Mapping[str, Any] = {"on_bad_rows": "drop", "rules": "auto", "reject": ()}


@dataclass(frozen=True)
class TabularSource:
    """How one tabular dataset is found, read and written back: its entry in ``DATASETS``.

    Called as a loader (``DATASETS.get(name)(source, seed)``) it returns the Dataset; :meth:`load`
    returns the raw records as well.

    Attributes:
        name: the SPEC name, e.g. ``"nsl-kdd"``.
        read: reads one file with the typed options.
        options: the options it takes besides ``on_bad_rows``, each with its value parser.
        patterns: glob patterns tried in order to find the one data file in a folder PATH.
        train_files: the training file names a folder PATH may hold, the first present is read (an option
            ``train``, where the dataset takes one, names it instead); with ``test_file``, instead of
            ``patterns``.
        test_file: the official test file beside the training file, the test split when present.
        header: its files start with a header row (export writes the same layout back); a ``header``
            option, where the dataset takes one, overrides it.
    """

    name: str
    read: Reader
    options: OptionParsers = field(default_factory=dict)
    patterns: tuple[str, ...] = ("*.csv",)
    train_files: tuple[str, ...] = ()
    test_file: str | None = None
    header: bool = False

    def __call__(self, source: DataSource, seed: int) -> Dataset:
        return self.load(source, seed).dataset

    def typed_options(self, source: DataSource) -> dict[str, Any]:
        """The SPEC's options checked against what this dataset takes, with the common defaults filled in."""
        return {**COMMON_DEFAULTS, **source.typed_options({**COMMON_OPTIONS, **self.options})}

    def has_header(self, options: Mapping[str, Any]) -> bool:
        """Whether files read with these (typed) options start with a header row."""
        return bool(options.get("header", self.header))

    def files(self, root: Path, options: Mapping[str, Any]) -> tuple[Path, Path | None]:
        """(training file, official test file or None) for a file or folder PATH."""
        if root.is_file():
            return root, None
        if self.test_file is not None:
            return self._official_pair(root, options, self.test_file)
        for pattern in self.patterns:
            found = sorted(root.glob(pattern))
            if len(found) == 1:
                return found[0], None
            if len(found) > 1:
                names = ", ".join(p.name for p in found)
                raise ConfigError(f"{root} holds several {pattern} files ({names}); name one")
        raise DataNotFoundError(f"{root} holds no {self.name} file ({', '.join(self.patterns)})")

    def _official_pair(self, root: Path, options: Mapping[str, Any], test_name: str) -> tuple[Path, Path | None]:
        names = [options["train"]] if "train" in options else list(self.train_files)
        train = next((root / n for n in names if (root / n).is_file()), None)
        if train is None:
            raise DataNotFoundError(f"{root} holds none of {names}")
        test = root / test_name
        return train, test if test.is_file() else None

    def read_file(self, path: Path, options: Mapping[str, Any]) -> TabularTable:
        """One file's records; bad rows (dropped by default) are logged with their lines."""
        table = self.read(path, options)
        if table.bad_rows.count:
            log.warning("%s: %s", path, table.bad_rows.summary())
        return table

    def load(self, source: DataSource, seed: int, preprocessor: TabularPreprocessor | None = None) -> TabularData:
        """The splits and their raw records; with ``preprocessor``, every row of the file is the test split."""
        options = self.typed_options(source)
        root = source.location()
        if preprocessor is not None:
            return self._through_model(source, root, options, seed, preprocessor)
        train_file, test_file = self.files(root, options)
        table = self.read_file(train_file, options)
        if test_file is not None:
            tr, va = validation_split(table.labels, VAL_FRACTION, seed, str(train_file))
            tables = {"train": table.select(tr), "val": table.select(va), "test": self.read_file(test_file, options)}
            info: dict[str, Any] = {
                "method": f"official test file {test_file.name}; stratified 10% validation from {train_file.name}",
                "index_digest": index_digest(tr, va),
            }
        else:
            tr, va, te = stratified_split(table.labels, POOL_FRACTIONS, seed, str(train_file))
            tables = {"train": table.select(tr), "val": table.select(va), "test": table.select(te)}
            info = {"method": "stratified", "fractions": list(POOL_FRACTIONS), "index_digest": index_digest(tr, va, te)}
        pre = TabularPreprocessor(tables["train"].schema).fit(tables["train"])
        dataset = Dataset(
            _spec(source.text, pre, training_constraints(tables["train"], pre, options["rules"], options["reject"])),
            _split(tables["train"], pre),
            _split(tables["val"], pre),
            _split(tables["test"], pre),
            seed,
            {**info, "bad_rows": {"count": table.bad_rows.count, "lines": list(table.bad_rows.lines[:20])}},
        )
        return TabularData(dataset, pre, tables, self.name, options)

    def _through_model(
        self, source: DataSource, root: Path, options: dict[str, Any], seed: int, pre: TabularPreprocessor
    ) -> TabularData:
        file = root
        if root.is_dir():
            train_file, test_file = self.files(root, options)
            file = test_file or train_file
        table = self.read_file(file, options)
        empty = table.select(np.zeros(0, dtype=np.int64))
        test = _split(table, pre)
        none = Split(test.x[:0], test.y[:0])
        info = {"method": "every row of the file, through the model's own preprocessing", "file": str(file)}
        dataset = Dataset(_spec(source.text, pre, shipped_constraints(pre.schema_)), none, none, test, seed, info)
        return TabularData(dataset, pre, {"train": empty, "val": empty, "test": table}, self.name, options)


@dataclass(frozen=True)
class TabularData:
    """A tabular Dataset with what evaluation and export need beside the tensors.

    Attributes:
        dataset: the spec (its domain holds the fitted preprocessor) and train/val/test splits.
        preprocessor: the fitted preprocessing (shared with ``dataset.spec.domain``).
        tables: raw records per split ("train", "val", "test"), row-aligned with the tensors, with their
            file line numbers and the file's extra columns (attack names, difficulty).
        kind: the SPEC name ("nsl-kdd", ...), which fixes the file format for ``--save-adversarial``.
        options: the SPEC's options, typed, with the defaults filled in.
    """

    dataset: Dataset
    preprocessor: TabularPreprocessor
    tables: dict[str, TabularTable]
    kind: str
    options: dict[str, Any]

    @property
    def has_header(self) -> bool:
        """The source files start with a header row, so records written back get one too."""
        return tabular_source(self.kind).has_header(self.options)


def register_tabular(entry: TabularSource) -> TabularSource:
    """Register ``entry`` in ``DATASETS`` under its own name (a tabular dataset module's last statement)."""
    DATASETS.register(entry.name)(entry)
    return entry


def tabular_source(name: str) -> TabularSource:
    """The registered tabular dataset ``name``; any other name is a ConfigError listing the tabular ones."""
    entry = DATASETS.get(name)
    if not isinstance(entry, TabularSource):
        names = [n for n in DATASETS.names() if isinstance(DATASETS.get(n), TabularSource)]
        raise ConfigError(f"{name!r} is not a tabular dataset ({', '.join(names)})")
    return entry


def load_tabular(
    spec: str,
    *,
    seed: int = 0,
    preprocessor: TabularPreprocessor | None = None,
    on_bad_rows: str | None = None,
) -> TabularData:
    """Read a tabular SPEC into splits and their raw records (see the module docstring).

    Args:
        spec: ``NAME:PATH[?options]``.
        seed: drives the stratified splits.
        preprocessor: a model's fitted preprocessing; then every row of PATH (a file) is the test split,
            train and val are empty, and nothing is fitted.
        on_bad_rows: overrides the SPEC's ``on_bad_rows`` option.
    """
    source = open_source(spec)
    entry = tabular_source(source.name)
    if on_bad_rows is not None:
        source = source.with_option("on_bad_rows", on_bad_rows)
    return entry.load(source, seed, preprocessor)


#: Fewest training rows where a mined rule's ``if`` holds for the rule to be accepted as a hard constraint.
MINED_SUPPORT = 30


def training_constraints(
    train: TabularTable, pre: TabularPreprocessor, rules: str = "auto", reject: Sequence[str] = ()
) -> ConstraintSet | None:
    """What the attacks respect and the saved model carries: the shipped constraint set plus, by ``rules``,

    - ``auto``: every rule no training row breaks (support >= MINED_SUPPORT) but those in ``reject`` (ids),
      and the training data's decimal grids;
    - ``shipped``: nothing more;
    - a path: the rules, grids and relations of that reviewed constraint file (checked against the schema).

    Raises:
        ConfigError: ``reject`` with ``rules`` other than ``auto``, an id no mined rule has, or a bad file.
        DataNotFoundError: the reviewed file does not exist.
    """
    schema = pre.schema_
    shipped = shipped_constraints(schema)
    if rules != "auto" and reject:
        raise ConfigError(f"reject= applies to the automatically accepted mined rules (rules=auto), not rules={rules}")
    if rules == "shipped" or len(train) == 0:
        return shipped
    if rules == "auto":
        found = mine(train.features, schema, min_support=MINED_SUPPORT).without(reject)
        extra = accepted_rules(found, schema.name)
    else:
        path = Path(rules).expanduser()
        if not path.is_file():
            raise DataNotFoundError(f"reviewed constraint file {path} (rules=) does not exist")
        extra = ConstraintSet.from_yaml(path).check_schema(schema)
    if shipped is None:
        return extra
    # The shipped grid styles (fixed decimals) win over the mined or reviewed ones.
    return ConstraintSet(
        shipped.dataset,
        shipped.merged(extra).rules,
        {**extra.grids, **shipped.grids},
        shipped.relations + tuple(r for r in extra.relations if r not in shipped.relations),
        shipped.description,
    )


def _spec(text: str, pre: TabularPreprocessor, constraints: ConstraintSet | None) -> DatasetSpec:
    schema = pre.schema_
    return DatasetSpec(
        name=schema.name,
        source=text,
        modality="tabular",
        classes=tuple(schema.classes),
        input_shape=(int(pre.n_features_out_),),
        domain=TabularDomain(pre, constraints),
        benign=schema.benign,
        feature_names=tuple(pre.columns_),
    )


def _split(table: TabularTable, pre: TabularPreprocessor) -> Split:
    x = torch.from_numpy(pre.transform(table, dtype=np.float32))
    return Split(x, torch.from_numpy(table.labels.astype(np.int64)))
