"""Run a study: Ray Tune over the spec's space, one search per seed, then the Pareto layers."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from results.pareto import with_layers
from results.parquet import PARETO, TRIALS, read_table, write_table_atomic
from results.plots import plot_pareto_front
from tuner.spec import StudySpec

PARETO_PNG = "pareto.png"


class StudyExistsError(RuntimeError):
    pass


@dataclass
class StudyResult:
    study_dir: Path
    trials: pd.DataFrame
    pareto: pd.DataFrame
    plot: Path | None


def provenance(spec: StudySpec) -> dict[str, str]:
    """What produced these results: spec, versions, commit, hardware (Parquet schema metadata)."""
    import optuna
    import ray
    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return {
        "sparsetune.spec": spec.source,
        "sparsetune.objectives": json.dumps(spec.objectives),
        "sparsetune.versions": json.dumps(
            {"ray": ray.__version__, "optuna": optuna.__version__, "torch": torch.__version__}
        ),
        "sparsetune.git_commit": commit or "unknown",
        "sparsetune.hardware": json.dumps(
            {
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "gpu": gpu,
                "python": platform.python_version(),
            }
        ),  # fmt: skip
    }


def init_ray(address: str | None = None, dashboard: bool = True) -> str | None:
    """Start a local Ray (or join `address`); returns the dashboard URL when there is one."""
    import ray

    if ray.is_initialized():
        return None
    if address is None:
        # On Linux Ray swaps 127.0.0.1 for the routable address; a local single-node cluster
        # needs no outside address, so keep every port on loopback.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        # Workers run this interpreter, whose environment already holds the project: no need
        # for Ray's `uv run` hook to zip and ship the working tree.
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        context = ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
            configure_logging=True,
            logging_level="WARNING",
        )
    else:
        context = ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    url = context.dashboard_url
    return f"http://{url}" if url and not url.startswith("http") else url or None


def default_max_concurrent(spec: StudySpec) -> int:
    """Slots the cluster offers, kept below the NSGA-II population so generations don't swell."""
    import ray

    resources = ray.cluster_resources()
    slots = (
        int(resources.get("CPU", 1) // max(spec.resources.cpu, 1e-9))
        if spec.resources.cpu
        else 10**6
    )
    if spec.resources.gpu:
        slots = min(slots, int(resources.get("GPU", 0) // spec.resources.gpu))
    limit = max(1, spec.search.population_size // 2) if spec.search.algorithm == "nsga2" else slots
    return max(1, min(slots, limit))


def prepare_study_dir(spec: StudySpec, overwrite: bool) -> Path:
    study_dir = spec.study_dir.resolve()
    if (study_dir / TRIALS).exists() and not overwrite:
        raise StudyExistsError(
            f"{spec.study_dir} already holds a study. Pass --overwrite to replace it, or "
            f"--set name=<new name> to keep both."
        )
    if overwrite and study_dir.exists():
        shutil.rmtree(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "spec.yaml").write_text(spec.source)
    return study_dir


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


def run_study(
    spec: StudySpec,
    *,
    overwrite: bool = False,
    address: str | None = None,
    dashboard: bool = True,
    reuse_actors: bool = True,
) -> StudyResult:
    from ray import tune

    from trainables.datasets import load_dataset
    from tuner.callbacks import ParquetWriter, ProgressReporter
    from tuner.searchers import create_searcher
    from tuner.trainable import run_trial

    study_dir = prepare_study_dir(spec, overwrite)
    space = spec.load_space()
    defaults = spec.trial_defaults()
    param_space = {**space.to_tune(exclude=set(defaults)), **defaults}
    metadata = provenance(spec)
    objectives = list(spec.objectives)

    dashboard_url = init_ray(address, dashboard)
    if dashboard_url:
        print(f"Ray dashboard: {dashboard_url}", flush=True)
    # Loaded once by the driver, shared with every trial through the object store.
    data = load_dataset(spec.dataset, defaults.get("data_dir", "data"))
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, space=space, data=data),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    max_concurrent = spec.max_concurrent or default_max_concurrent(spec)
    for i, seed in enumerate(spec.seeds):
        label = f"seed {seed} " if len(spec.seeds) > 1 else ""
        print(
            f"study {spec.name!r}: {spec.search.algorithm} search {i + 1}/{len(spec.seeds)} "
            f"(search seed {seed}), {spec.trials} trials, {max_concurrent} at a time",
            flush=True,
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=create_searcher(spec.search, spec.objectives, seed),
                num_samples=spec.trials,
                max_concurrent_trials=max_concurrent,
                reuse_actors=reuse_actors,  # no new process per trial: ~4x faster here
            ),
            run_config=tune.RunConfig(
                name=f"search-seed-{seed}",
                storage_path=str(study_dir),
                verbose=0,
                callbacks=[
                    ParquetWriter(
                        study_dir, spec.name, spec.kind, seed, space, objectives, metadata
                    ),
                    ProgressReporter(spec.trials, objectives, space, label),
                ],
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            ),
        )
        tuner.fit()
    trials, pareto, plot = compute_pareto(study_dir, spec.objectives, title=spec.name)
    return StudyResult(study_dir, trials, pareto, plot)
