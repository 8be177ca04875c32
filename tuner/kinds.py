"""The study kinds as lists of Tune searches: what to run, with which searcher.

`optimize` and `random` search the space (one search per search seed); `reproduction`,
`reevaluate` and `evaluate` run fixed lists of configs (a `ConfigListSearch`), so every kind
goes through Ray Tune and writes the same Parquet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from results import selection
from results.selection import merged_configs  # noqa: F401  (tests and callers import it here)
from results.study import ResultsError
from search_spaces import SearchSpace
from trainables.config import unread_knobs
from tuner.search_algorithms import SEARCHERS
from tuner.searchers import ConfigListSearch, create_optuna_searcher
from tuner.spec import EVALUATE_SPARSITIES, REPRODUCTION_SPARSITIES, SpecError, StudySpec

NO_SPACE = SearchSpace("none", {})

# The literature defaults the original study reproduced (RigL's: drop 0.3 cosine-decayed,
# every 100 steps until 75% of training, ERK), with an MLP per tabular/image-vector dataset.
LITERATURE_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"model": "mlp", "depth": 2, "width": 256, "epochs": 30, "batch_size": 64},
    "mnist": {"model": "mlp", "depth": 3, "width": 300, "epochs": 20, "batch_size": 128},
    "fashion_mnist": {"model": "mlp", "depth": 3, "width": 300, "epochs": 20, "batch_size": 128},
    "higgs": {"model": "mlp", "depth": 3, "width": 300, "epochs": 20, "batch_size": 256},
    "electricity": {"model": "mlp", "depth": 3, "width": 300, "epochs": 20, "batch_size": 256},
    # CIFAR-style ResNet-20 (He et al. 2016's recipe, shortened as sparse-training studies do)
    "cifar10": {"model": "resnet", "blocks": 3, "epochs": 160, "batch_size": 128},
    "svhn": {"model": "resnet", "blocks": 3, "epochs": 40, "batch_size": 128},
}
SPARSE_DEFAULTS = {
    "distribution": "erk",
    "update_interval": 100,
    "update_end": 0.75,
    "drop_fraction": 0.3,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
}


DYNAMIC_DEFAULTS = {
    k: SPARSE_DEFAULTS[k]
    for k in ("distribution", "update_interval", "update_end", "drop_fraction")
}


@dataclass
class Search:
    label: str  # Tune experiment name, a folder under the study
    search_seed: int | None
    searcher: Any
    num_samples: int
    param_space: dict[str, Any]  # Tune domains and constants
    space: SearchSpace  # conditions applied in the trainable


def plan_searches(spec: StudySpec) -> list[Search]:
    if spec.kind in ("optimize", "random"):
        return [_search(spec, seed) for seed in spec.seeds]
    configs = {
        "reproduction": reproduction_configs,
        "reevaluate": reevaluate_configs,
        "evaluate": evaluate_configs,
    }[spec.kind](spec)
    return [Search("configs", None, ConfigListSearch(configs), len(configs), {}, NO_SPACE)]


def _search(spec: StudySpec, seed: int) -> Search:
    space = spec.load_space()
    defaults = spec.trial_defaults()
    fixed = set(defaults)
    label = f"search-seed-{seed}"
    algorithm = SEARCHERS.create(spec.search.algorithm, spec.search.settings or vars(spec.search))
    if algorithm.config_list:  # lhs, grid: the configs are known up front
        design = algorithm.design(space, spec.trials, seed, fixed)
        configs = [{**defaults, **point} for point in design]
        return Search(label, seed, ConfigListSearch(configs), len(configs), {}, space)
    budget = spec.scheduler.max_t if spec.scheduler.early_stopping else None
    searcher = create_optuna_searcher(
        spec.search, spec.objectives, seed, space, exclude=fixed, budget=budget
    )
    param_space = {**space.to_tune(exclude=fixed), **defaults}
    return Search(label, seed, searcher, spec.trials, param_space, space)


def _with_seeds(configs: list[dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    return [{**config, "seed": seed} for config in configs for seed in seeds]


def reproduction_configs(spec: StudySpec) -> list[dict[str, Any]]:
    """Dense, then SET and RigL at the 15 sparsities, per training seed (31 per seed)."""
    if spec.dataset not in LITERATURE_DEFAULTS:
        raise SpecError(
            f"kind reproduction: no literature default for dataset={spec.dataset!r}; "
            f"known: {', '.join(LITERATURE_DEFAULTS)}"
        )
    base = {"dataset": spec.dataset, **LITERATURE_DEFAULTS[spec.dataset], **SPARSE_DEFAULTS}
    base = _without_unread({**base, **spec.fixed}, keep=spec.fixed)  # fixed: {optimizer: adam}
    sparsities = spec.sparsities or list(REPRODUCTION_SPARSITIES)
    configs = [{**base, "method": "dense", "sparsity": 0.0}]
    configs += [{**base, "method": m, "sparsity": s} for m in ("set", "rigl") for s in sparsities]
    return _with_seeds(configs, spec.seeds)


def source_trials(spec: StudySpec) -> tuple[pd.DataFrame, dict[str, str]]:
    """The completed trials of the `from` studies, merged, and the objectives they agree on."""
    try:
        return selection.source_trials(spec.study_dir.parent, spec.sources)
    except ResultsError as err:
        raise SpecError(str(err)) from None


def _rebuilt(row: pd.Series, fixed: dict[str, Any], builtin: bool = True) -> dict[str, Any]:
    """A recorded config (every knob it trained with, so today's defaults don't matter) with
    the study's `fixed` values over it; knobs that no longer apply (fixed chose another
    optimizer or model) are dropped, the fixed ones are kept (and refused when unread)."""
    config = {**selection.config_dict(row), **fixed}
    return _without_unread(config, keep=fixed) if builtin else config


def _without_unread(config: dict[str, Any], keep) -> dict[str, Any]:
    """`config` less the knobs its chosen components don't read, except those in `keep` (the
    user's own, which stay so that the trial refuses them by name)."""
    unread = set(unread_knobs(config)) - set(keep)
    return {k: v for k, v in config.items() if k not in unread}


