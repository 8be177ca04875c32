"""Sparse-training methods: dense, static, SET (Mocanu et al. 2018) and RigL (Evci et al. 2020).

A method is only its drop score, grow score and whether it updates its masks at all; the
schedule (`update_interval`, `update_end`, cosine-decayed `drop_fraction`) and the mask update
(`masks.update_mask`) are shared. To add a method, add a `SparseMethod` to `METHODS`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trainables.sparsity.distributions import DISTRIBUTIONS
from trainables.sparsity.distributions import layer_densities as distribute_density
from trainables.sparsity.masks import prunable_weights, random_masks, update_mask

# (weight, its gradient or None, generator) -> a score per position, in the weight's shape.
ScoreFn = Callable[[Tensor, Tensor | None, torch.Generator | None], Tensor]


def weight_magnitude(
    weight: Tensor, grad: Tensor | None, generator: torch.Generator | None
) -> Tensor:
    return weight.detach().abs()


def gradient_magnitude(
    weight: Tensor, grad: Tensor | None, generator: torch.Generator | None
) -> Tensor:
    if grad is None:
        raise RuntimeError("rigl grows by gradient magnitude: call after_backward after backward()")
    return grad.abs()


def uniform_random(
    weight: Tensor, grad: Tensor | None, generator: torch.Generator | None
) -> Tensor:
    # Draw on the generator's device (a CPU generator cannot draw on CUDA), then move.
    device = generator.device if generator is not None else weight.device
    return torch.rand(weight.shape, generator=generator, device=device).to(weight.device)


@dataclass(frozen=True)
class SparseMethod:
    name: str
    sparse: bool  # False: dense training (all-True masks, nothing is ever zeroed)
    drop_score: ScoreFn | None = None  # None: the masks never change
    grow_score: ScoreFn | None = None
    dense_gradient: bool = False  # grow_score reads the dense gradient (a dense backward's cost)

    @property
    def dynamic(self) -> bool:
        return self.drop_score is not None


METHODS: dict[str, SparseMethod] = {
    "dense": SparseMethod("dense", sparse=False),
    "static": SparseMethod("static", sparse=True),
    "set": SparseMethod("set", sparse=True, drop_score=weight_magnitude, grow_score=uniform_random),
    "rigl": SparseMethod(
        "rigl",
        sparse=True,
        drop_score=weight_magnitude,
        grow_score=gradient_magnitude,
        dense_gradient=True,
    ),
}


class SparseTraining:
    """Masks over a model's prunable weights and the hooks a train loop calls around them.

    Per step: loss.backward(); skip = after_backward(step, optimizer);
    if not skip: optimizer.step(); after_step().
    """

    def __init__(
        self,
        method: SparseMethod,
        weights: dict[str, nn.Parameter],
        masks: dict[str, Tensor],
        *,
        update_interval: int,
        update_end: float,
        drop_fraction: float,
        total_steps: int,
        skip_weight_update_on_mask_update: bool,
        generator: torch.Generator | None,
    ) -> None:
        self.method = method
        self.weights = weights
        self.masks = masks
        self.update_interval = update_interval
        self.update_end = update_end
        self.drop_fraction = drop_fraction
        self.total_steps = total_steps
        self.skip_weight_update_on_mask_update = skip_weight_update_on_mask_update
        self.generator = generator

    # --- schedule -------------------------------------------------------------------------
    def is_update_step(self, step: int) -> bool:
        return (
            self.method.dynamic
            and step > 0
            and step % self.update_interval == 0
            and step < self.update_end * self.total_steps
        )

    def drop_fraction_at(self, step: int) -> float:
        """Cosine decay from `drop_fraction` at step 0 to 0 at update_end (and 0 after it)."""
        end = self.update_end * self.total_steps
        if step >= end:
            return 0.0
        return self.drop_fraction / 2 * (1 + math.cos(math.pi * step / end))

    def dense_gradient_step(self, step: int) -> bool:
        """True where this step needs the dense weight gradient (for FLOP accounting)."""
        return self.method.dense_gradient and self.is_update_step(step)

    # --- train-loop hooks -----------------------------------------------------------------
    @torch.no_grad()
    def after_backward(self, step: int, optimizer: torch.optim.Optimizer) -> bool:
        """Update the masks on an update step, then mask the gradients.

        Returns True when optimizer.step() must be skipped (an update step with
        skip_weight_update_on_mask_update, as in rigl's reference implementation).
        """
        if not self.method.sparse:
            return False
        update = self.is_update_step(step)
        if update:
            self._update_masks(step, optimizer)
        for name, weight in self.weights.items():
            if weight.grad is not None:
                weight.grad.mul_(self.masks[name])
        return update and self.skip_weight_update_on_mask_update

    @torch.no_grad()
    def after_step(self) -> None:
        """Re-zero inactive weights: weight decay or momentum must not revive a pruned weight."""
        if not self.method.sparse:
            return
        for name, weight in self.weights.items():
            weight.mul_(self.masks[name])

    def _update_masks(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        assert self.method.drop_score is not None and self.method.grow_score is not None
        fraction = self.drop_fraction_at(step)
        for name, weight in self.weights.items():
            mask = self.masks[name]
            n_active = int(mask.sum())
            n_update = round(fraction * n_active)
            if n_update == 0 or n_active == mask.numel():  # a dense layer has nowhere to grow
                continue
            drop_score = self.method.drop_score(weight, weight.grad, self.generator)
            grow_score = self.method.grow_score(weight, weight.grad, self.generator)
            new_mask = update_mask(mask, drop_score, grow_score, n_update)
            changed = new_mask ^ mask
            # Dropped weights are pruned; grown ones start at exactly 0 (rigl). Positions that
            # were dropped and regrown in the same update keep their value, as in rigl.
            weight.masked_fill_(changed, 0.0)
            _reset_optimizer_state(optimizer, weight, changed)
            mask.copy_(new_mask)  # in place: references to the mask stay valid

    # --- counts ---------------------------------------------------------------------------
    def nonzero_params(self) -> int:
        return sum(int(mask.sum()) for mask in self.masks.values())

    def total_params(self) -> int:
        return sum(mask.numel() for mask in self.masks.values())

    def density(self) -> float:
        return self.nonzero_params() / self.total_params()

    def layer_densities(self) -> dict[str, float]:
        return {name: int(mask.sum()) / mask.numel() for name, mask in self.masks.items()}

    # --- checkpointing --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.method.name,
            "masks": {name: mask.clone() for name, mask in self.masks.items()},
            # SET grows at random: its generator must resume where it was.
            "generator_state": self.generator.get_state() if self.generator is not None else None,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["method"] != self.method.name:
            raise ValueError(
                f"state_dict is for method {state['method']!r}, this is {self.method.name!r}"
            )
        masks = state["masks"]
        if set(masks) != set(self.masks):
            raise ValueError(f"state_dict masks {sorted(masks)} != weights {sorted(self.masks)}")
        for name, mask in self.masks.items():
            if masks[name].shape != mask.shape:
                raise ValueError(
                    f"state_dict mask {name!r} has shape {tuple(masks[name].shape)}, "
                    f"expected {tuple(mask.shape)}"
                )
            mask.copy_(masks[name])
        if state.get("generator_state") is not None:
            if self.generator is None:
                self.generator = torch.Generator()
            self.generator.set_state(state["generator_state"])
        self.after_step()


@torch.no_grad()
def _reset_optimizer_state(
    optimizer: torch.optim.Optimizer, weight: nn.Parameter, changed: Tensor
) -> None:
    """Zero every per-element optimizer state (SGD momentum_buffer, Adam exp_avg/exp_avg_sq) of
    `weight` at the changed positions, so a grown weight starts without stale momentum."""
    for value in optimizer.state.get(weight, {}).values():
        if torch.is_tensor(value) and value.shape == weight.shape:
            value.masked_fill_(changed, 0)


def create_sparse_training(
    model: nn.Module,
    *,
    method: str,
    sparsity: float,
    distribution: str = "uniform",
    update_interval: int = 100,
    update_end: float = 0.75,
    drop_fraction: float = 0.3,
    total_steps: int,
    skip_weight_update_on_mask_update: bool = True,
    generator: torch.Generator | None = None,
) -> SparseTraining:
    """Build the masks for `model` and apply them to its weights at once.

    sparsity is the fraction of prunable weights that are zero, spread over layers by
    `distribution`; it is ignored by `dense`. sparsity 0 with a sparse method is allowed.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    # numbers.Integral: search spaces may hand over numpy integers.
    if not isinstance(update_interval, numbers.Integral) or update_interval < 1:
        raise ValueError(f"update_interval must be an int >= 1, got {update_interval!r}")
    if not 0.0 <= update_end <= 1.0:
        raise ValueError(f"update_end must be in [0, 1], got {update_end}")
    if not 0.0 <= drop_fraction <= 1.0:
        raise ValueError(f"drop_fraction must be in [0, 1], got {drop_fraction}")
    if not isinstance(total_steps, numbers.Integral) or total_steps < 1:
        raise ValueError(f"total_steps must be an int >= 1, got {total_steps!r}")

    definition = METHODS[method]
    weights = prunable_weights(model)
    if not weights:
        raise ValueError("model has no nn.Linear or nn.Conv2d weights to sparsify")
    if definition.sparse:
        shapes = {name: tuple(weight.shape) for name, weight in weights.items()}
        densities = distribute_density(shapes, 1.0 - sparsity, distribution)
        masks = random_masks(weights, densities, generator)
    else:
        masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    training = SparseTraining(
        definition,
        weights,
        masks,
        update_interval=int(update_interval),
        update_end=float(update_end),
        drop_fraction=float(drop_fraction),
        total_steps=int(total_steps),
        skip_weight_update_on_mask_update=skip_weight_update_on_mask_update,
        generator=generator,
    )
    training.after_step()
    return training
