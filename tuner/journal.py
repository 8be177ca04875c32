"""Each search's Optuna study as a journal file that optuna-dashboard reads while it runs.

``<study>/optuna-journal.log`` (Optuna's ``JournalStorage`` on a ``JournalFileBackend``) holds
one Optuna study per search seed, named ``<name>/seed-<n>``, with the objectives' names
(``set_metric_names``). The searcher writes each trial as it is told (params, distributions,
values or FAIL, the Tune trial id as user attr ``tune_trial_id``).

Why a record of the told trials rather than the searcher's own storage: the journal is
append-only, and a driver killed between Tune's experiment-state saves leaves trials that
Tune runs again on resume (under the same or a new id); in the sampler's own storage those
would stay as duplicates or as RUNNING forever. Here, on resume, the journal is rewritten
once without the trials Tune's restored state has not seen finish (``reconcile_journal``),
so it holds every finished trial exactly once; otherwise a resume only appends.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from contract.columns import JOURNAL, JOURNAL_STUDY, TUNE_TRIAL_ATTR

# Where each search's journal is in this driver: a searcher Tune restores from its state holds
# the path of the study's folder when it started, which a moved copy no longer is.
_located: dict[str, str] = {}


def locate_journal(study: str, search_seed, study_dir: str | Path) -> None:
    _located[optuna_study_name(study, search_seed)] = str(journal_path(study_dir))


def set_metric_names(study, names: list[str]) -> None:
    """Study.set_metric_names, without its ExperimentalWarning (stable since Optuna 3.2)."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)


def journal_path(study_dir: str | Path) -> Path:
    return Path(study_dir) / JOURNAL


def optuna_study_name(study: str, search_seed: int | None) -> str:
    return JOURNAL_STUDY.format(study=study, search_seed=search_seed)


def open_journal(path: str | Path):
    """A JournalStorage on the file (created when missing)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


class JournalRecorder:
    """Writes the told trials of one search into the journal; picklable (Tune saves searchers).

    The storage is opened lazily and dropped when pickled: only the path and names travel.
    """

    def __init__(self, path: str | Path, study_name: str, directions: list[str], metrics: list):
        self.path = str(path)
        self.study_name = study_name
        self.directions = ["minimize" if d == "min" else "maximize" for d in directions]
        self.metrics = list(metrics)
        self._study = None
        self._recorded: set[str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_study"] = None
        state["_recorded"] = None
        return state

    def study(self):
        if self._study is None:
            import optuna

            self.path = _located.get(self.study_name, self.path)
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            study = optuna.create_study(
                storage=open_journal(self.path),
                study_name=self.study_name,
                directions=self.directions,
                load_if_exists=True,
            )
            if study.metric_names != self.metrics:
                set_metric_names(study, self.metrics)
            self._recorded = {
                t.user_attrs.get(TUNE_TRIAL_ATTR) for t in study.get_trials(deepcopy=False)
            }
            self._study = study
        return self._study

    def record(self, trial, tune_trial_id: str) -> bool:
        """Add a finished FrozenTrial (COMPLETE or FAIL); False when that Tune trial is there."""
        import optuna

        study = self.study()
        if tune_trial_id in self._recorded:
            return False
        copy = optuna.trial.create_trial(
            state=trial.state,
            values=trial.values,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={**trial.user_attrs, TUNE_TRIAL_ATTR: tune_trial_id},
            system_attrs=trial.system_attrs,
            intermediate_values=trial.intermediate_values,
        )
        copy.datetime_start = trial.datetime_start
        study.add_trial(copy)
        self._recorded.add(tune_trial_id)
        return True


def journal_trials(path: str | Path, study_name: str) -> list:
    """The FrozenTrials of one search in the journal ([] when there is none)."""
    import optuna

    if not Path(path).exists():
        return []
    storage = open_journal(path)
    try:
        return optuna.load_study(study_name=study_name, storage=storage).get_trials()
    except KeyError:
        return []


def reconcile_journal(path: str | Path, study_name: str, finished: set[str]) -> int:
    """Keep in ``study_name`` only the trials whose Tune trial is in ``finished``.

    Rewrites the journal (every other study copied whole) into a temp file and replaces it
    atomically, only when something is dropped. Returns the number of trials dropped.
    """
    import optuna

    path = Path(path)
    if not path.exists():
        return 0
    old = open_journal(path)
    summaries = optuna.get_all_study_summaries(old, include_best_trial=False)
    dropped = 0
    kept: dict[str, list] = {}
    for summary in summaries:
        trials = optuna.load_study(study_name=summary.study_name, storage=old).get_trials()
        if summary.study_name == study_name:
            keep = [t for t in trials if t.user_attrs.get(TUNE_TRIAL_ATTR) in finished]
            seen: set[str] = set()
            unique = []
            for t in keep:  # one per Tune trial
                if t.user_attrs[TUNE_TRIAL_ATTR] not in seen:
                    seen.add(t.user_attrs[TUNE_TRIAL_ATTR])
                    unique.append(t)
            dropped += len(trials) - len(unique)
            trials = unique
        kept[summary.study_name] = trials
    if not dropped:
        return 0
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    new = open_journal(temp)
    for summary in summaries:
        study = optuna.create_study(
            storage=new, study_name=summary.study_name, directions=summary.directions
        )
        source = optuna.load_study(study_name=summary.study_name, storage=old)
        if source.metric_names:
            set_metric_names(study, source.metric_names)
        for key, value in source.user_attrs.items():
            study.set_user_attr(key, value)
        study.add_trials(kept[summary.study_name])
    temp.replace(path)
    return dropped


def attach_journal(searcher, study_dir: str | Path, study: str, search_seed, objectives) -> None:
    """Give an Optuna searcher its journal recorder (other searchers keep none)."""
    if hasattr(searcher, "journal"):
        searcher.journal = JournalRecorder(
            journal_path(study_dir),
            optuna_study_name(study, search_seed),
            list(objectives.values()),
            list(objectives),
        )


def reconcile_with_tune(study_dir: str | Path, study: str, search_seed, experiment_dir) -> int:
    """On resume: drop journal trials that Tune's restored state has not seen finish."""
    from ray.tune import ExperimentAnalysis

    path = journal_path(study_dir)
    if not path.exists():
        return 0
    finished = {
        t.trial_id
        for t in ExperimentAnalysis(str(experiment_dir)).trials
        if t.status in ("TERMINATED", "ERROR")
    }
    return reconcile_journal(path, optuna_study_name(study, search_seed), finished)
