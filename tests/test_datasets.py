"""Dataset loaders on tiny files in the real on-disk formats (IDX, CIFAR-10 pickle batches, SVHN
.mat, OpenML's fetch_openml cache), splits, statistics, device batching and the offline error."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from trainables.config import ConfigError, make_config
from trainables.datasets import (
    DATASETS,
    OPENML,
    DatasetUnavailable,
    load_dataset,
    standardize,
    stratified_split,
)
from trainables.datasets.base import augment_batch, batch_translate

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN, N_TEST = 100, 30  # 10 and 3 per class


def tagged_images(n: int, c: int, h: int, w: int, offset: int, rng) -> np.ndarray:
    """Random uint8 images whose first two pixels encode a unique sample id."""
    images = rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)
    ids = np.arange(offset, offset + n)
    images[:, 0, 0, 0] = ids // 256
    images[:, 0, 0, 1] = ids % 256
    return images


def ids_of(x: torch.Tensor) -> set[int]:
    x = x.cpu().long()
    return set((x[:, 0, 0, 0] * 256 + x[:, 0, 0, 1]).tolist())


def labels(n: int) -> np.ndarray:
    return np.arange(n) % 10


# -- writers of the real formats ----------------------------------------------------------------


def write_idx(folder: Path, prefix: str, images: np.ndarray, targets: np.ndarray, gz: bool):
    folder.mkdir(parents=True, exist_ok=True)
    n, _, h, w = images.shape
    files = {
        f"{prefix}-images-idx3-ubyte": struct.pack(">iiii", 2051, n, h, w) + images.tobytes(),
        f"{prefix}-labels-idx1-ubyte": struct.pack(">ii", 2049, n)
        + targets.astype(np.uint8).tobytes(),
    }
    for name, payload in files.items():
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(payload)
        else:
            (folder / name).write_bytes(payload)


def write_mnist_like(root: Path, cls: str, gz: bool, rng):
    train = tagged_images(N_TRAIN, 1, 28, 28, 0, rng)
    test = tagged_images(N_TEST, 1, 28, 28, N_TRAIN, rng)
    write_idx(root / cls / "raw", "train", train, labels(N_TRAIN), gz)
    write_idx(root / cls / "raw", "t10k", test, labels(N_TEST), gz)
    return train, test


def write_cifar10(root: Path, rng):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = tagged_images(N_TRAIN, 3, 32, 32, 0, rng)
    test = tagged_images(N_TEST, 3, 32, 32, N_TRAIN, rng)
    for i, part in enumerate(np.array_split(np.arange(N_TRAIN), 5)):
        batch = {
            "data": train[part].reshape(len(part), -1),
            "labels": labels(N_TRAIN)[part].tolist(),
        }
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch))
    batch = {"data": test.reshape(N_TEST, -1), "labels": labels(N_TEST).tolist()}
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list("abcdefghij")}))
    return train, test


def write_svhn(root: Path, rng):
    folder = root / "SVHN"
    folder.mkdir(parents=True)
    out = {}
    for split, n, offset in (("train", N_TRAIN, 0), ("test", N_TEST, N_TRAIN)):
        images = tagged_images(n, 3, 32, 32, offset, rng)
        y = labels(n).copy()
        y[y == 0] = 10  # SVHN's .mat labels the digit 0 as 10
        mat = {"X": images.transpose(2, 3, 1, 0), "y": y.reshape(-1, 1).astype(np.uint8)}
        scipy.io.savemat(folder / f"{split}_32x32.mat", mat)
        out[split] = images
    return out["train"], out["test"]


def write_openml_cache(data_home: Path, name: str, rows: list[list], columns: list[dict]):
    """OpenML's cache as sklearn.datasets.fetch_openml lays it out under data_home/openml."""
    spec = OPENML[name]
    base = data_home / "openml" / "openml.org"
    file_id = 1000 + spec.data_id
    arff_lines = [f"@RELATION {name}", ""]
    for col in columns:
        kind = "NUMERIC" if col["type"] == "numeric" else "{" + ",".join(col["values"]) + "}"
        arff_lines.append(f"@ATTRIBUTE {col['name']} {kind}")
    arff_lines += ["", "@DATA"]
    arff_lines += [",".join("?" if v is None else str(v) for v in row) for row in rows]
    arff = ("\n".join(arff_lines) + "\n").encode()
    url = f"https://api.openml.org/data/v1/download/{file_id}/{name}.arff"
    description = {
        "data_set_description": {
            "id": str(spec.data_id), "name": spec.name, "version": str(spec.version),
            "description": "test copy", "format": "ARFF", "status": "active",
            "file_id": str(file_id), "url": url, "md5_checksum": hashlib.md5(arff).hexdigest(),
            "default_target_attribute": columns[-1]["name"],
        }
    }  # fmt: skip
    features = {
        "data_features": {
            "feature": [
                {
                    "index": str(i),
                    "name": col["name"],
                    "data_type": "numeric" if col["type"] == "numeric" else "nominal",
                    **({"nominal_value": col["values"]} if col["type"] != "numeric" else {}),
                    "is_target": "true" if i == len(columns) - 1 else "false",
                    "is_ignore": "false",
                    "is_row_identifier": "false",
                    "number_of_missing_values": str(sum(r[i] is None for r in rows)),
                }  # fmt: skip
                for i, col in enumerate(columns)
            ]
        }
    }
    qualities = {
        "data_qualities": {"quality": [{"name": "NumberOfInstances", "value": f"{len(rows)}.0"}]}
    }
    files = {
        f"api/v1/json/data/{spec.data_id}.gz": json.dumps(description).encode(),
        f"api/v1/json/data/features/{spec.data_id}.gz": json.dumps(features).encode(),
        f"api/v1/json/data/qualities/{spec.data_id}.gz": json.dumps(qualities).encode(),
        f"data/v1/download/{file_id}/{name}.arff.gz": arff,
    }
    for rel, payload in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wb") as f:
            f.write(payload)


