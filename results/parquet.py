"""Parquet files of a study: atomic writes, keyed upserts, reads.

The files of a study live in ``<storage>/<name>/``. Tables are plain columns (the pandas
index is not stored) so that DuckDB, polars and Spark see exactly the contract's column
names. Writes go to a hidden temp file in the same folder and are renamed into place, so a
reader never sees half a file (and dataset readers skip the hidden temp file).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# re-exported: the names are contract.columns'
from contract.columns import HISTORY as HISTORY
from contract.columns import PARETO as PARETO
from contract.columns import STUDY_FILES as STUDY_FILES
from contract.columns import TRIALS as TRIALS

_PANDAS_METADATA_KEY = b"pandas"


def _arrow_table(df: pd.DataFrame, metadata: dict[str, str] | None) -> pa.Table:
    """Arrow table of ``df``, our metadata beside pandas' own (fails before any file exists)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if not metadata:
        return table
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map str to str, got {key!r}: {type(value).__name__}")
    merged = dict(table.schema.metadata or {})
    merged.update({key.encode(): value.encode() for key, value in metadata.items()})
    return table.replace_schema_metadata(merged)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself; best effort (not every OS/filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_table_atomic(
    df: pd.DataFrame, path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write ``df`` to ``path`` atomically: temp file in the same folder, fsync, os.replace.

    ``metadata`` (str -> str, e.g. {"sparsetune.spec": yaml_text}) goes into the Parquet
    schema metadata next to pandas' own. The index of ``df`` is not stored. On any error
    the previous file is left as it was and the temp file is removed.
    """
    _write_arrow_atomic(_arrow_table(df, metadata), Path(path))


def _write_arrow_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # hidden, unique per writer; open() rather than mkstemp so the file gets the umask's
    # permissions (mkstemp's 0600 would hide the table from other users of shared storage)
    temp_name = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with open(temp_name, "xb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _fsync_directory(path.parent)


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a Parquet file (or a folder of part files) into pandas.

    A single file is read through one open handle. By path, pyarrow takes the size from a
    stat and the bytes from a later open; a study renaming a new version into place between
    the two (every finished trial does) makes the read fail with "Page was smaller than
    expected". The handle keeps the size and the bytes from the same file.
    """
    path = Path(path)
    if path.is_dir():
        return pd.read_parquet(path, columns=columns)
    with open(path, "rb") as handle:
        return pd.read_parquet(handle, columns=columns)


def read_footer(path: str | Path) -> pq.FileMetaData:
    """The footer (row count, schema) of one Parquet file, read through one open handle."""
    with open(path, "rb") as handle:
        return pq.ParquetFile(handle).metadata


def _schema_file(path: Path) -> Path:
    """The file whose schema describes ``path``: itself, or the first part file of a folder."""
    if not path.is_dir():
        return path
    parts = sorted(
        p for p in path.rglob("*.parquet") if not p.name.startswith((".", "_")) and p.is_file()
    )
    if not parts:
        raise FileNotFoundError(f"no Parquet part files under {path}")
    return parts[0]


def read_metadata(path: str | Path) -> dict[str, str]:
    """The custom schema metadata of a Parquet file (pandas' own key left out)."""
    with open(_schema_file(Path(path)), "rb") as handle:  # one handle: see read_table
        raw = pq.read_schema(handle).metadata or {}
    return {
        key.decode(): value.decode() for key, value in raw.items() if key != _PANDAS_METADATA_KEY
    }


def _integer_like_columns(frames: Iterable[pd.DataFrame]) -> dict[str, str]:
    """Columns that are int (or bool) in every frame that has them -> the nullable dtype to use."""
    kinds: dict[str, set[str]] = {}
    for frame in frames:
        for column, dtype in frame.dtypes.items():
            if len(frame) and frame[column].isna().all():
                continue  # an all-null column (e.g. None from a dict row) says nothing of type
            if pd.api.types.is_bool_dtype(dtype):
                kind = "bool"
            elif pd.api.types.is_integer_dtype(dtype):
                kind = "int"
            else:
                kind = "other"
            kinds.setdefault(column, set()).add(kind)
    nullable_dtype = {frozenset({"int"}): "Int64", frozenset({"bool"}): "boolean"}
    return {
        column: nullable_dtype[frozenset(column_kinds)]
        for column, column_kinds in kinds.items()
        if frozenset(column_kinds) in nullable_dtype
    }


def _restore_integer_dtypes(df: pd.DataFrame, int_like: dict[str, str]) -> pd.DataFrame:
    """Undo pandas' float64/object fallback for the columns of ``int_like`` (in place)."""
    for column, nullable_dtype in int_like.items():
        values = df[column]
        if values.isna().any():
            df[column] = values.astype(nullable_dtype)
        else:
            df[column] = values.astype("int64" if nullable_dtype == "Int64" else bool)
    return df


def concat_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate frames over the union of their columns, keeping ints ints where possible.

    A column missing from some frames is null there. Columns that were integer (or bool)
    everywhere they appear stay int64 (bool) when nothing is missing, and become the
    nullable Int64 (boolean) otherwise, instead of pandas' float64 (object) fallback.
    """
    frames = [frame for frame in frames if len(frame.columns)]
    if not frames:
        return pd.DataFrame()
    combined = pd.concat(frames, ignore_index=True, sort=False)
    return _restore_integer_dtypes(combined, _integer_like_columns(frames))


def upsert_rows(
    path: str | Path,
    rows: pd.DataFrame,
    key: str | list[str],
    metadata: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Merge ``rows`` into the table at ``path`` by ``key`` and write it back atomically.

    The last row per key wins (a later row in ``rows`` beats an earlier one and the file).
    Rows keep the position where their key first appeared, so trial order is stable.
    Columns present in only some rows are kept (missing -> null). The file's custom
    metadata is kept; keys in ``metadata`` overwrite it. Returns the table as written.
    """
    path = Path(path)
    keys = [key] if isinstance(key, str) else list(key)
    if not keys:
        raise ValueError("key is empty: give a column name such as 'trial_id'")
    if path.is_dir():
        raise ValueError(f"{path} is a folder of part files; upsert needs a single Parquet file")
    existing = read_table(path) if path.exists() else None
    for name, frame in (("rows", rows), (str(path), existing)):
        missing = [k for k in keys if frame is not None and k not in frame.columns]
        if missing:
            raise ValueError(f"key column(s) {missing} missing from {name}")
    frames = [rows] if existing is None else [existing, rows]
    combined = pd.concat(frames, ignore_index=True, sort=False)
    # group number in order of first appearance, then the last row of each group in that order
    first_seen = combined.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    is_last = ~combined.duplicated(keys, keep="last").to_numpy()
    order = np.argsort(first_seen[is_last], kind="stable")
    result = combined[is_last].iloc[order].reset_index(drop=True)
    result = _restore_integer_dtypes(result, _integer_like_columns(frames))
    merged_metadata = read_metadata(path) if existing is not None else {}
    merged_metadata.update(metadata or {})
    table = _arrow_table(result, merged_metadata or None)
    _write_arrow_atomic(table, path)
    return table.to_pandas()  # exactly what a later read_table returns


def read_study(study_dir: str | Path) -> dict[str, pd.DataFrame]:
    """{"trials": ..., "history": ..., "pareto": ...} for those of the study's files that exist."""
    study_dir = Path(study_dir)
    return {
        name: read_table(study_dir / filename)
        for name, filename in STUDY_FILES.items()
        if (study_dir / filename).exists()
    }


def read_trials(study_dirs: list[str | Path] | str | Path) -> pd.DataFrame:
    """The trials of several studies concatenated (union of columns).

    Every study must have a trials file. A table without a "study" column gets the folder name.
    """
    if isinstance(study_dirs, str | Path):
        study_dirs = [study_dirs]
    frames = []
    for study_dir in map(Path, study_dirs):
        trials_path = study_dir / TRIALS
        if not trials_path.exists():
            raise FileNotFoundError(f"study {study_dir.name!r} has no {TRIALS} at {trials_path}")
        trials = read_table(trials_path)
        if "study" not in trials.columns:
            trials.insert(0, "study", study_dir.name)
        frames.append(trials)
    return concat_rows(frames)
