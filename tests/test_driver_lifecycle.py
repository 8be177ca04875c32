"""The driver's life as a user lives it (issue 16): one driver per study, Ctrl-C as a pause,
a moved study that resumes where it is, hangs that end, failures that say why.

Each test starts the command line as real processes in their own process group and sends
real signals to that group, as a terminal does; each stops only the processes it started.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from results.parquet import read_table
from tuner.lock import lock_path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "studies" / "default.yaml"
CLI = [sys.executable, str(ROOT / "run_study.py")]
TINY = ["fixed.epochs=1", "search.population_size=4", "max_concurrent=2", "fixed.width=32"]

pytestmark = pytest.mark.ray


class Driver:
    """One `run_study.py` process in its own process group, its output in a file."""

    def __init__(self, tmp_path: Path, tag: str, args: list[str]):
        self.log = tmp_path / f"{tag}.out"
        self.proc = subprocess.Popen(
            CLI + args, cwd=ROOT, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    @property
    def output(self) -> str:
        return self.log.read_text()

    def signal(self, signum: int) -> None:
        os.killpg(self.proc.pid, signum)  # the whole group, as a terminal's Ctrl-C

    def wait_for(self, text: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.proc.poll() is None, self.output[-3000:]
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.output[-3000:]}"
            time.sleep(0.1)

    def wait_for_ray_start(self, timeout: float = 240) -> None:
        """Until the driver has started Ray's first process (its child, the GCS server)."""
        deadline = time.monotonic() + timeout
        while not children(self.proc.pid, "gcs_server"):
            assert self.proc.poll() is None, self.output[-3000:]
            assert time.monotonic() < deadline, self.output[-3000:]
            time.sleep(0.05)

    def wait(self, timeout: float = 300) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def children(pid: int, command: str) -> list[int]:
    """The child processes of `pid` whose command line holds `command`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                status = (entry / "status").read_text()
                if f"\nPPid:\t{pid}\n" in status and command in (entry / "cmdline").read_text():
                    found.append(int(entry.name))
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def run_args(storage: Path, name: str, *sets: str, spec: Path = DEFAULT) -> list[str]:
    args = ["run", str(spec), "--no-dashboard", "--set", f"storage={storage}", "--set",
            f"name={name}"]  # fmt: skip
    for assignment in sets:
        args += ["--set", assignment]
    return args


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_one_driver_per_study(tmp_path):
    """Two `run`s of one study 1 s apart: one runs, one exits 2 naming the running driver;
    `--overwrite` against the running study exits 2 and deletes nothing; the Parquet holds
    exactly the budget."""
    storage = tmp_path / "runs"
    args = run_args(storage, "twice", "trials=4", *TINY)
    first = Driver(tmp_path, "first", args)
    time.sleep(1)
    second = Driver(tmp_path, "second", args)
    drivers = [first, second]
    try:
        lock = Path(lock_path(str(storage), "twice"))
        deadline = time.monotonic() + 240
        while not (lock.exists() and (storage / "twice" / "spec.yaml").exists()):
            assert time.monotonic() < deadline and (first.proc.poll() is None or
                                                    second.proc.poll() is None)  # fmt: skip
            time.sleep(0.1)
        before = snapshot(storage / "twice")
        overwrite = Driver(tmp_path, "overwrite", [*args, "--overwrite"])
        drivers.append(overwrite)
        assert overwrite.wait(timeout=120) == 2, overwrite.output
        after = snapshot(storage / "twice")
        assert set(before) <= set(after)  # nothing deleted
        assert after["spec.yaml"] == before["spec.yaml"]
        codes = sorted([first.wait(), second.wait()])
    finally:
        for driver in drivers:
            driver.stop()
    assert codes == [0, 2], (first.output[-2000:], second.output[-2000:])
    refused = first if first.proc.returncode == 2 else second
    for out in (refused.output, overwrite.output):
        lines = out.strip().splitlines()
        assert lines[-1].startswith("error: study 'twice' is running: driver pid "), out
        assert "Traceback" not in out
    trials = read_table(storage / "twice" / "trials.parquet")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert not lock.exists()  # released at the end


def test_ctrl_c_pauses_every_seed_and_a_moved_copy_resumes_in_place(tmp_path, capsys):
    """A real SIGINT to the driver's process group in a 2-seed study: exit 130, the
    `interrupted:` line, no second search. The folder copied elsewhere resumes there (every
    trial once, all completed) and the original is not touched. Then, with its trials.parquet
    deleted, `resume` refuses before Ray starts."""
    storage = tmp_path / "runs"
    args = run_args(storage, "paused", "seeds=[1, 2]", "trials=4", *TINY)
    driver = Driver(tmp_path, "paused", args)
    try:
        driver.wait_for("seed 1 [1/4]")
        driver.signal(signal.SIGINT)
        code = driver.wait()
    finally:
        driver.stop()
    out = driver.output
    done = len(read_table(storage / "paused" / "trials.parquet"))
    assert code == 130, out[-3000:]
    assert out.strip().splitlines()[-1] == (
        f"interrupted: {done} of 8 trials done; continue with run_study.py resume paused "
        f"--storage {storage}"
    )
    assert 1 <= done < 8
    assert "finished" not in out and "search 2/2" not in out and "Traceback" not in out
    # quiet: Tune's restore hint and Ray's token banner are in driver.log, not on the terminal
    assert "Tuner.restore" not in out and "Token authentication is" not in out
    assert "Tuner.restore" in (storage / "paused" / "driver.log").read_text()

    moved = tmp_path / "elsewhere"
    shutil.copytree(storage, moved)
    original = snapshot(storage)
    resumed = subprocess.run(
        CLI + ["resume", "paused", "--storage", str(moved), "--no-dashboard"], cwd=ROOT,
        capture_output=True, text=True, timeout=400, start_new_session=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "finished" in resumed.stdout and "8 completed" in resumed.stdout
    trials = read_table(moved / "paused" / "trials.parquet")
    assert len(trials) == 8 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"completed"}
    assert sorted(trials["search_seed"].value_counts().to_dict().items()) == [(1, 4), (2, 4)]
    assert snapshot(storage) == original  # the original study: not one byte written

    # trials.parquet deleted: `resume` says so (Tune knows 8 finished trials), before Ray
    # starts (checked in a fresh interpreter: this one may hold the suite's shared Ray)
    (moved / "paused" / "trials.parquet").unlink()
    probe = (
        "import sys, run_study\n"
        f"code = run_study.main(['resume', 'paused', '--storage', {str(moved)!r}, "
        "'--no-dashboard'])\n"
        "ray = sys.modules.get('ray')\n"
        "sys.exit(99 if ray is not None and ray.is_initialized() else code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    code, err = done.returncode, done.stderr.strip()
    assert code == 2, (code, err)
    assert err.startswith(
        f"error: {moved / 'paused' / 'trials.parquet'} is missing although 8 trials finished; "
        "restore it from a backup, or rerun the study"
    ), err


def test_ctrl_c_during_ray_start_up(tmp_path):
    """SIGTERM once (to the driver, as `kill PID` sends it) while Ray starts: exit 143,
    nothing written. SIGINT twice (to the process group, as Ctrl-C) while Ray starts: exit
    130 at once, no traceback, and none of its processes left."""
    storage = tmp_path / "runs"
    once = Driver(tmp_path, "once", run_args(storage, "early", "trials=2", *TINY))
    try:
        once.wait_for_ray_start()
        os.kill(once.proc.pid, signal.SIGTERM)
        code = once.wait(timeout=180)
    finally:
        once.stop()
    assert code == 143, once.output[-3000:]
    assert once.output.strip().splitlines()[-1] == (
        "interrupted before the study started: nothing was written"
    )
    assert "Traceback" not in once.output and not (storage / "early").exists()

    twice = Driver(tmp_path, "twice", run_args(storage, "early", "trials=2", *TINY))
    try:
        twice.wait_for_ray_start()
        twice.signal(signal.SIGINT)
        time.sleep(0.5)
        twice.signal(signal.SIGINT)
        code = twice.wait(timeout=60)
        deadline = time.monotonic() + 30  # Ray's processes die with their driver
        while group_alive(twice.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = group_alive(twice.proc.pid)
    finally:
        twice.stop()
    assert code == 130, twice.output[-3000:]
    assert "Traceback" not in twice.output and "interrupted again (SIGINT)" in twice.output
    assert not left, "processes of the driver's group outlived it"


def test_hangs_end_and_failures_say_why(tmp_path):
    """A trainable that sleeps forever ends at trial_timeout_s, one that never reports gets
    that as its error; every trial failed: exit 1 with the most common error, and each
    progress line says why."""
    trainable = tmp_path / "stuck.py"
    trainable.write_text(
        "import time\n"
        "def train(config):\n"
        "    if config['x'] < 0.5:\n"
        "        time.sleep(10**6)  # hangs, never reports\n"
        "    # returns without reporting\n"
    )
    space = tmp_path / "x.yaml"
    space.write_text("parameters:\n  x: {type: float, low: 0.0, high: 1.0}\n")
    storage = tmp_path / "runs"
    args = run_args(
        storage, "stuck", f"trainable={trainable}:train", f"space={space}",
        "objectives={loss: min}", "trials=4", "search.population_size=4", "search.init=null",
        "fixed={}", "max_concurrent=2", "trial_timeout_s=4", spec=ROOT / "studies" / "custom.yaml",
    )  # fmt: skip
    driver = Driver(tmp_path, "stuck", args)
    try:
        code = driver.wait(timeout=300)
    finally:
        driver.stop()
    out = driver.output
    trials = read_table(storage / "stuck" / "trials.parquet")
    assert code == 1, out[-3000:]
    assert len(trials) == 4 and set(trials["status"]) == {"failed"}
    timeout = "trial_timeout_s=4: the trial ran longer than 4 s and was ended"
    never = "the trial never reported a result (its function must call ray.tune.report)"
    for x, error in zip(trials["config/x"], trials["error"], strict=True):
        assert error == (timeout if x < 0.5 else never), (x, error)
    for error in set(trials["error"]):
        assert any("failed" in ln and ln.endswith(error) for ln in out.splitlines()), error
    top = trials["error"].value_counts()
    last = out.strip().splitlines()[-1]
    assert last.startswith("error: every trial of study 'stuck' failed (4 of 4); the most "
                           f"common error ({top.iloc[0]}x): ")  # fmt: skip
    assert "finished" not in out


def test_impossible_resources_refused_before_the_study(local_ray, tmp_path):
    """`resources` no node can give (a GPU here, 1000 CPUs): refused naming `resources` and
    what the cluster has, before anything is written."""
    from trainables.config import ConfigError
    from tuner.spec import load_spec
    from tuner.study import run_study as run

    storage = tmp_path / "runs"
    have = f"{local_ray.cluster_resources()['CPU']:g} cpu, 0 gpu"
    for resources, text in (("gpu=1", "cpu: 1, gpu: 1"), ("cpu=1000", "cpu: 1000, gpu: 0")):
        spec = load_spec(DEFAULT, [f"storage={storage}", "name=big", f"resources.{resources}"])
        with pytest.raises(ConfigError) as refused:
            run(spec, dashboard=False)
        assert str(refused.value).startswith(
            f"resources={{{text}}}: no node of the cluster can run one trial (its nodes have: "
            f"{have}); lower resources.cpu/gpu"
        ), str(refused.value)
        assert not (storage / "big").exists()
        assert not Path(lock_path(str(storage), "big")).exists()


def test_absurd_budget_estimated_and_study_timeout_pauses(tmp_path):
    """`epochs=1e9`: the estimate after the second epoch reads in days or years; study_timeout_s
    pauses the study (resumable), and nothing says finished."""
    storage = tmp_path / "runs"
    args = run_args(storage, "forever", "trials=2", "fixed.epochs=1e9", "study_timeout_s=30",
                    "search.population_size=2", "max_concurrent=2", "fixed.width=32")  # fmt: skip
    driver = Driver(tmp_path, "forever", args)
    try:
        code = driver.wait(timeout=300)
    finally:
        driver.stop()
    out = driver.output
    assert code == 0, out[-3000:]
    estimate = next(line for line in out.splitlines() if "estimate from one epoch" in line)
    # 1e9 epochs of a tiny MLP: hundreds of days or more, never seconds or minutes
    assert re.search(r"a trial of 1e\+09 epochs ~[\d.]+ (days|years),", estimate), estimate
    assert out.strip().splitlines()[-1] == (
        "stopped at study_timeout_s=30: 0 of 2 trials done; continue with run_study.py "
        f"resume forever --storage {storage}"
    )
    assert "finished" not in out


def test_overwrite_keeps_the_old_study_until_the_new_one_starts(local_ray, tmp_path):
    """`--overwrite` of a finished study: until the new study's first trial starts, the old
    folder is kept whole (renamed aside); then it is gone and the folder is the new study."""
    from ray.tune import Callback

    from tuner.spec import load_spec
    from tuner.study import run_study as run

    storage = tmp_path / "runs"
    sets = [f"storage={storage}", "name=again", "trials=2", "search.population_size=2", *TINY]
    old = run(load_spec(DEFAULT, sets), dashboard=False)
    old_ids = set(read_table(old.study_dir / "trials.parquet")["trial_id"])

    seen = {}

    class BeforeTheFirstTrial(Callback):
        def setup(self, **info):
            aside = [p for p in storage.iterdir() if p.name.startswith(".again.replaced-")]
            seen["aside"] = aside and set(read_table(aside[0] / "trials.parquet")["trial_id"])
            seen["folder"] = sorted(p.name for p in (storage / "again").iterdir())

    new = run(load_spec(DEFAULT, sets), overwrite=True, dashboard=False,
              callbacks=[BeforeTheFirstTrial()])  # fmt: skip
    assert seen["aside"] == old_ids  # the old study, whole, while the new one set up
    assert "trials.parquet" not in seen["folder"]
    new_ids = set(read_table(new.study_dir / "trials.parquet")["trial_id"])
    assert len(new_ids) == 2 and not new_ids & old_ids
    assert sorted(p.name for p in storage.iterdir()) == ["again"]  # the old one is gone
