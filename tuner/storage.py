"""Studies on shared storage: `storage: s3://bucket/runs` (or gs://, or any pyarrow URI).

Tune writes its experiment state straight to the URI (its storage_path takes URIs). The
study's own files (trials.parquet, history.parquet, pareto.parquet, the PNG, spec.yaml) are
written atomically in a local staging folder, as for a local study, and copied to
``<storage>/<name>/`` with pyarrow.fs after every trial and at the end. Readers then use
pyarrow/pandas/DuckDB/polars on the URI (``pd.read_parquet("s3://.../trials.parquet")``).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from ray.tune import Callback

from contract.errors import ConfigError
from results.remote import download_files, is_uri, upload_files
from tuner.spec import StudySpec


def study_uri(spec: StudySpec) -> str | None:
    """``<storage>/<name>`` when the study lives behind a URI; None for a local folder."""
    return f"{spec.storage.rstrip('/')}/{spec.name}" if is_uri(spec.storage) else None


def remote_exists(uri: str, name: str) -> bool:
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs.get_file_info(f"{path}/{name}").type != pafs.FileType.NotFound
    except (OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ConfigError(
            f"storage={uri.rsplit('/', 1)[0]!r}: cannot reach it ({first}); check the URI and "
            "this machine's credentials for it"
        ) from None


def staged_spec(spec: StudySpec, uri: str, *, overwrite: bool, resume: bool) -> StudySpec:
    """The same spec with its storage in a fresh local staging folder (checked first)."""
    staging = tempfile.mkdtemp(prefix=f"sparsetune-{spec.name}-")
    if resume:  # the study's files come back from the URI; Tune restores from it directly
        if not remote_exists(uri, "trials.parquet"):
            raise ConfigError(f"no study to resume at {uri}: trials.parquet not found there")
        download_files(uri, Path(staging) / spec.name)
        return dataclasses.replace(spec, storage=staging)
    if not overwrite and remote_exists(uri, "trials.parquet"):
        raise ConfigError(
            f"{uri} already holds a study. Pass --overwrite to replace it, or "
            "--set name=<new name> to keep both"
        )
    return dataclasses.replace(spec, storage=staging)


def upload_study_files(study_dir: Path, uri: str) -> list[str]:
    """Copy the study's top-level files (not Tune's folders: Tune writes those itself)."""
    return upload_files(study_dir, uri)


class UploadStudyFiles(Callback):
    """After each trial's Parquet write (callbacks run in order): copy the files to the URI."""

    def __init__(self, study_dir: Path, uri: str):
        self.study_dir, self.uri = Path(study_dir), uri

    def on_trial_complete(self, iteration, trials, trial, **info):
        upload_study_files(self.study_dir, self.uri)

    def on_trial_error(self, iteration, trials, trial, **info):
        upload_study_files(self.study_dir, self.uri)
