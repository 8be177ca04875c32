"""The train loop: one configuration, trained epoch by epoch, reporting the metrics of DESIGN.md.

`Trainer` holds everything a run needs (data on the device, model, optimizer, masks, FLOP
counters) and `state_dict()`s it so a trial can resume from a checkpoint. `train(config)`
yields one metrics dict per epoch; the Ray trainable and the `train` command both use it.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from contract.errors import ConfigError
from contract.metrics import METRICS as METRICS  # re-exported
from trainables.config import Config, make_config
from trainables.datasets import DeviceDataset, load_dataset
from trainables.flops import forward_flops
from trainables.lr_schedules import LR_SCHEDULES
from trainables.models import create_model
from trainables.optimizers import OPTIMIZERS
from trainables.sparsity.methods import METHODS


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def f1_macro(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Macro-averaged F1 from confusion counts (classes absent from both count as F1 = 0)."""
    tp = torch.bincount(target[pred == target], minlength=num_classes).float()
    predicted = torch.bincount(pred, minlength=num_classes).float()
    actual = torch.bincount(target, minlength=num_classes).float()
    f1 = 2 * tp / (predicted + actual).clamp_min(1)
    return f1.mean().item()


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def merge_val_into_train(data: DeviceDataset) -> DeviceDataset:
    """Re-evaluation trains on train+val (the split the search held out) and scores on test."""
    return dataclasses.replace(
        data,
        x_train=torch.cat([data.x_train, data.x_val]),
        y_train=torch.cat([data.y_train, data.y_val]),
        x_val=data.x_val[:0],
        y_val=data.y_val[:0],
    )


