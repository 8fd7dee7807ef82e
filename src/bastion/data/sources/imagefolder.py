"""``imagefolder:PATH``: one sub-folder per class (PNG, JPEG, BMP, PPM, PGM); stratified 70/10/20.

Options: ``size`` (resize to size x size; without it all images must match) and ``flip`` (1 if a mirror
image keeps its class).
"""

from __future__ import annotations

from bastion.data.catalog import DATASETS
from bastion.data.formats.folders import load_image_folder
from bastion.data.images import checked_pool_dataset, image_spec, to_unit_chw
from bastion.data.source import DataSource, image_side, yes_no
from bastion.data.spec import Dataset


@DATASETS.register("imagefolder")
def load_image_folder_dataset(source: DataSource, seed: int) -> Dataset:
    """One sub-folder per class, class names from the folder names."""
    options = source.typed_options({"size": image_side, "flip": yes_no})
    root = source.location()
    raw = load_image_folder(root, size=options.get("size"))
    x = to_unit_chw(raw.x)
    spec = image_spec("imagefolder", source.text, raw.class_names, tuple(x.shape[1:]), flip=options.get("flip", False))
    return checked_pool_dataset(spec, x, raw.y, seed, str(root))
