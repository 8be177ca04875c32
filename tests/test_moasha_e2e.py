"""MO-ASHA on a real local Ray: stopped trials in the Parquet (never on a front), what Optuna
was told, a custom trainable that reports only training_iteration, and resume after SIGKILL."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from results.parquet import read_table
from search_spaces import load_space
from tuner.schedulers import DECISIONS_FILE, STATE_FILE
from tuner.spec import load_spec
from tuner.study import run_study

ROOT = Path(__file__).resolve().parents[1]
MOASHA = ["search.population_size=4", "scheduler.max_t=9", "fixed.epochs=9", "max_concurrent=2"]


def decisions(study_dir: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted(study_dir.glob(f"search-seed-*/{DECISIONS_FILE}"))
        for line in path.read_text().splitlines()
    ]


def optuna_states(study_dir: Path) -> list[str]:
    return [
        t.state.name
        for p in sorted(study_dir.glob("search-seed-*/searcher-state-*.pkl"))
        for t in pickle.loads(p.read_bytes())["_ot_study"].trials
    ]


def check_stopped_trials(study_dir: Path, trials, rungs: list[int], budget: int) -> None:
    """Each stopped trial: a STOP decision at the rung it reached, its epochs in history; each
    completed one trained the budget; no rung decided twice for a trial."""
    history = read_table(study_dir / "history.parquet")
    log = decisions(study_dir)
    stops = {(e["trial_id"], e["rung"]) for e in log if e["decision"] == "STOP"}
    decided = [(e["trial_id"], e["rung"]) for e in log if not e["replayed"]]
    for row in trials.itertuples():
        epochs = sorted(history.loc[history["trial_id"] == row.trial_id, "epoch"])
        if row.status == "stopped":
            assert row.epoch in rungs and (row.trial_id, row.epoch) in stops
            assert epochs == list(range(1, row.epoch + 1))  # its history kept, each epoch once
        elif row.status == "completed":
            assert row.epoch == budget and epochs == list(range(1, budget + 1))
    final = set(trials["trial_id"])
    mine = [d for d in decided if d[0] in final]
    assert len(mine) == len(set(mine)), "a rung decision was taken twice"


@pytest.mark.ray
def test_moasha_study_on_digits(local_ray, tmp_path):
    spec = load_spec(
        ROOT / "studies" / "moasha.yaml",
        [f"storage={tmp_path}", "name=mo", "trials=12", *MOASHA],
    )
    assert spec.scheduler.algorithm == "moasha" and spec.scheduler.max_t == 9
    result = run_study(spec)
    trials = read_table(result.study_dir / "trials.parquet")
    assert len(trials) == 12 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"completed", "stopped", "failed", "diverged"}
    stopped = trials[trials["status"] == "stopped"]
    assert len(stopped) >= 3 and (trials["status"] == "completed").sum() >= 1
    check_stopped_trials(result.study_dir, trials, rungs=[1, 3], budget=9)
    # the front: full-budget trials only; no stopped trial on any layer
    pareto = read_table(result.study_dir / "pareto.parquet")
    assert set(pareto["status"]) == {"completed"}
    assert not set(pareto["trial_id"]) & set(stopped["trial_id"])
    # Optuna was told PRUNED for each stopped trial, COMPLETE for each completed one
    states = optuna_states(result.study_dir)
    assert states.count("PRUNED") == len(stopped)
    assert states.count("COMPLETE") == (trials["status"] == "completed").sum()
    assert "RUNNING" not in states
    # the report shows the stopped trials apart
    from results.report import write_report

    text = write_report(result.study_dir).path.read_text()
    assert f"{len(stopped)} stopped" in text and "## Stopped early" in text


@pytest.mark.ray
def test_custom_trainable_reporting_training_iteration(local_ray, tmp_path):
    """A trainable that reports neither `epoch` nor `epochs`-shaped budgets: Tune's
    training_iteration is the clock, max_t is given. The loss and cost both grow with x, so
    the ranking at a rung is x's order and most trials stop."""
    trainable = tmp_path / "steps.py"
    trainable.write_text(
        "from ray import tune\n"
        "def train(config):\n"
        "    for step in range(1, 10):\n"
        "        tune.report({'loss': config['x'] + 1 / step, 'cost': config['x'] * step})\n"
    )
    space = tmp_path / "x.yaml"
    space.write_text("parameters:\n  x: {type: float, low: 0.0, high: 1.0}\n")
    spec = load_spec(
        ROOT / "studies" / "custom.yaml",
        [f"storage={tmp_path}", "name=steps", f"trainable={trainable}:train", f"space={space}",
         "objectives={loss: min, cost: min}", "trials=8", "search.population_size=4",
         "search.init=null", "fixed={}", "scheduler.algorithm=moasha", "scheduler.max_t=9"],
    )  # fmt: skip
    result = run_study(spec)
    trials = read_table(result.study_dir / "trials.parquet")
    assert len(trials) == 8 and set(trials["status"]) <= {"completed", "stopped"}
    stopped = trials[trials["status"] == "stopped"]
    assert len(stopped) >= 2
    log = decisions(result.study_dir)
    stops = {(e["trial_id"], e["epoch"]) for e in log if e["decision"] == "STOP"}
    for row in stopped.itertuples():
        assert (row.trial_id, row.epoch) in stops  # stopped where it was told
    # every STOP went to a trial with a larger x than one that continued at the same rung
    x = dict(zip(trials["trial_id"], trials["config/x"], strict=True))
    for entry in log:
        if entry["decision"] == "STOP" and entry["trials_at_rung"] > 1:
            same_rung = [e for e in log if e["rung"] == entry["rung"] and e["decision"] != "STOP"]
            assert any(x[e["trial_id"]] < x[entry["trial_id"]] for e in same_rung)


