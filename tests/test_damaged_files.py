"""Damaged or missing Parquet, a query that only reads, a strict spec parser, the study lock,
and Ray's notices off the terminal (issue 16). None of these start Ray."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_query_report import OBJECTIVES, optimize_trials, write_study

import run_study
from results.parquet import HISTORY, TRIALS, read_table
from tuner.lock import StudyLock, StudyLockedError, lock_path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "studies" / "default.yaml"


def damage_file(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"this is not parquet\n" * 40)
    elif how == "empty":
        path.write_bytes(b"")


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    write_study(tmp_path, "synth", optimize_trials(), OBJECTIVES)
    return tmp_path


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.out + captured.err
    return lines[0]


COMMANDS = {
    "query": ["query", "synth", "SELECT count(*) FROM trials"],
    "pareto": ["pareto", "synth"],
    "report": ["report", "synth"],
}


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_damaged_trials_is_one_error_line_exit_2(storage, how, command, capsys):
    path = storage / "synth" / TRIALS
    damage_file(path, how)
    code = run_study.main([*COMMANDS[command], "--storage", str(storage)])
    line = one_error_line(capsys)
    assert code == 2
    assert str(path) in line and ("damaged" in line or "empty" in line), line
    assert "restore it from a backup" in line  # what to do


def test_missing_trials_names_the_file(storage, capsys):
    (storage / "synth" / TRIALS).unlink()
    assert run_study.main(["query", "synth", "SELECT 1", "--storage", str(storage)]) == 2
    assert str(storage / "synth" / TRIALS) in one_error_line(capsys)


def test_damaged_history_does_not_block_queries_on_trials(storage, capsys):
    damage_file(storage / "synth" / HISTORY, "truncated")
    sql = "SELECT count(*) AS n FROM trials"
    assert run_study.main(["query", "synth", sql, "--storage", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "24" in out and "(1 rows)" in out
    # the damaged table itself: named, with what to do
    sql = "SELECT count(*) FROM history"
    assert run_study.main(["query", "synth", sql, "--storage", str(storage)]) == 2
    assert str(storage / "synth" / HISTORY) in one_error_line(capsys)


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 1 AS trial_id) TO '{study}/trials.parquet'",
        "COPY trials TO '{study}/other.csv'",
        "CREATE TABLE t AS SELECT 1; SELECT * FROM t",
    ],
)
def test_query_cannot_write(storage, sql, capsys):
    study = storage / "synth"
    before = {p.name: p.read_bytes() for p in study.iterdir()}
    code = run_study.main(["query", "synth", sql.format(study=study), "--storage", str(storage)])
    line = one_error_line(capsys)
    assert code == 2 and "is not allowed" in line and "--out" in line, line
    assert {p.name: p.read_bytes() for p in study.iterdir()} == before
    assert len(read_table(study / TRIALS)) == 24


def test_query_cannot_read_other_files(storage, tmp_path, capsys):
    other = tmp_path / "elsewhere.csv"
    other.write_text("secret\n42\n")
    sneaky = f"{storage}/synth/../synth/../elsewhere.csv"
    for sql in (f"SELECT * FROM read_csv('{other}')", "SELECT * FROM read_csv('/etc/passwd')",
                f"SELECT * FROM read_parquet('{sneaky}')"):  # fmt: skip
        assert run_study.main(["query", "synth", sql, "--storage", str(storage)]) == 2
        line = one_error_line(capsys)
        assert "disabled by configuration" in line, line
    # the study's own files stay readable, and --out writes the result
    out = tmp_path / "out.parquet"
    args = ["query", "synth", "SELECT trial_id FROM trials", "--storage", str(storage)]
    assert run_study.main([*args, "--out", str(out)]) == 0
    assert len(pd.read_parquet(out)) == 24


WRITER = """
import sys, pandas as pd
from results.parquet import write_table_atomic
path = sys.argv[1]
n = 1
while True:
    write_table_atomic(pd.DataFrame({"i": range(n * 2000), "x": [float(n)] * (n * 2000)}), path)
    print(n, flush=True)
    n += 1
