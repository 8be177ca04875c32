"""Study metrics for the Ray dashboard: a Tune callback publishing `ray.util.metrics`.

The driver (on a cluster: the Ray Job's driver on the head node) exports these through its
node's metrics agent, so they appear on the cluster's Prometheus endpoint
(`ray start --metrics-export-port`) and in the dashboard's metrics view, each tagged with the
study's name. Prometheus names get Ray's ``ray_`` prefix (counters also ``_total``):

| metric | kind | what |
|---|---|---|
| `ray_sparsetune_trials_finished_total` | counter | trials ended (any status) |
| `ray_sparsetune_trials_failed_total` | counter | trials that errored or diverged |
| `ray_sparsetune_trials_stopped_total` | counter | trials stopped early by the scheduler |
| `ray_sparsetune_best_objective` | gauge | best value so far of each objective (tag `objective`) |
| `ray_sparsetune_hypervolume` | gauge | hypervolume of the completed trials so far |
| `ray_sparsetune_trials_per_minute` | gauge | finished trials per minute since the first search |

One instance serves all of a study's searches (several search seeds run one after another),
so the gauges cover the study so far, not only the seed running now.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pandas as pd
from ray.tune import Callback

from contract.columns import COMPLETED, STOPPED
from contract.metrics import STUDY_METRICS
from tuner.callbacks import trial_status

TAG_KEYS = ("study",)
METRIC_NAMES = STUDY_METRICS  # contract.metrics owns the names


class StudyMetrics(Callback):
    """Publishes a study's progress as Ray metrics while it runs (tagged ``study=<name>``)."""

    def __init__(self, study: str, objectives: dict[str, str], budget: int | None = None):
        self.study = study
        self.budget = budget  # under early stopping: a stopped trial is not a finished result
        self.objectives = dict(objectives)
        self.finished = 0
        self.failed = 0
        self.stopped = 0
        self.points: list[dict[str, float]] = []  # objective values of completed trials
        self.start = time.monotonic()
        self._set_up = False
        self._metrics: dict[str, Any] | None = None

    # Tune pickles its callbacks (experiment state): the metric handles are made again after.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_metrics"] = None
        return state

    def _handles(self) -> dict[str, Any]:
        if self._metrics is None:
            from ray.util.metrics import Counter, Gauge

            tags = {"study": self.study}
            self._metrics = {
                "finished": Counter(
                    METRIC_NAMES["finished"],
                    description="Trials of the study that ended (any status).",
                    tag_keys=TAG_KEYS,
                ),
                "failed": Counter(
                    METRIC_NAMES["failed"],
                    description="Trials of the study that failed or diverged.",
                    tag_keys=TAG_KEYS,
                ),
                "stopped": Counter(
                    METRIC_NAMES["stopped"],
                    description="Trials of the study stopped early by the scheduler.",
                    tag_keys=TAG_KEYS,
                ),
                "best": Gauge(
                    METRIC_NAMES["best"],
                    description="Best value so far of each of the study's objectives.",
                    tag_keys=(*TAG_KEYS, "objective"),
                ),
                "hypervolume": Gauge(
                    METRIC_NAMES["hypervolume"],
                    description="Hypervolume of the study's completed trials so far.",
                    tag_keys=TAG_KEYS,
                ),
                "rate": Gauge(
                    METRIC_NAMES["rate"],
                    description="Finished trials per minute since the search began.",
                    tag_keys=TAG_KEYS,
                ),
            }
            for metric in self._metrics.values():
                metric.set_default_tags(tags)
        return self._metrics

    def setup(self, **info):
        metrics = self._handles()
        if not getattr(self, "_set_up", False):  # the first search's start: the rate spans all
            self._set_up = True
            self.start = time.monotonic()
            metrics["rate"].set(0.0)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._record(trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._record(trial, errored=True)

    def best_values(self) -> dict[str, float]:
        """Best value so far per objective (NaN before the first completed trial)."""
        best = {}
        for name, mode in self.objectives.items():
            values = [p[name] for p in self.points]
            best[name] = (min(values) if mode == "min" else max(values)) if values else math.nan
        return best

    def snapshot(self) -> dict[str, float]:
        """The values published last (also what the tests check without a metrics agent)."""
        best = self.best_values()[next(iter(self.objectives))]
        hypervolume = 0.0
        if self.points:
            from results.hypervolume import hypervolume as volume

            try:
                hypervolume = volume(pd.DataFrame(self.points), self.objectives)
            except ValueError:  # more objectives than the exact algorithm takes
                hypervolume = math.nan
        minutes = max(time.monotonic() - self.start, 1e-9) / 60
        return {
            "finished": float(self.finished),
            "failed": float(self.failed),
            "stopped": float(self.stopped),
            "best": best,
            "hypervolume": hypervolume,
            "rate": self.finished / minutes,
        }

    def _record(self, trial, errored: bool) -> None:
        status = trial_status(trial.last_result, list(self.objectives), errored, self.budget)
        self.finished += 1
        metrics = self._handles()
        metrics["finished"].inc(1.0)
        if status == STOPPED:  # stopped early by the scheduler: not failed, not on the front
            self.stopped += 1
            metrics["stopped"].inc(1.0)
        elif status != COMPLETED:
            self.failed += 1
            metrics["failed"].inc(1.0)
        else:
            result = trial.last_result or {}
            self.points.append({m: float(result[m]) for m in self.objectives})
        values = self.snapshot()
        for name, best in self.best_values().items():
            if not math.isnan(best):
                metrics["best"].set(best, tags={"study": self.study, "objective": name})
        if not math.isnan(values["hypervolume"]):
            metrics["hypervolume"].set(values["hypervolume"])
        metrics["rate"].set(values["rate"])
