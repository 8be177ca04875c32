"""A study's life from the command line: its driver record, `stop`, `logs` (no Ray import).

`tuner.callbacks.DriverRecord` (a Tune callback in the driver) keeps ``driver.json`` in the
study folder (host, pid, first start, budget, ended or not; `results.status` reads it), and
`ProgressReporter` appends a line per trial to ``progress.log``. A local study is stopped
by SIGINT to its driver (Tune then saves its experiment state and stops; `resume`
continues); a submitted one through the Jobs API (`stop_job`: SIGTERM to the driver,
SIGKILL a few seconds later). Either way the Parquet stays consistent: every write is
atomic, and `resume` drops rows Tune's state doesn't know.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from contract.columns import PROGRESS_LOG
from contract.errors import ConfigError
from results.status import driver_state, pid_alive, read_driver


def trial_count(study_dir: Path) -> int:
    from results.parquet import TRIALS, read_footer

    path = study_dir / TRIALS
    if not path.exists():
        return 0
    try:
        return read_footer(path).num_rows if path.is_file() else 0
    except OSError:
        return 0


def append_log(study_dir: Path, line: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    with open(Path(study_dir) / PROGRESS_LOG, "a") as log:
        log.write(f"{stamp} {line}\n")


# -- stop ------------------------------------------------------------------------------------


def stop_local(study_dir: Path, timeout: float = 120.0) -> str:
    """SIGINT the study's running driver and wait for it to exit; a one-line outcome."""
    record = read_driver(study_dir)
    state = driver_state(record)
    name = study_dir.name
    if state == "unknown" and record:
        raise ConfigError(
            f"study {name!r} runs on {record.get('host')} (pid {record.get('pid')}), not this "
            "machine: stop it there, or submit/stop it through the cluster (--address)"
        )
    if state != "running":
        raise ConfigError(f"study {name!r} is not running (its driver is {state or 'unknown'})")
    pid = record["pid"]
    os.kill(pid, signal.SIGINT)  # Tune saves its experiment state and stops the trials
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if pid_alive(pid):
        raise ConfigError(
            f"study {name!r}: driver pid {pid} still running {timeout:.0f}s after SIGINT; "
            f"send it another (kill -INT {pid}) or wait"
        )
    return f"stopped study {name!r} (driver pid {pid}); continue it with run_study.py resume {name}"


def stop_job(address: str, job_id: str, timeout: float = 120.0) -> str:
    from tuner.cluster import TERMINAL, client, refused

    jobs = client(address)
    try:
        jobs.stop_job(job_id)
    except Exception as err:  # RuntimeError, AuthenticationError: one line, not a traceback
        raise refused(address, err) from None
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = str(getattr(jobs.get_job_status(job_id), "value", ""))
        if status in TERMINAL:
            break
        time.sleep(1)
    info = jobs.get_job_info(job_id)
    study = (info.metadata or {}).get("sparsetune_study", "")
    storage = (info.metadata or {}).get("storage", "runs")
    again = f"; continue it with run_study.py resume {study} --storage {storage}" if study else ""
    return f"job {job_id}: {status or 'stopping'}{again}"


# -- logs ------------------------------------------------------------------------------------


def follow_local(study_dir: Path, follow: bool = True, poll: float = 0.5) -> None:
    """Print progress.log, then (follow) new lines while the study's driver runs."""
    path = Path(study_dir) / PROGRESS_LOG
    if not path.exists() and not follow:
        raise ConfigError(f"{path} does not exist: the study has not started a driver yet")
    position = 0
    while True:
        if path.exists():
            with open(path) as log:
                log.seek(position)
                chunk = log.read()
                position = log.tell()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
        if not follow or driver_state(read_driver(study_dir)) != "running":
            return
        time.sleep(poll)


def follow_job(address: str, job_id: str, follow: bool = True) -> None:
    """Print a Ray Job's logs; with follow, stream them until the job ends."""
    import asyncio

    from tuner.cluster import client, refused

    jobs = client(address)
    try:
        if not follow:
            sys.stdout.write(jobs.get_job_logs(job_id))
            return

        async def tail():
            async for chunk in jobs.tail_job_logs(job_id):
                sys.stdout.write(chunk)
                sys.stdout.flush()

        asyncio.run(tail())
    except Exception as err:  # RuntimeError, AuthenticationError: one line, not a traceback
        raise refused(address, err) from None
