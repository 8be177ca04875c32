"""Sparse-training methods around one mask update (a drop score, a grow score, a schedule).

- `dense`, `static` (random mask at initialization, never changed).
- `set` (Mocanu et al. 2018): drop the smallest |w| (or, with `set_sign_split`, the authors'
  rewireMask: the smallest positive and the largest negative weights, and every exact zero),
  grow at random.
- `rigl` (Evci et al. 2020): drop the smallest |w|, grow the largest |dense gradient|.
- `prune_regrow`: the general rule SET and RigL are settings of: drop by `magnitude` or
  `gradient`, grow by `random`, `gradient` or `momentum` (SNFS, Dettmers & Zettlemoyer 2019: a
  dense momentum of the gradient, the regrowth redistributed across layers), a prune rate
  (`drop_fraction`) and a regrowth rate.
- `swat` (Raihan & Aamodt 2020) and `hypersparse` (Glandorf et al. 2023): their own
  `SparseTraining` subclasses (`swat.py`, `hypersparse.py`) on the same hooks.

The schedule and the mask update follow google-research/rigl (`sparse_optimizers_base.py`),
checked op for op by tests/test_reference_rigl.py: an update at step 0 and then whenever
last update + `update_interval` <= step <= `update_end` * total_steps, where `step` counts
optimizer steps (rigl's global_step: a RigL update batch replaces the optimizer step and does
not advance it); the drop fraction decays by cosine to 0 at update_end; n = int(n_active *
fraction) (`count_rounding` round: round(), sparsetune's earlier rule); grown weights start
at 0 with their optimizer state reset; dropped-and-regrown positions keep their value. RigL
skips the optimizer step of an update batch (`skip_weight_update_on_mask_update`); SET takes
it, then rewires from the updated weights (rigl's SparseSETOptimizer). Patterns: see
`masks.Pattern` (block scores as torch.ao's WeightNormSparsifier, n:m as apex's m4n2_1d).

Where each differs from its authors' code:
- rigl, set: no N(0, 1e-5) noise on the drop score (the reference's tie-breaker); ties fall
  to the lower index. Step counting is the reference's in `trainables.train`; the FLOP count
  is the RigL paper's.
- set (`set_sign_split`): zeta is the cosine-decayed `drop_fraction` (the reference keeps it
  constant) and grows by the shared random score, not its rejection-sampling loop (the same
  distribution: uniform over the free positions, just-removed ones included). Without the
  split it is rigl's SET (magnitude of |w|), not the authors' sign split.
- prune_regrow / SNFS (sparse_learning's `Masking`): the update runs on sparsetune's schedule
  (every `update_interval` steps or epochs, cosine `drop_fraction`) rather than at every epoch
  end with its own cosine death rate; the momentum is sparsetune's dense momentum of the
  gradient, not SGD's momentum buffer (which also carries weight decay); momentum at grown
  positions is reset to 0, not to the mean of the active momentum. `redistribution none`
  keeps each layer's count (no cross-layer move). Redistribution applies to the unstructured
  pattern with the magnitude drop; other settings update per layer.
- static, dense: no reference beyond a random mask (exact per-layer counts, not Bernoulli).

A train loop calls, per step: loss (+ `loss_penalty()`) .backward(); `step_flops(step)`;
skip = `after_backward(step, optimizer)`; if not skip: optimizer.step(); `after_step()` (SET
rewires here); and after every epoch `on_epoch_end(trainer)`, which returns FLOPs it spent
itself. `step` advances only when the optimizer step ran.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

# Module import (not names): trainables.flops imports this package for prunable_layers.
import trainables.flops as flops_lib
from trainables.sparsity.distributions import DISTRIBUTIONS
from trainables.sparsity.distributions import layer_densities as distribute_density
from trainables.sparsity.masks import (
    PATTERNS,
    Pattern,
    csr_bytes,
    pattern_masks,
    prunable_weights,
    update_mask,
    update_pattern_mask,
)

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


def momentum_magnitude(
    weight: Tensor, grad: Tensor | None, generator: torch.Generator | None
) -> Tensor:
    """SNFS's grow score |dense momentum|; `SparseTraining` supplies its momentum buffer."""
    raise RuntimeError("momentum_magnitude is scored by SparseTraining from its dense momentum")