class Trainer:
    def __init__(self, config: dict[str, Any], data: DeviceDataset | None = None):
        self.config = config if isinstance(config, Config) else make_config(config)
        c = self.config
        self.device = resolve_device(c["device"])
        torch.manual_seed(c["seed"])
        self.generator = torch.Generator().manual_seed(c["seed"])
        if data is None:
            data = load_dataset(c["dataset"], c["data_dir"])
        self.data = data.configured(c).to(self.device)  # augment, val_fraction, folds, fold
        if c["full_train"]:
            self.data = merge_val_into_train(self.data)
        self.model = create_model(c["model"], self.data.input_shape, self.data.num_classes, **c).to(
            self.device
        )
        self.steps_per_epoch = math.ceil(len(self.data.y_train) / c["batch_size"])
        self.total_steps = c["epochs"] * self.steps_per_epoch
        self.optimizer_component = OPTIMIZERS.create(c["optimizer"], c)
        self.optimizer = self.optimizer_component.build(self.model.parameters())
        self.schedule = LR_SCHEDULES.create(c["lr_schedule"], c)
        self.method = METHODS.create(c["method"], c)
        try:
            self.sparse = self.method.build(
                self.model, c, total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch,
                generator=self.generator, input_shape=self.data.input_shape,
                gradient_momentum=self.optimizer_component.gradient_momentum,
            )  # fmt: skip
        except ValueError as error:  # a knob combination the method refuses: one clear line
            raise ConfigError(str(error)) from error
        self.dense_flops = forward_flops(self.model, self.data.input_shape)
        self.step = 0
        self.epoch = 0
        self.train_accuracy = 0.0  # running accuracy of the last training epoch
        self.train_flops = 0
        self.train_seconds = 0.0
        self.diverged = False

    def sparse_flops(self) -> int:
        return self.sparse.sparse_forward_flops()  # from the current masks

    def lr_at(self, step: int) -> float:
        # The schedule runs over the whole run, or over the rest of it from the step where the
        # method restarts it (ART's fine-tuning).
        start = self.sparse.lr_restart_step or 0
        span = max(self.total_steps - start, 1)
        return self.schedule.lr_at(min(step - start, span), span, self.config["lr"])

    def train_epoch(self) -> float:
        self.model.train()
        c = self.config
        total_loss, batches, correct = 0.0, 0, 0
        # A NaN/inf loss stops the epoch at once (checked every step on the CPU; every few
        # steps on an accelerator, where each check waits for the device).
        check_every = 1 if self.device.type == "cpu" else 8
        for x, y in self.data.train_batches(c["batch_size"], self.generator):
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_at(self.step)
            logits = self.model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=c["label_smoothing"])
            penalty = self.sparse.loss_penalty()  # e.g. hypersparse's regularization
            self.optimizer.zero_grad(set_to_none=True)
            (loss if penalty is None else loss + penalty).backward()
            # per sample, from the masks this step ran with (RigL: 2 f_S + f_D on updates)
            step_flops = self.sparse.step_flops(self.step)
            skip_step = self.sparse.after_backward(self.step, self.optimizer)
            if not skip_step:
                self.optimizer.step()
            self.sparse.after_step()
            self.train_flops += len(y) * step_flops
            correct += (logits.detach().argmax(dim=1) == y).sum()
            # `step` counts optimizer steps (rigl's global_step): a batch whose optimizer step
            # the method skipped (a RigL mask update) does not advance it.
            if not skip_step:
                self.step += 1
            loss_value = loss.detach()
            total_loss += loss_value
            batches += 1
            if batches % check_every == 0 and not torch.isfinite(total_loss).item():
                self.diverged = True
                break
        mean_loss = (total_loss / max(batches, 1)).item() if batches else float("nan")
        self.train_accuracy = int(correct) / max(len(self.data.y_train), 1)
        # per-epoch method work (hypersparse's pruned-copy check); returns its FLOPs
        self.train_flops += self.sparse.on_epoch_end(self)
        if not math.isfinite(mean_loss):
            self.diverged = True
        return mean_loss

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        if len(y) == 0:  # no validation split when training on train+val
            return math.nan, math.nan
        self.model.eval()
        # x is a stored split (uint8 images or standardized features), normalized batch by
        # batch on the device, so CIFAR-sized test sets and ResNets fit in memory.
        pred = torch.cat([self.model(xb).argmax(dim=1) for xb in self.data.eval_batches(x)])
        accuracy = (pred == y).sum().item() / len(y)  # exact, not float32
        return accuracy, f1_macro(pred, y, self.data.num_classes)

    @torch.no_grad()
    def time_inference(self) -> float:
        """Seconds for one forward pass over the test set, in eval mode."""
        self.model.eval()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        for xb in self.data.eval_batches(self.data.x_test):  # normalization included
            self.model(xb)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start

    def run_epoch(self) -> dict[str, Any]:
        start = time.perf_counter()
        train_loss = self.train_epoch()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.train_seconds += time.perf_counter() - start
        self.epoch += 1
        val_accuracy, val_f1 = self.evaluate(self.data.x_val, self.data.y_val)
        test_accuracy, _ = self.evaluate(self.data.x_test, self.data.y_test)
        return {
            "val_accuracy": val_accuracy,
            "val_error": 1.0 - val_accuracy,
            "test_accuracy": test_accuracy,
            "test_error": 1.0 - test_accuracy,
            "val_f1_macro": val_f1,
            "train_loss": train_loss,
            "train_flops": int(self.train_flops),
            "inference_flops": int(self.sparse_flops()),
            "nonzero_params": self.sparse.nonzero_params(),
            "total_params": self.sparse.total_params(),
            "density": self.sparse.density(),
            **self.sparse.model_bytes(),
            "train_seconds": self.train_seconds,
            "inference_seconds": self.time_inference(),
            "peak_memory_bytes": peak_memory_bytes(self.device),
            "epoch": self.epoch,
            "diverged": self.diverged,
        }

    @property
    def finished(self) -> bool:
        return self.diverged or self.epoch >= self.config["epochs"]

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sparse": self.sparse.state_dict(),
            "generator": self.generator.get_state(),
            "counters": {
                "step": self.step,
                "epoch": self.epoch,
                "train_flops": self.train_flops,
                "train_seconds": self.train_seconds,
                "diverged": self.diverged,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sparse.load_state_dict(state["sparse"])
        self.generator.set_state(state["generator"])
        for name, value in state["counters"].items():
            setattr(self, name, value)


def train(config: dict[str, Any], data: DeviceDataset | None = None) -> Iterator[dict[str, Any]]:
    """Train one configuration; yield the metrics after every epoch (stops early on divergence)."""
    trainer = Trainer(config, data)
    while not trainer.finished:
        yield trainer.run_epoch()
