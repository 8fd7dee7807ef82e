"""Pure readers for dataset file formats: files in, validated arrays or schema-checked records out.

Image formats (IDX, Netpbm, CIFAR batches, GTSRB, image folders, .npz, and :mod:`~bastion.data.formats.image`
for decoding any one image) know nothing about tensors, splits or preprocessing; the tabular engines
(:mod:`~bastion.data.formats.csv`, :mod:`~bastion.data.formats.arff`) check every row against a schema.
Malformed content raises DataFormatError and missing files DataNotFoundError, each naming the file.
"""

from bastion.data.formats.arff import ArffAttribute, ArffData, read_arff, read_arff_with_schema
from bastion.data.formats.cifar import CIFAR10_CLASS_NAMES, CIFAR10Data, load_cifar10, read_cifar_batch
from bastion.data.formats.csv import read_csv_with_schema
from bastion.data.formats.folders import ImageFolderData, NpzData, load_image_folder, load_npz
from bastion.data.formats.gtsrb import GTSRB_CLASS_NAMES, GTSRBData, default_cache_dir, load_gtsrb
from bastion.data.formats.idx import load_mnist_split, read_idx
from bastion.data.formats.image import decode_image, decode_image_bytes, resize, to_rgb
from bastion.data.formats.ppm import read_ppm

__all__ = [
    "CIFAR10_CLASS_NAMES",
    "GTSRB_CLASS_NAMES",
    "ArffAttribute",
    "ArffData",
    "CIFAR10Data",
    "GTSRBData",
    "ImageFolderData",
    "NpzData",
    "decode_image",
    "decode_image_bytes",
    "default_cache_dir",
    "load_cifar10",
    "load_gtsrb",
    "load_image_folder",
    "load_mnist_split",
    "load_npz",
    "read_arff",
    "read_arff_with_schema",
    "read_cifar_batch",
    "read_csv_with_schema",
    "read_idx",
    "read_ppm",
    "resize",
    "to_rgb",
]
