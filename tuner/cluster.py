"""A study as a Ray Job on a cluster: submit it, list the cluster's studies and their state.

Talks to the head's dashboard (`http://HEAD:8265`) through Ray's `JobSubmissionClient`. With
token authentication on (every Ray 2.60 cluster this project starts), each request carries
the cluster's token as a bearer header: from RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH, or
~/.ray/auth_token, the same places `ray` itself looks.
"""

from __future__ import annotations

import os
import secrets
import shlex
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from contract.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# Metadata key that marks a Ray Job as a sparsetune study (its value: the study's name).
STUDY_KEY = "sparsetune_study"
# Not shipped with the job: results, data, environments, caches (besides .gitignore's list).
EXCLUDES = [".venv", "runs", "data", ".git", "__pycache__", ".pytest_cache", ".ruff_cache"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def auth_token() -> str | None:
    """The cluster token this machine holds, where Ray looks for it (None: no token)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if path.is_file():
        return path.read_text().strip() or None
    return None


def local_token_path() -> Path | None:
    """Where a new local Ray keeps its token when HOME cannot hold it (None: HOME can).

    Ray writes a new cluster's token to ~/.ray/auth_token; with a read-only or missing HOME
    it would fail with a traceback. Then the token goes to a private folder under the temp
    directory, named for this user, and RAY_AUTH_TOKEN_PATH points Ray (and the processes it
    starts) at it.
    """
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return None
    home_ray = Path(os.environ.get("HOME") or "/nonexistent") / ".ray"
    try:
        home_ray.mkdir(parents=True, exist_ok=True)
        if os.access(home_ray, os.W_OK):
            return None
    except OSError:
        pass
    folder = Path(tempfile.gettempdir()) / f"sparsetune-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / "auth_token"
    if not path.is_file() or not path.read_text().strip():
        # as Ray's own generate_and_save_token: 256 random bits, readable by this user only
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path


def auth_headers() -> dict[str, str]:
    token = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def client(address: str):
    """A JobSubmissionClient for the head's dashboard address (e.g. http://127.0.0.1:8265)."""
    from ray.job_submission import JobSubmissionClient

    if "://" not in address:
        address = f"http://{address}"
    from ray.exceptions import AuthenticationError

    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except AuthenticationError as err:
        raise refused(address, err) from None
    except (ConnectionError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(
            f"--address {address!r}: no Ray Jobs API answers there ({first}); give the head's "
            "dashboard address (http://HEAD:8265, or `ray dashboard cluster.yaml` and "
            "http://127.0.0.1:8265), and its token (RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"
        ) from None


def refused(address: str, err: Exception) -> ConfigError:
    """A Jobs API error as one line; a 401/403 names where the token goes."""
    text = str(err)
    first = (text.strip().splitlines() or [type(err).__name__])[0][:200]
    if "401" in text or "403" in text or "uthenticat" in text:
        return ConfigError(
            f"--address {address!r}: the cluster refused the request ({first}): give this "
            "machine the cluster's token (RAY_AUTH_TOKEN_PATH, RAY_AUTH_TOKEN or "
            "~/.ray/auth_token)"
        )
    return ConfigError(f"--address {address!r}: the Jobs API failed: {first}")


@dataclass
class Submission:
    job_id: str
    study: str
    entrypoint: str
    address: str


def entrypoint(spec_path: str, sets: list[str], python: str = "python") -> str:
    """The job's command: `run_study.py run` joining the cluster the job runs on."""
    argv = [python, "run_study.py", "run", spec_path]
    for assignment in sets:
        argv += ["--set", assignment]
    argv += ["--address", "auto", "--no-dashboard"]
    return shlex.join(argv)


def submit_study(
    address: str,
    spec: str | Path,
    sets: list[str] | None = None,
    *,
    working_dir: str | Path = ROOT,
    python: str = "python",
    env_vars: dict[str, str] | None = None,
) -> Submission:
    """Validate the spec here, then submit it as a Ray Job with the project as working dir."""
    from tuner.spec import load_spec

    sets = list(sets or [])
    study = load_spec(spec, sets)  # bad input fails here, before anything is submitted
    working_dir = Path(working_dir).resolve()
    spec_path = Path(spec).resolve()
    try:
        relative = spec_path.relative_to(working_dir).as_posix()
    except ValueError:
        raise ConfigError(
            f"{spec}: the spec must live inside the working dir {working_dir} (it is shipped "
            "with the job); copy it to studies/"
        ) from None
    command = entrypoint(relative, sets, python)
    job_id = f"sparsetune-{study.name}-{uuid.uuid4().hex[:8]}"
    runtime_env = {
        "working_dir": str(working_dir),
        "excludes": EXCLUDES,
        # The cluster's nodes already hold the project's environment (cluster.yaml's setup).
        "env_vars": {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", **(env_vars or {})},
    }
    jobs = client(address)
    try:
        jobs.submit_job(
            entrypoint=command,
            submission_id=job_id,
            runtime_env=runtime_env,
            metadata={STUDY_KEY: study.name, "spec": relative, "storage": study.storage},
        )
    except Exception as err:  # RuntimeError, AuthenticationError: one line, not a traceback
        raise refused(address, err) from None
    return Submission(job_id, study.name, command, address)


def study_jobs(address: str) -> list[dict]:
    """The cluster's sparsetune jobs, oldest first: id, study, status, times, message."""
    try:
        jobs = client(address).list_jobs()
    except Exception as err:  # RuntimeError, AuthenticationError: one line, not a traceback
        raise refused(address, err) from None
    rows = []
    for job in jobs:
        metadata = job.metadata or {}
        if STUDY_KEY not in metadata:
            continue
        start, end = job.start_time, job.end_time
        seconds = ((end or time.time() * 1000) - start) / 1000 if start else None
        rows.append(
            {
                "job_id": job.submission_id or job.job_id,
                "study": metadata[STUDY_KEY],
                "status": str(getattr(job.status, "value", job.status)),
                "started": (
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start / 1000))
                    if start
                    else ""
                ),
                "seconds": round(seconds) if seconds is not None else None,
                "storage": metadata.get("storage", ""),
                "message": (job.message or "").splitlines()[0][:80] if job.message else "",
            }
        )
    return sorted(rows, key=lambda r: r["started"])


def wait_for_job(address: str, job_id: str, timeout: float = 3600, poll: float = 2.0) -> str:
    """Poll the Jobs API until the job ends; its final status (or the last one at timeout)."""
    jobs = client(address)
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = str(getattr(jobs.get_job_status(job_id), "value", ""))
        if status in TERMINAL:
            return status
        time.sleep(poll)
    return status


def job_logs(address: str, job_id: str) -> str:
    return client(address).get_job_logs(job_id)
