"""Pure readers for image dataset file formats: files in, validated numpy arrays out.

Nothing here knows about tensors, splits or preprocessing; the dataset registry builds on these.
Malformed content raises DataFormatError and missing files DataNotFoundError, each naming the file.
"""

from bastion.data.formats.cifar import CIFAR10_CLASS_NAMES, CIFAR10Data, load_cifar10, read_cifar_batch
from bastion.data.formats.folders import ImageFolderData, NpzData, load_image_folder, load_npz
from bastion.data.formats.gtsrb import GTSRB_CLASS_NAMES, GTSRBData, default_cache_dir, load_gtsrb
from bastion.data.formats.idx import load_mnist_split, read_idx
from bastion.data.formats.ppm import read_ppm

__all__ = [
    "CIFAR10_CLASS_NAMES",
    "GTSRB_CLASS_NAMES",
    "CIFAR10Data",
    "GTSRBData",
    "ImageFolderData",
    "NpzData",
    "default_cache_dir",
    "load_cifar10",
    "load_gtsrb",
    "load_image_folder",
    "load_mnist_split",
    "load_npz",
    "read_cifar_batch",
    "read_idx",
    "read_ppm",
]
