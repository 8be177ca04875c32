"""The Ray Tune trainables: thin wrappers that run a training function inside a Ray worker."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
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


def import_function(path: str) -> Callable[[dict[str, Any]], Any]:
    """'package.module:function' or '/path/to/file.py:function' -> the function."""
    target, _, name = path.rpartition(":")
    if target.endswith(".py"):
        module_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, name)


def run_custom_trial(config: dict[str, Any], space: SearchSpace, function: str) -> None:
    """A user's trainable: a function of the config that calls `ray.tune.report(metrics)`."""
    import_function(function)(space.resolve(config))
