"""A tiny study on a real local Ray, its Parquet read back by pandas, DuckDB and polars."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from results.parquet import read_metadata, read_table
from tuner.spec import load_spec
from tuner.study import run_study

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = ["val_error", "train_flops", "inference_flops"]
TRIALS = 8


def brute_force_non_dominated(points: np.ndarray) -> set[int]:
    keep = set()
    for i, p in enumerate(points):
        if not any(np.all(q <= p) and np.any(q < p) for q in points):
            keep.add(i)
    return keep


@pytest.fixture(scope="module")
def study(local_ray, tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    spec = load_spec(
        ROOT / "studies" / "default.yaml",
        [f"storage={storage}", "name=tiny", f"trials={TRIALS}", "fixed.epochs=2",
         "search.population_size=4", "max_concurrent=2"],
    )  # fmt: skip
    result = run_study(spec)
    return spec, result


@pytest.mark.ray
def test_every_trial_lands_in_parquet(study):
    spec, result = study
    trials = read_table(result.study_dir / "trials.parquet")
    assert len(trials) == TRIALS and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"completed", "failed", "diverged"}
    assert (trials["status"] == "completed").sum() >= TRIALS - 1
    assert set(trials["config/method"]) <= {"dense", "static", "set", "rigl"}
    assert (trials["study"] == "tiny").all() and (trials["search_seed"] == 1).all()
    history = read_table(result.study_dir / "history.parquet")
    assert len(history) == 2 * len(trials)  # two epochs per trial
    assert set(history["trial_id"]) == set(trials["trial_id"])


@pytest.mark.ray
def test_conditions_recorded_as_resolved(study):
    _, result = study
    trials = read_table(result.study_dir / "trials.parquet")
    dense = trials[trials["config/method"] == "dense"]
    assert (dense["config/sparsity"] == 0.0).all()
    assert dense["config/update_interval"].isna().all()
    static = trials[trials["config/method"] == "static"]
    assert static["config/update_interval"].isna().all()
    done = trials[trials["status"] == "completed"]
    assert np.allclose(done["density"], 1 - done["config/sparsity"], atol=0.01)


@pytest.mark.ray
def test_layer_one_is_exactly_the_non_dominated_completed_trials(study):
    _, result = study
    trials = read_table(result.study_dir / "trials.parquet")
    pareto = read_table(result.study_dir / "pareto.parquet")
    completed = trials[trials["status"] == "completed"].reset_index(drop=True)
    expected = {
        completed["trial_id"][i]
        for i in brute_force_non_dominated(completed[OBJECTIVES].to_numpy(float))
    }
    assert set(pareto.loc[pareto["layer"] == 1, "trial_id"]) == expected
    assert set(pareto["trial_id"]) == set(completed["trial_id"])
    assert (result.study_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.ray
def test_parquet_opens_in_duckdb_and_polars(study):
    _, result = study
    path = str(result.study_dir / "trials.parquet")
    columns = {
        "status",
        "config/method",
        "config/sparsity",
        "val_error",
        "train_flops",
        "inference_flops",
    }
    rel = duckdb.sql(f"SELECT * FROM '{path}'")
    assert columns <= set(rel.columns)
    n_done = duckdb.sql(f"SELECT count(*) FROM '{path}' WHERE status = 'completed'").fetchall()[0][
        0
    ]
    frame = pl.read_parquet(path)
    assert columns <= set(frame.columns)
    assert frame.filter(pl.col("status") == "completed").height == n_done
    best = pl.read_parquet(str(result.study_dir / "pareto.parquet")).filter(pl.col("layer") == 1)
    assert best.height >= 1


@pytest.mark.ray
def test_parquet_metadata_holds_spec_and_versions(study):
    spec, result = study
    meta = read_metadata(result.study_dir / "trials.parquet")
    assert "name: tiny" in meta["sparsetune.spec"]
    versions = json.loads(meta["sparsetune.versions"])
    assert {"ray", "optuna", "torch"} <= set(versions)


@pytest.mark.ray
def test_optuna_trials_all_finished(study):
    """No Optuna trial is left RUNNING (the searcher tells FAIL for bad results)."""
    import pickle

    _, result = study
    states = list(itertools.chain.from_iterable(
        pickle.loads(p.read_bytes())["_ot_study"].trials
        for p in result.study_dir.glob("search-seed-*/searcher-state-*.pkl")
    ))  # fmt: skip
    if not states:
        pytest.skip("searcher state not saved by this Tune version")
    assert all(t.state.is_finished() for t in states)


@pytest.mark.ray
def test_failing_and_diverging_trials_fail_alone(local_ray, tmp_path):
    """Trials that raise or diverge are recorded as such; the study finishes the rest."""
    import pickle

    space = tmp_path / "fragile.yaml"
    space.write_text(
        "parameters:\n"
        "  method: {type: categorical, choices: [dense, set]}\n"
        "  sparsity: {type: float, low: 0.5, high: 0.9, when: 'method != dense', inactive: 0.0}\n"
        "  lr: {type: categorical, choices: [0.05, 1.0e+6]}\n"  # 1e6 diverges at once
        "  device: {type: categorical, choices: [cpu, 'cuda:99']}\n"  # no such device: raises
    )
    spec = load_spec(
        ROOT / "studies" / "default.yaml",
        [f"storage={tmp_path}", "name=fragile", f"space={space}", "trials=10",
         "fixed.epochs=1", "search.population_size=4", "fixed.momentum=0.9"],
    )  # fmt: skip
    result = run_study(spec)
    trials = read_table(result.study_dir / "trials.parquet")
    assert len(trials) == 10
    config = trials[["config/device", "config/lr"]]
    errored = config["config/device"] == "cuda:99"
    diverging = ~errored & (config["config/lr"] > 1)
    assert errored.any() and diverging.any() and (~errored & ~diverging).any()
    assert (trials.loc[errored, "status"] == "failed").all()
    assert trials.loc[errored, "error"].str.contains("RuntimeError").all()
    assert (trials.loc[diverging, "status"] == "diverged").all()
    assert (trials.loc[~errored & ~diverging, "status"] == "completed").all()
    # Optuna saw FAIL for every bad trial and nothing stayed RUNNING
    states = [
        t.state.name
        for p in result.study_dir.glob("search-seed-*/searcher-state-*.pkl")
        for t in pickle.loads(p.read_bytes())["_ot_study"].trials
    ]
    assert len(states) == 10 and "RUNNING" not in states
    assert states.count("FAIL") == int((errored | diverging).sum())
    # the pareto layers only rank completed trials
    pareto = read_table(result.study_dir / "pareto.parquet")
    assert set(pareto["trial_id"]) == set(trials.loc[trials["status"] == "completed", "trial_id"])
