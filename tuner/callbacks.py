"""Tune callbacks that run in the driver: Parquet as trials finish, and a progress line."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from contract.columns import COMPLETED, STOPPED
from results.parquet import HISTORY, TRIALS, read_table, upsert_rows
from results.status import is_this_driver, read_driver, this_driver, write_driver
from search_spaces import SearchSpace
from tuner.lifecycle import append_log, trial_count
from tuner.schedulers import result_epoch
from tuner.searchers import objective_values, stopped_early

# What Tune adds to every result: bookkeeping, not metrics of the trial.
TUNE_RESULT_KEYS = {
    "done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s",
    "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
    "iterations_since_restore", "checkpoint_dir_name", "experiment_tag", "config",
    "should_checkpoint",
}  # fmt: skip


def trial_status(
    result: dict[str, Any] | None, objectives: list[str], errored: bool, budget: int | None = None
) -> str:
    """completed | stopped | diverged | failed, from how the trial ended and what it reported
    last. `stopped`: its objectives are fine but it ended short of `budget` epochs (an early-
    stopping scheduler stopped it; `budget` is None without one)."""
    if errored:
        return "failed"
    if not result:
        return "failed"
    if result.get("diverged"):
        return "diverged"
    values = [result.get(m) for m in objectives]
    if any(v is None or isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        return "failed"
    if objective_values(result, objectives) is None:  # NaN or inf
        return "diverged"
    if stopped_early(result, budget):
        return STOPPED
    return COMPLETED


def error_summary(trial) -> str | None:
    """The last line of the trial's traceback (the exception), for the Parquet `error` column."""
    path = trial.error_file
    if not path or not Path(path).is_file():
        return None
    lines = [ln for ln in Path(path).read_text().strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else None


def failure_reason(trial, objectives: list[str], errored: bool) -> str | None:
    """Why a trial failed, in one line (None when it did not): a timeout, its own error,
    Tune's error, or what its reports lacked (no report at all, a missing objective)."""
    from tuner.timeouts import TIMED_OUT

    result = trial.last_result or {}
    if trial.trial_id in TIMED_OUT:
        return TIMED_OUT[trial.trial_id]
    if trial_status(result, objectives, errored) != "failed":
        return None
    if errored:
        return error_summary(trial) or "the trial's process failed (see its error.txt)"
    if result.get("error") is not None:
        return str(result["error"])
    reported = {k: v for k, v in result.items() if k not in TUNE_RESULT_KEYS}
    if not reported:
        return "the trial never reported a result (its function must call ray.tune.report)"
    missing = [m for m in objectives if m not in result]
    if missing:
        return f"its last report has no {', '.join(missing)} (the study's objectives)"
    bad = [f"{m}={result[m]!r}" for m in objectives if not isinstance(result[m], int | float)]
    return f"its last report has objectives that are not numbers: {', '.join(bad)}"


def first_line(text: str | None, width: int = 160) -> str:
    return (str(text).strip().splitlines() or [""])[0][:width] if text else ""


class TrialStarted(Callback):
    """Calls `action` when a trial starts (the first start confirms an --overwrite)."""

    def __init__(self, action):
        self.action = action

    def on_trial_start(self, iteration, trials, trial, **info):
        self.action()

    def __reduce__(self):  # Tune pickles its callbacks: a restored copy does nothing
        return (TrialStarted, (_nothing,))


def _nothing() -> None:
    pass


class ParquetWriter(Callback):
    """Writes each trial's row to trials.parquet and its epochs to history.parquet as it ends.

    Every write is atomic and deduplicated by trial_id, so a crash of the driver loses at most
    the trials still running.
    """

    def __init__(
        self,
        study_dir: Path,
        study: str,
        kind: str,
        search_seed: int,
        space: SearchSpace,
        objectives: list[str],
        metadata: dict[str, str],
        metric_names: list[str] | None = None,
        budget: int | None = None,
        resolve_config: Callable[[dict[str, Any], SearchSpace], Any] | None = None,
    ):
        self.study_dir = Path(study_dir)
        self.budget = budget  # full-budget epochs under early stopping (status `stopped`)
        self.study, self.kind, self.search_seed = study, kind, search_seed
        self.space = space
        self.objectives = objectives
        self.metadata = metadata
        self.metric_names = metric_names  # None: every metric a custom trainable reports
        # the built-in trainable's record (tuner.trainable.recorded_config): every knob the
        # trial trained with, defaults included, becomes a `config/` column
        self.resolve_config = resolve_config
        self._history: dict[str, dict[Any, dict[str, Any]]] = {}

    def metrics_of(self, result: dict[str, Any]) -> dict[str, Any]:
        if self.metric_names is not None:
            names = list(dict.fromkeys([*self.metric_names, *self.objectives]))
            return {m: result.get(m) for m in names}
        return {
            k: v
            for k, v in result.items()
            if k not in TUNE_RESULT_KEYS and isinstance(v, int | float | str | bool | None)
        }

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("error") is not None:  # the trial's own error: no epoch to record
            return
        row = {"trial_id": trial.trial_id}
        row.update({k: v for k, v in self.metrics_of(result).items() if k in result})
        # A trial Tune restarted (its worker or node died) reports again from its last
        # checkpoint: a repeated epoch replaces what the lost attempt reported from there on,
        # so history holds every epoch once.
        step = result.get("epoch", result.get("training_iteration"))
        if self.budget is not None and "epoch" not in row and isinstance(step, int):
            row["epoch"] = step  # early stopping: the epoch reached, for any trainable
        if trial.trial_id not in self._history and isinstance(step, int) and step > 1:
            # A trial resumed from its checkpoint after the driver died: its earlier epochs
            # are in Tune's result.json from the previous driver.
            self._history[trial.trial_id] = self._earlier_epochs(trial, step)
        rows = self._history.setdefault(trial.trial_id, {})
        for seen in [k for k in rows if step is not None and k >= step]:
            del rows[seen]
        rows[len(rows) if step is None else step] = row

    def _earlier_epochs(self, trial, before: int) -> dict[Any, dict[str, Any]]:
        rows: dict[Any, dict[str, Any]] = {}
        for folder in (trial.path, trial.local_path):
            path = Path(str(folder), "result.json")
            if not folder or "://" in str(folder) or not path.is_file():
                continue
            for line in path.read_text().splitlines():
                try:
                    old = json.loads(line)
                except ValueError:
                    continue
                epoch = old.get("epoch")
                if isinstance(epoch, int) and epoch < before and old.get("error") is None:
                    row = {"trial_id": trial.trial_id}
                    row.update({k: v for k, v in self.metrics_of(old).items() if k in old})
                    rows[epoch] = row
            if rows:
                break
        return dict(sorted(rows.items()))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trial, errored=True)

    def trial_row(self, trial, errored: bool) -> dict[str, Any]:
        from tuner.timeouts import TIMED_OUT

        result = trial.last_result or {}
        config = self.trial_config(trial)
        errored = errored or trial.trial_id in TIMED_OUT
        row: dict[str, Any] = {
            "study": self.study,
            "kind": self.kind,
            "trial_id": trial.trial_id,
            "status": trial_status(result, self.objectives, errored, self.budget),
            "search_seed": self.search_seed,
            "seed": config.get("seed"),
        }
        row.update({f"config/{k}": v for k, v in sorted(config.items())})
        row.update(self.metrics_of(result))
        if self.budget is not None and row.get("epoch") is None:
            row["epoch"] = result_epoch(result)  # where a stopped trial stopped, for any trainable
        # A trial's own error arrives as its last result (tuner/trainable.py), Tune's as a
        # file; a trial that reported nothing or no objective gets that as its error.
        row["error"] = failure_reason(trial, self.objectives, errored)
        # When the trial ended (UTC): orders trials for hypervolume-over-time plots.
        row["finished_at"] = pd.Timestamp.now(tz="UTC")
        # Where it ran: the node's IP as Tune reports it (the hostname when there is none).
        row["node"] = result.get("node_ip") or result.get("hostname")
        return row

    def trial_config(self, trial) -> dict[str, Any]:
        """What the trial trained with: the resolved config, or (for a custom trainable, or
        a config the trainer refused) the suggested one with the space's conditions applied."""
        if self.resolve_config is not None:
            try:
                return dict(self.resolve_config(trial.config, self.space))
            except ValueError:  # the trial reported this ConfigError as its error
                pass
        return self.space.resolve(trial.config)

    def _write(self, trial, errored: bool) -> None:
        row = self.trial_row(trial, errored)
        upsert_rows(
            self.study_dir / TRIALS, pd.DataFrame([row]), key="trial_id", metadata=self.metadata
        )
        history = list(self._history.pop(trial.trial_id, {}).values())
        if history and all("epoch" in h for h in history):
            upsert_rows(
                self.study_dir / HISTORY,
                pd.DataFrame(history),
                key=["trial_id", "epoch"],
                metadata=self.metadata,
            )