"""


def test_driver_killed_mid_write_leaves_the_previous_complete_file(tmp_path):
    """SIGKILL a process that rewrites a Parquet file in a loop, at several moments: the file
    is always a complete one of the versions written, never a part of one."""
    path = tmp_path / "trials.parquet"
    for delay in (0.9, 1.3, 1.7):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        written = [int(proc.stdout.readline())]  # one complete version exists
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        written += [int(line) for line in proc.stdout.read().split()]
        table = pq.read_table(path)  # a complete, readable file
        n = int(table.column("x")[0].as_py())
        assert table.num_rows == n * 2000 and n >= written[0]
        assert n in written or n == written[-1] + 1  # the last rename may beat the print


# -- resume on a damaged study: refused before Ray starts ------------------------------------


def spec_folder(storage: Path, name: str = "paused") -> Path:
    """A study folder with its spec.yaml, as `run` leaves it before resume."""
    from tuner.spec import load_spec

    spec = load_spec(DEFAULT, [f"storage={storage}", f"name={name}", "trials=4"])
    study_dir = storage / name
    study_dir.mkdir(parents=True)
    (study_dir / "spec.yaml").write_text(spec.source)
    return study_dir


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_resume_of_a_damaged_study_refused_before_ray(tmp_path, how, capsys):
    import ray

    study_dir = spec_folder(tmp_path)
    write_study(tmp_path, "paused", optimize_trials(), OBJECTIVES)
    damage_file(study_dir / TRIALS, how)
    was_running = ray.is_initialized()
    code = run_study.main(["resume", "paused", "--storage", str(tmp_path), "--no-dashboard"])
    line = one_error_line(capsys)
    assert code == 2 and str(study_dir / TRIALS) in line, line
    assert ray.is_initialized() == was_running  # before Ray
    assert not Path(lock_path(str(tmp_path), "paused")).exists()


# -- the spec parser is strict --------------------------------------------------------------


def test_duplicate_key_names_the_key_and_line(tmp_path, capsys):
    spec = tmp_path / "dup.yaml"
    spec.write_text(DEFAULT.read_text() + "trials: 99\n")
    first = 1 + DEFAULT.read_text().splitlines().index(
        next(ln for ln in DEFAULT.read_text().splitlines() if ln.startswith("trials:"))
    )
    last = len(spec.read_text().splitlines())
    assert run_study.main(["run", str(spec), "--set", f"storage={tmp_path}/runs"]) == 2
    line = one_error_line(capsys)
    assert line == (
        f"error: {spec}: duplicate key 'trials' at line {last} (first at line {first}); "
        "keep one of them"
    )
    assert not (tmp_path / "runs").exists()


def test_exponent_numbers_are_numbers():
    from tuner.spec import load_spec

    spec = load_spec(DEFAULT, ["fixed.epochs=1e3", "trials=1e1", "fixed.lr=1e-3"])
    assert spec.fixed["epochs"] == 1000 and isinstance(spec.fixed["epochs"], int)
    assert spec.trials == 10
    assert spec.fixed["lr"] == pytest.approx(1e-3)
    assert run_study.parse_assignments(["epochs=2e0"]) == {"epochs": 2}


def test_custom_trainable_that_raises_on_import_is_one_line(tmp_path, capsys):
    module = tmp_path / "broken.py"
    module.write_text("raise RuntimeError('no GPU driver found')\ndef train(config):\n    pass\n")
    args = ["run", str(ROOT / "studies" / "custom.yaml"), "--set", f"trainable={module}:train",
            "--set", f"storage={tmp_path}/runs"]  # fmt: skip
    assert run_study.main(args) == 2
    line = one_error_line(capsys)
    assert str(module) in line and "RuntimeError: no GPU driver found" in line, line


def test_timeouts_are_checked():
    from tuner.spec import SpecError, load_spec

    spec = load_spec(DEFAULT, ["trial_timeout_s=30", "study_timeout_s=1e3"])
    assert (spec.trial_timeout_s, spec.study_timeout_s) == (30.0, 1000.0)
    with pytest.raises(SpecError, match=r"trial_timeout_s=-1: expected seconds > 0"):
        load_spec(DEFAULT, ["trial_timeout_s=-1"])


# -- the study lock -------------------------------------------------------------------------


def test_lock_refuses_a_live_driver_and_takes_over_a_dead_ones(tmp_path):
    held = StudyLock(str(tmp_path), "s").acquire()
    with pytest.raises(StudyLockedError) as refused:
        StudyLock(str(tmp_path), "s").acquire()
    message = str(refused.value)
    assert f"driver pid {os.getpid()} on host {socket.gethostname()}" in message
    assert lock_path(str(tmp_path), "s") in message
    held.release()
    assert not Path(lock_path(str(tmp_path), "s")).exists()

    # a driver that is gone (its pid no longer runs) left its lock: stale, taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"host": socket.gethostname(), "pid": dead.pid, "started": "earlier"}
    Path(lock_path(str(tmp_path), "s")).write_text(json.dumps(record))
    lock = StudyLock(str(tmp_path), "s").acquire()
    assert json.loads(Path(lock.path).read_text())["pid"] == os.getpid()
    lock.release()

    # another host's lock is never taken over from here: the message says what to delete
    record = {"host": "other-host", "pid": os.getpid(), "started": "earlier"}
    Path(lock_path(str(tmp_path), "s")).write_text(json.dumps(record))
    with pytest.raises(StudyLockedError, match="on host other-host.*delete"):
        StudyLock(str(tmp_path), "s").check_free()


# -- quiet by default -----------------------------------------------------------------------


@pytest.mark.parametrize("verbose", [False, True])
def test_tune_and_ray_notices_go_to_the_study_log(tmp_path, verbose):
    from tuner.quiet import RayLogRouting

    terminal = io.StringIO()
    ray_logger = logging.getLogger("ray")
    shown = logging.StreamHandler(terminal)
    ray_logger.addHandler(shown)
    notice = "Experiment state snapshotting has been triggered multiple times in the last 5 s"
    try:
        with RayLogRouting(verbose) as routing:
            logging.getLogger("ray.tune.execution.experiment_state").warning(notice)
            routing.attach(tmp_path / "driver.log")
            logging.getLogger("ray._private.authentication.authentication_token_setup").warning(
                "Token authentication is enabled for this Ray cluster."
            )
            logging.getLogger("ray.tune.tune").warning("something else from Tune")
    finally:
        ray_logger.removeHandler(shown)
    log = (tmp_path / "driver.log").read_text()
    assert notice in log and "Token authentication is enabled" in log
    assert "something else from Tune" in terminal.getvalue()
    assert (notice in terminal.getvalue()) == verbose
    assert ("Token authentication" in terminal.getvalue()) == verbose


# -- --overwrite of a finished study is atomic ----------------------------------------------


def test_overwrite_puts_the_old_study_back_when_the_new_never_starts(tmp_path):
    from tuner.study import ReplacedStudy

    study = write_study(tmp_path, "old", optimize_trials(), OBJECTIVES)
    before = {p.name: p.read_bytes() for p in study.iterdir()}
    replaced = ReplacedStudy()
    replaced.move_aside(study)
    assert not study.exists() and replaced.aside.is_dir() and replaced.aside.name.startswith(".")
    study.mkdir()
    (study / "spec.yaml").write_text("the new one, stopped before its first trial")
    replaced.settle()
    assert {p.name: p.read_bytes() for p in study.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["old"]

    replaced = ReplacedStudy()  # this time the new study starts: the old one goes
    replaced.move_aside(study)
    study.mkdir()
    replaced.new_study_started()
    replaced.settle()
    assert [p.name for p in tmp_path.iterdir()] == ["old"] and not list(study.iterdir())


def test_a_trainable_that_is_not_a_function_is_refused(tmp_path, capsys):
    module = tmp_path / "notfn.py"
    module.write_text("train = 42\n")
    args = ["run", str(ROOT / "studies" / "custom.yaml"), "--set", f"trainable={module}:train",
            "--set", f"storage={tmp_path}/runs"]  # fmt: skip
    assert run_study.main(args) == 2
    line = one_error_line(capsys)
    assert line == (
        f"error: trainable='{module}:train': train is not a function (it is 42); "
        "write `def train(config): ... ray.tune.report(metrics)`"
    )


def test_a_second_signal_releases_the_lock_before_it_exits(tmp_path):
    """The second SIGINT exits at once (os._exit), after the actions registered for it."""
    code = f"""
import os, signal, time
from tuner.interrupt import Interrupts
from tuner.lock import StudyLock
with Interrupts() as interrupts:
    lock = StudyLock({str(tmp_path)!r}, "s").acquire()
    interrupts.before_exit(lock.release)
    print("ready", flush=True)
    time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "ready"
    assert Path(lock_path(str(tmp_path), "s")).exists()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    err = proc.stderr.read()
    assert "interrupted again (SIGINT): exiting now" in err and "Traceback" not in err
    assert not Path(lock_path(str(tmp_path), "s")).exists()
