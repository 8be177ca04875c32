"""Every study kind end to end on a real local Ray, with tiny budgets on digits."""

from __future__ import annotations

import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from results.parquet import read_table
from search_spaces import load_space
from tuner.kinds import reproduction_configs
from tuner.spec import load_spec
from tuner.study import run_study

ROOT = Path(__file__).resolve().parents[1]
TINY = ["fixed.epochs=1", "fixed.width=32", "max_concurrent=2"]
pytestmark = pytest.mark.ray


def spec_for(tmp_path, study: str, *overrides: str):
    return load_spec(ROOT / "studies" / f"{study}.yaml", [f"storage={tmp_path}", *overrides])


def optuna_trials(study_dir: Path):
    return [
        t
        for p in sorted(study_dir.glob("search-seed-*/searcher-state-*.pkl"))
        for t in pickle.loads(p.read_bytes())["_ot_study"].trials
    ]


def strata(values: np.ndarray, low: float, high: float, n: int, log: bool) -> list[int]:
    if log:
        values, low, high = np.log(values), math.log(low), math.log(high)
    return sorted(np.floor((values - low) / (high - low) * n).astype(int).tolist())


def test_lhs_puts_one_point_in_every_stratum(local_ray, tmp_path):
    n = 8
    result = run_study(spec_for(tmp_path, "random", f"trials={n}", "fixed.depth=1", *TINY))
    trials = read_table(result.study_dir / "trials.parquet")
    assert len(trials) == n and set(trials["status"]) == {"completed"}
    space = load_space("mlp")
    for name in ("lr", "weight_decay"):  # log dimensions: strata in log space
        p = space.parameters[name]
        assert strata(trials[f"config/{name}"].to_numpy(), p.low, p.high, n, log=True) == list(
            range(n)
        )
    # a linear dimension: sparsity of the sparse trials sits in distinct linear strata
    sparse = trials[trials["config/method"] != "dense"]
    p = space.parameters["sparsity"]
    cells = strata(sparse["config/sparsity"].to_numpy(), p.low, p.high, n, log=False)
    assert len(set(cells)) == len(cells)


def test_nsga2_lhs_init_trials_become_parents(local_ray, tmp_path):
    population = 4
    spec = spec_for(
        tmp_path, "default", "name=lhs-init", f"trials={3 * population}",
        f"search.population_size={population}", "search.init=lhs", *TINY,
    )  # fmt: skip
    result = run_study(spec)
    trials = sorted(optuna_trials(result.study_dir), key=lambda t: t.number)
    assert len(trials) == 3 * population
    generation = [t.system_attrs.get("NSGAIISampler:generation") for t in trials]
    first = [t for t, g in zip(trials, generation, strict=True) if g == 0]
    assert len(first) >= population and max(generation) >= 1
    # the first generation is the Latin-hypercube design: lr in distinct log strata
    design = load_space("mlp").latin_hypercube(population, seed=1, exclude={"epochs", "width"})
    assert [t.params["lr"] for t in trials[:population]] == pytest.approx([d["lr"] for d in design])
    # and NSGA-II draws generation 1's parents from it
    import optuna

    sampler = optuna.samplers.NSGAIISampler(population_size=population)
    study = pickle.loads(
        next(result.study_dir.glob("search-seed-*/searcher-state-*.pkl")).read_bytes()
    )["_ot_study"]
    parents = sampler.get_parent_population(study, 1)
    assert parents and {p.number for p in parents} <= {t.number for t in first}


