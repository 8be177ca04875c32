"""Quiet by default: Ray's and Tune's repeated notices go to the study's driver.log only.

Every log record of Ray's loggers (Tune's included) is also written to
``<study>/driver.log`` (kept in memory until the study's folder exists). The notices below
say nothing a sparsetune user can act on, or say it wrongly for a study (Tune's
`Tuner.restore(...)` hint where `run_study.py resume` is meant), so without `--verbose` they
reach only that file. Tune's own console output (its experiment box, "View detailed results
here", a failed trial's "errored after ... Error file:") is off too: its legacy reporter at
`verbose=0` prints nothing (RAY_AIR_NEW_OUTPUT=0, unless the user set it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

# logger name -> message prefixes kept off the terminal unless --verbose
NOTICES = {
    "ray.tune.execution.experiment_state": ("Experiment state snapshotting has been triggered",),
    "ray._private.authentication.authentication_token_setup": ("Token authentication is",),
    "ray.tune.analysis.experiment_analysis": ("Failed to fetch metrics",),
    # a failed trial's traceback: its progress line says why, error.txt holds the traceback
    "ray.tune.execution.tune_controller": ("Trial task failed",),
    "ray.tune.tune": (
        "Stop signal received",
        "Experiment has been interrupted",
        "Trials did not complete",
    ),
}


class StudyLogHandler(logging.Handler):
    """Writes records to a file once `attach`ed; before that, keeps them."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.pending: list[logging.LogRecord] = []
        self.stream = None

    def attach(self, path: Path) -> None:
        self.stream = Path(path).open("a")  # noqa: SIM115 - open until the study ends
        for record in self.pending:
            self.emit(record)
        self.pending.clear()

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:
            self.pending.append(record)
            return
        try:
            self.stream.write(self.format(record) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        super().close()


class _Divert(logging.Filter):
    """On one logger: its notices go to the study's log instead of further up (the terminal)."""

    def __init__(self, prefixes: tuple[str, ...], handler: StudyLogHandler):
        super().__init__()
        self.prefixes, self.handler = prefixes, handler

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(self.prefixes):
            self.handler.handle(record)
            return False
        return True


class RayLogRouting:
    """A context manager: Ray's log records also to driver.log; its notices only there unless
    `verbose`."""

    def __init__(self, verbose: bool):
        self.verbose = verbose
        self.handler = StudyLogHandler()
        self._filters: list[tuple[logging.Logger, _Divert]] = []

    def attach(self, path: Path) -> None:
        self.handler.attach(path)

    def __enter__(self) -> RayLogRouting:
        logging.getLogger("ray").addHandler(self.handler)
        self._set_output = False
        if not self.verbose and "RAY_AIR_NEW_OUTPUT" not in os.environ:
            os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
            self._set_output = True
        if not self.verbose:
            for name, prefixes in NOTICES.items():
                logger = logging.getLogger(name)
                divert = _Divert(prefixes, self.handler)
                logger.addFilter(divert)
                self._filters.append((logger, divert))
        return self

    def __exit__(self, *exc) -> None:
        if self._set_output:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        for logger, divert in self._filters:
            logger.removeFilter(divert)
        logging.getLogger("ray").removeHandler(self.handler)
        self.handler.close()
