"""Datasets: SPEC strings -> a DatasetSpec with train/val/test splits."""

from bastion.data import images as _images  # noqa: F401  (registers the image SPECs)
from bastion.data.sources import DATASETS, load_dataset, parse_spec
from bastion.data.spec import Dataset, DatasetSpec, Split

__all__ = ["DATASETS", "Dataset", "DatasetSpec", "Split", "load_dataset", "parse_spec"]
