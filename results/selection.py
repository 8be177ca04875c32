"""Selecting configs of finished studies for re-evaluation: pure pandas, no Ray or torch.

`source_trials` merges the completed trials of the `from` studies, `merged_configs` averages
each distinct config over search seeds and ranks it in non-dominated layers, and
`config_dict` turns a row back into the config it trained with (every knob is recorded, so
it doesn't depend on today's defaults).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contract.columns import OBJECTIVES_KEY
from results.aggregate import CONFIG_PREFIX, aggregate_over_seeds, with_config_id
from results.pareto import non_dominated_layers
from results.parquet import TRIALS, read_metadata, read_trials
from results.study import ResultsError


def source_trials(storage: Path, names: list[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """The completed trials of studies `names` under `storage`, merged, and the objectives
    they agree on."""
    dirs = []
    objectives: dict[str, str] | None = None
    for name in names:
        study_dir = Path(storage) / name
        if not (study_dir / TRIALS).exists():
            raise ResultsError(f"from: study {name!r} not found (looked for {study_dir / TRIALS})")
        meta = json.loads(read_metadata(study_dir / TRIALS).get(OBJECTIVES_KEY, "{}"))
        if objectives is not None and meta != objectives:
            raise ResultsError(f"from: studies disagree on objectives ({objectives} vs {meta})")
        objectives = meta
        dirs.append(study_dir)
    trials = read_trials(dirs)
    trials = trials[trials["status"] == "completed"]
    if trials.empty:
        raise ResultsError(f"from: no completed trials in {', '.join(names)}")
    return trials, objectives or {}


def config_dict(row: pd.Series) -> dict[str, Any]:
    """The `config/` columns of one trial as the config it trained with (less its seed)."""
    config = {}
    for column, value in row.items():
        if not column.startswith(CONFIG_PREFIX) or column == "config/seed":
            continue
        if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
            continue
        if isinstance(value, np.ndarray):  # a list knob (milestones) reads back as an array
            value = value.tolist()
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
