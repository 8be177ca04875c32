"""No silent hangs: `trial_timeout_s` ends a trial that runs too long, whatever it is doing.

A trial that sleeps forever never reports, so a Tune Stopper (which sees reports only) cannot
end it. `TrialTimeout` checks the running trials' wall clock at every step of Tune's loop and
kills the actor of one past its limit, after telling Tune not to retry it (`max_failures = 0`
for that trial): it ends `failed`, and `TIMED_OUT` holds the reason the Parquet writer and the
progress line show. `study_timeout_s` is Tune's own `time_budget_s`.
"""

from __future__ import annotations

import time

from ray.tune import Callback

# trial_id -> the reason a trial was ended (read by tuner.callbacks, in the same driver)
TIMED_OUT: dict[str, str] = {}


def timeout_reason(seconds: float) -> str:
    return f"trial_timeout_s={seconds:g}: the trial ran longer than {seconds:g} s and was ended"


class TrialTimeout(Callback):
    def __init__(self, seconds: float):
        self.seconds = seconds
        self._started: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started[trial.trial_id] = time.monotonic()

    def on_step_begin(self, iteration, trials, **info):
        import ray

        now = time.monotonic()
        for trial in trials:
            if trial.status != "RUNNING":
                continue
            started = self._started.setdefault(trial.trial_id, now)  # e.g. restored running
            if now - started < self.seconds or trial.trial_id in TIMED_OUT:
                continue
            actor = trial.temporary_state.ray_actor
            if actor is None:
                continue
            TIMED_OUT[trial.trial_id] = timeout_reason(self.seconds)
            trial.max_failures = 0  # a timeout is not a crash to retry
            ray.kill(actor, no_restart=True)


class StudyDeadline(Callback):
    """`study_timeout_s`: past it, the running search ends as on Ctrl-C (saved, resumable)
    and no further search starts. The clock runs per driver: a resume gets the time again."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds
        self.fired = False

    def passed(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def on_step_begin(self, iteration, trials, **info):
        from tuner.interrupt import relay_to_tune

        if self.passed() and not self.fired:
            self.fired = relay_to_tune()

    def __reduce__(self):  # Tune pickles its callbacks: a restored copy has no deadline
        return (StudyDeadline, (None,))
