"""Clusters: cluster.yaml through Ray's own validation, and a real 2-node Ray on loopback
running a study submitted as a Ray Job, with its metrics and the dashboard's token check."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import jsonschema
import pytest
import yaml
from ports import free_port

from results.parquet import read_table

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
CLUSTER_FILES = ["cluster.yaml", "cluster-gcp.yaml"]


# -- cluster.yaml ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_cluster_yaml_passes_rays_validation(name):
    """The wheel's schema, then prepare_config (defaults merged) and validate_config: offline."""
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / name).read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)

    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert "GPU" not in head["resources"] and head["max_workers"] == 0
    gpu = [t for n, t in types.items() if t["resources"].get("GPU")]
    assert gpu and all(t["min_workers"] < t["max_workers"] for t in gpu)  # autoscaling
    # the token reaches every node, and every node starts Ray with token auth
    assert any(remote.endswith(".ray/auth_token") for remote in prepared["file_mounts"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(prepared[key])
        assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_TOKEN_PATH" in start
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start  # loopback: `ray dashboard` tunnels it
    assert any("uv sync --frozen" in c for c in prepared["setup_commands"])
    scheme = "s3://" if prepared["provider"]["type"] == "aws" else "gs://"
    assert f"storage={scheme}" in (ROOT / name).read_text()


def test_validation_catches_a_broken_config():
    """The same check fails on a config Ray would refuse (so the test above means something)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["available_node_types"]["gpu_worker"]["resources"] = "GPU=1"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


# -- a real 2-node cluster -------------------------------------------------------------------


def processes_marked(marker: str) -> list[int]:
    """Pids whose environment holds SPARSETUNE_TEST_CLUSTER=<marker>: ours, and only ours."""
    needle = f"SPARSETUNE_TEST_CLUSTER={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
    return pids


class Cluster:
    """A head on 127.0.0.1 and a worker node on 127.0.0.2 (loopback too, so the Parquet's node
    column tells them apart), token auth on, every port our own, a temp dir of our own."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.marker = uuid.uuid4().hex
        self.token = uuid.uuid4().hex
        token_path = tmp / "auth_token"
        token_path.write_text(self.token)
        token_path.chmod(0o600)
        home = tmp / "home"  # not this machine's ~/.ray
        home.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(
            HOME=str(home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path),
            SPARSETUNE_TEST_CLUSTER=self.marker, RAY_USAGE_STATS_ENABLED="0",
            RAY_metrics_report_interval_ms="1000",  # metrics reach the endpoint within ~1 s
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        )  # fmt: skip
        self.gcs_port, self.dashboard_port, self.metrics_port = (
            free_port(),
            free_port(),
            free_port(),
        )
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.metrics = f"http://127.0.0.1:{self.metrics_port}/metrics"
        # Ray's socket paths must stay under 107 bytes: short folders of our own, one per node
        # (a shared one would let one node's runtime-env cleanup delete the other's files)
        self.temp_dirs: list[str] = []
        self.nodes: list[subprocess.Popen] = []

    def _start(self, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.tmp / f"node-{len(self.nodes)}.log").open("w")
        self.temp_dirs.append(tempfile.mkdtemp(prefix="st-cl-", dir="/tmp"))
        cmd = [
            RAY, "start", "--block", "--num-cpus=1", "--disable-usage-stats",
            f"--temp-dir={self.temp_dirs[-1]}", f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}", *args,
        ]  # fmt: skip
        node = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.nodes.append(node)
        return node

    def start(self) -> None:
        # The head: loopback only (Ray's switch keeps 127.0.0.1 rather than the routable IP).
        head_env = {**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        self._start(
            ["--head", "--node-ip-address=127.0.0.1", f"--port={self.gcs_port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
             f"--metrics-export-port={self.metrics_port}",
             f"--ray-client-server-port={free_port()}"],
            head_env,
        )  # fmt: skip
        self.wait_for(
            lambda: http_status(f"{self.dashboard}/api/version", self.token) == 200, "dashboard"
        )
        # The worker: multi-node on, joining by an address Ray doesn't rewrite to the host's IP
        self._start(
            [f"--address=[::ffff:127.0.0.1]:{self.gcs_port}", "--node-ip-address=127.0.0.2",
             f"--metrics-export-port={free_port()}"],
            {**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"},
        )  # fmt: skip
        self.wait_for(lambda: self.alive_nodes() == 2, "two alive nodes")

    def alive_nodes(self) -> int:
        code, body = http_get(f"{self.dashboard}/nodes?view=summary", self.token)
        if code != 200:
            return 0
        summary = json.loads(body)["data"]["summary"]
        return sum(1 for n in summary if n.get("raylet", {}).get("state") == "ALIVE")

    def wait_for(self, check, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, node in enumerate(self.nodes):
                assert node.poll() is None, (self.tmp / f"node-{i}.log").read_text()[-3000:]
            with contextlib.suppress(OSError, ValueError, KeyError):
                if check():
                    return
            time.sleep(0.5)
        raise TimeoutError(f"no {what} after {timeout}s")

    def stop(self) -> list[int]:
        """SIGKILL each node's process group, then anything else carrying our marker (a worker
        that left the group). Nothing else on the machine is touched. Returns what's left."""
        for node in reversed(self.nodes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        for _ in range(20):
            left = processes_marked(self.marker)
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.25)
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)
        return processes_marked(self.marker)


def http_get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def http_status(url: str, token: str | None = None) -> int:
    return http_get(url, token)[0]


def study_metrics(text: str, study: str) -> dict[str, float]:
    """The `ray_sparsetune_*` samples tagged study=<study>, from Prometheus text."""
    values = {}
    for line in text.splitlines():
        match = re.match(r"(ray_sparsetune_\w+)\{([^}]*)\}\s+(\S+)", line)
        if match and f'study="{study}"' in match.group(2):
            objective = re.search(r'objective="(\w+)"', match.group(2))  # one per objective
            key = f"{match.group(1)}/{objective.group(1)}" if objective else match.group(1)
            values[key] = float(match.group(3))
    return values


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        left = cluster.stop()
        assert not left, f"processes of the test cluster still alive: {left}"


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_study.py"), *args],
        env=cluster.env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def submit_and_wait(cluster: Cluster, spec: str, *sets: str, on_poll=None) -> tuple[str, str]:
    """`run_study.py submit` a study to the cluster with these `--set`s, then poll the Jobs API
    (calling `on_poll()` each second) until it ends; returns (job id, submit's stdout) of a
    job that SUCCEEDED."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    args = [arg for value in sets for arg in ("--set", value)]
    submitted = cli(
        cluster, "submit", spec, "--address", cluster.dashboard, "--python", sys.executable, *args
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = re.search(r"as Ray Job (\S+)", submitted.stdout).group(1)
    client = JobSubmissionClient(
        cluster.dashboard, headers={"Authorization": f"Bearer {cluster.token}"}
    )
    ended = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)
    deadline = time.monotonic() + 240
    status = client.get_job_status(job_id)
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if on_poll is not None:
            on_poll()
        if status in ended:
            break
        time.sleep(1)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job_id)[-4000:]
    return job_id, submitted.stdout


@pytest.mark.ray
def test_study_as_ray_job_on_two_nodes(cluster, tmp_path):
    """`run_study.py submit` on a 2-node cluster: SUCCEEDED through the Jobs API, trials on
    both nodes in trials.parquet, the study's metrics on the head's metrics endpoint,
    `status` listing it, and the dashboard refusing a request without the token."""
    # the dashboard's HTTP API: no token is refused, a wrong one too, the right one accepted
    assert http_status(f"{cluster.dashboard}/api/jobs/") == 401
    assert http_status(f"{cluster.dashboard}/api/jobs/", "not-the-token") == 403
    assert http_status(f"{cluster.dashboard}/api/jobs/", cluster.token) == 200

    storage, name = tmp_path / "runs", "cluster-tiny"
    seen: dict[str, float] = {}

    def scrape() -> None:  # the head's Prometheus endpoint, while the job runs
        code, text = http_get(cluster.metrics)
        if code == 200:
            seen.update(study_metrics(text, name))

    job_id, stdout = submit_and_wait(
        cluster, "studies/default.yaml", f"name={name}", f"storage={storage}", "trials=6",
        "fixed.epochs=100", "search.population_size=4", "max_concurrent=2", "resources.cpu=1",
        on_poll=scrape,
    )  # fmt: skip
    print(stdout)
    assert f"ray job logs --follow --address {cluster.dashboard} {job_id}" in stdout

    trials = read_table(storage / name / "trials.parquet")
    print(trials[["trial_id", "status", "node", "val_error"]], json.dumps(seen, indent=1))
    # every trial ran to its end (100 epochs at a high sampled lr may diverge: a finished trial
    # too, that Optuna is told failed)
    assert len(trials) == 6 and trials["status"].isin(["completed", "diverged"]).all()
    diverged = int((trials["status"] == "diverged").sum())
    # Both nodes ran trials: each node has 1 CPU and two 1-CPU trials run at a time. (With
    # trials much shorter than a worker's start-up, about 12 s here, the first actor up would
    # run them all: Tune hands a pending trial to an idle reused actor; hence 100 epochs.)
    assert set(trials["node"]) == {"127.0.0.1", "127.0.0.2"}, trials[["trial_id", "node"]]

    # after the job: one more scrape (a gauge's last value stays exported for a while)
    for _ in range(10):
        if seen.get("ray_sparsetune_trials_finished_total", 0) >= 6:
            break
        code, text = http_get(cluster.metrics)
        seen.update(study_metrics(text, name) if code == 200 else {})
        time.sleep(1)
    print(json.dumps(seen, indent=1))
    assert seen.get("ray_sparsetune_trials_finished_total") == 6
    assert seen.get("ray_sparsetune_trials_failed_total", 0) == diverged
    best = trials["val_error"].min()
    assert seen["ray_sparsetune_best_objective/val_error"] == pytest.approx(best, rel=1e-6)
    done = trials[trials["status"] == "completed"]
    assert seen["ray_sparsetune_best_objective/inference_flops"] == pytest.approx(
        done["inference_flops"].min(), rel=1e-6
    )
    assert seen["ray_sparsetune_hypervolume"] > 0
    assert seen["ray_sparsetune_trials_per_minute"] > 0

    status_out = cli(cluster, "status", "--address", cluster.dashboard)
    assert status_out.returncode == 0, status_out.stderr
    print(status_out.stdout)
    line = next(ln for ln in status_out.stdout.splitlines() if job_id in ln)
    assert name in line and "SUCCEEDED" in line
    # its progress from the Parquet (the storage is readable here): all 6 of a budget of 6
    counts = re.search(r"successfully\.\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s", line)
    assert counts, status_out.stdout
    completed_n, failed_n, stopped_n, budget = map(int, counts.groups())
    assert (completed_n + failed_n, stopped_n, budget) == (6, 0, 6), line

    # `logs JOB` follows the job's output to its end (here: already ended, so it returns)
    logs = cli(cluster, "logs", job_id, "--address", cluster.dashboard)
    assert logs.returncode == 0, logs.stderr
    assert "[6/6]" in logs.stdout and f"study {name!r}" in logs.stdout, logs.stdout[-2000:]

    # the CLI without the token: refused with a message, not a traceback
    no_token = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    refused = subprocess.run(
        [sys.executable, str(ROOT / "run_study.py"), "status", "--address", cluster.dashboard],
        env=no_token, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2 and job_id not in refused.stdout
    assert "token" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr


@pytest.mark.ray
def test_moasha_study_as_ray_job_on_two_nodes(cluster, tmp_path):
    """MO-ASHA on the 2-node cluster, as a Ray Job: stopped trials in trials.parquet with
    their history, each stopped by a STOP decision at its rung, the rung records written
    through to the study folder from the job's driver, the completed ones at the budget."""
    from test_moasha_e2e import check_stopped_trials, decisions

    storage, name = tmp_path / "runs", "cluster-moasha"
    submit_and_wait(
        cluster, "studies/moasha.yaml", f"name={name}", f"storage={storage}", "trials=8",
        "fixed.epochs=9", "scheduler.max_t=9", "scheduler.grace_period=1",
        "search.population_size=4", "max_concurrent=2", "resources.cpu=1",
    )  # fmt: skip
    study_dir = storage / name
    trials = read_table(study_dir / "trials.parquet")
    print(trials[["trial_id", "status", "node", "epoch", "val_error"]])
    assert len(trials) == 8 and set(trials["status"]) <= {"completed", "stopped", "diverged"}
    assert (trials["status"] == "stopped").sum() >= 2, trials["status"].value_counts()
    check_stopped_trials(study_dir, trials, rungs=[1, 3], budget=9)
    assert decisions(study_dir) and list(study_dir.glob("search-seed-*/scheduler-state.json"))


# -- storage on a URI ------------------------------------------------------------------------


@pytest.mark.ray
def test_study_on_uri_storage(local_ray, tmp_path, monkeypatch):
    """storage: a URI (file:// here; s3:// and gs:// take the same path through pyarrow.fs):
    Tune writes its experiment there, the Parquet lands there too, readable by pandas."""
    import pandas as pd

    from tuner.spec import load_spec
    from tuner.study import run_study

    remote = tmp_path / "bucket"
    sets = [f"storage=file://{remote}", "name=uri-tiny", "trials=2", "fixed.epochs=1",
            "search.population_size=2", "max_concurrent=2"]  # fmt: skip
    result = run_study(load_spec(ROOT / "studies" / "default.yaml", sets), dashboard=False)
    assert not str(result.study_dir).startswith(str(remote))  # staged locally
    trials = pd.read_parquet(f"file://{remote}/uri-tiny/trials.parquet")
    assert len(trials) == 2 and set(trials["trial_id"]) == set(result.trials["trial_id"])
    assert (remote / "uri-tiny" / "pareto.parquet").is_file()
    assert (remote / "uri-tiny" / "spec.yaml").is_file()
    assert list((remote / "uri-tiny").glob("search-*/experiment_state-*.json"))  # Tune's own

    from trainables.config import ConfigError

    with pytest.raises(ConfigError, match="already holds a study"):
        run_study(load_spec(ROOT / "studies" / "default.yaml", sets), dashboard=False)

    # read from anywhere: the results commands take the URI as --storage
    monkeypatch.setenv("SPARSETUNE_CACHE", str(tmp_path / "cache"))
    queried = subprocess.run(
        [sys.executable, str(ROOT / "run_study.py"), "query", "uri-tiny",
         "SELECT count(*) AS n FROM trials", "--storage", f"file://{remote}"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert queried.returncode == 0, queried.stderr
    assert re.search(r"^\s*2\s*$", queried.stdout, re.M), queried.stdout

    # resume from the URI alone (the staging folder gone, as on another machine): Tune's state
    # comes from the URI, the finished trials are not run again
    from tuner.study import load_study_spec

    shutil.rmtree(result.study_dir.parent)
    resumed = run_study(load_study_spec("uri-tiny", f"file://{remote}"), resume=True,
                        dashboard=False)  # fmt: skip
    assert sorted(resumed.trials["trial_id"]) == sorted(result.trials["trial_id"])
    assert len(pd.read_parquet(f"file://{remote}/uri-tiny/trials.parquet")) == 2
