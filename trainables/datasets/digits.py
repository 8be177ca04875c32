"""scikit-learn's shipped 8x8 digits (1797 samples, 10 classes): the offline default dataset."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits as sklearn_digits

from trainables.datasets.base import DeviceDataset, standardize, stratified_split

TEST_FRACTION = 0.2  # of all samples
VAL_FRACTION = 0.2  # of the remaining training samples


def load_digits(data_dir: str = "data", device: str = "cpu", split_seed: int = 0) -> DeviceDataset:
    del data_dir  # shipped with scikit-learn: nothing to download
    bunch = sklearn_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    train, val, test = stratified_split(bunch.target, TEST_FRACTION, VAL_FRACTION, split_seed)
    x_train, x_val, x_test = standardize(x[train], x[val], x[test])
    return DeviceDataset(
        name="digits",
        x_train=x_train,
        y_train=y[train],
        x_val=x_val,
        y_val=y[val],
        x_test=x_test,
        y_test=y[test],
        num_classes=10,
    ).to(device)