def test_nan_and_missing_objectives_fail_alone(local_ray, tmp_path):
    trainable = tmp_path / "fragile.py"
    trainable.write_text(
        "from ray import tune\n"
        "def train(config):\n"
        "    x = config['x']\n"
        "    if x < 0.3:\n"
        "        tune.report({'loss': float('nan'), 'cost': x})\n"
        "    elif x < 0.5:\n"
        "        tune.report({'cost': x})\n"  # the objective 'loss' is missing
        "    else:\n"
        "        tune.report({'loss': (x - 0.7) ** 2, 'cost': x})\n"
    )
    space = tmp_path / "x.yaml"
    space.write_text("parameters:\n  x: {type: float, low: 0.0, high: 1.0}\n")
    spec = spec_for(
        tmp_path, "custom", "name=fragile", f"trainable={trainable}:train", f"space={space}",
        "objectives={loss: min, cost: min}", "trials=12", "search.population_size=4",
        "search.init=null", "fixed={}",
    )  # fmt: skip
    result = run_study(spec)
    trials = read_table(result.study_dir / "trials.parquet")
    assert len(trials) == 12
    x = trials["config/x"]
    assert (x < 0.3).any() and ((x >= 0.3) & (x < 0.5)).any() and (x >= 0.5).any()
    assert (trials.loc[x < 0.3, "status"] == "diverged").all()  # NaN objective
    assert (trials.loc[(x >= 0.3) & (x < 0.5), "status"] == "failed").all()  # missing
    assert (trials.loc[x >= 0.5, "status"] == "completed").all()
    states = [t.state.name for t in optuna_trials(result.study_dir)]
    assert len(states) == 12 and "RUNNING" not in states
    assert states.count("FAIL") == int((x < 0.5).sum())


def test_reproduction_has_31_configs_per_seed():
    spec = load_spec(ROOT / "studies" / "reproduction.yaml", ["seeds=[1, 2]"])
    configs = reproduction_configs(spec)
    assert len(configs) == 62
    one_seed = [c for c in configs if c["seed"] == 1]
    assert [c["method"] for c in one_seed].count("dense") == 1
    for method in ("set", "rigl"):
        sparsities = [c["sparsity"] for c in one_seed if c["method"] == method]
        assert sparsities == [
            0.1,
            0.2,
            0.3,
            0.4,
            0.5,
            0.6,
            0.7,
            0.75,
            0.8,
            0.85,
            0.9,
            0.925,
            0.95,
            0.975,
            0.99,
        ]


def test_reproduction_runs_through_tune(local_ray, tmp_path):
    spec = spec_for(tmp_path, "reproduction", "sparsities=[0.5, 0.9]", "fixed.epochs=1")
    result = run_study(spec)
    trials = read_table(result.study_dir / "trials.parquet")
    assert len(trials) == 5 and set(trials["status"]) == {"completed"}
    assert sorted(trials["config/method"]) == ["dense", "rigl", "rigl", "set", "set"]
    assert trials["search_seed"].isna().all() and (trials["seed"] == 1).all()


