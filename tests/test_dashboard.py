"""Watching a study: a running local study's status, logs and stop; resume to exactly the
budget with the Optuna journal holding every trial once; optuna-dashboard on that journal in
a real headless Chromium."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from browser import chromium  # noqa: F401  (the fixture)

from contract.columns import DRIVER, PROGRESS_LOG
from results.parquet import read_table
from results.status import read_driver
from tuner.journal import (
    TUNE_TRIAL_ATTR,
    JournalRecorder,
    journal_path,
    journal_trials,
    optuna_study_name,
    reconcile_journal,
)

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 12


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_study.py"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, start_new_session=True,
    )  # fmt: skip


def command(*args: str) -> str:
    """run_study.py's command in this process; its output (it must exit 0)."""
    import contextlib
    import io

    from run_study import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(args))
    assert code == 0, out.getvalue()
    return out.getvalue()


# -- the journal alone (no Ray) --------------------------------------------------------------


def told_trial(study: optuna.Study, x: float) -> optuna.trial.FrozenTrial:
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, [x, 1 - x])
    return study.trials[-1]


def test_journal_records_each_tune_trial_once_and_reconciles(tmp_path):
    path = journal_path(tmp_path)
    sampler_study = optuna.create_study(directions=["minimize", "minimize"])
    recorder = JournalRecorder(path, "s/seed-1", ["min", "min"], ["val_error", "train_flops"])
    other = JournalRecorder(path, "s/seed-2", ["min", "min"], ["val_error", "train_flops"])
    for i, x in enumerate([0.1, 0.5, 0.9]):
        assert recorder.record(told_trial(sampler_study, x), f"t{i}")
    assert not recorder.record(sampler_study.trials[0], "t0")  # the same Tune trial: skipped
    other.record(told_trial(sampler_study, 0.3), "u0")
    # pickled (as Tune saves searchers) and back: the journal is read again, no duplicate
    import pickle

    again = pickle.loads(pickle.dumps(recorder))
    assert not again.record(sampler_study.trials[1], "t1")
    trials = journal_trials(path, "s/seed-1")
    assert [t.user_attrs[TUNE_TRIAL_ATTR] for t in trials] == ["t0", "t1", "t2"]
    assert [t.values for t in trials] == [[0.1, 0.9], [0.5, 0.5], [0.9, 0.09999999999999998]]
    # resume: Tune saw t0 and t2 finish; t1 is dropped, the other search's study is intact
    assert reconcile_journal(path, "s/seed-1", {"t0", "t2"}) == 1
    assert reconcile_journal(path, "s/seed-1", {"t0", "t2"}) == 0  # nothing more: no rewrite
    kept = journal_trials(path, "s/seed-1")
    assert [t.user_attrs[TUNE_TRIAL_ATTR] for t in kept] == ["t0", "t2"]
    assert [t.user_attrs[TUNE_TRIAL_ATTR] for t in journal_trials(path, "s/seed-2")] == ["u0"]
    from tuner.journal import open_journal

    study = optuna.load_study(study_name="s/seed-1", storage=open_journal(path))
    assert study.metric_names == ["val_error", "train_flops"]


