"""The sparse-training engine: masks over a model's prunable weights, the schedule, the one
mask update every dynamic method shares, and the FLOP accounting.

A method (trainables/sparsity/methods/, one class each) supplies the drop and grow scores,
its knobs and its state; this engine runs them. The schedule and the mask update follow
google-research/rigl (`sparse_optimizers_base.py`), checked op for op by
tests/test_reference_rigl.py: an update at step 0 and then whenever last update +
`update_interval` <= step <= `update_end` * total_steps, where `step` counts optimizer steps
(rigl's global_step: a RigL update batch replaces the optimizer step and does not advance it);
the drop fraction decays by cosine to 0 at update_end; n = int(n_active * fraction)
(`count_rounding` round: round(), sparsetune's earlier rule); grown weights start at 0 with
their optimizer state reset (every optimizer: `Optimizer.reset_state`); dropped-and-regrown
positions keep their value. Patterns: see `masks.Pattern` (block scores as torch.ao's
WeightNormSparsifier, n:m as apex's m4n2_1d). The FLOP count is the RigL paper's.

A train loop calls, per step: loss (+ `loss_penalty()`) .backward(); `step_flops(step)`;
skip = `after_backward(step, optimizer)`; if not skip: optimizer.step(); `after_step()` (SET
rewires here); and after every epoch `on_epoch_end(trainer)`, which returns FLOPs it spent
itself. `step` advances only when the optimizer step ran.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

# Module import (not names): trainables.flops imports this package for prunable_layers.
import trainables.flops as flops_lib
from trainables.config import knob_table, make_config
from trainables.optimizers import OPTIMIZERS, Optimizer
from trainables.sparsity.distributions import layer_densities as distribute_density
from trainables.sparsity.masks import (
    Pattern,
    csr_bytes,
    pattern_masks,
    prunable_weights,
    update_pattern_mask,
)
from trainables.sparsity.methods import METHODS
from trainables.sparsity.methods.base import Method
from trainables.sparsity.patterns import PATTERNS


class SparseTraining:
    """Masks over a model's prunable weights and the hooks a train loop calls around them.

    Per step: (loss + loss_penalty()).backward(); flops = step_flops(step);
    skip = after_backward(step, optimizer); if not skip: optimizer.step(); after_step().
    After every epoch: extra_flops = on_epoch_end(trainer).
    """

    def __init__(
        self,
        method: Method,
        weights: dict[str, nn.Parameter],
        masks: dict[str, Tensor],
        *,
        update_interval: int,
        update_end: float,
        drop_fraction: float,
        total_steps: int,
        skip_weight_update_on_mask_update: bool,
        generator: torch.Generator | None,
        pattern: Pattern,
        count_rounding: str,
        gradient_momentum: float,
        positions: dict[str, int] | None,
        regrowth_rate: float = 1.0,
        target_units: dict[str, int] | None = None,
    ) -> None:
        self.method = method
        self.weights = weights
        self.masks = masks
        self.update_interval = update_interval  # in steps (an epochs interval is converted)
        self.update_end = update_end
        self.drop_fraction = drop_fraction
        self.total_steps = total_steps
        self.skip_weight_update_on_mask_update = skip_weight_update_on_mask_update
        self.generator = generator
        self.pattern = pattern
        self.regrowth_rate = regrowth_rate
        self.target_units = target_units or {}
        # the optimizer's momentum (or Adam's beta1), for methods with a momentum of their own
        self.gradient_momentum = gradient_momentum
        self.positions = positions  # output positions per layer, for FLOP accounting
        self.count_rounding = count_rounding
        # rigl's last_mask_update_step starts at -frequency, so step 0 is an update step.
        self.last_update_step = -update_interval
        # SET: an update found in after_backward, applied after the optimizer step.
        self._pending_rewire: tuple[int, torch.optim.Optimizer] | None = None
        # The step from which the train loop restarts its learning-rate schedule (None: it
        # never does; ART's fine-tuning sets it).
        self.lr_restart_step: int | None = None
        self._nnz_cache: dict[str, int] | None = None
        # The masks as 0/1 tensors of their weights' dtype, for the per-step multiplies:
        # name -> (the bool mask, its version counter then, the factor).
        self._factors: dict[str, tuple[Tensor, int, Tensor]] = {}
        method.attach(self)

    # --- schedule -------------------------------------------------------------------------
    def is_update_step(self, step: int) -> bool:
        """rigl's is_mask_update_iter: step <= end and last update + interval <= step.

        `step` counts optimizer steps (global_step): a RigL update batch skips the optimizer
        step and so does not advance it; the batch after it has the same step number and is no
        update (its last update is that step). The first update is at step 0."""
        return (
            self.method.dynamic
            and step <= self.update_end * self.total_steps
            and self.last_update_step + self.update_interval <= step
        )

    def drop_fraction_at(self, step: int) -> float:
        """Cosine decay from `drop_fraction` at step 0 to 0 at update_end (and 0 after it), as
        rigl's cosine_decay(drop_fraction, global_step, end_step)."""
        end = self.update_end * self.total_steps
        if step >= end:
            return 0.0
        return self.drop_fraction / 2 * (1 + math.cos(math.pi * step / end))

    def count(self, n: int, fraction: float) -> int:
        """The number of units an update replaces: int(n * fraction) as rigl (count_rounding
        floor), or round(n * fraction) (count_rounding round)."""
        value = n * fraction
        return int(value) if self.count_rounding == "floor" else round(value)

    def _last_update_step(self, step: int) -> bool:
        """True for the last update step of the schedule (called during that update)."""
        return not step + self.update_interval <= self.update_end * self.total_steps

    def dense_gradient_step(self, step: int) -> bool:
        """True where this step needs the dense weight gradient (for FLOP accounting)."""
        if self.method.dense_gradient_every_step:
            return True
        return self.method.dense_gradient and self.is_update_step(step)

    # --- FLOPs ----------------------------------------------------------------------------
    def _require_positions(self) -> dict[str, int]:
        if self.positions is None:
            raise RuntimeError(
                "FLOP accounting needs the layers' output positions: pass input_shape to "
                "create_sparse_training"
            )
        return self.positions

    def dense_layer_flops(self) -> dict[str, int]:
        """Forward FLOPs per layer of one sample with every weight active."""
        nnz = {name: w.numel() for name, w in self.weights.items()}
        return flops_lib.layer_flops(self._require_positions(), nnz)

    def dense_forward_flops(self) -> int:
        return sum(self.dense_layer_flops().values())

    def layer_nnz(self) -> dict[str, int]:
        """Active weights per layer, cached until `masks_changed()` (every hook that changes a
        mask calls it), so a step reads no mask counts (no device sync on a GPU) unless its
        masks changed."""
        if self._nnz_cache is None:
            self._nnz_cache = {name: int(mask.sum()) for name, mask in self.masks.items()}
        return self._nnz_cache

    def sparse_forward_flops(self) -> int:
        """Forward FLOPs of one sample from the current masks (what inference costs)."""
        positions = self._require_positions()
        return sum(flops_lib.layer_flops(positions, self.layer_nnz()).values())

    def masks_changed(self) -> None:
        """Call after changing `masks` from outside the hooks (the FLOP count is cached)."""
        self._nnz_cache = None

    def step_flops(self, step: int) -> int:
        """Training FLOPs of this step per sample (call after backward, before after_backward):
        3 f_S, or 2 f_S + f_D where the step needs the dense gradient (RigL's update steps,
        every SNFS step)."""
        return flops_lib.train_step_flops(
            self.sparse_forward_flops(), self.dense_forward_flops(), self.dense_gradient_step(step)
        )

    # --- train-loop hooks -----------------------------------------------------------------
    def loss_penalty(self) -> Tensor | None:
        """A term the loop adds to the loss before backward (None: nothing)."""
        return None

    def on_epoch_end(self, trainer: Any) -> int:
        """Called after every training epoch; returns the FLOPs it spent (0 here)."""
        return 0

    @torch.no_grad()
    def after_backward(self, step: int, optimizer: torch.optim.Optimizer) -> bool:
        """Update the masks on an update step, then mask the gradients.

        Returns True when optimizer.step() must be skipped (a RigL update step with
        skip_weight_update_on_mask_update, as in rigl's reference implementation). SET
        (`rewire_after_step`) never skips: its update runs in `after_step`, after the optimizer
        step, from the updated weights (rigl's SparseSETOptimizer).
        """
        if not self.method.sparse:
            return False
        self.method.observe_gradients(self)  # SNFS's dense momentum
        update = self.is_update_step(step)
        if update:
            self.last_update_step = step
            if self.method.rewire_after_step:
                self._pending_rewire = (step, optimizer)
                update = False
            else:
                self._update_masks(step, optimizer)
        names = [name for name, weight in self.weights.items() if weight.grad is not None]
        if names:
            grads = [self.weights[name].grad for name in names]
            torch._foreach_mul_(grads, self.mask_factors(names))
        return update and self.skip_weight_update_on_mask_update

    @torch.no_grad()
    def after_step(self) -> None:
        """SET's pending rewiring, then re-zero inactive weights: weight decay or momentum must
        not revive a pruned weight."""
        if not self.method.sparse:
            return
        if self._pending_rewire is not None:
            step, optimizer = self._pending_rewire
            self._pending_rewire = None
            self._update_masks(step, optimizer)
        torch._foreach_mul_(list(self.weights.values()), self.mask_factors(list(self.weights)))

    def mask_factors(self, names: list[str]) -> list[Tensor]:
        """The masks of `names` as 0/1 tensors of their weights' dtype and device.

        Multiplying by them gives exactly what multiplying by the bool masks gives (x * 1 = x,
        x * 0 = +-0, NaN stays NaN), but a bool multiplicand costs several times more on a CPU
        (a conversion per element: 0.18 ms against 0.03 ms for LeNet-300-100's weights), twice
        per step. A factor is rebuilt when its mask changed in place (its version counter
        moved: `copy_`, any in-place edit) or was replaced.
        """
        factors = []
        for name in names:
            mask, weight = self.masks[name], self.weights[name]
            cached = self._factors.get(name)
            if (
                cached is None
                or cached[0] is not mask
                or cached[1] != mask._version
                or cached[2].dtype != weight.dtype
                or cached[2].device != weight.device
            ):
                factor = mask.to(device=weight.device, dtype=weight.dtype)
                cached = (mask, mask._version, factor)
                self._factors[name] = cached
            factors.append(cached[2])
        return factors

    @staticmethod
    def dense_gradient(weight: Tensor) -> Tensor:
        """The weight's dense gradient (a score that reads it runs after backward)."""
        if weight.grad is None:
            raise RuntimeError(
                "a gradient score needs the gradient: call after_backward after backward()"
            )
        return weight.grad

    def _update_masks(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        fraction = self.drop_fraction_at(step)
        if fraction <= 0.0:
            return  # rigl's n_prune = 0 at end_step: nothing changes
        new_masks = self.method.new_masks(self, step, fraction)
        for name, new_mask in new_masks.items():
            weight, mask = self.weights[name], self.masks[name]
            changed = new_mask ^ mask
            # Dropped weights are pruned; grown ones start at exactly 0 (rigl). Positions that
            # were dropped and regrown in the same update keep their value, as in rigl.
            weight.masked_fill_(changed, 0.0)
            Optimizer.reset_state(optimizer, weight, changed)
            mask.copy_(new_mask)  # in place: references to the mask stay valid
        if new_masks:
            self.masks_changed()

    def layer_update(self, name: str, weight: Tensor, step: int, fraction: float) -> Tensor | None:
        """One layer's new mask (None: unchanged) by the shared drop/grow update."""
        mask = self.masks[name]
        shape = tuple(mask.shape)
        shrinking = self.target_units.get(name, math.inf) < self.pattern.n_units(shape)
        if (mask.all() and not shrinking) or not self.pattern.supports(shape):
            return None  # a dense layer has nowhere to grow
        units = self.pattern.unit_mask(mask)
        n_active = int(units.sum())
        n_update = self.count(n_active, fraction)
        n_grow = n_update
        if self.regrowth_rate < 1.0:  # prune_regrow shrinking towards its target
            target = self.target_units[name]
            n_grow = round(self.regrowth_rate * n_update)
            n_grow = min(n_update, max(n_grow, target - (n_active - n_update)))
            if self._last_update_step(step):  # the target is met by update_end
                n_update = max(n_update, n_active - target)
                n_grow = target - (n_active - n_update)
        if n_update == 0:
            return None
        drop_score = self.method.drop_score(name, weight, self)
        grow_score = self.method.grow_score(name, weight, self)
        return update_pattern_mask(mask, drop_score, grow_score, self.pattern, n_update, n_grow)

    # --- counts ---------------------------------------------------------------------------
    def nonzero_params(self) -> int:
        return sum(int(mask.sum()) for mask in self.masks.values())

    def total_params(self) -> int:
        return sum(mask.numel() for mask in self.masks.values())

    def density(self) -> float:
        return self.nonzero_params() / self.total_params()

    def layer_densities(self) -> dict[str, float]:
        return {name: int(mask.sum()) / mask.numel() for name, mask in self.masks.items()}

    def model_bytes(self) -> dict[str, int]:
        """Bytes of the prunable weights stored dense (numel x element size) and as CSR of
        their C_out x (C_in*kh*kw) matrices (values at the weight's element size, int32
        column indices and row pointers)."""
        dense = sum(w.numel() * w.element_size() for w in self.weights.values())
        csr = sum(
            csr_bytes(self.masks[name], value_bytes=w.element_size())
            for name, w in self.weights.items()
        )
        return {"model_bytes_dense": dense, "model_bytes_csr": csr}

    # --- checkpointing --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.method.name,
            "masks": {name: mask.clone() for name, mask in self.masks.items()},
            # SET grows at random: its generator must resume where it was.
            "generator_state": self.generator.get_state() if self.generator is not None else None,
            "schedule": {"last_update_step": self.last_update_step},
            "method_state": self.method.state_dict(),  # SNFS's momentum, ...
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
        self.masks_changed()
        self.method.load_state_dict(state.get("method_state", {}))
        schedule = state.get("schedule", {})
        self.last_update_step = schedule.get("last_update_step", self.last_update_step)
        if state.get("generator_state") is not None:
            if self.generator is None:
                self.generator = torch.Generator()
            self.generator.set_state(state["generator_state"])
        self.after_step()


# --- building an engine from a resolved config -------------------------------------------------
@dataclass
class EngineSetup:
    """What a method's `make_engine` builds from: the model, its resolved config, the prunable
    weights and their densities, and the engine keywords every method shares (`common`)."""

    model: nn.Module
    config: Mapping[str, Any]
    weights: dict[str, nn.Parameter]
    densities: dict[str, float]
    dense_layers: tuple[str, ...]
    total_steps: int
    steps_per_epoch: int | None
    common: dict[str, Any] = field(default_factory=dict)


def build_sparse_training(
    method: Method,
    model: nn.Module,
    config: Mapping[str, Any],
    *,
    total_steps: int,
    steps_per_epoch: int | None = None,
    generator: torch.Generator | None = None,
    input_shape: tuple[int, ...] | None = None,
    gradient_momentum: float = 0.9,
) -> SparseTraining:
    """The engine of `method` for `model` from a resolved config (trainables.config.Config:
    every knob checked, defaults filled in), masks applied to the weights at once.

    The global sparsity is spread over layers by `distribution` (`dense_first_last` keeps the
    first and last prunable layer dense, out of the budget); an n:m pattern makes every layer
    it can shape nm_n/nm_m dense. `input_shape` (one sample) enables FLOP accounting.
    """
    if not isinstance(total_steps, numbers.Integral) or total_steps < 1:
        raise ValueError(f"total_steps must be an int >= 1, got {total_steps!r}")
    total_steps = int(total_steps)
    table = knob_table()

    def get(name: str) -> Any:
        """The config's value; for a knob the method does not read (update_interval of
        static: the engine holds one anyway), its one declared default."""
        return config[name] if name in config else table[name].knob.default

    update_interval = get("update_interval")
    if get("update_unit") == "epochs":
        if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise ValueError(
                f"update_unit='epochs' needs steps_per_epoch (an int >= 1), got {steps_per_epoch!r}"
            )
        update_interval *= steps_per_epoch
    weights = prunable_weights(model)
    if not weights:
        raise ValueError("model has no nn.Linear or nn.Conv2d weights to sparsify")
    pattern_name = get("pattern")
    shape = PATTERNS.create(pattern_name, config).shape()
    shapes = {name: tuple(weight.shape) for name, weight in weights.items()}
    names = list(weights)
    dense_layers = tuple(dict.fromkeys([names[0], names[-1]])) if get("dense_first_last") else ()
    sparsity = config["sparsity"]  # 0 for dense (make_config refuses any other)
    if shape.kind == "n:m":
        densities = {
            name: 1.0 if name in dense_layers or not shape.supports(s) else shape.n / shape.m
            for name, s in shapes.items()
        }
    else:
        densities = distribute_density(shapes, 1.0 - sparsity, get("distribution"), dense_layers)
    positions = flops_lib.output_positions(model, input_shape) if input_shape is not None else None
    common = dict(
        update_interval=int(update_interval),
        update_end=float(get("update_end")),
        drop_fraction=float(get("drop_fraction")),
        total_steps=total_steps,
        skip_weight_update_on_mask_update=get("skip_weight_update_on_mask_update"),
        generator=generator,
        pattern=shape,
        positions=positions,
        gradient_momentum=float(gradient_momentum),
        count_rounding=get("count_rounding"),
    )
    setup = EngineSetup(
        model, config, weights, densities, dense_layers, total_steps, steps_per_epoch, common
    )
    training = method.make_engine(setup)
    training.after_step()
    if config.get("sparse_init"):  # the methods that read it (not swat: dense weights)
        rescale_sparse_init(training.weights, training.masks)
    return training


def mask_engine(
    method: Method,
    setup: EngineSetup,
    densities: dict[str, float] | None = None,
    **shrink: Any,
) -> SparseTraining:
    """The shared engine: random masks of the pattern at the layers' densities (`setup`'s, or
    those given: prune_regrow's start when it shrinks, with its `regrowth_rate` and
    `target_units` in `shrink`); all-True masks for a dense method."""
    densities = setup.densities if densities is None else densities
    if method.sparse:
        common = setup.common
        masks = pattern_masks(setup.weights, densities, common["pattern"], common["generator"])
    else:
        masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in setup.weights.items()}
    return SparseTraining(method, setup.weights, masks, **shrink, **setup.common)


