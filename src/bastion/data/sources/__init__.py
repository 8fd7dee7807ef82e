"""One module per dataset, each registering its SPEC name in ``DATASETS`` (:mod:`bastion.data.catalog`).

Importing this package imports every dataset module, so the registry is complete; ``load_dataset``,
``parse_spec`` and ``DATASETS`` are re-exported from here for callers that import them by this path.
"""

from bastion.data.catalog import DATASETS, load_dataset
from bastion.data.source import parse_spec
from bastion.data.sources import (  # noqa: F401  (each module registers its dataset)
    cic_ids2017,
    cifar10,
    csv,
    digits,
    fashion_mnist,
    gtsrb,
    imagefolder,
    malware,
    mnist,
    npz,
    nsl_kdd,
    phishing,
    unsw_nb15,
)

__all__ = ["DATASETS", "load_dataset", "parse_spec"]
