"""Faults survived, bad input refused, nothing lost (issue 9).

The Ray tests start their own processes and stop only those (by process group), never `ray stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from ports import free_port

from results.parquet import read_table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "studies" / "default.yaml"
RAY = str(Path(sys.executable).with_name("ray"))
RUN = [sys.executable, str(ROOT / "run_study.py"), "run", str(DEFAULT)]


def assert_history_contiguous(study_dir: Path, trials) -> None:
    """Every trial once in trials.parquet; its epochs 1..E exactly once in history.parquet."""
    assert trials["trial_id"].is_unique
    history = read_table(study_dir / "history.parquet")
    assert not history.duplicated(["trial_id", "epoch"]).any()
    for trial_id, last_epoch in zip(trials["trial_id"], trials["epoch"], strict=True):
        epochs = sorted(history.loc[history["trial_id"] == trial_id, "epoch"])
        assert epochs == list(range(1, int(last_epoch) + 1)), (trial_id, epochs)


def tune_results(study_dir: Path) -> dict[str, list[dict]]:
    """Tune's own per-trial result.json lines, by trial id."""
    out = {}
    for path in study_dir.glob("search-*/*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines:
            out[lines[0]["trial_id"]] = lines
    return out


def restored_trials(study_dir: Path) -> dict[str, int]:
    """Trials Tune restarted from a checkpoint: trial id -> the first epoch run after restore."""
    restored = {}
    for trial_id, lines in tune_results(study_dir).items():
        after = [r for r in lines if r["iterations_since_restore"] < r["training_iteration"]]
        if after:
            restored[trial_id] = after[0]["training_iteration"] - after[0][
                "iterations_since_restore"
            ] + 1  # fmt: skip
    return restored


# -- a trial's worker dies -------------------------------------------------------------------


@pytest.mark.ray
def test_sigkilled_trial_worker_resumes_from_its_checkpoint(local_ray, tmp_path):
    """SIGKILL a trial's worker (its pid from Ray's actor table) mid-training: Tune restarts it
    from its last checkpoint; every trial once, epochs 1..E exactly once."""
    from tuner.spec import load_spec
    from tuner.study import run_study

    epochs = 8
    spec = load_spec(
        DEFAULT,
        [f"storage={tmp_path}", "name=killed-worker", "trials=3", "search.population_size=4",
         f"fixed.epochs={epochs}", "fixed.batch_size=16", "fixed.width=128", "fixed.depth=2",
         "fixed.method=static", "max_concurrent=1"],
    )  # fmt: skip
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_worker_mid_training():
        # Ray's actor table (from the GCS; the tests' Ray runs without a dashboard) gives the
        # pid of the trial's worker; kill it once a trial has checkpointed epoch 2 or later.
        from ray._private.state import actors

        while not stop.is_set():
            checkpoints = list(tmp_path.glob("killed-worker/search-*/*/checkpoint_00000[1-4]"))
            if checkpoints:
                alive = [
                    a["Pid"] for a in actors().values()
                    if a["State"] == "ALIVE" and "ImplicitFunc" in a["ActorClassName"]
                ]  # fmt: skip
                if alive:
                    os.kill(alive[0], signal.SIGKILL)
                    killed.append(alive[0])
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_worker_mid_training, daemon=True)
    killer.start()
    try:
        # a checkpoint every epoch (these trials are shorter than CHECKPOINT_EVERY_S)
        result = run_study(spec, checkpoint_every_s=0)
    finally:
        stop.set()
        killer.join(timeout=5)
    assert killed, "no trial worker was killed"
    trials = read_table(result.study_dir / "trials.parquet")
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}
    assert (trials["epoch"] == epochs).all()
    assert_history_contiguous(result.study_dir, trials)
    # exactly one trial was restarted, and from a checkpoint (not from epoch 1)
    restored = restored_trials(result.study_dir)
    assert len(restored) == 1, restored
    (first_epoch_after_restore,) = restored.values()
    assert 2 <= first_epoch_after_restore <= epochs