def _short(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
            return f"{value:.2e}"
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1e5:
        return f"{value:.2e}"
    return str(value)


# A trial whose epochs alone take this long gets a time estimate at the start (so `epochs: 1e9`
# reads as years at once).
LONG_TRIAL_S = 600.0


class ProgressReporter(Callback):
    """One line per finished trial: count, method, objectives, elapsed time and time left."""

    def __init__(
        self,
        study_dir: Path,
        total: int,
        objectives: list[str],
        space: SearchSpace,
        search_seed: int | None,
        label: str = "",
        at_a_time: int = 1,
        budget: int | None = None,
    ):
        self.study_dir, self.total, self.objectives = Path(study_dir), total, objectives
        self.budget = budget
        self.space, self.search_seed, self.label = space, search_seed, label
        self.at_a_time = max(1, at_a_time)
        self.done = 0
        self.start = time.monotonic()
        self.estimated = False

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """Once per search, from the first trial's second epoch (its first also pays the
        worker's imports and warm-up, which made a 2-minute study read as 90 minutes): what
        a long budget means in time, so `epochs: 1e9` reads as years at the start, not after
        the first trial. A one-epoch budget is estimated from its only epoch."""
        epochs = (trial.config or {}).get("epochs")
        seconds = result.get("time_this_iter_s")
        if self.estimated or not isinstance(epochs, int | float):
            return
        if result.get("epoch") != (2 if epochs >= 2 else 1):
            return
        if not isinstance(seconds, int | float):
            return
        self.estimated = True
        per_trial = seconds * epochs
        if per_trial < LONG_TRIAL_S:
            # short trials: fixed costs (start, reports, checkpoints) outweigh the epochs and an
            # estimate from epochs misleads; the progress lines say the time left instead
            return
        left = per_trial * max(self.total - self.done, 1) / self.at_a_time
        print(
            f"{self.label}estimate from one epoch ({duration(seconds)}): a trial of "
            f"{epochs:g} epochs ~{duration(per_trial)}, this search's {self.total} trials "
            f"({self.at_a_time} at a time) ~{duration(left)}",
            file=sys.stdout,
            flush=True,
        )

    def setup(self, **info):
        # Also runs when a study resumes: count what this search already finished.
        self.start = time.monotonic()
        self.done = self._already_done()
        self._done_at_start = self.done

    def _already_done(self) -> int:
        path = self.study_dir / TRIALS
        if not path.exists():
            return 0
        trials = read_table(path, columns=["search_seed"])
        if self.search_seed is None:
            return int(trials["search_seed"].isna().sum())
        return int((trials["search_seed"] == self.search_seed).sum())

    def _line(self, trial, status: str, errored: bool = False) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.start
        done_here = self.done - getattr(self, "_done_at_start", 0)
        left = elapsed / max(done_here, 1) * max(self.total - self.done, 0)
        result = trial.last_result or {}
        config = self.space.resolve(trial.config)
        method, sparsity = config.get("method", ""), config.get("sparsity")
        knobs = f"{method:<6} sparsity={_short(sparsity)}" if sparsity is not None else method
        objectives = " ".join(f"{m}={_short(result.get(m, math.nan))}" for m in self.objectives)
        width = len(str(self.total))
        why = ""
        if status == "failed":  # why, in the error's first line (the Parquet has it whole)
            why = "  " + first_line(failure_reason(trial, self.objectives, errored))
        line = (
            f"{self.label}[{self.done:>{width}}/{self.total}] {status:<9} {knobs:<24} {objectives}"
            f"  ({duration(elapsed)}, ~{duration(left)} left){why}"
        )
        print(line, file=sys.stdout, flush=True)  # sys.stdout at call time: Tune pickles us
        append_log(self.study_dir, line)  # what `run_study.py logs NAME` follows

    def on_trial_complete(self, iteration, trials, trial, **info):
        status = trial_status(trial.last_result, self.objectives, False, self.budget)
        if status == STOPPED:  # the epoch it reached
            status = f"{status}@{(trial.last_result or {}).get('epoch', '?')}"
        self._line(trial, status)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, "failed", errored=True)


