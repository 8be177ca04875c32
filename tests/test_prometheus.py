"""The study's metrics reach a real Prometheus: Debian's `prometheus`, pointed at the
service-discovery file Ray writes for a local cluster, scrapes a running study, and the
`sparsetune` series with the study's tag come back through Prometheus's HTTP query API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from ports import free_port

ROOT = Path(__file__).resolve().parents[1]
SD_FILE = "prom_metrics_service_discovery.json"  # Ray 2.60: in the session dir


def query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
    except OSError:
        return []
    return body.get("data", {}).get("result", []) if body.get("status") == "success" else []


def stop(process: subprocess.Popen) -> None:
    """End a process we started, and its process group (its own session)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.ray
def test_study_metrics_in_a_real_prometheus(tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("needs Debian's prometheus (.ci/system-packages.sh installs it)")
    # Ray's temp dir of our own (short: Ray's unix sockets live under it), so the
    # service-discovery file is this cluster's, not another Ray's on the machine.
    ray_tmp = Path(tempfile.mkdtemp(prefix="st-", dir="/tmp"))
    name = "prom-tiny"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_TMPDIR=str(ray_tmp), RAY_metrics_report_interval_ms="1000",
               RAY_USAGE_STATS_ENABLED="0")  # fmt: skip
    cmd = [sys.executable, str(ROOT / "run_study.py"), "run", str(ROOT / "studies/default.yaml")]
    for assignment in (f"storage={tmp_path}", f"name={name}", "trials=8", "fixed.epochs=10",
                       "search.population_size=4", "max_concurrent=2"):  # fmt: skip
        cmd += ["--set", assignment]  # with Ray's dashboard: it writes the discovery file
    log = tmp_path / "driver.log"
    driver = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    prometheus = None
    try:
        deadline = time.monotonic() + 240
        discovery = None
        while time.monotonic() < deadline and driver.poll() is None and discovery is None:
            found = list(ray_tmp.glob(f"ray/session_*/{SD_FILE}"))
            discovery = found[0] if found else None
            time.sleep(0.5)
        assert discovery, "Ray wrote no service-discovery file:\n" + log.read_text()[-3000:]
        targets = json.loads(discovery.read_text())
        assert any(t["targets"] for t in targets), targets

        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: ray\n"
            f"    file_sd_configs: [{{files: ['{discovery}'], refresh_interval: 5s}}]\n"
        )
        prometheus = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=(tmp_path / "prometheus.log").open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        finished = []
        while time.monotonic() < deadline and driver.poll() is None:
            finished = query(port, f'ray_sparsetune_trials_finished_total{{study="{name}"}}')
            if finished and float(finished[0]["value"][1]) >= 2:
                break
            time.sleep(1)
        best = query(port, f'ray_sparsetune_best_objective{{study="{name}"}}')
        rate = query(port, f'ray_sparsetune_trials_per_minute{{study="{name}"}}')
        hv = query(port, f'ray_sparsetune_hypervolume{{study="{name}"}}')
        print(json.dumps({"finished": finished, "best": best, "hypervolume": hv}, indent=1))
        assert finished, (
            "no ray_sparsetune_trials_finished_total for the study in Prometheus:\n"
            + (tmp_path / "prometheus.log").read_text()[-2000:]
            + log.read_text()[-2000:]
        )
        assert float(finished[0]["value"][1]) >= 1
        assert {s["metric"]["objective"] for s in best} == {
            "val_error", "train_flops", "inference_flops"
        }  # fmt: skip
        assert rate and float(rate[0]["value"][1]) > 0
        assert hv and float(hv[0]["value"][1]) > 0
        assert driver.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if prometheus is not None:
            stop(prometheus)
        stop(driver)  # the driver and the Ray it started (same session)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_grafana_dashboard_queries_the_metrics_the_study_publishes():
    """docs/grafana/sparsetune.json: valid JSON, each panel's PromQL names only metrics that
    StudyMetrics publishes, and every one of them is on some panel, filtered by $study."""
    import re

    from contract.metrics import STUDY_METRICS as METRIC_NAMES
    from contract.metrics import prometheus_name

    dashboard = json.loads((ROOT / "docs" / "grafana" / "sparsetune.json").read_text())
    published = {prometheus_name(key) for key in METRIC_NAMES}
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names = set(re.findall(r"\bray_sparsetune_\w+", target["expr"]))
            assert names and names <= published, (panel["title"], names - published)
            assert 'study=~"$study"' in target["expr"], target["expr"]
            used |= names
    assert used == published
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        "study" in variables["study"]["definition"]
        and variables["datasource"]["query"] == "prometheus"
    )
