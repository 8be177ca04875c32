"""When a trial checkpoints (issue 8): at most every `checkpoint_every_s` seconds, never with
its last epoch. The trainable runs here with a stand-in for Ray Tune's session and a fake
Trainer and clock, so no Ray and no training is needed."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

import tuner.trainable as trainable
from tuner.trainable import CHECKPOINT_EVERY_S, checkpoint_due, run_trial


@pytest.mark.parametrize(
    ("since", "every", "last", "due"),
    [
        (0.0, 0.0, False, True),  # every_s 0: every epoch
        (0.0, 0.0, True, False),  # never with the last epoch
        (4.9, 5.0, False, False),
        (5.0, 5.0, False, True),
        (99.0, 5.0, True, False),
        (1e9, math.inf, False, False),  # inf: never
    ],
)
def test_checkpoint_due(since, every, last, due):
    assert checkpoint_due(since, every, last) is due


def test_default_period_is_a_few_seconds():
    assert 0 < CHECKPOINT_EVERY_S <= 10  # a dead worker loses at most this much (+ an epoch)


class FakeTune:
    """What run_trial uses of ray.tune: report, get_checkpoint, Checkpoint.from_directory."""

    def __init__(self):
        self.reports: list[tuple[int, bool]] = []  # (epoch, with a checkpoint)
        self.Checkpoint = SimpleNamespace(from_directory=lambda directory: directory)

    def report(self, metrics, checkpoint=None):
        self.reports.append((metrics["epoch"], checkpoint is not None))

    def get_checkpoint(self):
        return None


def fake_trainer(epochs: int, seconds_per_epoch: float, clock: dict):
    class Trainer:
        def __init__(self, config, data=None):
            self.epoch = 0

        @property
        def finished(self):
            return self.epoch >= epochs

        def run_epoch(self):
            clock["now"] += seconds_per_epoch
            self.epoch += 1
            return {"epoch": self.epoch}

        def state_dict(self):
            return {"epoch": self.epoch}

    return Trainer


def checkpointed_epochs(monkeypatch, epochs: int, seconds_per_epoch: float, every_s: float):
    clock = {"now": 100.0}
    tune = FakeTune()
    monkeypatch.setattr(trainable, "tune", tune)
    monkeypatch.setattr(trainable, "Trainer", fake_trainer(epochs, seconds_per_epoch, clock))
    monkeypatch.setattr(trainable, "time", SimpleNamespace(monotonic=lambda: clock["now"]))
    space = SimpleNamespace(resolve=lambda config: config)
    run_trial({}, space, checkpoint_every_s=every_s)
    assert [epoch for epoch, _ in tune.reports] == list(range(1, epochs + 1))  # every epoch
    return [epoch for epoch, saved in tune.reports if saved]


def test_every_epoch_but_the_last_with_period_zero(monkeypatch):
    assert checkpointed_epochs(monkeypatch, 5, 0.1, 0.0) == [1, 2, 3, 4]


def test_short_trial_never_checkpoints(monkeypatch):
    # 10 epochs of 0.2 s: 2 s in all, under the 5 s period
    assert checkpointed_epochs(monkeypatch, 10, 0.2, 5.0) == []


def test_period_counts_from_the_last_checkpoint(monkeypatch):
    # 3 s epochs, 5 s period: due after epochs 2, 4, 6, 8; epoch 9 is the last
    assert checkpointed_epochs(monkeypatch, 9, 3.0, 5.0) == [2, 4, 6, 8]


def test_long_epochs_checkpoint_every_epoch(monkeypatch):
    assert checkpointed_epochs(monkeypatch, 4, 60.0, 5.0) == [1, 2, 3]


def test_never_with_infinite_period(monkeypatch):
    assert checkpointed_epochs(monkeypatch, 6, 60.0, math.inf) == []
