"""``DATASETS``, the one registry of dataset names, and :func:`load_dataset`, the way from a SPEC to a Dataset.

Each module of :mod:`bastion.data.sources` registers its dataset here under its SPEC name, as a loader
``(DataSource, seed) -> Dataset``; tabular datasets register a :class:`~bastion.data.tabular.loading.TabularSource`,
a loader that also knows its files' layout and format. Importing :mod:`bastion.data` imports every
source module, so the registry is complete whenever it can be reached.
"""

from __future__ import annotations

from pathlib import Path

from bastion.config import MAX_SEED
from bastion.data.source import DataSource
from bastion.data.spec import Dataset
from bastion.errors import ConfigError, DataNotFoundError
from bastion.registry import Registry

#: name -> loader(DataSource, seed) -> Dataset
DATASETS: Registry[Dataset] = Registry("dataset")


def open_source(spec: str) -> DataSource:
    """Parse a SPEC and check what every dataset needs: a registered name and, when a path is given, that it exists.

    Raises:
        ConfigError: unknown dataset name or malformed SPEC.
        DataNotFoundError: the path does not exist.
    """
    source = DataSource.parse(spec)
    DATASETS.get(source.name)
    if source.path is not None and not Path(source.path).expanduser().exists():
        raise DataNotFoundError(f"data path for {source.name!r} does not exist: {source.path}")
    return source


def load_dataset(spec: str, *, seed: int = 0) -> Dataset:
    """Load a dataset from its SPEC string with splits rebuilt identically from ``seed``.

    Raises:
        ConfigError: unknown dataset name, malformed SPEC, unknown option or bad option value.
        DataNotFoundError: the path does not exist.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
    source = open_source(spec)
    return DATASETS.get(source.name)(source, seed)
