"""Higgs and Electricity from OpenML, through scikit-learn's `fetch_openml`.

`fetch_openml(data_id=..., data_home=data_dir)` caches OpenML's JSON descriptions and the gzipped
ARFF file under `<data_dir>/openml/openml.org/` and reads them from there afterwards (offline
too); a download is verified against the description's md5. The dataset ids and versions are
pinned here and checked against the description read.

Neither dataset has an official test split: test is carved from all samples (stratified,
seeded), validation from the rest. Rows with missing values are dropped, nominal features
become their category codes, and exact duplicate feature rows are dropped (the first kept)
before splitting, so no sample can sit in two splits: the original study's Electricity split
leaked. Features are standardized on the device with the training split's statistics.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainables.datasets.base import (
    DatasetUnavailable,
    DeviceDataset,
    stratified_split,
    tabular,
)

TEST_FRACTION = 0.2  # of all samples
VAL_FRACTION = 0.2  # of the remaining training samples


@dataclass(frozen=True)
class OpenMLDataset:
    name: str  # OpenML's name of the dataset
    data_id: int
    version: int
    # sklearn 1.9's pandas ARFF parser fails on nominal columns with numeric labels
    # (Electricity's day {1..7}, Higgs' target {0,1}) and then deletes the cached file
    # as "invalid": liac-arff (pure Python, slower, loaded once per study) reads them.
    parser: str = "liac-arff"


OPENML = {
    "higgs": OpenMLDataset("higgs", 23512, 2),  # 98,050 samples, 28 features, 2 classes
    "electricity": OpenMLDataset("electricity", 151, 1),  # 45,312 samples, 8 features, 2 classes
}


def _cache(data_dir: str) -> Path:
    return Path(data_dir) / "openml" / "openml.org"


def description_path(data_dir: str, data_id: int) -> Path:
    return _cache(data_dir) / "api" / "v1" / "json" / "data" / f"{data_id}.gz"


def _cached(data_dir: str, data_id: int) -> bool:
    """Whether fetch_openml would find everything in its cache (no network needed)."""
    json_dir = _cache(data_dir) / "api" / "v1" / "json" / "data"
    needed = [json_dir / f"{data_id}.gz", json_dir / "features" / f"{data_id}.gz"]
    if not all(p.exists() for p in needed):
        return False
    with gzip.open(needed[0], "rt") as f:
        url = json.load(f)["data_set_description"]["url"]
    path = url.split("://", 1)[-1].split("/", 1)[-1]  # as sklearn: the URL's path
    return (_cache(data_dir) / f"{path}.gz").exists()


def fetch(name: str, data_dir: str, download: bool) -> pd.DataFrame:
    """The dataset as one frame (features then a `target` column), via fetch_openml's cache."""
    from sklearn.datasets import fetch_openml

    spec = OPENML[name]
    page = f"https://www.openml.org/d/{spec.data_id}"
    where = (Path(data_dir) / "openml").resolve()
    if not download and not _cached(data_dir, spec.data_id):
        raise DatasetUnavailable(
            f"dataset {name!r} (OpenML data_id {spec.data_id}, version {spec.version}) is not "
            f"cached in {where}: expected {description_path(data_dir, spec.data_id).resolve()} "
            f"and the ARFF file it names; run `python -m trainables.datasets {name} --data-dir "
            f"{Path(data_dir).resolve()}` online (sklearn.datasets.fetch_openml(data_id="
            f"{spec.data_id}, data_home=...)) and copy data_dir over; see {page}"
        )
    try:
        bunch = fetch_openml(
            data_id=spec.data_id, data_home=data_dir, as_frame=True, parser=spec.parser,
            n_retries=1, delay=0.5,
        )  # fmt: skip
    except Exception as err:  # offline, HTTP errors, md5 mismatch
        why = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise DatasetUnavailable(
            f"dataset {name!r} (OpenML data_id {spec.data_id}, version {spec.version}) could "
            f"not be loaded into {where} ({why}); run `python -m trainables.datasets {name} "
            f"--data-dir {Path(data_dir).resolve()}` online and copy data_dir over; see {page}"
        ) from err
    version = int(bunch.details.get("version", -1))
    if bunch.details.get("name") != spec.name or version != spec.version:
        raise DatasetUnavailable(
            f"dataset {name!r}: OpenML data_id {spec.data_id} in {where} is "
            f"{bunch.details.get('name')!r} version {version}, expected {spec.name!r} "
            f"version {spec.version}; delete that cache folder to download it again"
        )
    frame = bunch.data.copy()
    frame["target"] = bunch.target
    return frame


def to_arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int]:
    """Float32 features, int64 labels, number of classes: rows with missing values dropped,
    nominal features as category codes, exact duplicate feature rows dropped (first kept)."""
    frame = frame.dropna()
    features = frame.drop(columns="target")
    for col in features.columns:
        if not pd.api.types.is_numeric_dtype(features[col]):
            features[col] = features[col].astype("category").cat.codes
    features = features.astype(np.float32)
    keep = ~features.duplicated(keep="first").to_numpy()
    target = pd.Categorical(frame["target"].astype(str))
    labels = np.asarray(target.codes, dtype=np.int64)[keep]
    return features.to_numpy()[keep], labels, len(target.categories)


def load_openml(name: str, data_dir: str, split_seed: int, download: bool) -> DeviceDataset:
    x, y, num_classes = to_arrays(fetch(name, data_dir, download))
    train, val, test = stratified_split(y, TEST_FRACTION, VAL_FRACTION, split_seed)
    split = {"seed": split_seed, "folds": 1, "fold": 0, "val_fraction": VAL_FRACTION}
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return tabular(name, xt, yt, (train, val, test), num_classes, split)


def load_higgs(data_dir: str = "data", split_seed: int = 0, download: bool = True):
    return load_openml("higgs", data_dir, split_seed, download)


def load_electricity(data_dir: str = "data", split_seed: int = 0, download: bool = True):
    return load_openml("electricity", data_dir, split_seed, download)
