"""Optimizers as components: `optimizer` = sgd | adam | adamw, each with its own knobs.

`build(params)` makes the torch optimizer. `reset_state(optimizer, weight, positions)` zeroes
a weight's per-element state at the given positions (SGD's momentum buffer, Adam's two
moments): sparse methods call it for grown weights, whatever the optimizer.
"""

from __future__ import annotations

from typing import Any

from trainables.registry import Component, Knob, Registry

LR = Knob(0.1, float, "peak learning rate (the schedule scales it)", low=0.0, low_open=True)
WEIGHT_DECAY = Knob(5e-4, float, "weight decay (L2 in the gradient; decoupled for adamw)", low=0.0)
BETA1 = Knob(0.9, float, "adam, adamw: first-moment decay", low=0.0, high=1.0, high_open=True)
BETA2 = Knob(0.999, float, "adam, adamw: second-moment decay", low=0.0, high=1.0, high_open=True)
EPS = Knob(1e-8, float, "adam, adamw: denominator term", low=0.0, low_open=True)


class Optimizer(Component):
    """Builds a torch optimizer over the model's parameters from its knobs."""

    def build(self, params) -> Any:
        raise NotImplementedError

    @property
    def gradient_momentum(self) -> float:
        """The decay of a running mean of the gradient, for methods that keep their own dense
        one (SNFS): the optimizer's momentum (sgd) or first-moment decay (adam)."""
        raise NotImplementedError

    @staticmethod
    def reset_state(optimizer, weight, positions) -> None:
        """Zero every per-element state tensor of `weight` at `positions` (a bool mask), so a
        grown weight starts without stale momentum or second moment."""
        import torch

        with torch.no_grad():
            for value in optimizer.state.get(weight, {}).values():
                if torch.is_tensor(value) and value.shape == weight.shape:
                    value.masked_fill_(positions, 0)


OPTIMIZERS = Registry("optimizer", "the optimizer that updates the weights", base=Optimizer)


@OPTIMIZERS.register("sgd")
class SGD(Optimizer):
    """SGD with (Nesterov) momentum, the original study's optimizer."""

    knobs = {
        "lr": LR,
        "weight_decay": WEIGHT_DECAY,
        "momentum": Knob(0.9, float, "sgd: momentum", low=0.0, high=1.0, high_open=True),
        "nesterov": Knob(True, bool, "sgd: Nesterov momentum (plain SGD when momentum is 0)"),
    }

    def build(self, params):
        import torch

        v = self.values
        return torch.optim.SGD(
            params, lr=v["lr"], momentum=v["momentum"],
            nesterov=v["nesterov"] and v["momentum"] > 0, weight_decay=v["weight_decay"],
        )  # fmt: skip

    @property
    def gradient_momentum(self) -> float:
        return self.values["momentum"]


class _AdamFamily(Optimizer):
    knobs = {"lr": LR, "weight_decay": WEIGHT_DECAY, "beta1": BETA1, "beta2": BETA2, "eps": EPS}
    torch_class = ""

    def build(self, params):
        import torch

        v = self.values
        cls = getattr(torch.optim, self.torch_class)
        return cls(
            params, lr=v["lr"], betas=(v["beta1"], v["beta2"]), eps=v["eps"],
            weight_decay=v["weight_decay"],
        )  # fmt: skip

    @property
    def gradient_momentum(self) -> float:
        return self.values["beta1"]


@OPTIMIZERS.register("adam")
class Adam(_AdamFamily):
    """Adam (Kingma & Ba 2015); weight decay is added to the gradient (L2)."""

    torch_class = "Adam"


@OPTIMIZERS.register("adamw")
class AdamW(_AdamFamily):
    """AdamW (Loshchilov & Hutter 2019): decoupled weight decay."""

    torch_class = "AdamW"
