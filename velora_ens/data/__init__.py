"""Data sets for the supervised benchmarks: protein regression (UCI CASP), CIFAR-10
(canonical pickles or JPEG folders, cached as uint8) and synthetic sets.

The data root is ``data_root=`` / ``--data-root``, else ``$VELORA_ENS_DATA``, else
``./data``; a missing data set raises :class:`DataNotFoundError` saying where it looked
and how to get the data."""

from velora_ens.data._paths import DataNotFoundError, data_root, default_cache_dir
from velora_ens.data.augment import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CropFlip,
    Normalize,
    random_crop_flip,
)
from velora_ens.data.cifar10 import CIFAR10_CLASSES, CIFAR10Data, load_cifar10
from velora_ens.data.protein import RegressionSplit, load_protein, protein_splits
from velora_ens.data.synthetic import four_quadrants, quadrant_field, sine_1d, two_regime

__all__ = [
    "CIFAR10Data",
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CropFlip",
    "DataNotFoundError",
    "Normalize",
    "RegressionSplit",
    "data_root",
    "default_cache_dir",
    "four_quadrants",
    "load_cifar10",
    "load_protein",
    "protein_splits",
    "quadrant_field",
    "random_crop_flip",
    "sine_1d",
    "two_regime",
]