def test_killed_driver_resumes_moasha_without_repeating_a_decision(tmp_path):
    """SIGKILL the driver (and its Ray) mid-study; resume: every trial once, every rung
    decision taken once (a repeated rung report replays it), the rung records kept."""
    trials = 10
    cmd = [sys.executable, str(ROOT / "run_study.py"), "run", str(ROOT / "studies/moasha.yaml")]
    for assignment in (f"storage={tmp_path}", "name=killed", f"trials={trials}", *MOASHA):
        cmd += ["--set", assignment]
    cmd.append("--no-dashboard")
    log = tmp_path / "driver.log"
    proc = subprocess.Popen(
        cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    study_dir = tmp_path / "killed"
    path = study_dir / "trials.parquet"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if path.exists() and len(read_table(path)) >= 4:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the study never wrote 4 trials:\n" + log.read_text()[-2000:])
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait()
    before = read_table(path)
    assert 4 <= len(before) < trials
    records_before = json.loads((study_dir / "search-seed-1" / STATE_FILE).read_text())
    resumed = subprocess.run(
        [sys.executable, str(ROOT / "run_study.py"), "resume", "killed", "--storage",
         str(tmp_path), "--no-dashboard"],
        capture_output=True, text=True, timeout=400, start_new_session=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    after = read_table(path)
    assert len(after) == trials and after["trial_id"].is_unique
    assert set(after["status"]) <= {"completed", "stopped"} and "stopped" in set(after["status"])
    check_stopped_trials(study_dir, after, rungs=[1, 3], budget=9)
    # the records of trials that lived on were restored, not rebuilt: same values, same decision
    records_after = json.loads((study_dir / "search-seed-1" / STATE_FILE).read_text())
    for level, rung in records_before["rungs"].items():
        for trial_id, record in rung.items():
            if trial_id in set(after["trial_id"]):
                assert records_after["rungs"][level][trial_id] == record
    # the rungs hold exactly the study's trials
    recorded = {t for rung in records_after["rungs"].values() for t in rung}
    assert recorded <= set(after["trial_id"])


CONSTRAINTS = ["val_error <= 0.9", "inference_flops <= 1e5"]  # satisfiable; the second bites


@pytest.mark.ray
def test_moasha_composes_with_seeds_lhs_constraints_and_metrics(local_ray, tmp_path, monkeypatch):
    """Two search seeds, NSGA-II with an LHS generation 0 and constraints, under MO-ASHA:
    each seed's trials once; stopped trials kept but off the front; each seed's own design;
    rung records per search (no seed sees the other's trials); constrained ranking at the
    rungs; and the study's dashboard counters count the stopped trials."""
    import tuner.monitoring
    from tuner.schedulers import STOP
    from tuner.study import known_trial_ids

    publishers: list[tuner.monitoring.StudyMetrics] = []

    class RecordedStudyMetrics(tuner.monitoring.StudyMetrics):
        """The study's own callback, kept where the test can read what it published."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            publishers.append(self)

    monkeypatch.setattr(tuner.monitoring, "StudyMetrics", RecordedStudyMetrics)
    seeds, per_seed, population = [1, 2], 6, 4
    spec = load_spec(
        ROOT / "studies" / "moasha.yaml",
        [f"storage={tmp_path}", "name=mo-compose", f"trials={per_seed}", f"seeds={seeds}",
         f"search.population_size={population}", "search.init=lhs",
         f"search.constraints={CONSTRAINTS}", "scheduler.grace_period=1", "scheduler.max_t=9",
         "fixed.epochs=9", "max_concurrent=2"],
    )  # fmt: skip
    result = run_study(spec)
    study_dir = result.study_dir
    trials = read_table(study_dir / "trials.parquet")
    history = read_table(study_dir / "history.parquet")

    # every seed's trials, once each, under their own search seed
    assert len(trials) == len(seeds) * per_seed and trials["trial_id"].is_unique
    for seed in seeds:
        mine = trials[trials["search_seed"] == seed]
        assert set(mine["trial_id"]) == known_trial_ids(str(study_dir / f"search-seed-{seed}"))
        assert len(mine) == per_seed
    # (lr reaches 0.5: a trial may diverge; it is stopped at its rung, never ranked)
    assert set(trials["status"]) <= {"completed", "stopped", "diverged"}
    diverged = set(trials.loc[trials["status"] == "diverged", "trial_id"])
    stopped = trials[trials["status"] == "stopped"]
    assert len(stopped) >= 2 and (trials["status"] == "completed").sum() >= 2
    check_stopped_trials(study_dir, trials, rungs=[1, 3], budget=9)  # history kept, no repeats
    pareto = read_table(study_dir / "pareto.parquet")
    assert set(pareto["status"]) == {"completed"}
    assert not set(pareto["trial_id"]) & set(stopped["trial_id"])

    # each seed's generation 0 is its own Latin-hypercube design (in Optuna and in the Parquet)
    fixed = set(spec.trial_defaults())
    designs = {
        s: load_space("mlp").latin_hypercube(population, seed=s, exclude=fixed) for s in seeds
    }
    assert [d["lr"] for d in designs[1]] != [d["lr"] for d in designs[2]]
    for seed in seeds:
        path = next((study_dir / f"search-seed-{seed}").glob("searcher-state-*.pkl"))
        ot_trials = sorted(
            pickle.loads(path.read_bytes())["_ot_study"].trials, key=lambda t: t.number
        )
        assert len(ot_trials) == per_seed
        first = ot_trials[:population]
        assert [t.params["lr"] for t in first] == pytest.approx([d["lr"] for d in designs[seed]])
        # every trial told with values, PRUNED ones included, carries both constraints
        told = [t for t in ot_trials if t.state.name in ("COMPLETE", "PRUNED")]
        assert len(told) == per_seed - len(
            diverged & set(trials.loc[trials["search_seed"] == seed, "trial_id"])
        )
        assert all(list(t.constraints) == CONSTRAINTS for t in told)
        rows = trials[trials["search_seed"] == seed]
        for point in designs[seed]:  # stopped or not, each design trial has its row
            assert any(math.isclose(lr, point["lr"]) for lr in rows["config/lr"]), point

    # the rung records are per search: a seed's scheduler holds its own trials only, and
    # counted only them at each decision; each record's violation is the constraints' at
    # that rung, and the decisions follow Deb's rule (feasible trials first)
    at_epoch = history.set_index(["trial_id", "epoch"])
    rf = spec.scheduler.reduction_factor
    for seed in seeds:
        folder = study_dir / f"search-seed-{seed}"
        mine = set(trials.loc[trials["search_seed"] == seed, "trial_id"])
        state = json.loads((folder / STATE_FILE).read_text())
        for level, rung in state["rungs"].items():
            assert set(rung) <= mine, f"seed {seed} rung {level} holds another seed's trials"
            reached = set(
                trials.loc[
                    (trials["search_seed"] == seed) & (trials["epoch"] >= int(level)), "trial_id"
                ]
            )
            assert set(rung) == reached
            for trial_id, record in rung.items():
                if record["values"] is None:  # not finite: stopped unranked
                    assert trial_id in diverged and record["decision"] == STOP
                    continue
                row = at_epoch.loc[(trial_id, int(level))]
                expected = max(row["val_error"] - 0.9, 0) + max(row["inference_flops"] - 1e5, 0)
                assert record["violation"] == pytest.approx(expected)
        log = [json.loads(line) for line in (folder / DECISIONS_FILE).read_text().splitlines()]
        assert {e["trial_id"] for e in log} <= mine
        for level in {e["rung"] for e in log}:
            arrivals = [e for e in log if e["rung"] == level and not e["replayed"]]
            assert [e["trials_at_rung"] for e in arrivals] == list(range(1, len(arrivals) + 1))
            rung = state["rungs"][str(level)]
            ranked = [e for e in arrivals if rung[e["trial_id"]]["values"] is not None]
            for k, entry in enumerate(ranked):
                before = [rung[e["trial_id"]]["violation"] == 0 for e in ranked[:k]]
                feasible = rung[entry["trial_id"]]["violation"] == 0
                if not feasible and sum(before) >= (k + 1) / rf:
                    assert entry["decision"] == STOP, (seed, level, entry)  # ranks after them
                if feasible and not any(before):
                    assert entry["decision"] != STOP, (seed, level, entry)  # ranks first

    # the dashboard metrics: one publisher for the study, so counters and gauges span both
    # seeds; the stopped trials counted as stopped (neither failed nor on the front)
    from results.hypervolume import hypervolume

    assert len(publishers) == 1
    metrics = publishers[0]
    snapshot = metrics.snapshot()
    completed = trials[trials["status"] == "completed"]
    assert snapshot["finished"] == len(trials) and snapshot["failed"] == len(diverged)
    assert snapshot["stopped"] == len(stopped)
    assert len(metrics.points) == len(completed)
    for name, best in metrics.best_values().items():
        assert best == pytest.approx(completed[name].min())  # every objective is "min" here
    assert snapshot["hypervolume"] == pytest.approx(
        hypervolume(completed[list(spec.objectives)], spec.objectives)
    )
    assert snapshot["rate"] > 0
