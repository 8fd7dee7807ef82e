"""Datasets: SPEC strings -> a DatasetSpec with train/val/test splits.

``load_dataset`` gives the tensors every command trains and attacks on; ``load_tabular`` gives a tabular
dataset's raw records beside them (for evaluation and export). Both parse the SPEC once into a
:class:`DataSource` and find the dataset in the one ``DATASETS`` registry.
"""

from bastion.data import sources  # noqa: F401  (importing it registers every dataset)
from bastion.data.catalog import DATASETS, load_dataset
from bastion.data.source import DataSource, parse_spec
from bastion.data.spec import Dataset, DatasetSpec, Split
from bastion.data.tabular.loading import TabularData, load_tabular

__all__ = [
    "DATASETS",
    "DataSource",
    "Dataset",
    "DatasetSpec",
    "Split",
    "TabularData",
    "load_dataset",
    "load_tabular",
    "parse_spec",
]