# -- a running study: status, logs, stop, resume ---------------------------------------------


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory):
    """A 12-trial study run as a user would: stopped with `stop` while it runs, resumed."""
    storage = tmp_path_factory.mktemp("watch")
    name = "watched"
    cmd = [sys.executable, str(ROOT / "run_study.py"), "run", str(ROOT / "studies/default.yaml")]
    for assignment in (f"storage={storage}", f"name={name}", f"trials={TRIALS}", "fixed.epochs=12",
                       "search.population_size=4", "max_concurrent=2"):  # fmt: skip
        cmd += ["--set", assignment]
    cmd.append("--no-dashboard")
    log = storage / "driver.log"
    driver = subprocess.Popen(
        cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    study_dir = storage / name
    seen: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None:
            progress = study_dir / PROGRESS_LOG
            if progress.exists() and progress.read_text().count("/12]") >= 2:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the study never finished 2 trials:\n" + log.read_text()[-3000:])
        # the commands in this process: a new Python per command is seconds on a busy machine
        seen["status"] = command("status", name, "--storage", str(storage))
        seen["logs"] = command("logs", name, "--storage", str(storage), "--no-follow")
        seen["stop"] = command("stop", name, "--storage", str(storage), "--timeout", "300")
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    seen["stopped_rows"] = str(len(read_table(study_dir / "trials.parquet")))
    seen["after_stop"] = command("status", name, "--storage", str(storage))
    resumed = cli("resume", name, "--storage", str(storage), "--no-dashboard", timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    seen["final"] = command("status", name, "--storage", str(storage))
    return storage, name, seen


@pytest.mark.ray
def test_stop_then_resume_runs_every_trial_once(stopped_and_resumed):
    storage, name, seen = stopped_and_resumed
    print("\n".join(f"--- {k}\n{v}" for k, v in seen.items()))
    # while running: status shows it running, of the budget, with a time left
    line = next(ln for ln in seen["status"].splitlines() if ln.startswith(name))
    assert " running " in line and f" {TRIALS} " in line, seen["status"]
    assert re.search(r"\d+m\d\ds\s*$", line), line  # remaining time
    assert re.search(r"\[ ?\d+/12\] ", seen["logs"]), seen["logs"]
    assert f"run_study.py resume {name}" in seen["stop"]
    assert 2 <= int(seen["stopped_rows"]) < TRIALS, "stop came after the study ended"
    assert re.search(rf"^{name}\s+interrupted\s", seen["after_stop"], re.M), seen["after_stop"]
    # after resume: every trial once, the study ended, the journal matches the Parquet
    trials = read_table(storage / name / "trials.parquet")
    assert len(trials) == TRIALS and trials["trial_id"].is_unique
    assert re.search(
        rf"^{name}\s+ended\s+{(trials['status'] == 'completed').sum()}\s", seen["final"], re.M
    )
    journal = journal_trials(journal_path(storage / name), optuna_study_name(name, 1))
    ids = [t.user_attrs[TUNE_TRIAL_ATTR] for t in journal]
    assert len(ids) == len(set(ids)) == TRIALS and set(ids) == set(trials["trial_id"])
    assert read_driver(storage / name)["state"] == "ended"
    assert (storage / name / DRIVER).is_file()


@pytest.mark.ray
def test_optuna_dashboard_lists_the_12_trials(stopped_and_resumed, chromium):  # noqa: F811
    """`run_study.py dashboard NAME` on 127.0.0.1, its port printed; Chromium lists 12 trials."""
    storage, name, _ = stopped_and_resumed
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "run_study.py"), "dashboard", name, "--storage", str(storage)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        first = server.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/dashboard", first)
        assert match, first + server.stdout.read(2000)
        port = int(match.group(1))
        page = chromium.page(1400, 1000)
        page.goto(f"http://127.0.0.1:{port}/dashboard")
        page.get_by_text(f"{name}/seed-1").first.wait_for(timeout=30000)
        page.goto(f"http://127.0.0.1:{port}/dashboard/studies/0/trials")
        page.get_by_text(f"{TRIALS} Trials").wait_for(timeout=30000)
        text = page.locator("body").inner_text()
        listed = set(re.findall(r"^Trial (\d+)$", text, re.M))
        assert listed == {str(i) for i in range(TRIALS)}, text[:2000]
        assert "tune_trial_id" in text  # the user attr ties each to its Tune trial
        page.close()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# -- the commands without Ray: help, bad input, status from files ----------------------------


@pytest.mark.parametrize("name", ["dashboard", "status", "stop", "logs"])
def test_watch_commands_have_help(name, capsys):
    from run_study import main

    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0 and "--storage" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["dashboard", "stop", "logs"])
def test_watch_commands_refuse_a_missing_study_in_one_line(name, tmp_path, capsys):
    from run_study import main

    argv = [name, "nope", "--storage", str(tmp_path)] + (["--no-follow"] if name == "logs" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and str(tmp_path) in err[0], err


def test_status_from_parquet_and_driver_record(tmp_path):
    import json

    from test_query_report import OBJECTIVES, optimize_trials, write_study

    from results.status import study_progress

    trials = optimize_trials(n=10)
    study_dir = write_study(tmp_path, "synth", trials, OBJECTIVES)
    row = study_progress(study_dir)
    assert row["state"] == "unknown" and row["budget"] is None  # no driver record
    assert (row["completed"], row["failed"], row["stopped"]) == (9, 1, 0)
    done = trials[trials["status"] == "completed"]
    assert row["best val_error"] == done["val_error"].min()
    assert row["best inference_flops"] == done["inference_flops"].min()
    assert row["hypervolume"] > 0
    # a driver that is gone (a pid that no longer runs): interrupted, no time left shown
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    start = trials["finished_at"].min().timestamp() - 60
    record = {"host": __import__("socket").gethostname(), "pid": dead.pid, "state": "running",
              "budget": 16, "started_at": start}  # fmt: skip
    (study_dir / DRIVER).write_text(json.dumps(record))
    row = study_progress(study_dir)
    assert row["state"] == "interrupted" and row["budget"] == 16 and row["remaining"] == "-"
    assert row["elapsed"] == "1m09s"  # first start to the last trial's end (60 s + 9 s)
    # this process as the driver: running, with the time left at the rate since it started
    record.update(pid=os.getpid(), started_at=time.time() - 100, resumed_at=time.time() - 100)
    (study_dir / DRIVER).write_text(json.dumps(record))
    row = study_progress(study_dir)
    assert row["state"] == "running"
    assert row["remaining"] == "1m00s"  # 100 s for 10 trials, 6 to go