def _full_train(spec: StudySpec) -> dict[str, Any]:
    """The built-in trainer retrains on train+val; a custom trainable decides for itself."""
    return {"full_train": True} if spec.builtin else {}


def reevaluate_configs(spec: StudySpec) -> list[dict[str, Any]]:
    """The first `layers` layers, retrained on train+val and scored on test, per seed (and per
    sparsity when `sparsities` is given: sparse configs take each, dense ones run once)."""
    trials, objectives = source_trials(spec)
    merged = selection.merged_configs(trials, objectives)
    chosen = merged[(merged["layer"] >= 1) & (merged["layer"] <= spec.layers)]
    configs = []
    for _, row in chosen.iterrows():
        config = _rebuilt(row, {**spec.fixed, **_full_train(spec)}, spec.builtin)
        if spec.sparsities and config.get("method", "dense") != "dense":
            configs += [{**config, "sparsity": s} for s in spec.sparsities]
        else:
            configs.append(config)
    return _with_seeds(configs, spec.seeds)


def evaluate_configs(spec: StudySpec) -> list[dict[str, Any]]:
    """The `top` most accurate layer-1 configs, each as dense plus SET and RigL at 8 sparsities."""
    trials, objectives = source_trials(spec)
    merged = selection.merged_configs(trials, objectives, extra=("val_accuracy",))
    layer1 = merged[merged["layer"] == 1]
    best = layer1.sort_values("val_accuracy", ascending=False).head(spec.top)
    sparsities = spec.sparsities or list(EVALUATE_SPARSITIES)
    configs = []
    for _, row in best.iterrows():
        base = _rebuilt(row, {**spec.fixed, **_full_train(spec)}, spec.builtin)
        configs.append({**base, "method": "dense", "sparsity": 0.0})
        # a dense or static source config has no schedule: the literature defaults fill it
        dynamic = {**DYNAMIC_DEFAULTS, **base}
        configs += [
            {**dynamic, "method": m, "sparsity": s} for m in ("set", "rigl") for s in sparsities
        ]
    return _with_seeds(configs, spec.seeds)
