"""Learning-rate schedules as components: `lr_schedule` = cosine | constant | step |
linear_warmup_cosine. `lr_at(step, total_steps, lr)` is the rate of one optimizer step."""

from __future__ import annotations

import math

from trainables.registry import Component, Knob, Registry


class LRSchedule(Component):
    def lr_at(self, step: int, total_steps: int, lr: float) -> float:
        raise NotImplementedError


LR_SCHEDULES = Registry("lr_schedule", "how the learning rate changes over training", LRSchedule)


@LR_SCHEDULES.register("cosine")
class Cosine(LRSchedule):
    """Cosine decay from `lr` to zero over the whole run (SGDR without restarts)."""

    def lr_at(self, step: int, total_steps: int, lr: float) -> float:
        return lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))


@LR_SCHEDULES.register("constant")
class Constant(LRSchedule):
    """`lr` throughout (the original AutoSparse study; dynamic-sparsity runs with Adam)."""

    def lr_at(self, step: int, total_steps: int, lr: float) -> float:
        return lr


@LR_SCHEDULES.register("step")
class Step(LRSchedule):
    """`lr` times gamma at each milestone passed (milestones as fractions of training)."""

    knobs = {
        "milestones": Knob(
            (0.5, 0.75),
            tuple,
            "step: fractions of training where lr is multiplied by gamma",
            low=0.0,
            high=1.0,
            low_open=True,
            high_open=True,
        ),
        "gamma": Knob(0.1, float, "step: lr factor at each milestone", low=0.0, high=1.0),
    }

    def lr_at(self, step: int, total_steps: int, lr: float) -> float:
        passed = sum(step >= m * total_steps for m in self.values["milestones"])
        return lr * self.values["gamma"] ** passed


@LR_SCHEDULES.register("linear_warmup_cosine")
class LinearWarmupCosine(LRSchedule):
    """Linear warmup to `lr` over the first `warmup_fraction` of training, then cosine to 0."""

    knobs = {
        "warmup_fraction": Knob(
            0.05,
            float,
            "linear_warmup_cosine: fraction of training spent warming up",
            low=0.0,
            high=1.0,
            high_open=True,
        ),
    }

    def lr_at(self, step: int, total_steps: int, lr: float) -> float:
        warmup = self.values["warmup_fraction"] * total_steps
        if step < warmup:
            return lr * (step + 1) / math.ceil(warmup)
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return lr * 0.5 * (1 + math.cos(math.pi * progress))