def duration(seconds: float) -> str:
    """45s, 12m, 3.5h, 41 days: a budget of 1e9 epochs reads as what it is."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    if seconds < 2 * 365 * 86400:
        return f"{seconds / 86400:.0f} days"
    return f"{seconds / (365 * 86400):.3g} years"


class RelayInterrupt(Callback):
    """A signal that came while no search was running reaches the next one at its first step."""

    def __init__(self, interrupts):
        self.interrupts = interrupts
        self.relayed = False

    def on_step_begin(self, iteration, trials, **info):
        if self.interrupts.requested and not self.relayed:
            from tuner.interrupt import relay_to_tune

            self.relayed = relay_to_tune()

    def __getstate__(self):  # Tune pickles its callbacks with the experiment state
        return {"relayed": self.relayed}

    def __setstate__(self, state):
        self.relayed = state["relayed"]
        from tuner.interrupt import Interrupts

        self.interrupts = Interrupts()


class DriverRecord(Callback):
    """Keeps driver.json up to date: which process drives the study, since when, its budget."""

    def __init__(
        self, study_dir: Path, study: str, budget: int, search_trials: int, last_search: bool
    ):
        self.study_dir, self.study, self.budget = Path(study_dir), study, budget
        self.search_trials, self.last_search = search_trials, last_search

    def setup(self, **info):
        old = read_driver(self.study_dir)
        same_driver = is_this_driver(old)
        now = time.time()
        done = trial_count(self.study_dir)
        record = {
            **this_driver(),
            "state": "running",
            "study": self.study,
            "budget": self.budget,
            "started_at": old.get("started_at") or now,  # the study's first start
            "resumed_at": old.get("resumed_at", now) if same_driver else now,
            "done_at_resume": old.get("done_at_resume", done) if same_driver else done,
        }
        write_driver(self.study_dir, record)
        if not same_driver:
            append_log(self.study_dir, f"driver pid {os.getpid()} on {record['host']} started")

    def on_experiment_end(self, trials, **info):
        # Tune calls this after a Ctrl-C too: only a search whose trials all ended is done.
        ended = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        finished = ended >= self.search_trials and ended == len(trials)
        if finished and not self.last_search:
            return
        state = "ended" if finished else "interrupted"
        record = read_driver(self.study_dir)
        write_driver(self.study_dir, {**record, "state": state, "ended_at": time.time()})
        append_log(self.study_dir, f"driver pid {os.getpid()}: study {state}")
