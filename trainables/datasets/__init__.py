"""Datasets as tensors on the device (airbench style): moved once, batched by a device permutation.

A loader returns a `DeviceDataset`: train/val/test tensors already on the device, features
standardized with statistics of the training split only. Splits are fixed by `split_seed`
(independent of the training seed) so every trial of a study sees the same samples.
"""

from __future__ import annotations

from collections.abc import Callable

from trainables.datasets.base import DeviceDataset, stratified_split
from trainables.datasets.digits import load_digits

DATASETS: dict[str, Callable[..., DeviceDataset]] = {
    "digits": load_digits,
}


def load_dataset(
    name: str, data_dir: str = "data", device: str = "cpu", split_seed: int = 0
) -> DeviceDataset:
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is unknown; allowed: {', '.join(DATASETS)}")
    return DATASETS[name](data_dir=data_dir, device=device, split_seed=split_seed)


__all__ = ["DATASETS", "DeviceDataset", "load_dataset", "stratified_split"]
