"""Datasets as tensors on the device (airbench style): moved once, batched by a device permutation.

A loader returns a `DeviceDataset` (uint8 images or float32 features, un-normalized, with the
training split's statistics); `load_dataset(name, data_dir, device, split_seed)` is the one
entry point. Splits are fixed by `split_seed` (independent of the training seed) so every
trial of a study sees the same samples; `DeviceDataset.configured(config)` applies a trial's
data knobs (`augment`, `val_fraction`, `folds`, `fold`).

Downloads: missing files are downloaded into `data_dir` unless `download=False` or the
environment variable SPARSETUNE_DOWNLOAD=0; offline with files missing, `DatasetUnavailable`
(a ConfigError) names the files, the folder and how to get them.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

from trainables.datasets.base import (
    DatasetUnavailable,
    DeviceDataset,
    carve_validation,
    standardize,
    stratified_split,
)
from trainables.datasets.digits import load_digits
from trainables.datasets.openml import OPENML, load_electricity, load_higgs


def _imported_on_use(module: str, function: str) -> Callable[..., DeviceDataset]:
    """A loader whose module is imported on first call: torchvision's import takes ~4 s, which
    every Ray worker would pay at start-up although trials get their data from the driver."""

    def load(**kwargs) -> DeviceDataset:
        return getattr(importlib.import_module(module), function)(**kwargs)

    load.__name__ = load.__qualname__ = function
    return load


DATASETS: dict[str, Callable[..., DeviceDataset]] = {
    "digits": load_digits,
    "mnist": _imported_on_use("trainables.datasets.vision", "load_mnist"),
    "fashion_mnist": _imported_on_use("trainables.datasets.vision", "load_fashion_mnist"),
    "cifar10": _imported_on_use("trainables.datasets.vision", "load_cifar10"),
    "svhn": _imported_on_use("trainables.datasets.vision", "load_svhn"),
    "higgs": load_higgs,
    "electricity": load_electricity,
}


def downloads_allowed() -> bool:
    return os.environ.get("SPARSETUNE_DOWNLOAD", "1").strip().lower() not in ("0", "false", "no")


def load_dataset(
    name: str,
    data_dir: str = "data",
    device: str = "cpu",
    split_seed: int = 0,
    download: bool | None = None,
) -> DeviceDataset:
    """Load `name` from `data_dir` (downloading missing files unless `download` is False or
    SPARSETUNE_DOWNLOAD=0) and put it on `device`."""
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is unknown; allowed: {', '.join(DATASETS)}")
    download = downloads_allowed() if download is None else download
    data = DATASETS[name](data_dir=data_dir, split_seed=split_seed, download=download)
    return data.to(device)


__all__ = [
    "DATASETS",
    "OPENML",
    "DatasetUnavailable",
    "DeviceDataset",
    "carve_validation",
    "load_dataset",
    "standardize",
    "stratified_split",
]
