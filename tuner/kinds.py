"""The study kinds as lists of Tune searches: what to run, with which searcher.

`optimize` and `random` search the space (one search per search seed); `reproduction`,
`reevaluate` and `evaluate` run fixed lists of configs (a `ConfigListSearch`), so every kind
goes through Ray Tune and writes the same Parquet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from contract.columns import OBJECTIVES_KEY
from results.aggregate import CONFIG_PREFIX, aggregate_over_seeds, with_config_id
from results.pareto import non_dominated_layers
from results.parquet import TRIALS, read_metadata, read_trials
from search_spaces import SearchSpace
from tuner.searchers import ConfigListSearch, create_optuna_searcher, grid_configs
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
    algorithm = spec.search.algorithm
    if algorithm in ("lhs", "grid"):
        design = (
            space.latin_hypercube(spec.trials, seed, exclude=fixed)
            if algorithm == "lhs"
            else grid_configs(space, exclude=fixed)
        )
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
    base.update(spec.fixed)
    sparsities = spec.sparsities or list(REPRODUCTION_SPARSITIES)
    configs = [{**base, "method": "dense", "sparsity": 0.0}]
    configs += [{**base, "method": m, "sparsity": s} for m in ("set", "rigl") for s in sparsities]
    return _with_seeds(configs, spec.seeds)


def source_trials(spec: StudySpec) -> tuple[pd.DataFrame, dict[str, str]]:
    """The completed trials of the `from` studies, merged, and the objectives they agree on."""
    dirs = []
    objectives: dict[str, str] | None = None
    for name in spec.sources:
        study_dir = spec.study_dir.parent / name
        if not (study_dir / TRIALS).exists():
            raise SpecError(f"from: study {name!r} not found (looked for {study_dir / TRIALS})")
        meta = json.loads(read_metadata(study_dir / TRIALS).get(OBJECTIVES_KEY, "{}"))
        if objectives is not None and meta != objectives:
            raise SpecError(f"from: studies disagree on objectives ({objectives} vs {meta})")
        objectives = meta
        dirs.append(study_dir)
    trials = read_trials(dirs)
    trials = trials[trials["status"] == "completed"]
    if trials.empty:
        raise SpecError(f"from: no completed trials in {', '.join(spec.sources)}")
    return trials, objectives or {}


def _config_dict(row: pd.Series) -> dict[str, Any]:
    config = {}
    for column, value in row.items():
        if not column.startswith(CONFIG_PREFIX) or column == "config/seed":
            continue
        if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
            continue
        config[column.removeprefix(CONFIG_PREFIX)] = (
            value.item() if hasattr(value, "item") else value
        )
    return config


def merged_configs(
    trials: pd.DataFrame, objectives: dict[str, str], extra: tuple[str, ...] = ()
) -> pd.DataFrame:
    """One row per distinct config (over search seeds) with its objectives (and `extra`
    metrics) averaged, and its non-dominated layer over those averages."""
    metrics = list(objectives) + [m for m in extra if m not in objectives]
    means = aggregate_over_seeds(with_config_id(trials), metrics)
    averaged = means.rename(columns={f"{m}_mean": m for m in metrics})
    averaged["layer"] = non_dominated_layers(averaged, objectives).to_numpy()
    return averaged


def _full_train(spec: StudySpec) -> dict[str, Any]:
    """The built-in trainer retrains on train+val; a custom trainable decides for itself."""
    return {"full_train": True} if spec.builtin else {}


def reevaluate_configs(spec: StudySpec) -> list[dict[str, Any]]:
    """The first `layers` layers, retrained on train+val and scored on test, per seed (and per
    sparsity when `sparsities` is given: sparse configs take each, dense ones run once)."""
    trials, objectives = source_trials(spec)
    merged = merged_configs(trials, objectives)
    chosen = merged[(merged["layer"] >= 1) & (merged["layer"] <= spec.layers)]
    configs = []
    for _, row in chosen.iterrows():
        config = {**_config_dict(row), **spec.fixed, **_full_train(spec)}
        if spec.sparsities and config.get("method", "dense") != "dense":
            configs += [{**config, "sparsity": s} for s in spec.sparsities]
        else:
            configs.append(config)
    return _with_seeds(configs, spec.seeds)


def evaluate_configs(spec: StudySpec) -> list[dict[str, Any]]:
    """The `top` most accurate layer-1 configs, each as dense plus SET and RigL at 8 sparsities."""
    trials, objectives = source_trials(spec)
    merged = merged_configs(trials, objectives, extra=("val_accuracy",))
    layer1 = merged[merged["layer"] == 1]
    best = layer1.sort_values("val_accuracy", ascending=False).head(spec.top)
    sparsities = spec.sparsities or list(EVALUATE_SPARSITIES)
    configs = []
    for _, row in best.iterrows():
        base = {**_config_dict(row), **spec.fixed, **_full_train(spec)}
        configs.append({**base, "method": "dense", "sparsity": 0.0})
        # a dense or static source config has no schedule: the literature defaults fill it
        dynamic = {**DYNAMIC_DEFAULTS, **base}
        configs += [
            {**dynamic, "method": m, "sparsity": s} for m in ("set", "rigl") for s in sparsities
        ]
    return _with_seeds(configs, spec.seeds)
