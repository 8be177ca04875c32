"""MNIST, Fashion-MNIST, CIFAR-10 and SVHN through torchvision's dataset classes.

Files live where torchvision puts them under `data_dir` and are read by torchvision's own
code: MNIST and Fashion-MNIST as IDX files in `<data_dir>/MNIST/raw/` and
`<data_dir>/FashionMNIST/raw/` (`.gz` copies are unpacked next to them), CIFAR-10 as the
python pickle batches in `<data_dir>/cifar-10-batches-py/`, SVHN as `train_32x32.mat` and
`test_32x32.mat` in `<data_dir>/SVHN/`. Missing files are downloaded when `download` is true
(torchvision checks the md5 of what it downloads); files already there are used as they are
(no md5 of pre-downloaded files, so a re-packed or subset copy works too). Offline with files
missing, `DatasetUnavailable` names the files expected, the folder and the URL.

The official train set is the pool that validation is carved from (stratified, seeded); the
official test set is the test split. Images are kept as uint8 NCHW.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import torchvision.datasets as tvd

from trainables.datasets.base import DatasetUnavailable, DeviceDataset, from_pool

VAL_FRACTION = 0.2  # of the official training set


class _CIFAR10(tvd.CIFAR10):
    """torchvision's CIFAR10, accepting pre-downloaded batches without their md5 (downloads are
    still verified: torchvision checks the archive's md5)."""

    def _check_integrity(self) -> bool:
        folder = Path(self.root, self.base_folder)
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:  # class names only; not needed for training
        self.classes = [str(i) for i in range(10)]


class _SVHN(tvd.SVHN):
    """torchvision's SVHN, accepting a pre-downloaded .mat file without its md5."""

    def _check_integrity(self) -> bool:
        return Path(self.root, self.filename).is_file()


def _unpack_gz(folder: Path, names: list[str]) -> None:
    """Unpack `<name>.gz` next to it where only the compressed copy is there."""
    for name in names:
        raw, packed = folder / name, folder / f"{name}.gz"
        if not raw.exists() and packed.exists():
            tmp = raw.with_suffix(".partial")
            with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, raw)


def _unavailable(
    name: str, data_dir: str, folder: Path, files: list[str], how: str, why: str = ""
) -> Exception:
    missing = [f for f in files if not (folder / f).exists()]
    reason = f" (download failed: {why})" if why else ""
    return DatasetUnavailable(
        f"dataset {name!r} is not available{reason}: expected {', '.join(missing)} in "
        f"{folder.resolve()}; {how}, or run `python -m trainables.datasets {name} --data-dir "
        f"{Path(data_dir).resolve()}` on a machine with internet access and copy data_dir over"
    )


def _open(name, make, data_dir, folder: Path, files: list[str], how: str, download: bool):
    """Instantiate torchvision's dataset class `make(download)`, downloading only when files
    are missing and `download` is set; every failure becomes one DatasetUnavailable."""
    have_all = all((folder / f).exists() for f in files)
    if not have_all and not download:
        raise _unavailable(name, data_dir, folder, files, how)
    try:
        return make(not have_all)
    except DatasetUnavailable:
        raise
    except Exception as err:  # network errors, md5 mismatch, unreadable files
        why = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        if all((folder / f).exists() for f in files):
            raise DatasetUnavailable(
                f"dataset {name!r}: could not read {folder.resolve()} ({why}); delete the "
                "files to download them again"
            ) from err
        raise _unavailable(name, data_dir, folder, files, how, why) from err


def _load_idx(name, cls, data_dir, split_seed, download) -> DeviceDataset:
    root = Path(data_dir)
    folder = root / cls.__name__ / "raw"
    files = [os.path.splitext(f)[0] for f, _ in cls.resources]
    _unpack_gz(folder, files)
    how = f"download {', '.join(f + '.gz' for f in files)} from {cls.mirrors[0]} into it"

    def make(dl: bool):
        return cls(str(root), train=True, download=dl), cls(str(root), train=False)

    train, test = _open(name, make, data_dir, folder, files, how, download)
    return from_pool(
        name,
        train.data.unsqueeze(1),
        train.targets,
        test.data.unsqueeze(1),
        test.targets,
        num_classes=10,
        split_seed=split_seed,
        val_fraction=VAL_FRACTION,
    )


def load_mnist(data_dir: str = "data", split_seed: int = 0, download: bool = True):
    return _load_idx("mnist", tvd.MNIST, data_dir, split_seed, download)


def load_fashion_mnist(data_dir: str = "data", split_seed: int = 0, download: bool = True):
    return _load_idx("fashion_mnist", tvd.FashionMNIST, data_dir, split_seed, download)


def load_cifar10(data_dir: str = "data", split_seed: int = 0, download: bool = True):
    root = Path(data_dir)
    folder = root / _CIFAR10.base_folder
    files = [f for f, _ in _CIFAR10.train_list + _CIFAR10.test_list]

    def make(dl: bool):
        return _CIFAR10(str(root), train=True, download=dl), _CIFAR10(str(root), train=False)

    how = f"download {_CIFAR10.url} and extract it in {root.resolve()}"
    train, test = _open("cifar10", make, data_dir, folder, files, how, download)

    def nchw(images: np.ndarray) -> torch.Tensor:  # torchvision keeps HWC for PIL
        return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))

    return from_pool(
        "cifar10",
        nchw(train.data),
        np.asarray(train.targets),
        nchw(test.data),
        np.asarray(test.targets),
        num_classes=10,
        split_seed=split_seed,
        val_fraction=VAL_FRACTION,
        default_augment="flip_translate",
    )


def load_svhn(data_dir: str = "data", split_seed: int = 0, download: bool = True):
    folder = Path(data_dir) / "SVHN"
    files = [_SVHN.split_list[s][1] for s in ("train", "test")]
    how = "download " + " and ".join(_SVHN.split_list[s][0] for s in ("train", "test"))
    how += " into it"

    def make(dl: bool):
        folder.mkdir(parents=True, exist_ok=True)
        return tuple(  # download a split only when its file is missing
            _SVHN(str(folder), split=s, download=dl and not (folder / f).exists())
            for s, f in zip(("train", "test"), files, strict=True)
        )

    train, test = _open("svhn", make, data_dir, folder, files, how, download)
    return from_pool(
        "svhn",
        np.ascontiguousarray(train.data),
        train.labels,
        np.ascontiguousarray(test.data),
        test.labels,
        num_classes=10,
        split_seed=split_seed,
        val_fraction=VAL_FRACTION,
        default_augment="translate",  # no flips: a flipped digit is another symbol
    )
