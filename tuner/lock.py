"""One driver per study: a lock file beside the study's folder.

``<storage>/.<name>.lock`` holds the driver's host, pid, process start time and its own start
time (JSON). It is created with O_CREAT|O_EXCL before anything of the study is written, and
removed when the driver ends (whatever the exit). It sits beside the folder, not in it, so
that `--overwrite` can move the old folder aside while the lock stays put.

A lock is stale, and taken over, when its driver is gone:
- same host: its pid is not alive, or it is alive but started at another time (pid reuse);
- another host (storage shared over NFS, or a URI): this driver cannot see that process, so
  the lock is never taken over automatically. The message names the host and pid; once that
  driver is known to be gone, delete the lock file it names.
On a URI (s3://, gs://) the lock is the same file under the URI, written with pyarrow; object
stores have no exclusive create, so two drivers started within the same second may both get
it (a check-then-write race), which a local or NFS folder does not have.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from contract.errors import ConfigError
from results.status import driver_gone, is_this_driver, this_driver


class StudyLockedError(ConfigError):
    """Another driver is running this study."""


def lock_path(storage: str, name: str) -> str:
    return f"{str(storage).rstrip('/')}/.{name}.lock"


def _holder() -> dict:
    return {
        **this_driver(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "started_at": time.time(),
    }


def is_stale(holder: dict) -> bool:
    """Whether the driver named in a lock is gone (decidable on this host only)."""
    return bool(driver_gone(holder))


def describe(holder: dict) -> str:
    return (
        f"driver pid {holder.get('pid')} on host {holder.get('host')}, "
        f"started {holder.get('started')}"
    )


class StudyLock:
    """Held for the life of one driver of one study; `acquire` refuses when another holds it."""

    def __init__(self, storage: str, name: str):
        self.storage, self.name = str(storage), name
        self.path = lock_path(storage, name)
        self.uri = "://" in self.storage
        self.held = False

    def _refuse(self, holder: dict) -> StudyLockedError:
        return StudyLockedError(
            f"study {self.name!r} is running: {describe(holder)} holds {self.path}; wait for "
            "it to end (or stop it), or pick another name (--set name=...). If that driver is "
            f"gone (another host), delete {self.path}"
        )

    def check_free(self) -> None:
        """Refuse now if a live driver holds the lock (creates nothing; `acquire` decides)."""
        if self.uri:
            import pyarrow.fs as pafs

            try:
                fs, path = pafs.FileSystem.from_uri(self.path)
                if fs.get_file_info(path).type == pafs.FileType.NotFound:
                    return
            except (OSError, ValueError):
                return  # unreachable storage: the study's own checks say so
        elif not Path(self.path).exists():
            return
        holder = self._read() or {"host": "?", "pid": None}
        if not is_stale(holder):
            raise self._refuse(holder)

    def acquire(self) -> StudyLock:
        holder = _holder()
        for _ in range(3):
            existing = self._create(holder)
            if existing is None:
                self.held = True
                return self
            if not is_stale(existing):
                raise self._refuse(existing)
            self._remove_stale(existing)
        raise self._refuse(existing)

    def _create(self, holder: dict) -> dict | None:
        """Create the lock with `holder`; None on success, else the holder found there."""
        text = json.dumps(holder)
        if self.uri:
            return self._create_uri(text)
        Path(self.storage).mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return self._read() or {"host": "?", "pid": None}
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return None

    def _create_uri(self, text: str) -> dict | None:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(self.path)
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            return self._read() or {"host": "?", "pid": None}
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as stream:
            stream.write(text.encode())
        return None

    def _read(self) -> dict | None:
        try:
            if self.uri:
                from results.remote import read_text

                text = read_text(self.path)
            else:
                text = Path(self.path).read_text()
            holder = json.loads(text)
            return holder if isinstance(holder, dict) else None
        except (OSError, ValueError):
            return None  # half-written or unreadable: treated as a dead driver's below

    def _remove_stale(self, holder: dict) -> None:
        # Take it over only if it is still the same stale lock (another driver may have won).
        if self._read() not in (holder, None):
            return
        self._unlink()

    def _unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError, OSError):
            if self.uri:
                import pyarrow.fs as pafs

                fs, path = pafs.FileSystem.from_uri(self.path)
                fs.delete_file(path)
            else:
                os.unlink(self.path)

    def release(self) -> None:
        if not self.held:
            return
        current = self._read()
        if current is None or is_this_driver(current):
            self._unlink()
        self.held = False

    def __enter__(self) -> StudyLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
