"""Searchers: Optuna samplers through Ray Tune's OptunaSearch, and fixed config lists.

Stock OptunaSearch tells Optuna a NaN objective, which Optuna rejects with a warning, so the
trial stays RUNNING forever and NSGA-II's generations stall. Here a trial whose objectives are
missing or not finite, that diverged, or that errored is told as FAIL: it never becomes a
parent, and no Optuna trial is left RUNNING.

A trial that an early-stopping scheduler stopped (it reported fewer epochs than the budget,
`budget`) is told as PRUNED: Optuna keeps it as information without taking its partial
values as final. NSGA-II never picks it as a parent (its generations count COMPLETE trials
only, so a generation holds `population_size` full-budget trials however many stop); TPE
ranks it after every complete trial; GP ignores it. Its constraint values (from the partial
result) are stored too, so constrained samplers see the same attributes on every trial.

Constraints reach the samplers as Optuna 5 wants them: `Trial.set_constraint` on the trial
before it is told (NSGA-II's constrained domination, TPE's and GP's feasibility all read
`FrozenTrial.constraints`); the samplers' `constraints_func` is deprecated (removed in v7).

Latin-hypercube designs, grids and the fixed studies (reproduction, re-evaluation) are lists of
configs served by `ConfigListSearch`, a Tune Searcher that saves and restores its position.
"""

from __future__ import annotations

import itertools
import math
import pickle
import sys
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from search_spaces import SearchSpace
from tuner.schedulers import result_epoch
from tuner.search_algorithms import SEARCHERS, parse_constraint
from tuner.spec import SearchConfig, SpecError

__all__ = ["parse_constraint"]  # (re-exported: its home is tuner.search_algorithms)


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


def constraint_values(result: dict[str, Any], constraints: list[str]) -> list[float]:
    """Optuna's convention: a value <= 0 means the constraint holds."""
    values = []
    for text in constraints:
        metric, op, bound = parse_constraint(text)
        value = float(result.get(metric, math.inf if op == "<=" else -math.inf))
        values.append(value - bound if op == "<=" else bound - value)
    return values


def stored_constraints(trial: FrozenTrial) -> list[float]:
    """The constraints_func of samplers pickled before Optuna 5's `set_constraint` (a resumed
    old study unpickles it by name); their trials kept the values in this user attribute."""
    return trial.user_attrs.get("sparsetune.constraints", [])


def stopped_early(result: dict[str, Any] | None, budget: int | None) -> bool:
    """A result short of the budget: its trial was stopped (by the scheduler) before the end."""
    epoch = result_epoch(result)
    return budget is not None and epoch is not None and epoch < budget


