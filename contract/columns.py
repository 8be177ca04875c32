"""Parquet files of a study, their column names, trial statuses and metadata keys."""

from __future__ import annotations

# files under <storage>/<name>/
TRIALS, HISTORY, PARETO = "trials.parquet", "history.parquet", "pareto.parquet"
STUDY_FILES = {"trials": TRIALS, "history": HISTORY, "pareto": PARETO}
DRIVER_LOG = "driver.log"  # Ray's and Tune's log records of the study's drivers

# columns
CONFIG_PREFIX = "config/"  # every hyperparameter a trial used, as config/<name>
STATUS = "status"
ERROR = "error"
LAYER = "layer"  # 1 = non-dominated (pareto.parquet)

# values of the status column
COMPLETED = "completed"
FAILED = "failed"
DIVERGED = "diverged"
STOPPED = "stopped"  # by early stopping: never on a Pareto front
STATUSES = (COMPLETED, FAILED, DIVERGED, STOPPED)

# Parquet schema metadata keys
SPEC_KEY = "sparsetune.spec"
OBJECTIVES_KEY = "sparsetune.objectives"
CONSTRAINTS_KEY = "sparsetune.constraints"
VERSIONS_KEY = "sparsetune.versions"
GIT_COMMIT_KEY = "sparsetune.git_commit"
HARDWARE_KEY = "sparsetune.hardware"


def config_column(name: str) -> str:
    """The Parquet column of hyperparameter `name`."""
    return CONFIG_PREFIX + name