@torch.no_grad()
def rescale_sparse_init(weights: dict[str, Tensor], masks: dict[str, Tensor]) -> None:
    """Scale each layer's initial weights by 1/sqrt(density).

    A random mask of density d cuts every unit's fan-in to d * fan_in, so a dense
    (Kaiming) init leaves a sparse net's activations shrinking by sqrt(d) per layer and a
    90%-sparse MLP barely trains. Rescaling restores the dense variance (Evci et al. 2022,
    "Gradient flow in sparse neural networks").
    """
    for name, weight in weights.items():
        density = masks[name].float().mean().item()
        if 0 < density < 1:
            weight.mul_(density**-0.5)


def create_sparse_training(
    model: nn.Module,
    *,
    method: str,
    total_steps: int,
    generator: torch.Generator | None = None,
    steps_per_epoch: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    **knobs: Any,
) -> SparseTraining:
    """The engine of method `method` for `model`, its knobs given by name (`sparsity=0.9,
    update_interval=50`), resolved as a config is: checked, defaults filled in, a knob the
    method does not read refused (ConfigError, a ValueError). The optimizer knobs it is given
    (`momentum`, `optimizer`) set the momentum a method keeps of its own (SNFS). Tests and
    benchmarks build engines this way; the train loop builds from its resolved config.
    """
    overrides = {"method": method, **knobs}
    if method in METHODS and "sparse_init" in METHODS.knobs_of(method):
        overrides.setdefault("sparse_init", False)  # the raw init, unless asked
    config = make_config(overrides)
    optimizer = OPTIMIZERS.create(config["optimizer"], config)
    return METHODS.create(method, config).build(
        model, config, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
        generator=generator, input_shape=input_shape,
        gradient_momentum=optimizer.gradient_momentum,
    )  # fmt: skip
