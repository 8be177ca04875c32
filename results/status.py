"""A study's progress from its folder: what `run_study.py status` prints, without Ray or torch.

Read from ``trials.parquet`` (counts, hypervolume, best value per objective) and from
``driver.json``, which the running driver keeps beside it (``tuner.lifecycle.DriverRecord``):
its host and pid, when the study first started, its trial budget, and whether it ended.
The driver also appends its progress lines to ``progress.log`` (what `logs NAME` follows).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

import pandas as pd

from contract.columns import COMPLETED, DIVERGED, DRIVER, FAILED, STOPPED
from results.parquet import TRIALS, read_table
from results.study import study_objectives

FAILED_STATUSES = (FAILED, DIVERGED)


def read_driver(study_dir: str | Path) -> dict[str, Any]:
    """The driver record ({} when the study never wrote one, or it is unreadable)."""
    path = Path(study_dir) / DRIVER
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_driver(study_dir: str | Path, record: dict[str, Any]) -> None:
    path = Path(study_dir) / DRIVER
    temp = path.with_name(f".{DRIVER}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(record, indent=1))
    temp.replace(path)


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is gone too
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def process_start(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (Linux /proc), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def this_driver() -> dict[str, Any]:
    """Who this driver is, as the study lock and driver.json both record it: host, pid and the
    process's start time (so a reused pid is not taken for the driver)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "process_start": process_start(pid)}


def is_this_driver(record: dict[str, Any]) -> bool:
    return record.get("host") == socket.gethostname() and record.get("pid") == os.getpid()


def driver_gone(record: dict[str, Any]) -> bool | None:
    """Whether the driver a record names has exited: None when it ran on another host (its
    process cannot be seen from here); a dead pid, a zombie, or a pid now held by a process
    started at another time is gone."""
    if record.get("host") != socket.gethostname():
        return None
    pid = record.get("pid")
    if not pid_alive(pid):  # also for a non-int pid and for a zombie
        return True
    recorded, now = record.get("process_start"), process_start(pid)
    return recorded is not None and now is not None and recorded != now


def driver_state(record: dict[str, Any]) -> str:
    """running | ended | interrupted (its driver is gone) | unknown (another host's driver)."""
    if not record:
        return "unknown"
    if record.get("state") in ("ended", "interrupted"):
        return record["state"]
    gone = driver_gone(record)
    return "unknown" if gone is None else "interrupted" if gone else "running"


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def study_progress(study_dir: str | Path, now: float | None = None) -> dict[str, Any]:
    """One row of `status`: state, counts against the budget, hypervolume, best values, times."""
    from results.hypervolume import MAX_EXACT_OBJECTIVES, hypervolume

    study_dir = Path(study_dir)
    now = time.time() if now is None else now
    trials = read_table(study_dir / TRIALS) if (study_dir / TRIALS).exists() else pd.DataFrame()
    record = read_driver(study_dir)
    status = trials["status"] if "status" in trials else pd.Series(dtype=str)
    completed = trials[status == COMPLETED] if len(trials) else trials
    budget = record.get("budget")
    row: dict[str, Any] = {
        "study": study_dir.name,
        "state": driver_state(record),
        "completed": int((status == COMPLETED).sum()),
        "failed": int(status.isin(FAILED_STATUSES).sum()),
        "stopped": int((status == STOPPED).sum()),
        "budget": budget if isinstance(budget, int) else None,
    }
    objectives = study_objectives(study_dir) if (study_dir / TRIALS).exists() else {}
    row["hypervolume"] = None
    if len(completed) and objectives and len(objectives) <= MAX_EXACT_OBJECTIVES:
        row["hypervolume"] = hypervolume(completed, objectives)
    for name, mode in objectives.items():
        values = completed[name].dropna() if name in completed else pd.Series(dtype=float)
        row[f"best {name}"] = (
            (values.min() if mode == "min" else values.max()) if len(values) else None
        )
    started = record.get("started_at")  # none without a driver record: elapsed unknown
    end = now
    if (
        row["state"] != "running"
        and "finished_at" in trials
        and trials["finished_at"].notna().any()
    ):
        end = pd.Timestamp(trials["finished_at"].max()).timestamp()
    elapsed = (end - started) if started else None
    row["elapsed"] = _duration(elapsed)
    done = len(trials)
    remaining = None
    if row["state"] == "running" and row["budget"] and elapsed:
        resumed = record.get("resumed_at") or started
        done_here = done - int(record.get("done_at_resume", 0))
        if done_here > 0:
            remaining = (now - resumed) / done_here * max(row["budget"] - done, 0)
    row["remaining"] = _duration(remaining) if row["state"] == "running" else "-"
    return row


def list_study_dirs(storage: str | Path) -> list[Path]:
    """Study folders under `storage`: those with a trials.parquet or a driver record."""
    root = Path(storage)
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.iterdir() if p.is_dir() and ((p / TRIALS).exists() or (p / DRIVER).exists())
    )