DROP_CRITERIA: dict[str, ScoreFn] = {
    "magnitude": weight_magnitude,
    "gradient": gradient_magnitude,
}
GROW_CRITERIA: dict[str, ScoreFn] = {
    "random": uniform_random,
    "gradient": gradient_magnitude,
    "momentum": momentum_magnitude,
}
UPDATE_UNITS = ("steps", "epochs")
# How a drop count n * fraction becomes an int: `floor` as rigl's int() cast (the reference),
# `round` as sparsetune did before (one more weight replaced about half the time).
COUNT_ROUNDINGS = ("floor", "round")
# SNFS's cross-layer redistribution of the regrowth (sparse_learning's redistribution_mode).
REDISTRIBUTIONS = ("momentum", "none")


@dataclass(frozen=True)
class SparseMethod:
    name: str
    sparse: bool  # False: dense training (all-True masks, nothing is ever zeroed)
    drop_score: ScoreFn | None = None  # None: the masks never change by drop/grow
    grow_score: ScoreFn | None = None
    dense_gradient: bool = False  # grow_score reads the dense gradient on update steps
    dense_gradient_every_step: bool = False  # SNFS: a dense momentum needs it every step
    kind: str = "mask"  # "mask" (SparseTraining), "swat" or "hypersparse" (their subclasses)
    # SET (rigl's SparseSETOptimizer): the optimizer step runs first, then the masks are rewired
    # from the updated weights; RigL replaces the optimizer step of an update batch instead.
    rewire_after_step: bool = False
    doc: str = ""

    @property
    def dynamic(self) -> bool:
        return self.drop_score is not None


METHODS: dict[str, SparseMethod] = {
    "dense": SparseMethod("dense", sparse=False, doc="dense training (3 f_D per sample)"),
    "static": SparseMethod("static", sparse=True, doc="random mask at initialization"),
    "set": SparseMethod(
        "set",
        sparse=True,
        drop_score=weight_magnitude,
        grow_score=uniform_random,
        rewire_after_step=True,
        doc="Mocanu et al. 2018: step, then drop smallest |w| (or rewireMask's sign split), "
        "grow at random",
    ),
    "rigl": SparseMethod(
        "rigl",
        sparse=True,
        drop_score=weight_magnitude,
        grow_score=gradient_magnitude,
        dense_gradient=True,
        doc="Evci et al. 2020: drop smallest |w|, grow largest |dense gradient|",
    ),
    # The criteria below are the defaults; create_sparse_training sets them from the knobs
    # drop_criterion and grow_criterion.
    "prune_regrow": SparseMethod(
        "prune_regrow",
        sparse=True,
        drop_score=weight_magnitude,
        grow_score=gradient_magnitude,
        dense_gradient=True,
        doc="general drop/grow rule: drop_criterion, grow_criterion, rates, interval unit "
        "(grow_criterion momentum: SNFS with its cross-layer redistribution)",
    ),
    "swat": SparseMethod(
        "swat",
        sparse=True,
        kind="swat",
        doc="Raihan & Aamodt 2020: top-K weights forward, top-K activations backward, each "
        "layer at its own density",
    ),
    "hypersparse": SparseMethod(
        "hypersparse",
        sparse=True,
        kind="hypersparse",
        doc="Glandorf et al. 2023: ART (buffered check, rewind, restarted fine-tuning) with "
        "HyperSparse (or l1 / l2) regularization",
    ),
}


