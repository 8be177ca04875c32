"""Run a study: Ray Tune over the spec's space, one search per seed; the Ray session is
tuner/ray_session.py's, the layers and summaries are results/study_outputs.py's."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from contract.columns import (
    DRIVER_LOG,
    GIT_COMMIT_KEY,
    HARDWARE_KEY,
    OBJECTIVES_KEY,
    SPEC_KEY,
    VERSIONS_KEY,
)
from contract.errors import ConfigError
from results.parquet import TRIALS, read_table, write_table_atomic
from results.study_outputs import write_study_outputs
from search_spaces import SearchSpace
from tuner.ray_session import init_ray
from tuner.spec import StudySpec


class StudyExistsError(ConfigError):
    """The study's folder already holds results; the message says how to keep or replace them."""


@dataclass
class StudyResult:
    study_dir: Path
    trials: pd.DataFrame
    pareto: pd.DataFrame
    plot: Path | None
    interrupted: bool = False  # the first SIGINT/SIGTERM stopped it; resume continues it
    timed_out: bool = False  # study_timeout_s ended it; resume continues it
    budget: int = 0  # trials the study's searches run in all
    started: bool = True  # False: stopped before anything was written


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
        SPEC_KEY: spec.source,
        OBJECTIVES_KEY: json.dumps(spec.objectives),
        VERSIONS_KEY: json.dumps(
            {"ray": ray.__version__, "optuna": optuna.__version__, "torch": torch.__version__}
        ),
        GIT_COMMIT_KEY: commit or "unknown",
        HARDWARE_KEY: json.dumps(
            {
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "gpu": gpu,
                "python": platform.python_version(),
            }
        ),  # fmt: skip
    }


# Ray Tune settings sparsetune changes: environment variables that Ray 2.60 reads when a Tuner
# runs (not when ray.tune is imported), so run_study sets them unless the user did.
# benchmarks/orchestration.py measures each against Tune's default.
TUNE_ENV = {
    # Tune saves its experiment state (trials, searcher) at most this often: a killed driver's
    # resume reruns the trials that finished since (short trials end several a second; a
    # trial checkpoint no longer forces a save every epoch). Tune's default ("auto") waits
    # 10 s or more; 0.25 s costs about 2% of a study of 2-s trials against 1 s.
    "TUNE_GLOBAL_CHECKPOINT_S": "0.25",
    # A report missing an objective must fail that trial, not abort the whole fit().
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # No per-trial progress.csv and TensorBoard events (a row and an event per result: 2-4%
    # of a study of 2-s trials); result.json stays (run_study adds Tune's JSON logger itself:
    # resume and the tests read it).
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
}

# A trial whose worker or node dies is restarted from its last checkpoint at most this many
# times (its own errors are never retried: tuner/trainable.py reports them as results).
MAX_FAILURES = 3


def check_storage(storage: str) -> None:
    """The study's storage must be a writable folder (or a URI): checked before anything runs.

    Writes and removes a probe file in the nearest existing folder, so nothing is left behind.
    """
    import tempfile

    if "://" in storage:  # s3://, gs://: Tune's storage layer checks it
        return
    path = Path(storage).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(
            f"storage={storage!r} is not writable: {existing} is a file, not a folder; "
            "pick another folder (--set storage=...)"
        )
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".sparsetune-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(
            f"storage={storage!r} is not writable ({err.strerror or err} in {existing}); "
            "pick a folder you can write (--set storage=...)"
        ) from None


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


def check_study_dir(spec: StudySpec, overwrite: bool) -> None:
    check_storage(spec.storage)
    if (spec.study_dir / TRIALS).exists() and not overwrite:
        raise StudyExistsError(
            f"{spec.study_dir} already holds a study. Pass --overwrite to replace it, "
            f"--set name=<new name> to keep both, or `run_study.py resume {spec.name}` to "
            "continue it."
        )


def prepare_study_dir(spec: StudySpec, overwrite: bool) -> Path:
    check_study_dir(spec, overwrite)
    study_dir = spec.study_dir.resolve()
    if overwrite and study_dir.exists():
        shutil.rmtree(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "spec.yaml").write_text(spec.source)
    return study_dir


