"""Finding studies on disk and the facts every results command needs about them.

A study lives in ``<storage>/<name>/`` and is known by its ``trials.parquet``. Errors that a
user can fix (a missing study, objectives that disagree) are ``ResultsError``: the command
line prints them as one ``error:`` line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

# re-exported: the names are contract's
from contract.columns import COMPLETED as COMPLETED
from contract.columns import OBJECTIVES_KEY as OBJECTIVES_KEY
from contract.columns import SPEC_KEY as SPEC_KEY
from contract.errors import ResultsError as ResultsError
from contract.errors import StudyNotFoundError as StudyNotFoundError
from results.parquet import TRIALS, read_metadata
from results.remote import cache_dir, download_files, is_uri

FINISHED_AT = "finished_at"


def list_studies(storage: str | Path) -> list[str]:
    """Names of the folders under ``storage`` that hold a trials table."""
    storage = Path(storage)
    if not storage.is_dir():
        return []
    return sorted(p.name for p in storage.iterdir() if (p / TRIALS).exists())


def find_study(name: str, storage: str | Path = "runs") -> Path:
    """The folder of study ``name``: ``<storage>/<name>``, or ``name`` itself if that is one.

    With ``storage`` a URI (s3://bucket/runs, gs://..., file://...), the study's files are
    fetched into a local cache (``results.remote.cache_dir``) and that folder is returned.
    Raises StudyNotFoundError naming the path searched and the studies that do exist.
    """
    if is_uri(storage):
        return fetch_study(name, str(storage))
    candidate = Path(storage) / name
    if (candidate / TRIALS).exists():
        return candidate
    as_path = Path(name)
    if as_path != candidate and (as_path / TRIALS).exists():
        return as_path
    known = list_studies(storage)
    where = f"studies in {storage}: {', '.join(known)}" if known else f"no studies in {storage}"
    raise StudyNotFoundError(f"no study {name!r}: {candidate / TRIALS} does not exist ({where})")


def fetch_study(name: str, storage: str) -> Path:
    """A local copy of the study ``<storage>/<name>`` on a URI (refreshed on every call)."""
    import shutil

    uri = f"{storage.rstrip('/')}/{name}"
    local = cache_dir(uri)
    shutil.rmtree(local, ignore_errors=True)
    try:
        fetched = download_files(uri, local)
    except (OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ResultsError(f"cannot read {uri} ({first}); check the URI and credentials") from None
    if TRIALS not in fetched:
        raise StudyNotFoundError(f"no study {name!r}: {uri}/{TRIALS} does not exist")
    return local


def study_objectives(study_dir: str | Path) -> dict[str, str]:
    """The objectives (metric -> "min" | "max") stored in the study's trials metadata, or {}."""
    text = read_metadata(Path(study_dir) / TRIALS).get(OBJECTIVES_KEY)
    if not text:
        return {}
    try:
        objectives = json.loads(text)
    except json.JSONDecodeError as error:
        raise ResultsError(f"{study_dir}: bad {OBJECTIVES_KEY} metadata: {error}") from error
    return {str(k): str(v) for k, v in objectives.items()}


def common_objectives(study_dirs: list[Path]) -> dict[str, str]:
    """The objectives all the studies agree on; ResultsError if they differ or none are stored."""
    found = {str(d): study_objectives(d) for d in study_dirs}
    distinct = {json.dumps(o, sort_keys=True) for o in found.values()}
    if len(distinct) > 1:
        detail = "; ".join(f"{d}: {o}" for d, o in found.items())
        raise ResultsError(
            f"the studies have different objectives ({detail}); "
            "give them with --objectives, e.g. --objectives val_error=min train_flops=min"
        )
    objectives = next(iter(found.values()), {})
    if not objectives:
        raise ResultsError(
            f"no objectives stored in {', '.join(found)} (metadata {OBJECTIVES_KEY}); "
            "give them with --objectives, e.g. --objectives val_error=min train_flops=min"
        )
    return objectives


def parse_objectives(items: list[str]) -> dict[str, str]:
    """["val_error=min", "train_flops:min"] -> {"val_error": "min", "train_flops": "min"}."""
    objectives = {}
    for item in items:
        for separator in ("=", ":"):
            if separator in item:
                name, mode = (s.strip() for s in item.split(separator, 1))
                break
        else:
            raise ResultsError(f"objective {item!r}: expected NAME=min or NAME=max")
        if mode not in ("min", "max"):
            raise ResultsError(f"objective {item!r}: mode {mode!r}; allowed: min, max")
        objectives[name] = mode
    return objectives


def completed(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with status "completed" (all rows if there is no status column)."""
    if "status" not in df.columns:
        return df
    return df[df["status"] == COMPLETED]


def completion_order(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` in the order its trials finished.

    By ``finished_at`` (UTC timestamp written as each trial finishes; rows without one go
    last); tables written before that column existed are already in completion order (the
    trials callback appends each trial as it finishes), so their row order is kept.
    """
    if FINISHED_AT not in df.columns or df[FINISHED_AT].isna().all():
        return df
    finished = pd.to_datetime(df[FINISHED_AT], utc=True, errors="coerce")
    keys = finished.to_numpy(dtype="datetime64[ns]").astype("int64").astype(float)
    keys[finished.isna().to_numpy()] = np.inf
    return df.iloc[np.argsort(keys, kind="stable")]
