"""The Ray Tune trainable: a thin wrapper that runs `trainables.train` inside a Ray worker."""

from __future__ import annotations

from typing import Any

from ray import tune

from search_spaces import SearchSpace
from trainables.datasets import DeviceDataset
from trainables.train import Trainer


def run_trial(
    config: dict[str, Any], space: SearchSpace, data: DeviceDataset | None = None
) -> None:
    """Train the config (conditions of the space applied) and report metrics every epoch.

    `data` arrives through the Ray object store (`tune.with_parameters`): the dataset is
    loaded once by the driver and shared by every trial on a node.
    """
    trainer = Trainer(space.resolve(config), data)
    while not trainer.finished:
        tune.report(trainer.run_epoch())