def _trainable(spec: StudySpec, space: SearchSpace, data, checkpoint_every_s: float | None = None):
    from ray import tune

    from tuner.trainable import CHECKPOINT_EVERY_S, run_custom_trial, run_trial

    if spec.builtin:
        every_s = CHECKPOINT_EVERY_S if checkpoint_every_s is None else checkpoint_every_s
        fn = tune.with_parameters(run_trial, space=space, data=data, checkpoint_every_s=every_s)
    else:
        fn = tune.with_parameters(run_custom_trial, space=space, function=spec.trainable)
    return tune.with_resources(fn, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def _metric_names(spec: StudySpec) -> list[str] | None:
    from trainables.train import METRICS

    return list(METRICS) if spec.builtin else None  # None: whatever a custom trainable reports


def _config_resolver(spec: StudySpec):
    from tuner.trainable import recorded_config

    if not spec.builtin:
        return None  # a custom trainable's config is what it was given
    return recorded_config


def known_trial_ids(experiment_dir: str) -> set[str]:
    """The trials in Tune's saved experiment state (what a resume restores)."""
    from ray.tune import ExperimentAnalysis

    return {t.trial_id for t in ExperimentAnalysis(experiment_dir).trials}


def reconcile_with_experiment(study_dir: Path, experiment_dir: str, search_seed) -> int:
    """Drop Parquet rows of this search that Tune's restored experiment state doesn't know.

    Tune saves its experiment state every TUNE_GLOBAL_CHECKPOINT_S (TUNE_ENV); a trial that
    finished after the last save and before a crash is rerun under a new id on resume, so its
    old row would be counted twice. Returns the number of rows dropped.
    """

    known = known_trial_ids(experiment_dir)
    path = study_dir / TRIALS
    if not path.exists():
        return 0
    trials = read_table(path)
    same_search = (
        trials["search_seed"].isna()
        if search_seed is None
        else trials["search_seed"] == search_seed
    )
    orphans = same_search & ~trials["trial_id"].isin(known)
    if orphans.any():
        from results.parquet import read_metadata

        write_table_atomic(trials[~orphans], path, metadata=read_metadata(path))
    return int(orphans.sum())


def shared_dataset(spec: StudySpec, searches) -> tuple[str | None, str]:
    """The one dataset every trial uses (loaded once, shared), or None when they differ."""
    from tuner.searchers import ConfigListSearch

    configs = [
        config
        for search in searches
        if isinstance(search.searcher, ConfigListSearch)
        for config in search.searcher.configs
    ]
    if spec.kind in ("optimize", "random"):
        configs = [spec.trial_defaults()]
    names = {c.get("dataset", "digits") for c in configs}
    dirs = {c.get("data_dir", "data") for c in configs}
    if len(names) == 1 and len(dirs) == 1:
        return names.pop(), dirs.pop()
    return None, "data"


def run_study(
    spec: StudySpec,
    *,
    overwrite: bool = False,
    resume: bool = False,
    address: str | None = None,
    dashboard: bool = True,
    reuse_actors: bool = True,
    checkpoint_every_s: float | None = None,
    callbacks: list | None = None,
    interrupts=None,
    verbose: bool = True,
) -> StudyResult:
    """Run (or, with resume=True, continue) every search of the study, then the layers.

    One driver per study: the study's lock (tuner.lock) is held from before anything is
    written to the end. `interrupts` (tuner.interrupt.Interrupts, installed by the command
    line) turns the first SIGINT/SIGTERM into a saved, resumable stop (`result.interrupted`).
    `verbose=False` sends Ray's and Tune's chatter to the study's driver.log only.
    `reuse_actors`, `checkpoint_every_s` (None: `tuner.trainable.CHECKPOINT_EVERY_S`) and
    `callbacks` (more Tune callbacks, e.g. timers) are for benchmarks and tests."""
    from tuner.lock import StudyLock
    from tuner.quiet import RayLogRouting

    lock = StudyLock(spec.storage, spec.name)
    lock.check_free()  # refuse at once, before Ray starts, when another driver runs it
    replaced = ReplacedStudy()
    if interrupts is not None:  # a second Ctrl-C exits at once, but not before these
        interrupts.before_exit(lock.release)
        interrupts.before_exit(replaced.settle)
    with RayLogRouting(verbose) as logs:
        try:
            return _run_study(
                spec, lock, replaced, logs, overwrite=overwrite, resume=resume,
                address=address, dashboard=dashboard, reuse_actors=reuse_actors,
                checkpoint_every_s=checkpoint_every_s, callbacks=callbacks or [],
                interrupts=interrupts,
            )  # fmt: skip
        finally:
            replaced.settle()
            lock.release()


class ReplacedStudy:
    """`--overwrite` of a finished study, atomically: the old folder is renamed aside (hidden,
    beside it) when the new one is created, and deleted only once the new study has started
    a trial; if the new one never starts, the old one is put back."""

    def __init__(self):
        self.study_dir: Path | None = None
        self.aside: Path | None = None
        self.started = False

    def move_aside(self, study_dir: Path) -> None:
        self.study_dir = study_dir
        self.aside = study_dir.with_name(f".{study_dir.name}.replaced-{os.getpid()}")
        shutil.rmtree(self.aside, ignore_errors=True)
        os.replace(study_dir, self.aside)

    def new_study_started(self) -> None:
        self.started = True
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None

    def settle(self) -> None:
        if self.aside is None or not self.aside.exists():
            return
        if self.started or (self.study_dir / TRIALS).exists():
            shutil.rmtree(self.aside, ignore_errors=True)
        else:  # the new study never started: the old one comes back as it was
            shutil.rmtree(self.study_dir, ignore_errors=True)
            os.replace(self.aside, self.study_dir)
        self.aside = None


def check_resources(spec: StudySpec) -> None:
    """Resources no node of the cluster can ever give one trial: refused before it starts."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    need = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu}
    if any(all(node.get(k, 0) >= v for k, v in need.items() if v) for node in nodes):
        return
    have = (
        "; ".join(f"{node.get('CPU', 0):g} cpu, {node.get('GPU', 0):g} gpu" for node in nodes)
        or "no nodes"
    )
    raise ConfigError(
        f"resources={{cpu: {spec.resources.cpu:g}, gpu: {spec.resources.gpu:g}}}: no node of "
        f"the cluster can run one trial (its nodes have: {have}); lower resources.cpu/gpu "
        "(--set resources.gpu=0), or join a cluster that has them (--address)"
    )


def budget(searches) -> int:
    return sum(search.num_samples for search in searches)


def check_resumable(study_dir: Path, searches) -> None:
    """Damaged Parquet, or a trials table gone although Tune finished trials: refused before
    Ray starts (a resume would otherwise run on with nothing, or fail after the start)."""
    from ray import tune
    from ray.tune import ExperimentAnalysis

    from contract.errors import ResultsError
    from results.integrity import DamagedFileError, check_study, what_to_do

    try:
        check_study(study_dir, required=())
    except ResultsError as err:
        raise ConfigError(str(err)) from None
    if (study_dir / TRIALS).exists():
        return
    finished = 0
    for search in searches:
        experiment_dir = study_dir / search.label
        if tune.Tuner.can_restore(str(experiment_dir)):
            trials = ExperimentAnalysis(str(experiment_dir)).trials
            finished += sum(t.status in ("TERMINATED", "ERROR") for t in trials)
    if finished:
        err = DamagedFileError(
            f"{study_dir / TRIALS} is missing although {finished} trials finished; "
            + what_to_do(study_dir, TRIALS)
        )
        raise ConfigError(str(err))


def _run_study(
    spec: StudySpec, lock, replaced: ReplacedStudy, logs, *, overwrite: bool, resume: bool,
    address: str | None, dashboard: bool, reuse_actors: bool,
    checkpoint_every_s: float | None, callbacks: list, interrupts,
) -> StudyResult:  # fmt: skip
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from trainables.datasets import load_dataset
    from tuner.callbacks import (
        DriverRecord,
        ParquetWriter,
        ProgressReporter,
        RelayInterrupt,
        TrialStarted,
    )
    from tuner.journal import attach_journal, locate_journal, reconcile_with_tune
    from tuner.kinds import plan_searches
    from tuner.monitoring import StudyMetrics
    from tuner.schedulers import create_scheduler, forget_unknown_trials, point_scheduler_at
    from tuner.searchers import parse_constraint
    from tuner.storage import UploadStudyFiles, staged_spec, study_uri, upload_study_files
    from tuner.timeouts import StudyDeadline, TrialTimeout

    for name, value in TUNE_ENV.items():  # read when a Tuner runs; the user's values win
        os.environ.setdefault(name, value)

    # Storage on a URI (s3://, gs://): Tune writes there, the Parquet is staged here and copied.
    uri = study_uri(spec)
    if uri:
        spec = staged_spec(spec, uri, overwrite=overwrite, resume=resume)
    if not resume:
        check_study_dir(spec, overwrite)
    searches = plan_searches(spec)  # reads the `from` studies: fails before Ray starts
    total = budget(searches)
    if resume:
        check_resumable(spec.study_dir.resolve(), searches)
    # Loaded once by the driver, before anything is written or Ray starts (a missing dataset
    # stops the study here, with one message), then shared with every trial through the
    # object store.
    data = None
    if spec.builtin:
        dataset, data_dir = shared_dataset(spec, searches)
        data = load_dataset(dataset, data_dir) if dataset else None
    # Ray first: an unreachable --address or a missing token leaves no study folder behind.
    try:
        with interrupts.around_ray_start() if interrupts else contextlib.nullcontext():
            dashboard_url = init_ray(address, dashboard)
    except Exception:
        # a signal to the whole process group also reaches the Ray processes being started
        # (they block SIGINT only): a start that fails then is the interruption, not an error
        if interrupts is None or not interrupts.requested:
            raise
    if interrupts is not None and interrupts.requested:  # Ctrl-C during Ray's start-up
        return StudyResult(spec.study_dir, pd.DataFrame(), pd.DataFrame(), None,
                           interrupted=True, budget=total, started=False)  # fmt: skip
    check_resources(spec)
    lock.acquire()  # before anything of the study is written
    if not resume:
        check_study_dir(spec, overwrite)  # again: another driver may have ended meanwhile
        if overwrite and spec.study_dir.exists():
            replaced.move_aside(spec.study_dir.resolve())
    study_dir = spec.study_dir.resolve() if resume else prepare_study_dir(spec, False)
    logs.attach(study_dir / DRIVER_LOG)
    metadata = provenance(spec)
    objectives = list(spec.objectives)
    if dashboard_url:
        print(f"Ray dashboard: {dashboard_url}", flush=True)
    max_concurrent = spec.max_concurrent or default_max_concurrent(spec)
    # Under early stopping a trial short of this many epochs is `stopped` (never on a front).
    epoch_budget = spec.scheduler.max_t if spec.scheduler.early_stopping else None
    deadline = StudyDeadline(spec.study_timeout_s)
    # One for the whole study: its gauges (best so far, hypervolume) span every search seed,
    # not only the one running now.
    study_metrics = StudyMetrics(spec.name, spec.objectives, epoch_budget)
    stopped = None
    for i, search in enumerate(searches):
        if interrupts is not None and interrupts.requested:
            stopped = "interrupted"
            break
        if deadline.passed():
            stopped = "timeout"
            break
        experiment_dir = f"{uri}/{search.label}" if uri else str(study_dir / search.label)
        what = spec.kind
        if search.search_seed is not None:
            what = f"{spec.search.algorithm} search {i + 1}/{len(searches)}"
            what += f" (search seed {search.search_seed})"
        print(
            f"study {spec.name!r}: {what}, {search.num_samples} trials, {max_concurrent} at a time",
            flush=True,
        )
        trainable = _trainable(spec, search.space, data, checkpoint_every_s)
        label = f"seed {search.search_seed} " if len(searches) > 1 else ""
        study_callbacks = [
            TrialStarted(replaced.new_study_started),
            *([RelayInterrupt(interrupts)] if interrupts is not None else []),
            *([TrialTimeout(spec.trial_timeout_s)] if spec.trial_timeout_s else []),
            *([deadline] if spec.study_timeout_s else []),
            # Tune's result.json (resume and the tests read it), explicit so that
            # TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1 drops only the CSV and TensorBoard loggers
            JsonLoggerCallback(),
            ParquetWriter(
                study_dir,
                spec.name,
                spec.kind,
                search.search_seed,
                search.space,
                objectives,
                metadata,
                _metric_names(spec),
                epoch_budget,
                resolve_config=_config_resolver(spec),
            ),  # fmt: skip
            ProgressReporter(
                study_dir,
                search.num_samples,
                objectives,
                search.space,
                search.search_seed,
                label,
                at_a_time=max_concurrent,
                budget=epoch_budget,
            ),
            study_metrics,  # dashboard metrics
            DriverRecord(study_dir, spec.name, total, search.num_samples, i == len(searches) - 1),
            *([UploadStudyFiles(study_dir, uri)] if uri else []),
            *callbacks,
        ]
        # the journal is where the study is now (a restored searcher holds the old path)
        locate_journal(spec.name, search.search_seed, study_dir)
        if resume and tune.Tuner.can_restore(experiment_dir):
            dropped = reconcile_with_experiment(study_dir, experiment_dir, search.search_seed)
            if dropped:
                print(f"  {dropped} finished trials after Tune's last save will run again")
            reconcile_with_tune(study_dir, spec.name, search.search_seed, experiment_dir)
            if spec.scheduler.early_stopping and not uri:
                forget_unknown_trials(experiment_dir, known_trial_ids(experiment_dir))
            tuner = tune.Tuner.restore(
                experiment_dir, trainable, resume_unfinished=True, resume_errored=False
            )
            # Tune restores the callbacks it pickled, which write where the study was when
            # it started: this driver's own write where the study is now (a moved copy).
            tuner._local_tuner.get_run_config().callbacks = study_callbacks
            # Likewise the scheduler's rung records: read them from where the study is now.
            point_scheduler_at(tuner, None if uri else experiment_dir)
        else:
            attach_journal(
                search.searcher, study_dir, spec.name, search.search_seed, spec.objectives
            )
            tuner = tune.Tuner(
                trainable,
                param_space=search.param_space,
                tune_config=tune.TuneConfig(
                    search_alg=search.searcher,
                    # early stopping: rung records in the experiment folder (local storage)
                    scheduler=create_scheduler(
                        spec,
                        None if uri else experiment_dir,
                        [parse_constraint(c) for c in spec.search.constraints],
                    ),
                    num_samples=search.num_samples,
                    max_concurrent_trials=max_concurrent,
                    reuse_actors=reuse_actors,  # no new process per trial: ~5x faster here
                ),
                run_config=tune.RunConfig(
                    name=search.label,
                    storage_path=uri or str(study_dir),
                    verbose=0,
                    callbacks=study_callbacks,
                    # Worker or node deaths restart the trial from its last checkpoint.
                    failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
                    # The latest checkpoint per trial (Tune then snapshots its experiment
                    # state with each one, so a resumed study never points at a deleted one).
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                ),
            )
        tuner.fit()
        if interrupts is not None and interrupts.requested:
            stopped = "interrupted"
            break
        if deadline.fired:
            stopped = "timeout"
            break
    if stopped:
        if uri:
            upload_study_files(study_dir, uri)
        trials = read_table(study_dir / TRIALS) if (study_dir / TRIALS).exists() else None
        return StudyResult(study_dir, trials if trials is not None else pd.DataFrame(),
                           pd.DataFrame(), None, interrupted=stopped == "interrupted",
                           timed_out=stopped == "timeout", budget=total)  # fmt: skip
    summarize = spec.kind in ("reproduction", "reevaluate", "evaluate")  # fixed configs x seeds
    trials, pareto, plot = write_study_outputs(study_dir, spec.objectives, spec.name, summarize)
    if uri:
        upload_study_files(study_dir, uri)
    return StudyResult(study_dir, trials, pareto, plot, budget=total)


def load_study_spec(name: str, storage: str = "runs") -> StudySpec:
    """The spec a study ran with (its spec.yaml), for resume, placed where the study is now:
    `storage`/`name`, whatever its spec.yaml says (a moved or copied study resumes in place
    and never writes to where it was)."""
    import yaml

    from results.remote import is_uri, read_text
    from tuner.spec import SpecError, parse_spec

    path = f"{str(storage).rstrip('/')}/{name}/spec.yaml"
    missing = SpecError(f"no study {name!r} to resume: {path} not found (is --storage right?)")
    if is_uri(storage):  # a study on shared storage (its spec.yaml names the URI)
        try:
            source = read_text(path)
        except (FileNotFoundError, OSError):
            raise missing from None
    else:
        if not Path(path).is_file():
            raise missing
        source = Path(path).read_text()
    body = yaml.safe_load(source)
    if isinstance(body, dict):
        body["storage"], body["name"] = str(storage), name
    return parse_spec(body, source=yaml.safe_dump(body, sort_keys=False))
