"""One configuration trained in-process, as `run_study.py train` does."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from knobs import read_by

from trainables.config import ConfigError, make_config
from trainables.datasets import load_dataset
from trainables.train import METRICS, Trainer, train

ROOT = Path(__file__).resolve().parents[1]
FAST = {"epochs": 2, "width": 32, "depth": 1}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_splits_are_disjoint_and_stratified(digits):
    n = len(digits.y_train) + len(digits.y_val) + len(digits.y_test)
    assert n == 1797
    # every sample lands in exactly one split: compare rows as bytes
    rows = [tuple(r.tolist()) for t in (digits.x_train, digits.x_val, digits.x_test) for r in t]
    assert len(rows) == n
    for y in (digits.y_train, digits.y_val, digits.y_test):
        counts = y.bincount(minlength=10).float()
        assert (counts / counts.sum() - 0.1).abs().max() < 0.02
    # standardized with training statistics only
    assert digits.x_train.mean(0).abs().max() < 1e-5
    assert digits.x_val.mean(0).abs().max() > 1e-3


def test_train_reports_every_contract_metric(digits):
    history = list(train({**FAST, "method": "rigl", "sparsity": 0.8, "update_interval": 5}, digits))
    assert [m["epoch"] for m in history] == [1, 2]
    for metrics in history:
        assert set(metrics) == set(METRICS)
        assert math.isclose(metrics["val_error"], 1 - metrics["val_accuracy"])
    assert history[1]["train_flops"] > history[0]["train_flops"] > 0
    assert history[-1]["diverged"] is False


def test_same_seed_same_result(digits):
    config = {**FAST, "method": "set", "sparsity": 0.7, "update_interval": 3, "seed": 3}
    a, b = list(train(config, digits))[-1], list(train(config, digits))[-1]
    for key in ("val_accuracy", "train_loss", "train_flops", "nonzero_params"):
        assert a[key] == b[key]


@pytest.mark.parametrize("method", ["static", "set", "rigl"])
def test_sparse_methods_cost_fewer_flops_than_dense(method, digits):
    dense = list(train({**FAST, "method": "dense"}, digits))[-1]
    sparse = list(
        train(
            {**FAST, "method": method, "sparsity": 0.9, **read_by(method, update_interval=10)},
            digits,
        )  # fmt: skip
    )[-1]
    assert sparse["inference_flops"] < 0.2 * dense["inference_flops"]
    assert sparse["train_flops"] < 0.3 * dense["train_flops"]
    assert abs(sparse["density"] - 0.1) < 0.01


def test_huge_learning_rate_is_reported_as_diverged(digits):
    history = list(train({**FAST, "lr": 1e6, "momentum": 0.0}, digits))
    assert history[-1]["diverged"] is True
    assert len(history) == 1  # stops at the first epoch that diverged


def test_resume_from_state_dict_matches_uninterrupted_run(digits):
    config = {**FAST, "epochs": 3, "method": "rigl", "sparsity": 0.8, "update_interval": 4}
    straight = list(train(config, digits))[-1]
    first = Trainer(config, digits)
    first.run_epoch()
    state = first.state_dict()
    second = Trainer(config, digits)
    second.load_state_dict(state)
    while not second.finished:
        resumed = second.run_epoch()
    for key in ("val_accuracy", "train_loss", "train_flops", "nonzero_params", "epoch"):
        assert resumed[key] == straight[key], key


def test_unknown_and_out_of_range_hyperparameters_are_refused():
    with pytest.raises(ConfigError, match="did you mean 'sparsity'"):
        make_config({"sparsty": 0.5})
    with pytest.raises(ConfigError, match=r"sparsity=1.5 is out of range"):
        make_config({"sparsity": 1.5})
    with pytest.raises(ConfigError, match="allowed values: dense, static, set, rigl"):
        make_config({"method": "magic"})


def test_train_command_json_density():
    """`train --set method=set --set sparsity=0.9 --json`: 10% of the prunable weights remain."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run_study.py"), "train", "--set", "method=set",
         "--set", "sparsity=0.9", "--set", "epochs=10", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    metrics = out["metrics"]
    assert out["config"]["method"] == "set"
    assert abs(metrics["nonzero_params"] / metrics["total_params"] - 0.1) <= 0.01
    assert metrics["val_accuracy"] > 0.8  # 90% sparse still learns (sparse init)


def test_train_command_refuses_bad_value():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run_study.py"), "train", "--set", "sparsity=1.5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "sparsity=1.5 is out of range" in proc.stderr and "Traceback" not in proc.stderr
