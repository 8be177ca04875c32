"""The README's first command, as a user runs it: the default study on a real local Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

from results.parquet import read_table

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = ["val_error", "train_flops", "inference_flops"]


@pytest.fixture(scope="module")
def default_study(tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run_study.py"), "run", str(ROOT / "studies/default.yaml"),
         "--set", f"storage={storage}"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return storage / "default", proc.stdout


@pytest.mark.ray
def test_default_study_writes_at_least_24_completed_trials(default_study):
    study_dir, stdout = default_study
    trials = read_table(study_dir / "trials.parquet")
    assert (trials["status"] == "completed").sum() >= 24
    assert set(trials["config/method"]) == {"dense", "static", "set", "rigl"}
    assert set(trials["config/distribution"].dropna()) == {"uniform", "erk"}
    # progress was shown, one line per trial, and the layer-1 table and the files at the end
    assert stdout.count("completed") >= 24 and f"[{len(trials)}/{len(trials)}]" in stdout
    assert "layer 1 (non-dominated" in stdout and str(study_dir / "pareto.parquet") in stdout


@pytest.mark.ray
def test_layer_one_is_exactly_the_non_dominated_set(default_study):
    study_dir, _ = default_study
    trials = read_table(study_dir / "trials.parquet")
    completed = trials[trials["status"] == "completed"]
    points = completed[OBJECTIVES].to_numpy(float)
    dominated = [
        bool(np.any(np.all(points <= p, axis=1) & np.any(points < p, axis=1))) for p in points
    ]
    expected = set(completed["trial_id"][~np.array(dominated)])
    layer1 = duckdb.sql(
        f"SELECT trial_id FROM '{study_dir / 'pareto.parquet'}' WHERE layer = 1"
    ).fetchall()
    assert {row[0] for row in layer1} == expected


@pytest.mark.ray
def test_a_sparse_trial_on_layer_one_is_close_to_the_best_dense(default_study):
    study_dir, _ = default_study
    pareto = read_table(study_dir / "pareto.parquet")
    best_dense = pareto.loc[pareto["config/method"] == "dense", "val_accuracy"].max()
    layer1 = pareto[pareto["layer"] == 1]
    sparse = layer1[layer1["density"] <= 0.5]
    assert (sparse["val_accuracy"] >= best_dense - 0.03).any(), (best_dense, sparse["val_accuracy"])
