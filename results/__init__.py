"""Results of sparsetune studies: Parquet I/O, non-dominated sorting, hypervolume, aggregation
over seeds, SQL queries, plots, tables and reports.

Importable without Ray or torch (other tools and the command line read results directly).
"""

from __future__ import annotations

import importlib

from results.aggregate import aggregate_over_seeds, config_id, with_config_id

# (``hypervolume`` and ``query`` are not re-exported: the names are their modules'; import
# them as ``from results.hypervolume import hypervolume``, ``from results.query import query``)
from results.hypervolume import hypervolume_history, reference_point
from results.pareto import dominates, non_dominated_layers, with_layers
from results.parquet import (
    HISTORY,
    PARETO,
    TRIALS,
    read_metadata,
    read_study,
    read_table,
    read_trials,
    upsert_rows,
    write_table_atomic,
)
from results.study import ResultsError, StudyNotFoundError, completed, find_study
from results.tables import format_table

# plots import matplotlib (~1 s): loaded on first use so `query`/`report` start fast.
_LAZY = {
    "plot_pareto_front": "results.plots",
    "write_report": "results.report",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'results' has no attribute {name!r}")


__all__ = [
    "HISTORY",
    "PARETO",
    "TRIALS",
    "ResultsError",
    "StudyNotFoundError",
    "aggregate_over_seeds",
    "completed",
    "config_id",
    "find_study",
    "hypervolume_history",
    "reference_point",
    "with_config_id",
    "write_report",
    "dominates",
    "format_table",
    "non_dominated_layers",
    "plot_pareto_front",
    "read_metadata",
    "read_study",
    "read_table",
    "read_trials",
    "upsert_rows",
    "with_layers",
    "write_table_atomic",
]