class SparseTraining:
    """Masks over a model's prunable weights and the hooks a train loop calls around them.

    Per step: (loss + loss_penalty()).backward(); flops = step_flops(step);
    skip = after_backward(step, optimizer); if not skip: optimizer.step(); after_step().
    After every epoch: extra_flops = on_epoch_end(trainer).
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
        pattern: Pattern | None = None,
        set_sign_split: bool = False,
        regrowth_rate: float = 1.0,
        target_units: dict[str, int] | None = None,
        momentum: float = 0.9,
        positions: dict[str, int] | None = None,
        count_rounding: str = "floor",
        redistribution: str = "none",
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
        self.pattern = pattern or Pattern()
        self.set_sign_split = set_sign_split
        self.regrowth_rate = regrowth_rate
        self.target_units = target_units or {}
        self.momentum_beta = momentum
        # SNFS: the momentum of the dense gradient, updated every step.
        self.momentum: dict[str, Tensor] = (
            {name: torch.zeros_like(w) for name, w in weights.items()}
            if method.dense_gradient_every_step
            else {}
        )
        self.positions = positions  # output positions per layer, for FLOP accounting
        self.count_rounding = count_rounding
        self.redistribution = redistribution
        # rigl's last_mask_update_step starts at -frequency, so step 0 is an update step.
        self.last_update_step = -update_interval
        # SET: an update found in after_backward, applied after the optimizer step.
        self._pending_rewire: tuple[int, torch.optim.Optimizer] | None = None
        # SNFS: sparse_learning's smoothed residual between the baseline and the grown count.
        self.snfs_adjusted_growth = 0.0
        self.snfs_adjustments: list[float] = []
        self._snfs_density = {name: int(m.sum()) / m.numel() for name, m in masks.items()}
        # The step from which the train loop restarts its learning-rate schedule (None: it
        # never does; ART's fine-tuning sets it).
        self.lr_restart_step: int | None = None
        self._nnz_cache: dict[str, int] | None = None
        # The masks as 0/1 tensors of their weights' dtype, for the per-step multiplies:
        # name -> (the bool mask, its version counter then, the factor).
        self._factors: dict[str, tuple[Tensor, int, Tensor]] = {}

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
        for name, buffer in self.momentum.items():
            grad = self.weights[name].grad
            if grad is not None:
                buffer.mul_(self.momentum_beta).add_(grad)
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

    def _score(self, fn: ScoreFn, name: str, weight: Tensor) -> Tensor:
        if fn is momentum_magnitude:
            return self.momentum[name].abs()
        return fn(weight, weight.grad, self.generator)

    def _update_masks(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        assert self.method.drop_score is not None and self.method.grow_score is not None
        fraction = self.drop_fraction_at(step)
        if fraction <= 0.0:
            return  # rigl's n_prune = 0 at end_step: nothing changes
        if self._snfs_redistributes():
            new_masks = self._snfs_masks(fraction)
        else:
            new_masks = {}
            for name, weight in self.weights.items():
                new_mask = self._layer_update(name, weight, step, fraction)
                if new_mask is not None:
                    new_masks[name] = new_mask
        for name, new_mask in new_masks.items():
            weight, mask = self.weights[name], self.masks[name]
            changed = new_mask ^ mask
            # Dropped weights are pruned; grown ones start at exactly 0 (rigl). Positions that
            # were dropped and regrown in the same update keep their value, as in rigl.
            weight.masked_fill_(changed, 0.0)
            _reset_optimizer_state(optimizer, weight, changed)
            mask.copy_(new_mask)  # in place: references to the mask stay valid
        if new_masks:
            self.masks_changed()

    def _layer_update(self, name: str, weight: Tensor, step: int, fraction: float) -> Tensor | None:
        """One layer's new mask (None: unchanged) by the shared drop/grow update."""
        assert self.method.drop_score is not None and self.method.grow_score is not None
        mask = self.masks[name]
        shape = tuple(mask.shape)
        shrinking = self.target_units.get(name, math.inf) < self.pattern.n_units(shape)
        if (mask.all() and not shrinking) or not self.pattern.supports(shape):
            return None  # a dense layer has nowhere to grow
        if self.set_sign_split:
            return self._sign_split_update(name, weight, mask, fraction)
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
        drop_score = self._score(self.method.drop_score, name, weight)
        grow_score = self._score(self.method.grow_score, name, weight)
        return update_pattern_mask(mask, drop_score, grow_score, self.pattern, n_update, n_grow)

    def _sign_split_update(
        self, name: str, weight: Tensor, mask: Tensor, fraction: float
    ) -> Tensor | None:
        """SET as the authors' rewireMask (dcmocanu/sparse-evolutionary-artificial-neural-
        networks): over the layer's sorted weights, keep the negatives below
        values[int((1 - zeta) * n_negative)] and the positives above
        values[int(min(n - 1, n_nonpositive + zeta * n_positive))]; everything else, the active
        exact zeros included, is removed; then grow at random back to the layer's count.
        (The reference's positive threshold is itself removed: floor(zeta * n_positive) + 1
        positives go, as in its code.)"""
        values = weight.detach().masked_fill(~mask, 0.0)
        flat = values.flatten()
        n = flat.numel()
        n_negative = int((flat < 0).sum())
        n_positive = int((flat > 0).sum())
        n_nonpositive = n - n_positive  # rewireMask's lastZeroPos (index of the first positive)
        keep_negative = int((1 - fraction) * n_negative)
        positive_index = int(min(n - 1, n_nonpositive + fraction * n_positive))
        keep_positive = n - 1 - positive_index
        order = flat.argsort(stable=True)
        keep = torch.zeros(n, dtype=torch.bool, device=flat.device)
        keep[order[:keep_negative]] = True
        if keep_positive > 0:
            keep[order[n - keep_positive :]] = True
        keep = keep.view(mask.shape)
        n_active = int(mask.sum())
        n_grow = n_active - int(keep.sum())
        if n_grow == 0 and bool((keep == mask).all()):
            return None
        grow_score = self._score(self.method.grow_score, name, weight)
        return update_mask(keep, weight.detach().abs(), grow_score, 0, n_grow=n_grow)

    # --- SNFS (sparse_learning's Masking.truncate_weights) ---------------------------------
    def _snfs_redistributes(self) -> bool:
        return (
            self.redistribution == "momentum"
            and self.method.grow_score is momentum_magnitude
            and self.method.drop_score is weight_magnitude
            and self.pattern.kind == "unstructured"
            and self.regrowth_rate >= 1.0
        )

    def _snfs_masks(self, death_rate: float) -> dict[str, Tensor]:
        """Prune every layer by magnitude (ceil(death_rate * nonzeros)), then regrow the total
        removed across layers in proportion to each layer's mean |momentum| over its active
        weights, by momentum within the layer, as TimDettmers/sparse_learning's
        gather_statistics, calc_growth_redistribution, magnitude_death and momentum_growth.
        Layers that are fully dense take no part (there is nothing to grow into)."""
        names = [n for n, m in self.masks.items() if not bool(m.all())]
        if not names:
            return {}
        variance, nonzeros, zeros = {}, {}, {}
        for name in names:
            mask = self.masks[name]
            variance[name] = self.momentum[name].abs()[mask].mean().item()
            nonzeros[name] = int(mask.sum())
            zeros[name] = mask.numel() - nonzeros[name]
        total_variance = sum(v for v in variance.values() if not math.isnan(v))
        if total_variance == 0.0:
            return {}

        def removal(name: str, n_layers: int) -> int:
            # a layer under 20% sparse whose momentum share is above average loses at most
            # its zeros' fraction
            rate = death_rate
            sparsity = zeros[name] / self.masks[name].numel()
            if sparsity < 0.2 and (1.0 / n_layers) / variance[name] < 1.0:
                rate = min(sparsity, rate)
            return math.ceil(rate * nonzeros[name])

        # gather_statistics sums the removals while it fills its table: the raw variance and
        # the layers seen so far; calc_growth_redistribution and magnitude_death then use the
        # normalized variance and all layers (as the reference does).
        total_removed = sum(removal(name, i + 1) for i, name in enumerate(names))
        for name in names:
            variance[name] /= total_variance
        death = {name: removal(name, len(names)) for name in names}
        regrowth = _snfs_redistribute(
            variance, death, zeros, self.snfs_adjusted_growth, total_removed
        )
        new_masks = {}
        total_new = 0
        for name in names:
            mask, weight = self.masks[name], self.weights[name]
            magnitude = weight.detach().abs() * mask
            if death[name] == 0:
                kept = magnitude != 0
            else:
                threshold = magnitude.flatten().sort().values[zeros[name] + death[name] - 1]
                kept = magnitude > threshold
            n_grow = math.floor(regrowth[name])
            score = self.momentum[name].abs() * ~kept
            order = score.flatten().sort(descending=True, stable=True).indices[:n_grow]
            new = kept.flatten().clone()
            new[order] = True
            new_masks[name] = new.view(mask.shape)
            total_new += int(new.sum())
        baseline = sum(self.masks[name].numel() * self._snfs_density[name] for name in names)
        self.snfs_adjustments.append(baseline - total_new)
        self.snfs_adjusted_growth = (
            0.25 * self.snfs_adjusted_growth
            + 0.75 * (baseline - total_new)
            + sum(self.snfs_adjustments) / len(self.snfs_adjustments)
        )
        return new_masks

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
            "momentum": {name: m.clone() for name, m in self.momentum.items()},
            "schedule": {
                "last_update_step": self.last_update_step,
                "snfs_adjusted_growth": self.snfs_adjusted_growth,
                "snfs_adjustments": list(self.snfs_adjustments),
            },
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
        for name, buffer in state.get("momentum", {}).items():
            self.momentum[name].copy_(buffer)
        schedule = state.get("schedule", {})
        self.last_update_step = schedule.get("last_update_step", self.last_update_step)
        self.snfs_adjusted_growth = schedule.get("snfs_adjusted_growth", 0.0)
        self.snfs_adjustments = list(schedule.get("snfs_adjustments", []))
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