def electricity_rows(rng, n: int = 200) -> tuple[list[list], list[dict]]:
    columns = [
        {"name": "date", "type": "numeric"},
        {"name": "day", "type": "nominal", "values": [str(d) for d in range(1, 8)]},
        {"name": "period", "type": "numeric"},
        {"name": "nswprice", "type": "numeric"},
        {"name": "class", "type": "nominal", "values": ["DOWN", "UP"]},
    ]
    rows = []
    for i in range(n):
        rows.append([round(i / n, 6), str(1 + i % 7), round(rng.random(), 6),
                     round(rng.normal(), 6), "UP" if i % 2 else "DOWN"])  # fmt: skip
    rows += [list(rows[i]) for i in range(0, 40, 2)]  # 20 exact duplicates (the leak)
    rows.append([0.5, "3", None, 0.1, "UP"])  # a missing value
    return rows, columns


# -- loaders ------------------------------------------------------------------------------------


def check_image_splits(data, train, test, channels: int, size: int):
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape[1:] == (channels, size, size)
    assert data.input_shape == (channels, size, size) and data.num_classes == 10
    train_ids, val_ids, test_ids = ids_of(data.x_train), ids_of(data.x_val), ids_of(data.x_test)
    # disjoint; train + val is the official train set, test the official test set
    assert not (train_ids & val_ids) and not (train_ids & test_ids) and not (val_ids & test_ids)
    assert train_ids | val_ids == set(range(N_TRAIN))
    assert test_ids == set(range(N_TRAIN, N_TRAIN + N_TEST))
    assert len(val_ids) == round(0.2 * N_TRAIN)
    # stored as written (NCHW, pixel for pixel), labels where they belong
    for split_x, split_y, source, offset in (
        (data.x_train, data.y_train, train, 0),
        (data.x_test, data.y_test, test, N_TRAIN),
    ):
        for j in (0, len(split_y) - 1):
            sample = int(split_x[j, 0, 0, 0]) * 256 + int(split_x[j, 0, 0, 1])
            assert torch.equal(split_x[j], torch.from_numpy(source[sample - offset]))
            assert int(split_y[j]) == sample % 10
    assert torch.bincount(data.y_val, minlength=10).tolist() == [2] * 10  # stratified


