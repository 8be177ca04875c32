"""Ctrl-C is a pause: the first SIGINT/SIGTERM stops the whole study and saves it; a second
one exits at once.

The driver installs `Interrupts` before Ray starts. The first signal only sets a flag:
between searches (and during Ray's start-up) run_study checks it; inside a search,
`tuner.callbacks.RelayInterrupt` (a Tune callback) hands it to Tune as SIGUSR1, which Tune
(`tune.run`) always handles by ending the search gracefully and saving its experiment state
one last time, with unfinished trials left for `resume`. Tune's own SIGINT handler is off
(TUNE_DISABLE_SIGINT_HANDLER) so that one Ctrl-C is not consumed by one search. Ray's own
processes block SIGINT, and die with the driver (Ray's fate sharing), so a second signal's
immediate exit leaves nothing running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupts:
    """The process's SIGINT/SIGTERM handlers for one study run (a context manager)."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}
        self._before_exit: list = []

    def before_exit(self, action) -> None:
        """`action()` runs (last registered first) before a second signal's immediate exit:
        e.g. releasing the study's lock, putting back a study being replaced."""
        self._before_exit.append(action)

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signal, 130)

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # the second one: out now, no traceback, no cleanup
            sys.stderr.write(f"\ninterrupted again ({signal.Signals(signum).name}): exiting now\n")
            sys.stderr.flush()
            for action in reversed(self._before_exit):
                with contextlib.suppress(Exception):
                    action()
            os._exit(EXIT_CODES.get(signum, 130))
        self.signal = signum
        sys.stderr.write(
            f"\n{signal.Signals(signum).name}: stopping the study and saving it "
            "(press Ctrl-C again to exit at once)\n"
        )
        sys.stderr.flush()
        relay_to_tune()

    def __enter__(self) -> Interrupts:
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for signum in EXIT_CODES:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    @contextlib.contextmanager
    def around_ray_start(self):
        """`ray.init` installs its own SIGTERM handler (`sys.exit(15)`, a traceback when it
        lands mid-start); while it starts, ours stays, and afterwards ours is back."""
        import ray._private.utils as ray_utils

        original = ray_utils.set_sigterm_handler
        ray_utils.set_sigterm_handler = lambda handler: None
        try:
            yield
        finally:
            ray_utils.set_sigterm_handler = original
            for signum in EXIT_CODES:
                signal.signal(signum, self._handle)


def relay_to_tune() -> bool:
    """Ask a running `tune.run` to end gracefully (its SIGUSR1 handler); False when none runs.

    Outside a search the default SIGUSR1 action would kill the process, so check first.
    """
    handler = signal.getsignal(signal.SIGUSR1)
    if getattr(handler, "__name__", "") != "signal_interrupt_tune_run":
        return False
    os.kill(os.getpid(), signal.SIGUSR1)
    return True
