"""Results of sparsetune studies: Parquet I/O, non-dominated sorting, plots and tables.

Importable without Ray or torch (other tools and the command line read results directly).
"""

from __future__ import annotations

import importlib

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
from results.tables import format_table

# plots import matplotlib (~1 s): loaded on first use so `query`/`report` start fast.
_LAZY = {"plot_pareto_front": "results.plots"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'results' has no attribute {name!r}")


__all__ = [
    "HISTORY",
    "PARETO",
    "TRIALS",
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
