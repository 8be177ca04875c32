"""Studies behind a URI (s3://, gs://, file://, any pyarrow filesystem): copy their files.

A study on shared storage is ``<uri>/<name>/`` with the same top-level files as a local one
(trials.parquet, history.parquet, pareto.parquet, spec.yaml, PNGs) beside Tune's folders.
The results commands read it anywhere by fetching those files into a local cache first;
the tuner uploads them with the same helper. pyarrow only: no Ray, no torch.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def is_uri(storage: str | Path) -> bool:
    return "://" in str(storage)


def _filesystem(uri: str):
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(uri)


def upload_files(local_dir: str | Path, uri: str) -> list[str]:
    """Copy the top-level files of ``local_dir`` (not its folders) to ``uri``; their names."""
    import pyarrow.fs as pafs

    fs, path = _filesystem(uri)
    fs.create_dir(path, recursive=True)
    copied = []
    for file in sorted(Path(local_dir).iterdir()):
        if file.is_file() and not file.name.startswith("."):
            pafs.copy_files(str(file.resolve()), f"{path}/{file.name}", destination_filesystem=fs)
            copied.append(file.name)
    return copied


def download_files(uri: str, local_dir: str | Path) -> list[str]:
    """Copy the top-level files under ``uri`` (not its folders) into ``local_dir``."""
    import pyarrow.fs as pafs

    fs, path = _filesystem(uri)
    local_dir = Path(local_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        if info.type == pafs.FileType.File and not info.base_name.startswith("."):
            pafs.copy_files(info.path, str(local_dir / info.base_name), source_filesystem=fs)
            copied.append(info.base_name)
    return copied


def read_text(uri: str) -> str:
    """One file's text (a spec.yaml) straight from the URI; FileNotFoundError when absent."""
    fs, path = _filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read().decode()


def cache_dir(uri: str) -> Path:
    """A local folder for a copy of ``uri``: $SPARSETUNE_CACHE (default ~/.cache/sparsetune)."""
    root = Path(os.environ.get("SPARSETUNE_CACHE", Path.home() / ".cache" / "sparsetune"))
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return root / "studies" / f"{hashlib.sha256(uri.encode()).hexdigest()[:12]}-{name}"