@pytest.mark.parametrize("method", ["dense", "static", "set", "rigl", "swat", "hypersparse"])
def test_checkpoint_resume_is_exact(method, tmp_path):
    """The checkpoint a trial writes (torch.save of the Trainer's state, loaded with
    weights_only=True) resumes training exactly where it was: the next epoch is identical."""
    import torch

    from trainables.train import Trainer
    from tuner.trainable import STATE_FILE

    config = {"dataset": "digits", "method": method, "epochs": 3, "width": 32}
    if method != "dense":
        config["sparsity"] = 0.8
    trainer = Trainer(config)
    trainer.run_epoch()
    torch.save(trainer.state_dict(), tmp_path / STATE_FILE)
    resumed = Trainer(config)
    resumed.load_state_dict(torch.load(tmp_path / STATE_FILE, weights_only=True))
    expected, got = trainer.run_epoch(), resumed.run_epoch()
    for name in ("epoch", "train_loss", "val_accuracy", "train_flops", "nonzero_params"):
        assert got[name] == expected[name], name


# -- divergence, out of memory ---------------------------------------------------------------


def test_nan_loss_stops_within_the_epoch():
    """A loss that turns NaN stops training at once: the same epoch, not after it."""
    from trainables.train import Trainer

    trainer = Trainer({"dataset": "digits", "lr": 1e6, "momentum": 0.9, "epochs": 3,
                       "batch_size": 16, "width": 64})  # fmt: skip
    metrics = trainer.run_epoch()
    assert metrics["diverged"] and metrics["epoch"] == 1 and trainer.finished
    assert trainer.step < trainer.steps_per_epoch  # stopped mid-epoch


OVERSIZED = """
import resource

from tuner.trainable import run_trial


class Space:  # the config arrives resolved
    @staticmethod
    def resolve(config):
        return dict(config)


def train(config):
    # Cap this worker's address space (4 GiB above what it maps now), so an oversized model
    # fails at allocation as on a machine without the memory, instead of filling this one.
    pages = int(open("/proc/self/statm").read().split()[0])
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (pages * resource.getpagesize() + 4 * 2**30, hard))
    run_trial(config, Space())  # the built-in trainable
"""


@pytest.mark.ray
def test_model_too_large_fails_with_reason_and_study_goes_on(local_ray, tmp_path):
    """A model too large for memory fails its trial with the reason in Parquet, without
    retries (its error is its own, not the worker's); the other trials complete."""
    from tuner.spec import load_spec
    from tuner.study import run_study

    trainable = tmp_path / "oversized.py"
    trainable.write_text(OVERSIZED)
    space = tmp_path / "huge.yaml"
    space.write_text(
        "parameters:\n"
        "  width: {type: categorical, choices: [32, 65536]}\n"  # 65536^2 floats: 16 GiB/layer
        "  lr: {type: float, low: 0.01, high: 0.1, log: true}\n"
    )
    spec = load_spec(
        ROOT / "studies" / "custom.yaml",
        [f"storage={tmp_path}", "name=huge", f"trainable={trainable}:train", f"space={space}",
         "objectives={val_error: min, train_flops: min}", "trials=6",
         "search.population_size=4", "search.init=null",
         "fixed={epochs: 1, depth: 3, method: dense, dataset: digits, model: mlp}"],
    )  # fmt: skip
    result = run_study(spec)
    trials = read_table(result.study_dir / "trials.parquet")
    assert len(trials) == 6
    huge = trials["config/width"] == 65536
    assert huge.any() and (~huge).any()
    assert (trials.loc[huge, "status"] == "failed").all()
    assert trials.loc[huge, "error"].str.startswith("out of memory:").all()
    assert trials.loc[huge, "error"].str.contains("can't allocate memory").all()
    assert (trials.loc[~huge, "status"] == "completed").all()
    assert trials.loc[~huge, "error"].isna().all()
    # Tune never saw an exception, so it retried nothing (an error.txt marks a Tune failure)
    assert not list(result.study_dir.glob("search-*/*/error.txt"))