@pytest.fixture(scope="module")
def two_seed_study(local_ray, tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    spec = load_spec(
        ROOT / "studies" / "default.yaml",
        [f"storage={storage}", "name=two-seeds", "seeds=[1, 2]", "trials=4",
         "search.population_size=2", *TINY],
    )  # fmt: skip
    return run_study(spec), storage


def test_reevaluate_layers_over_seeds_with_mean_and_std(two_seed_study):
    source, storage = two_seed_study
    trials = read_table(source.study_dir / "trials.parquet")
    assert sorted(set(trials["search_seed"])) == [1, 2]
    spec = load_spec(
        ROOT / "studies" / "reevaluate.yaml",
        [f"storage={storage}", "from=[two-seeds]", "seeds=[1, 2, 3]", "fixed.epochs=1"],
    )
    result = run_study(spec)
    re_trials = read_table(result.study_dir / "trials.parquet")
    summary = read_table(result.study_dir / "summary.parquet")
    n_configs = len(summary)
    assert n_configs >= 1 and len(re_trials) == 3 * n_configs
    assert (summary["count"] == 3).all()
    assert {"test_accuracy_mean", "test_accuracy_std", "test_error_mean"} <= set(summary.columns)
    assert summary["test_accuracy_std"].notna().all()
    assert (re_trials["config/full_train"]).all() and re_trials["val_accuracy"].isna().all()
    # layers 1-2 of the merged source, computed independently
    from tuner.kinds import merged_configs

    merged = merged_configs(trials[trials["status"] == "completed"], spec_objectives())
    assert n_configs == int(((merged["layer"] >= 1) & (merged["layer"] <= 2)).sum())


def spec_objectives():
    return {"val_error": "min", "train_flops": "min", "inference_flops": "min"}


def test_evaluate_top_configs_as_dense_set_rigl(two_seed_study):
    _, storage = two_seed_study
    spec = load_spec(
        ROOT / "studies" / "evaluate.yaml",
        [f"storage={storage}", "from=[two-seeds]", "top=1", "sparsities=[0.5, 0.9]",
         "fixed.epochs=1"],
    )  # fmt: skip
    result = run_study(spec)
    trials = read_table(result.study_dir / "trials.parquet")
    assert len(trials) == 5
    assert sorted(zip(trials["config/method"], trials["config/sparsity"], strict=True)) == [
        ("dense", 0.0), ("rigl", 0.5), ("rigl", 0.9), ("set", 0.5), ("set", 0.9)
    ]  # fmt: skip


def test_custom_trainable_study_and_its_reevaluation(local_ray, tmp_path):
    result = run_study(spec_for(tmp_path, "custom", "trials=6", "search.population_size=3"))
    trials = read_table(result.study_dir / "trials.parquet")
    assert len(trials) == 6 and set(trials["status"]) == {"completed"}
    assert {"config/alpha", "config/l1_ratio", "nonzero_weights", "val_error"} <= set(trials)
    pareto = read_table(result.study_dir / "pareto.parquet")
    assert (pareto["layer"] == 1).any()
    # re-evaluation works for it too: layer 1 over two training seeds, scored on test
    spec = load_spec(
        ROOT / "studies" / "reevaluate.yaml",
        [f"storage={tmp_path}", "name=custom-re", "from=[custom-sgd]", "layers=1",
         "seeds=[1, 2]", f"trainable={ROOT}/studies/custom_sgd.py:train",
         "objectives={test_error: min, nonzero_weights: min}"],
    )  # fmt: skip
    re_result = run_study(spec)
    re_trials = read_table(re_result.study_dir / "trials.parquet")
    summary = read_table(re_result.study_dir / "summary.parquet")
    n_layer1 = int((pareto["layer"] == 1).sum())
    assert len(re_trials) == 2 * n_layer1 and set(re_trials["status"]) == {"completed"}
    assert (summary["count"] == 2).all() and "test_error_std" in summary


def test_killed_driver_resumes_to_exactly_the_budget(tmp_path):
    """SIGKILL the driver (and the Ray it started) mid-study; resume; exactly `trials` rows."""
    trials = 10
    cmd = [sys.executable, str(ROOT / "run_study.py"), "run", str(ROOT / "studies/default.yaml")]
    for assignment in (f"storage={tmp_path}", "name=killed", f"trials={trials}",
                       "fixed.epochs=3", "search.population_size=4"):  # fmt: skip
        cmd += ["--set", assignment]
    cmd.append("--no-dashboard")
    log = tmp_path / "driver.log"
    proc = subprocess.Popen(
        cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    path = tmp_path / "killed" / "trials.parquet"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if path.exists() and len(read_table(path)) >= 3:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the study never wrote 3 trials")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait()
    before = read_table(path)
    assert 3 <= len(before) < trials
    # every trial the driver reported finished before it died is in the Parquet
    reported = [line for line in log.read_text().splitlines() if "] completed" in line]
    assert len(before) >= len(reported) >= 1
    resumed = subprocess.run(
        [sys.executable, str(ROOT / "run_study.py"), "resume", "killed", "--storage",
         str(tmp_path), "--no-dashboard"],
        capture_output=True, text=True, timeout=400, start_new_session=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    after = read_table(path)
    assert len(after) == trials and after["trial_id"].is_unique
    assert set(after["status"]) == {"completed"}
    kept = set(before["trial_id"]) & set(after["trial_id"])
    assert len(kept) >= len(before) - 2  # at most the trials of Tune's last second rerun
    # the Optuna journal (optuna-dashboard's view) holds every trial once, the Parquet's
    from tuner.journal import TUNE_TRIAL_ATTR, journal_path, journal_trials

    journal = journal_trials(journal_path(tmp_path / "killed"), "killed/seed-1")
    ids = [t.user_attrs[TUNE_TRIAL_ATTR] for t in journal]
    assert len(ids) == len(set(ids)) == trials and set(ids) == set(after["trial_id"])