@pytest.mark.parametrize(
    ("name", "cls", "gz"), [("mnist", "MNIST", True), ("fashion_mnist", "FashionMNIST", False)]
)
def test_idx_loaders(tmp_path, name, cls, gz):
    train, test = write_mnist_like(tmp_path, cls, gz, np.random.default_rng(0))
    data = load_dataset(name, str(tmp_path), download=False)
    check_image_splits(data, train, test, 1, 28)


def test_cifar10_pickle_batches(tmp_path):
    train, test = write_cifar10(tmp_path, np.random.default_rng(1))
    data = load_dataset("cifar10", str(tmp_path), download=False)
    check_image_splits(data, train, test, 3, 32)
    assert data.default_augment == "flip_translate"


def test_svhn_mat(tmp_path):
    train, test = write_svhn(tmp_path, np.random.default_rng(2))
    data = load_dataset("svhn", str(tmp_path), download=False)
    check_image_splits(data, train, test, 3, 32)  # label 10 became 0


def test_openml_cache_electricity_no_leak(tmp_path):
    rows, columns = electricity_rows(np.random.default_rng(3))
    write_openml_cache(tmp_path, "electricity", rows, columns)
    data = load_dataset("electricity", str(tmp_path), download=False)
    assert data.x_train.dtype == torch.float32 and data.input_shape == (4,)
    assert data.num_classes == 2
    total = len(data.y_train) + len(data.y_val) + len(data.y_test)
    assert total == 200  # 20 duplicates and the row with a missing value dropped
    splits = [data.x_train, data.x_val, data.x_test]
    rows_of = [{tuple(r) for r in x.tolist()} for x in splits]
    assert sum(len(r) for r in rows_of) == total  # no feature row twice, in any split
    assert not (rows_of[0] & rows_of[1] or rows_of[0] & rows_of[2] or rows_of[1] & rows_of[2])
    assert len(set(data.x_train[:, 1].tolist())) == 7  # nominal day: 7 category codes


def test_openml_cache_higgs_numeric(tmp_path):
    rng = np.random.default_rng(9)
    columns = [{"name": f"f{i}", "type": "numeric"} for i in range(5)]
    columns.append({"name": "Target", "type": "nominal", "values": ["0", "1"]})
    rows = [[round(v, 5) for v in rng.normal(size=5)] + [str(i % 2)] for i in range(150)]
    rows[7][2] = None  # higgs has a row with missing values
    write_openml_cache(tmp_path, "higgs", rows, columns)
    data = load_dataset("higgs", str(tmp_path), download=False)
    assert data.input_shape == (5,) and data.num_classes == 2
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 149
    assert len(data.y_test) == 30 and not torch.isnan(data.x_train).any()


def test_openml_wrong_version_refused(tmp_path):
    rows, columns = electricity_rows(np.random.default_rng(3), n=60)
    write_openml_cache(tmp_path, "electricity", rows, columns)
    path = tmp_path / "openml/openml.org/api/v1/json/data/151.gz"
    with gzip.open(path) as f:
        doc = json.loads(f.read())
    doc["data_set_description"]["version"] = "7"
    with gzip.open(path, "wb") as f:
        f.write(json.dumps(doc).encode())
    with pytest.raises(DatasetUnavailable, match="version 7, expected 'electricity' version 1"):
        load_dataset("electricity", str(tmp_path), download=False)


