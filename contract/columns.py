"""Parquet files of a study, their column names, trial statuses and metadata keys."""

from __future__ import annotations

# files under <storage>/<name>/
TRIALS, HISTORY, PARETO = "trials.parquet", "history.parquet", "pareto.parquet"
STUDY_FILES = {"trials": TRIALS, "history": HISTORY, "pareto": PARETO}
JOURNAL = "optuna-journal.log"  # each Optuna search's told trials (optuna-dashboard reads it)
DRIVER = "driver.json"  # the running driver: host, pid, first start, budget, state
PROGRESS_LOG = "progress.log"  # the driver's progress lines (`run_study.py logs NAME`)
REPORT_HTML = "report.html"  # the interactive report (`run_study.py report NAME`)
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

# the Optuna journal: study name per search, and the user attr naming a trial's Tune trial
JOURNAL_STUDY = "{study}/seed-{search_seed}"
TUNE_TRIAL_ATTR = "tune_trial_id"

# Parquet schema metadata keys
SPEC_KEY = "sparsetune.spec"
OBJECTIVES_KEY = "sparsetune.objectives"
VERSIONS_KEY = "sparsetune.versions"
GIT_COMMIT_KEY = "sparsetune.git_commit"
HARDWARE_KEY = "sparsetune.hardware"


def config_column(name: str) -> str:
    """The Parquet column of hyperparameter `name`."""
    return CONFIG_PREFIX + name
