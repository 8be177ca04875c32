"""A finished study's derived outputs: the non-dominated layers (pareto.parquet and the front's
PNG) and, for the fixed-config kinds, the mean and std over seeds (summary.parquet).

One call, `write_study_outputs`, after the searches have run (and again on resume).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from results.pareto import with_layers
from results.parquet import PARETO, TRIALS, read_table, write_table_atomic
from results.plots import plot_pareto_front

PARETO_PNG = "pareto.png"


def compute_pareto(
    study_dir: Path, objectives: dict[str, str], title: str
) -> tuple[pd.DataFrame, pd.DataFrame, Path | None]:
    """Layers over the completed trials; writes pareto.parquet and the front's PNG."""
    trials = read_table(study_dir / TRIALS) if (study_dir / TRIALS).exists() else pd.DataFrame()
    completed = trials[trials["status"] == "completed"] if len(trials) else trials
    if completed.empty:
        return trials, completed, None
    pareto = with_layers(completed, objectives)
    write_table_atomic(pareto, study_dir / PARETO)
    plot = plot_pareto_front(pareto, objectives, study_dir / PARETO_PNG, title=title)
    return trials, pareto, plot


SUMMARY = "summary.parquet"
SUMMARY_METRICS = ("test_accuracy", "test_error", "val_accuracy", "train_flops", "inference_flops")


def write_summary(study_dir: Path, trials: pd.DataFrame, objectives: dict[str, str]) -> Path:
    """Mean, std and count over seeds per config (sparsity included): summary.parquet."""
    from results.aggregate import aggregate_over_seeds

    completed = trials[trials["status"] == "completed"]
    metrics = [m for m in dict.fromkeys([*objectives, *SUMMARY_METRICS]) if m in completed]
    summary = aggregate_over_seeds(completed, metrics)
    write_table_atomic(summary, study_dir / SUMMARY)
    return study_dir / SUMMARY


def write_study_outputs(
    study_dir: Path, objectives: dict[str, str], title: str, summarize: bool
) -> tuple[pd.DataFrame, pd.DataFrame, Path | None]:
    """Layers, the front's PNG and (when `summarize`) the summary over seeds."""
    trials, pareto, plot = compute_pareto(study_dir, objectives, title=title)
    if summarize and len(trials):
        write_summary(study_dir, trials, objectives)
    return trials, pareto, plot
