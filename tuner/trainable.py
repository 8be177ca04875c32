"""The Ray Tune trainables: thin wrappers that run a training function inside a Ray worker.

Every epoch the built-in trainable reports its metrics; with them, at most every
`checkpoint_every_s` seconds (`checkpoint_due`), a checkpoint of the Trainer's state (weights,
masks, optimizer, RNG, counters); a trial whose worker or node dies is restarted by Tune
(`FailureConfig(max_failures)`) and resumes from its last checkpoint. An error
of the trial itself (a bad device, out of memory, a model too large) is deterministic: the
trial reports it as its last result (`error`) and ends, so Tune never retries it.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from ray import tune

from search_spaces import SearchSpace
from trainables.config import SPARSE_METHODS_ONLY, Config, make_config, unread_knobs
from trainables.datasets import DeviceDataset
from trainables.train import Trainer
from tuner.imports import import_function

STATE_FILE = "trainer.pt"
ERROR_KEY = "error"  # the last result of a trial whose own code raised
# A trial checkpoints with an epoch's report once this many seconds have passed since its
# last checkpoint (or its start, or its restore), never with its last epoch; 0: every epoch.
# A dead worker's trial loses at most this much work (plus the epoch it was in).
CHECKPOINT_EVERY_S = 5.0


def checkpoint_due(seconds_since_checkpoint: float, every_s: float, last_epoch: bool) -> bool:
    """Whether this epoch's report carries a checkpoint: never the last epoch's (nothing is
    left to resume), otherwise once `every_s` seconds have passed since the last one."""
    return not last_epoch and seconds_since_checkpoint >= every_s


def describe_error(error: BaseException) -> str:
    """One line for Parquet's `error` column: the exception, with a hint for out of memory."""
    import torch

    text = f"{type(error).__name__}: {error}".strip().splitlines()[0][:400]
    out_of_memory = isinstance(error, MemoryError | torch.OutOfMemoryError) or (
        "can't allocate memory" in str(error) or "out of memory" in str(error).lower()
    )
    if out_of_memory:
        text = "out of memory: " + text + " (reduce width/depth/batch_size, or give trials more)"
    return text


def report_error(error: Exception) -> None:
    """End the trial with its error as the last result (Tune then doesn't retry it)."""
    traceback.print_exc()  # the full traceback in the worker's log
    tune.report({ERROR_KEY: describe_error(error)})


def save_checkpoint(trainer: Trainer, metrics: dict[str, Any]) -> None:
    import torch

    with tempfile.TemporaryDirectory(prefix="sparsetune-ckpt-") as directory:
        torch.save(trainer.state_dict(), Path(directory) / STATE_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def restore_checkpoint(trainer: Trainer) -> bool:
    """Load the trial's last checkpoint, if Tune restarted it; True when one was loaded."""
    import torch

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return False
    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
    trainer.load_state_dict(state)
    return True


def resolved_config(config: dict[str, Any], space: SearchSpace) -> Config:
    """The config a built-in trial trains with, resolved once: the space's conditions applied,
    the chosen components' defaults filled in, frozen. The worker trains with it and the
    driver's ParquetWriter records it (the same function of the same suggestion).

    Conditions generated from the registries: a searched knob that none of the chosen
    components reads (`momentum` in a trial that drew `optimizer: adam`) is inactive, as if
    the space said `when: "optimizer == sgd"`; a fixed one is an error (caught by the spec)."""
    resolved = space.resolve(config)
    for name in unread_knobs(resolved):
        if name in space.parameters or name == SPARSE_METHODS_ONLY:  # dense: trains at 0
            del resolved[name]
    return make_config(resolved)


def recorded_config(config: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """What Parquet records of a built-in trial: its resolved config, every knob its components
    read with the value it trained with (a default where the space's condition made a knob
    inactive), and no other (`update_interval` of a static trial: static reads none)."""
    return resolved_config(config, space).to_dict()


def run_trial(
    config: dict[str, Any],
    space: SearchSpace,
    data: DeviceDataset | None = None,
    checkpoint_every_s: float = CHECKPOINT_EVERY_S,
) -> None:
    """Train the config (conditions of the space applied) and report metrics every epoch,
    with a checkpoint when `checkpoint_due`.

    `data` arrives through the Ray object store (`tune.with_parameters`): the dataset is
    loaded once by the driver and shared by every trial on a node.
    """
    try:
        trainer = Trainer(resolved_config(config, space), data)
        restore_checkpoint(trainer)
    except Exception as error:  # the config's own error: report it, don't let Tune retry
        report_error(error)
        return
    last_checkpoint = time.monotonic()
    while not trainer.finished:
        try:
            metrics = trainer.run_epoch()
        except Exception as error:
            report_error(error)
            return
        # the last epoch (or diverged) has nothing left to resume
        if checkpoint_due(time.monotonic() - last_checkpoint, checkpoint_every_s, trainer.finished):
            save_checkpoint(trainer, metrics)
            last_checkpoint = time.monotonic()
        else:
            tune.report(metrics)


def run_custom_trial(config: dict[str, Any], space: SearchSpace, function: str) -> None:
    """A user's trainable: a function of the config that calls `ray.tune.report(metrics)`."""
    try:
        import_function(function)(space.resolve(config))
    except Exception as error:
        if type(error).__module__.split(".")[0] == "ray":  # Ray's own: let Tune handle it
            raise
        report_error(error)