# -- a node dies -----------------------------------------------------------------------------


class TwoNodeCluster:
    """`ray start --head` and `ray start --address` on 127.0.0.1 with token authentication,
    ports of our own, each node a process group of its own (killed by group, never `ray stop`)."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.token = uuid.uuid4().hex
        token_path = tmp_path / "auth_token"
        token_path.write_text(self.token)
        token_path.chmod(0o600)
        home = tmp_path / "home"  # no ~/.ray of this machine's user
        home.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(
            HOME=str(home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path),
            # a dead node is noticed in about 2 s, not Ray's default 15 s or more
            RAY_health_check_period_ms="500", RAY_health_check_failure_threshold="4",
            RAY_health_check_timeout_ms="500",
        )  # fmt: skip
        self.gcs_port = free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.nodes: list[subprocess.Popen] = []
        # Ray's socket paths must stay under 107 bytes: a short folder of our own
        self.temp_dir = tempfile.mkdtemp(prefix="st-ray-", dir="/tmp")

    def start_node(self, head: bool) -> subprocess.Popen:
        cmd = [
            RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
            "--disable-usage-stats", f"--temp-dir={self.temp_dir}",
            f"--metrics-export-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
        ]  # fmt: skip
        if head:
            cmd += ["--head", f"--port={self.gcs_port}", "--include-dashboard=false",
                    f"--ray-client-server-port={free_port()}"]  # fmt: skip
        else:
            cmd += [f"--address={self.address}"]
        log = (self.tmp / f"node-{len(self.nodes)}.log").open("w")
        node = subprocess.Popen(
            cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.nodes.append(node)
        return node

    def wait_for_port(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.nodes[0].poll() is None, (self.tmp / "node-0.log").read_text()[-2000:]
            try:
                socket.create_connection(("127.0.0.1", self.gcs_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("the head node never listened")

    def wait_until_up(self, index: int, timeout: float = 150) -> None:
        """`ray start --block` logs this line once its node has joined the cluster."""
        log = self.tmp / f"node-{index}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.nodes[index].poll() is None, log.read_text()[-2000:]
            if "block forever" in log.read_text():
                return
            time.sleep(0.2)
        raise TimeoutError(f"node {index} never came up")

    def kill(self, node: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGKILL)  # the node's raylet, workers and agents
        node.wait()

    def stop(self) -> None:
        for node in reversed(self.nodes):
            self.kill(node)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def two_nodes(tmp_path):
    cluster = TwoNodeCluster(tmp_path)
    try:
        cluster.start_node(head=True)
        cluster.wait_for_port()
        cluster.start_node(head=False)
        cluster.wait_until_up(1)  # both nodes up before the study: trials go to both
        yield cluster
    finally:
        cluster.stop()


def runs_under(pid: int, ancestor: int) -> bool:
    """Whether process `pid` descends from `ancestor` (a node's `ray start`), via /proc."""
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent's pid
    return False


@pytest.mark.ray
def test_killed_worker_node_study_finishes_on_the_survivor(two_nodes, tmp_path):
    """Kill the worker node (SIGKILL to its process group) while it runs a trial: the trial
    moves to the head node, resumes from its checkpoint, and the study completes every trial.
    Also: a driver without the token is refused, and the token is nowhere in the outputs."""
    storage = tmp_path / "runs"
    trials = 6
    cmd = RUN + ["--address", two_nodes.address, "--no-dashboard"]
    settings = [f"storage={storage}", "name=two-nodes", f"trials={trials}",
                "search.population_size=4", "max_concurrent=2", "fixed.epochs=30",
                "fixed.batch_size=16", "fixed.width=256", "fixed.method=static",
                "fixed.lr=0.05"]  # fmt: skip
    for assignment in settings:
        cmd += ["--set", assignment]

    # the token is missing: one line, exit 2, nothing written
    no_token = {k: v for k, v in two_nodes.env.items() if not k.startswith("RAY_AUTH")}
    refused = subprocess.run(cmd, env=no_token, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.strip().startswith("error: no Ray auth token")
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not storage.exists()

    log = tmp_path / "driver.log"
    driver = subprocess.Popen(
        cmd, env=two_nodes.env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    worker_node = two_nodes.nodes[1]
    killed_trials: set[str] = set()
    seen: set[tuple[int, str]] = set()
    try:
        # wait until a trial on the worker node has checkpointed, then kill that node
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not killed_trials:
            assert driver.poll() is None, log.read_text()[-3000:]
            for trial_id, lines in tune_results(storage / "two-nodes").items():
                last = lines[-1]
                seen.add((last["pid"], last["node_ip"]))
                if runs_under(last["pid"], worker_node.pid) and 2 <= last["epoch"] <= 10:
                    two_nodes.kill(worker_node)
                    killed_trials.add(trial_id)
                    break
            time.sleep(0.1)
        assert killed_trials, ("no trial ran on the worker node", seen, worker_node.pid)
        driver.wait(timeout=240)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    output = log.read_text()
    assert driver.returncode == 0, output[-3000:]
    study_dir = storage / "two-nodes"
    table = read_table(study_dir / "trials.parquet")
    assert len(table) == trials and set(table["status"]) == {"completed"}
    assert_history_contiguous(study_dir, table)
    # the killed trials finished on the survivor: from their checkpoint when they saved one
    # before the kill, else from the start (timing decides); either way each epoch once
    assert killed_trials <= set(table["trial_id"])
    # no secret in the logs, the Parquet (metadata included) or anything else written
    assert two_nodes.token not in output
    for path in study_dir.rglob("*"):
        if path.is_file():
            assert two_nodes.token.encode() not in path.read_bytes(), path


# -- bad input -------------------------------------------------------------------------------

EMPTY_SPACE_FIXED = (
    "fixed={method: dense, sparsity: 0.0, distribution: erk, update_interval: 100, lr: 0.1, "
    "weight_decay: 0.0, depth: 1, width: 32}"
)


def bad_input_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments after `run`, what the one-line error starts with or holds)."""
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("name: broken\ntrials: [8,\n")
    low_high = tmp_path / "low_high.yaml"
    low_high.write_text("parameters:\n  lr: {type: float, low: 0.1, high: 0.01, log: true}\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    spec = [str(DEFAULT)]
    return {
        "malformed YAML": ([str(malformed)], "not valid YAML at line 3, column 1"),
        "unknown key": ([*spec, "--set", "trails=8"], "unknown key 'trails'; did you mean"),
        "wrong type": ([*spec, "--set", "trials=many"], "trials='many': expected a whole"),
        "low > high": ([*spec, "--set", f"space={low_high}"], "low=0.1 is above high=0.01"),
        "unknown dataset": ([*spec, "--set", "dataset=imagenet"], "dataset='imagenet' is not"),
        "unknown model": ([*spec, "--set", "model=gpt"], "model='gpt' is not one of"),
        "unknown method": ([*spec, "--set", "fixed.method=magic"], "method='magic' is not"),
        "unknown objective": (
            [*spec, "--set", "objectives={accuracy: max}"],
            "unknown key 'objectives.accuracy'",
        ),
        "empty search space": ([*spec, "--set", EMPTY_SPACE_FIXED], "the search space is empty"),
        "storage is a file": ([*spec, "--set", f"storage={a_file}/runs"], "is not writable"),
        "storage not writable": ([*spec, "--set", "storage=/proc/sparsetune"], "is not writable"),
    }


CASE_NAMES = [
    "malformed YAML", "unknown key", "wrong type", "low > high", "unknown dataset",
    "unknown model", "unknown method", "unknown objective", "empty search space",
    "storage is a file", "storage not writable",
]  # fmt: skip


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_refused_in_one_line(case, tmp_path, capsys):
    """Through the command line's entry point: exit 2, `error: ...` in one line, nothing
    written (the study folder does not exist), before Ray starts."""
    import ray

    import run_study

    args, expected = bad_input_cases(tmp_path)[case]
    storage = tmp_path / "runs"
    if not any(a.startswith("storage=") for a in args):
        args = [*args, "--set", f"storage={storage}"]
    was_running = ray.is_initialized()
    assert run_study.main(["run", *args, "--no-dashboard"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err, err
    assert len(err.splitlines()) == 1, err
    assert not storage.exists() and not (tmp_path / "a-file").is_dir()
    assert ray.is_initialized() == was_running  # refused before Ray


def test_unreachable_address_refused_before_anything_is_written(tmp_path):
    port = free_port()  # nothing listens there
    proc = subprocess.run(
        RUN + ["--set", f"storage={tmp_path / 'runs'}", "--address", f"127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err == (
        f"error: --address '127.0.0.1:{port}': no Ray cluster answers there (Connection "
        "refused); start one with `ray start --head`, or leave --address out for a local Ray"
    )
    assert not (tmp_path / "runs").exists()


# -- security --------------------------------------------------------------------------------

LOCAL_RAY_PROBE = """
import json, os, re, subprocess
import ray
from ray._raylet import AuthenticationMode, get_authentication_mode
from tuner.spec import load_spec
from tuner.ray_session import init_ray
from tuner.study import provenance

init_ray(dashboard=True)
ray.get(ray.remote(lambda: 1).remote())  # a worker process too
group = os.getpgid(0)  # the Ray this driver started runs in its process group
ours = set()
for line in subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True,
                           text=True).stdout.splitlines():
    pid, pgid = map(int, line.split())
    if pgid == group:
        ours.add(pid)
listening = []
for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
    pids = {int(p) for p in re.findall("pid=([0-9]+)", line)}
    if pids & ours:
        listening.append(line.split()[3])
print(json.dumps({
    "token_mode": get_authentication_mode() == AuthenticationMode.TOKEN,
    "listening": listening,
    "provenance": provenance(load_spec("studies/default.yaml")),
}))
ray.shutdown()
"""


@pytest.mark.ray
def test_local_ray_has_token_auth_and_binds_loopback_only(tmp_path):
    """The local Ray a study starts: token authentication on (a token made for a fresh HOME),
    every listening socket of its processes on 127.0.0.1, no secret in the Parquet metadata."""
    if shutil.which("ss") is None or shutil.which("ps") is None:
        pytest.skip("needs ss (iproute2) and ps to list listening sockets")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    secret = "s3cr3t-" + uuid.uuid4().hex
    env.update(HOME=str(home), SPARSETUNE_PROBE_SECRET=secret)
    proc = subprocess.run(
        [sys.executable, "-c", LOCAL_RAY_PROBE], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=180, start_new_session=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["token_mode"] is True
    token = (home / ".ray" / "auth_token").read_text().strip()  # Ray made one for this HOME
    assert len(token) >= 16
    assert token not in proc.stdout + proc.stderr
    assert report["listening"], "no listening sockets seen"
    hosts = {address.rsplit(":", 1)[0] for address in report["listening"]}
    assert hosts <= {"127.0.0.1", "[::ffff:127.0.0.1]"}, report["listening"]
    metadata = json.dumps(report["provenance"])
    assert token not in metadata and secret not in metadata
    assert str(home) not in metadata  # nothing of the environment in the metadata


@pytest.mark.ray
def test_workers_run_this_interpreter_not_uv_run(local_ray):
    """Under `uv run` (./uvrun pytest), Ray's uv hook would zip the working tree into every
    job and start each worker through `uv run`; the tuner turns it off (seconds per worker)."""

    @local_ray.remote
    def where() -> tuple[str, str]:
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0")[0]
        return Path(parent.decode()).name, os.getcwd()

    parent, cwd = local_ray.get(where.remote())
    assert parent != "uv" and "working_dir_files" not in cwd, (parent, cwd)