class MultiObjectiveOptunaSearch(OptunaSearch):
    def __init__(
        self, *args, constraints: list[str] | None = None, budget: int | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.constraints = list(constraints or [])
        self.journal = None  # a tuner.journal.JournalRecorder: told trials for optuna-dashboard
        self.budget = budget  # epochs of a full trial under early stopping, else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        values = None if error else objective_values(result, metrics)
        if values is None:
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        else:
            for text, value in zip(
                self.constraints, constraint_values(result, self.constraints), strict=True
            ):
                ot_trial.set_constraint(text, value)  # c <= 0: feasible
            if stopped_early(result, self.budget):
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            else:
                self._ot_study.tell(ot_trial, values if len(values) > 1 else values[0])
        self._completed_trials.add(trial_id)
        if getattr(self, "journal", None) is not None:  # searchers pickled before it: none
            try:
                self.journal.record(self._ot_study._storage.get_trial(ot_trial._trial_id), trial_id)
            except OSError as err:  # the dashboard's record: never a reason to stop the study
                print(f"warning: optuna journal not written ({err})", file=sys.stderr)

    @property
    def optuna_study(self) -> optuna.Study:
        return self._ot_study


def _within(value: Any, distribution: BaseDistribution) -> bool:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return value in distribution.choices
    return distribution.low <= value <= distribution.high


class LatinHypercubeSampler(optuna.samplers.BaseSampler):
    """Serves a Latin-hypercube design param by param to the first len(design) Optuna trials,
    then samples at random.

    Used as NSGA-II's independent sampler: generation 0 is then the design itself, sampled
    through NSGA-II's own machinery, so those trials carry their generation and become
    parents. (Stock `points_to_evaluate` enqueues fixed params that bypass the sampler: they
    get no generation and are never parents.)
    """

    def __init__(self, design: list[dict[str, Any]], seed: int):
        self.design = design
        self._random = optuna.samplers.RandomSampler(seed=seed)

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        if trial.number < len(self.design) and param_name in self.design[trial.number]:
            value = self.design[trial.number][param_name]
            if _within(value, param_distribution):
                return value
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._random.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._random.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._random.reseed_rng()


def set_initial_sampler(sampler: optuna.samplers.NSGAIISampler, initial) -> None:
    """Make `initial` draw NSGA-II's generation 0 (and its independent samples).

    Optuna has no public hook for this: NSGAIISampler keeps the sampler it draws generation 0
    with in the private `_random_sampler` (Optuna 3.x-4.x). This is the one place that
    touches it; tests/test_searchers.py fails loudly when Optuna renames or drops it.
    """
    if not isinstance(getattr(sampler, "_random_sampler", None), optuna.samplers.BaseSampler):
        raise RuntimeError(
            f"optuna {optuna.__version__}: NSGAIISampler has no _random_sampler any more; "
            "search.init=lhs needs tuner.searchers.set_initial_sampler updated"
        )
    sampler._random_sampler = initial


def create_sampler(
    search: SearchConfig, seed: int, space: SearchSpace | None = None, exclude=()
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of the spec's search algorithm (a registered SearchAlgorithm)."""
    algorithm = SEARCHERS.create(search.algorithm, search.settings or vars(search))
    if algorithm.config_list:
        raise ValueError(f"search.algorithm={search.algorithm!r} has no Optuna sampler")
    return algorithm.sampler(seed, space, exclude)


def create_optuna_searcher(
    search: SearchConfig,
    objectives: dict[str, str],
    seed: int,
    space: SearchSpace | None = None,
    exclude=(),
    budget: int | None = None,
) -> OptunaSearch:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress line says what matters
    return MultiObjectiveOptunaSearch(
        metric=list(objectives),
        mode=list(objectives.values()),
        sampler=create_sampler(search, seed, space, exclude),  # the seed lives in the sampler
        constraints=search.constraints,
        budget=budget,
    )


class ConfigListSearch(Searcher):
    """Suggests a fixed list of configs in order, then FINISHED; saves and restores its place.

    Serves Latin-hypercube designs, grids, and the reproduction / re-evaluation studies. A
    trial suggested before a crash is restored by Tune itself, so on restore the list goes on
    after the last config handed out.
    """

    def __init__(self, configs: list[dict[str, Any]]):
        super().__init__(metric=None, mode=None)
        self.configs = [dict(c) for c in configs]
        self.next_index = 0
        self.assigned: dict[str, int] = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the list is complete; metric and mode don't change it

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if trial_id in self.assigned:
            return dict(self.configs[self.assigned[trial_id]])
        if self.next_index >= len(self.configs):
            return Searcher.FINISHED
        self.assigned[trial_id] = self.next_index
        self.next_index += 1
        return dict(self.configs[self.assigned[trial_id]])

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    def get_state(self) -> dict:
        return {"configs": self.configs, "next_index": self.next_index, "assigned": self.assigned}

    def set_state(self, state: dict) -> None:
        self.configs = state["configs"]
        self.next_index = state["next_index"]
        self.assigned = state["assigned"]


def grid_configs(space: SearchSpace, exclude=()) -> list[dict[str, Any]]:
    """Every combination of the categorical parameters (numeric ones must be fixed)."""
    names, values = [], []
    for name, param in space.parameters.items():
        if name in exclude:
            continue
        if param.type != "categorical":
            raise SpecError(
                f"search.algorithm=grid: parameter {name!r} is a {param.type} range; a grid "
                f"needs categorical parameters (choices: [...]) or fix it under 'fixed:'"
            )
        names.append(name)
        values.append(param.choices)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]