def test_tabular_standardized_with_train_statistics_only(tmp_path, monkeypatch):
    import pandas as pd

    from trainables.datasets import openml

    rng = np.random.default_rng(4)
    y = np.arange(300) % 3
    frame = pd.DataFrame(rng.normal(size=(300, 4)) + 5, columns=list("abcd"))
    frame["target"] = y
    _, _, test = stratified_split(y, 0.2, 0.2, 0)
    poisoned = frame.copy()
    poisoned.loc[test, list("abcd")] *= 1000  # only test rows change
    loaded = []
    for f in (frame, poisoned):
        monkeypatch.setattr(openml, "fetch", lambda *args, f=f: f)
        loaded.append(load_dataset("higgs", str(tmp_path), download=False))
    clean, dirty = loaded
    assert torch.equal(clean.x_train, dirty.x_train) and torch.equal(clean.x_val, dirty.x_val)
    assert not torch.allclose(clean.x_test, dirty.x_test)
    xn = clean.normalize(clean.x_train)
    assert torch.allclose(xn.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(xn.std(0), torch.ones(4), atol=1e-4)
    # a re-split standardizes with its own train split only
    part = clean.configured(make_config({"folds": 3, "fold": 1}))
    xn = part.normalize(part.x_train)
    assert torch.allclose(xn.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(xn.std(0), torch.ones(4), atol=1e-4)


def test_image_statistics_per_channel_from_train(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(5))
    data = load_dataset("cifar10", str(tmp_path), download=False)
    x = data.x_train.double()
    assert torch.allclose(data.mean.view(-1).double(), x.mean((0, 2, 3)), atol=1e-3)
    assert torch.allclose(data.std.view(-1).double(), x.std((0, 2, 3), correction=0), atol=1e-3)
    assert data.normalize(data.x_val[:4]).dtype == torch.float32


def test_digits_unchanged_against_standardize():
    from sklearn.datasets import load_digits

    data = load_dataset("digits")
    x = torch.tensor(load_digits().data, dtype=torch.float32)
    train, val, test = stratified_split(load_digits().target, 0.2, 0.2, 0)
    x_train, x_val, x_test = standardize(x[train], x[val], x[test])
    assert torch.equal(data.normalize(data.x_train), x_train)
    assert torch.equal(data.normalize(data.x_test), x_test)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(0))
    xb, yb = next(data.train_batches(64, g))
    assert torch.equal(xb, x_train[order[:64]]) and torch.equal(yb, data.y_train[order[:64]])


def test_a_feature_constant_on_train_is_centred_not_blown_up():
    """digits has border pixels that are 0 in every training image and not in a few others:
    as scikit-learn's StandardScaler, such a feature is centred and left unscaled (dividing
    by a clamped ~0 std made them 1e7 in val and test, and full_train diverged on them)."""
    from sklearn.preprocessing import StandardScaler

    x_train = torch.tensor([[0.0, 1.0], [0.0, 3.0], [0.0, 5.0]])
    x_val = torch.tensor([[16.0, 2.0]])
    train, val = standardize(x_train, x_val)
    scaler = StandardScaler().fit(x_train.numpy())
    expected = scaler.transform(x_val.numpy())[0]
    assert val[0, 0].item() == pytest.approx(16.0)  # centred (mean 0), not divided by ~0
    assert val[0, 1].item() == pytest.approx((2.0 - 3.0) / 2.0)  # torch's std: ddof 1
    assert expected[0] == pytest.approx(16.0)  # scikit-learn does the same for that feature
    assert (train[:, 0] == 0).all()

    data = load_dataset("digits")
    merged = torch.cat([data.x_train, data.x_val, data.x_test])
    assert merged.abs().max() < 1e3, "no feature of val or test blown up by a ~0 std (1e7)"


def test_folds_partition_train_and_recompute_statistics(tmp_path):
    write_mnist_like(tmp_path, "MNIST", False, np.random.default_rng(6))
    data = load_dataset("mnist", str(tmp_path), download=False)
    pool = ids_of(data.x_train) | ids_of(data.x_val)
    vals = []
    for fold in range(5):
        part = data.configured(make_config({"folds": 5, "fold": fold}))
        assert not ids_of(part.x_train) & ids_of(part.x_val)
        assert ids_of(part.x_train) | ids_of(part.x_val) == pool
        assert ids_of(part.x_test) == ids_of(data.x_test)
        assert torch.allclose(part.mean.view(-1), part.x_train.float().mean(), atol=1e-3)
        vals.append(ids_of(part.x_val))
    assert set().union(*vals) == pool and sum(len(v) for v in vals) == len(pool)
    assert data.configured(make_config()) is data  # the loaded split: nothing re-carved
    half = data.configured(make_config({"val_fraction": 0.5}))
    assert len(half.y_val) == N_TRAIN // 2
    with pytest.raises(ConfigError, match="fold=5 with folds=5"):
        data.configured(make_config({"folds": 5, "fold": 5}))


def test_augment_is_image_only(tmp_path):
    data = load_dataset("digits")
    assert data.configured(make_config()).augment == "none"
    with pytest.raises(ConfigError, match="not an image dataset"):
        data.configured(make_config({"augment": "flip"}))


# -- on-device batching and augmentation --------------------------------------------------------


def test_train_batches_cover_each_sample_once(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(7))
    data = load_dataset("cifar10", str(tmp_path), download=False)
    data = data.configured(make_config({"augment": "flip"}))
    seen = []
    for xb, yb in data.train_batches(32, torch.Generator().manual_seed(0)):
        assert xb.dtype == torch.float32 and len(xb) == len(yb) <= 32
        seen.append(yb)
    assert torch.equal(torch.cat(seen).sort().values, data.y_train.sort().values)


def test_batch_translate_matches_per_image_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = batch_translate(x, 2, torch.Generator().manual_seed(0))
    shifts = torch.randint(0, 5, (16, 2), generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i, (dy, dx) in enumerate(shifts.tolist()):
        assert torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
    assert (out == 0).any()  # some image moved: zero fill came in


def test_flip_flips_about_half():
    x = torch.arange(2 * 4, dtype=torch.uint8).view(1, 1, 2, 4).repeat(200, 1, 1, 1)
    out = augment_batch(x, "flip", torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.equal(flipped | (out == x).flatten(1).all(1), torch.ones(200, dtype=torch.bool))
    assert 60 < int(flipped.sum()) < 140


def test_pickles_compactly_as_uint8(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(8))
    data = load_dataset("cifar10", str(tmp_path), download=False)
    blob = pickle.dumps(data)
    assert len(blob) < 1.2 * data.nbytes() + 10_000
    again = pickle.loads(blob)
    assert torch.equal(again.x_train, data.x_train) and again.x_train.dtype == torch.uint8


# -- missing files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(set(DATASETS) - {"digits"}))
def test_missing_offline_names_file_folder_and_url(tmp_path, name):
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset(name, str(tmp_path / "empty"), download=False)
    message = str(err.value)
    assert isinstance(err.value, ConfigError) and "\n" not in message
    assert str((tmp_path / "empty").resolve()) in message
    expected = {
        "mnist": "train-images-idx3-ubyte", "fashion_mnist": "train-images-idx3-ubyte",
        "cifar10": "data_batch_1", "svhn": "train_32x32.mat", "higgs": "23512.gz",
        "electricity": "151.gz",
    }  # fmt: skip
    assert expected[name] in message and "http" in message


def test_failed_download_becomes_one_error(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(tvu, "urlopen", offline, raising=False)
    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DatasetUnavailable, match="download failed.*data_batch_1"):
        load_dataset("cifar10", str(tmp_path), download=True)


def test_study_on_missing_dataset_stops_before_any_trial(tmp_path):
    env = {**os.environ, "SPARSETUNE_DOWNLOAD": "0"}
    cmd = [
        sys.executable, "run_study.py", "run", "studies/default.yaml", "--set", "dataset=mnist",
        "--set", f"fixed.data_dir={tmp_path / 'data'}", "--set", f"storage={tmp_path / 'runs'}",
        "--no-dashboard",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: dataset 'mnist' is not available")
    assert "train-images-idx3-ubyte" in lines[0] and "Traceback" not in proc.stderr
    assert "Ray dashboard" not in proc.stdout and "trials" not in proc.stdout
    assert not list((tmp_path / "runs").glob("*/search-seed-*"))  # Tune never ran
