from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split


@dataclass
class DeviceDataset:
    """Train/val/test splits as tensors on one device. Features are float32, labels int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: str | torch.device) -> DeviceDataset:
        moved = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, torch.Tensor)}
        return DeviceDataset(name=self.name, num_classes=self.num_classes, **moved)

    def train_batches(self, batch_size: int, generator: torch.Generator):
        """One epoch of shuffled batches, drawn by a permutation made on the device."""
        n = len(self.y_train)
        order = torch.randperm(n, device="cpu", generator=generator).to(self.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield self.x_train[idx], self.y_train[idx]


def stratified_split(
    y: np.ndarray, test_fraction: float, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train/val/test: test carved from all, val carved from the rest; disjoint."""
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=val_fraction, stratify=y[rest], random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)


def standardize(x_train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Standardize every split with the training split's mean and std (no leak from val/test)."""
    mean = x_train.mean(dim=0, keepdim=True)
    std = x_train.std(dim=0, keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (x_train, *others)]
