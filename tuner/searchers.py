"""Searchers: Optuna samplers through Ray Tune's OptunaSearch, made safe for multi-objective use.

Stock OptunaSearch tells Optuna a NaN objective, which Optuna rejects with a warning, so the
trial stays RUNNING forever and NSGA-II's generations stall. Here a trial whose objectives are
missing or not finite, that diverged, or that errored is told as FAIL: it never becomes a
parent, and no Optuna trial is left RUNNING.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from tuner.spec import SearchConfig


def objective_values(result: dict[str, Any] | None, metrics: list[str]) -> list[float] | None:
    """The objectives of a final result, or None when one is missing, not a number or not finite."""
    if not result or result.get("diverged"):
        return None
    values = []
    for metric in metrics:
        value = result.get(metric)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value):
            return None
        values.append(float(value))
    return values


class MultiObjectiveOptunaSearch(OptunaSearch):
    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = None if error else objective_values(result, metrics)
        if values is None:
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        else:
            self._ot_study.tell(ot_trial, values if len(values) > 1 else values[0])
        self._completed_trials.add(trial_id)

    @property
    def optuna_study(self) -> optuna.Study:
        return self._ot_study


def create_sampler(search: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    if search.algorithm == "nsga2":
        return optuna.samplers.NSGAIISampler(
            population_size=search.population_size,
            crossover_prob=search.crossover_prob,
            mutation_prob=search.mutation_prob,
            swapping_prob=search.swapping_prob,
            seed=seed,
        )
    if search.algorithm == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if search.algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"search.algorithm={search.algorithm!r} has no sampler")


def create_searcher(search: SearchConfig, objectives: dict[str, str], seed: int) -> OptunaSearch:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress line says what matters
    return MultiObjectiveOptunaSearch(
        metric=list(objectives),
        mode=list(objectives.values()),
        sampler=create_sampler(search, seed),  # the seed lives in the sampler
    )
