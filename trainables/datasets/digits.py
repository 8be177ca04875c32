"""scikit-learn's shipped 8x8 digits (1797 samples, 10 classes): the offline default dataset."""

from __future__ import annotations

import torch

from trainables.datasets.base import DeviceDataset, stratified_split, tabular

TEST_FRACTION = 0.2  # of all samples (digits has no official test split)
VAL_FRACTION = 0.2  # of the remaining training samples


def load_digits(
    data_dir: str = "data", split_seed: int = 0, download: bool = True
) -> DeviceDataset:
    from sklearn.datasets import load_digits as sklearn_digits

    del data_dir, download  # shipped with scikit-learn: nothing to download
    bunch = sklearn_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32)  # 64 pixel intensities 0..16
    y = torch.tensor(bunch.target, dtype=torch.int64)
    train, val, test = stratified_split(bunch.target, TEST_FRACTION, VAL_FRACTION, split_seed)
    split = {"seed": split_seed, "folds": 1, "fold": 0, "val_fraction": VAL_FRACTION}
    return tabular("digits", x, y, (train, val, test), 10, split)