def _snfs_redistribute(
    variance: dict[str, float],
    death: dict[str, int],
    zeros: dict[str, int],
    adjusted_growth: float,
    total_removed: int,
) -> dict[str, float]:
    """sparse_learning's calc_growth_redistribution: each layer's regrowth is
    ceil(share * (removed + adjusted growth)), capped at 0.99 of its free slots, the excess
    spread evenly over the layers until none is left (at most 1000 rounds)."""
    regrowth: dict[str, float] = {}
    residual, mean_residual, rounds = 9999.0, 0.0, 0
    while residual > 0 and rounds < 1000:
        residual = 0.0
        for name, share in variance.items():
            max_regrowth = zeros[name] + death[name]
            if name in regrowth:
                grow = regrowth[name]
            else:
                grow = math.ceil(share * (total_removed + adjusted_growth))
            grow += mean_residual
            if grow > 0.99 * max_regrowth:
                regrowth[name] = 0.99 * max_regrowth
                residual += grow - regrowth[name]
            else:
                regrowth[name] = grow
        mean_residual = residual / len(regrowth) if regrowth else 0.0
        rounds += 1
    return regrowth


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed: one of {', '.join(allowed)}")


def _check_fraction(name: str, value: Any, *, open_high: bool = False) -> None:
    high = ")" if open_high else "]"
    ok = (
        isinstance(value, numbers.Real)
        and value >= 0.0
        and (value < 1.0 if open_high else value <= 1.0)
    )
    if not ok:
        raise ValueError(f"{name}={value!r} is out of range: allowed [0, 1{high}")


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
    pattern: str = "unstructured",
    block_size: int = 4,
    nm_n: int = 2,
    nm_m: int = 4,
    dense_first_last: bool = False,
    update_unit: str = "steps",
    steps_per_epoch: int | None = None,
    set_sign_split: bool = False,
    drop_criterion: str = "magnitude",
    grow_criterion: str = "gradient",
    regrowth_rate: float = 1.0,
    initial_sparsity: float = 0.5,
    momentum: float = 0.9,
    topk_period: int = 1,
    warmup_epochs: int = 1,
    lambda_init: float = 1e-4,
    eta: float = 2.0,
    regularizer: str = "hypersparse",
    input_shape: tuple[int, ...] | None = None,
    count_rounding: str = "floor",
    redistribution: str = "momentum",
    art_buffer: int = 1,
    art_restart: bool = True,
) -> SparseTraining:
    """Build the masks for `model` and apply them to its weights at once.

    sparsity is the fraction of prunable weights that are zero, spread over layers by
    `distribution` (`dense_first_last` keeps the first and last prunable layer dense, out of
    the budget); it is ignored by `dense`. sparsity 0 with a sparse method is allowed. With
    pattern `n:m` every sparse layer is nm_n/nm_m dense, so sparsity must be 1 - nm_n/nm_m.
    `input_shape` (one sample) enables FLOP accounting (`step_flops`, `sparse_forward_flops`).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}")
    if not isinstance(sparsity, numbers.Real) or not 0.0 <= sparsity < 1.0:
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
    _check_choice("pattern", pattern, PATTERNS)
    _check_choice("update_unit", update_unit, UPDATE_UNITS)
    _check_choice("drop_criterion", drop_criterion, tuple(DROP_CRITERIA))
    _check_choice("grow_criterion", grow_criterion, tuple(GROW_CRITERIA))
    _check_choice("regularizer", regularizer, REGULARIZERS)
    _check_choice("count_rounding", count_rounding, COUNT_ROUNDINGS)
    _check_choice("redistribution", redistribution, REDISTRIBUTIONS)
    if not isinstance(art_buffer, numbers.Integral) or art_buffer < 0:
        raise ValueError(f"art_buffer must be an int >= 0, got {art_buffer!r}")
    _check_fraction("regrowth_rate", regrowth_rate)
    _check_fraction("initial_sparsity", initial_sparsity, open_high=True)
    _check_fraction("momentum", momentum, open_high=True)
    if not isinstance(topk_period, numbers.Integral) or topk_period < 1:
        raise ValueError(f"topk_period must be an int >= 1, got {topk_period!r}")
    if not isinstance(warmup_epochs, numbers.Integral) or warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be an int >= 0, got {warmup_epochs!r}")
    if not lambda_init > 0:
        raise ValueError(f"lambda_init must be > 0, got {lambda_init!r}")
    if not eta >= 1.0:
        raise ValueError(f"eta must be >= 1 (the regularization only grows), got {eta!r}")
    if update_unit == "epochs":
        if not isinstance(steps_per_epoch, numbers.Integral) or steps_per_epoch < 1:
            raise ValueError(
                f"update_unit='epochs' needs steps_per_epoch (an int >= 1), got {steps_per_epoch!r}"
            )
        update_interval = int(update_interval) * int(steps_per_epoch)
    shape_pattern = Pattern(pattern, int(block_size), int(nm_n), int(nm_m))
    if set_sign_split and (method != "set" or pattern != "unstructured"):
        raise ValueError(
            f"set_sign_split=True is for method set with pattern unstructured, "
            f"got method={method!r}, pattern={pattern!r}"
        )
    if regrowth_rate < 1.0 and method != "prune_regrow":
        raise ValueError(
            f"regrowth_rate={regrowth_rate} < 1 is for method prune_regrow, got method={method!r}"
        )
    if regrowth_rate < 1.0 and pattern == "n:m":
        raise ValueError(f"regrowth_rate={regrowth_rate} < 1 cannot keep an n:m pattern")

    definition = METHODS[method]
    if method == "prune_regrow":
        definition = replace(
            definition,
            drop_score=DROP_CRITERIA[drop_criterion],
            grow_score=GROW_CRITERIA[grow_criterion],
            dense_gradient=grow_criterion in ("gradient", "momentum"),
            dense_gradient_every_step=grow_criterion == "momentum",
        )
    weights = prunable_weights(model)
    if not weights:
        raise ValueError("model has no nn.Linear or nn.Conv2d weights to sparsify")
    shapes = {name: tuple(weight.shape) for name, weight in weights.items()}
    names = list(weights)
    dense_layers = tuple(dict.fromkeys([names[0], names[-1]])) if dense_first_last else ()
    if definition.sparse and pattern == "n:m":
        if not math.isclose(sparsity, 1 - nm_n / nm_m, abs_tol=1e-9):
            raise ValueError(
                f"sparsity={sparsity} with pattern n:m ({nm_n}:{nm_m}): an n:m mask is "
                f"nm_n/nm_m dense, so set sparsity={1 - nm_n / nm_m:g}"
            )
        densities = {
            name: 1.0 if name in dense_layers or not shape_pattern.supports(shape) else nm_n / nm_m
            for name, shape in shapes.items()
        }
    else:
        densities = distribute_density(shapes, 1.0 - sparsity, distribution, dense_layers)
    positions = flops_lib.output_positions(model, input_shape) if input_shape is not None else None
    common = dict(
        update_interval=int(update_interval),
        update_end=float(update_end),
        drop_fraction=float(drop_fraction),
        total_steps=int(total_steps),
        skip_weight_update_on_mask_update=skip_weight_update_on_mask_update,
        generator=generator,
        pattern=shape_pattern,
        positions=positions,
    )
    if definition.kind == "swat":
        from trainables.sparsity.swat import SwatTraining

        training: SparseTraining = SwatTraining(
            definition,
            model,
            weights,
            densities,
            topk_period=int(topk_period),
            **common,
        )
    elif definition.kind == "hypersparse":
        from trainables.sparsity.hypersparse import HyperSparseTraining

        steps_per = steps_per_epoch or total_steps
        training = HyperSparseTraining(
            definition,
            weights,
            target_density=1.0 - sparsity,
            dense_layers=dense_layers,
            warmup_epochs=int(warmup_epochs),
            lambda_init=float(lambda_init),
            eta=float(eta),
            regularizer=regularizer,
            total_epochs=max(1, round(total_steps / steps_per)),
            art_buffer=int(art_buffer),
            art_restart=bool(art_restart),
            **common,
        )
    else:
        target_units = None
        if definition.sparse:
            if regrowth_rate < 1.0:
                target_units = {
                    name: max(1, round(densities[name] * shape_pattern.n_units(shapes[name])))
                    for name in shapes
                }
                # It only shrinks: it starts at min(initial_sparsity, sparsity).
                start = 1.0 - min(initial_sparsity, sparsity)
                densities = distribute_density(shapes, start, distribution, dense_layers)
            masks = pattern_masks(weights, densities, shape_pattern, generator)
        else:
            masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
        training = SparseTraining(
            definition,
            weights,
            masks,
            set_sign_split=set_sign_split,
            regrowth_rate=float(regrowth_rate),
            target_units=target_units,
            momentum=float(momentum),
            count_rounding=count_rounding,
            redistribution=redistribution,
            **common,
        )
    training.after_step()
    return training


REGULARIZERS = ("hypersparse", "l1", "l2")
