"""`prune_regrow`: the general drop/grow rule SET and RigL are settings of, and SNFS.

Drop by `magnitude` or `gradient`, grow by `random`, `gradient` or `momentum`, a prune rate
(`drop_fraction`) and a regrowth rate (< 1 shrinks from `initial_sparsity` to `sparsity` by
update_end). grow_criterion `momentum` is SNFS (Dettmers & Zettlemoyer 2019,
TimDettmers/sparse_learning's Masking): a dense momentum of the gradient, which this method
holds, and with `redistribution: momentum` the regrowth redistributed across layers by their
mean |momentum| (checked against the reference by tests/test_reference_snfs.py).

Differences from sparse_learning: the update runs on sparsetune's schedule (every
`update_interval` steps or epochs, cosine `drop_fraction`) rather than at every epoch end with
its own cosine death rate; the momentum is a dense momentum of the gradient with the
optimizer's momentum (or Adam's beta1), not SGD's momentum buffer (which also carries weight
decay); momentum at grown positions is reset to 0, not to the mean of the active momentum.
Redistribution applies to the unstructured pattern with the magnitude drop and regrowth_rate 1;
other settings update per layer.
"""

from __future__ import annotations

import math

from trainables.registry import Knob
from trainables.sparsity.methods.base import (
    METHODS,
    SCHEDULE,
    SKIP_STEP,
    SPARSE,
    Method,
    refuse,
)
from trainables.sparsity.methods.set import uniform_scores


@METHODS.register("prune_regrow")
class PruneRegrow(Method):
    """General drop/grow rule (grow_criterion momentum: SNFS with its redistribution)."""

    knobs = {
        **SPARSE,
        **SCHEDULE,
        "skip_weight_update_on_mask_update": SKIP_STEP,
        "drop_criterion": Knob(
            "magnitude", str, "drop score: magnitude | gradient", choices=("magnitude", "gradient")
        ),
        "grow_criterion": Knob(
            "gradient", str, "grow score: random | gradient | momentum (SNFS)",
            choices=("random", "gradient", "momentum"),
        ),
        "regrowth_rate": Knob(
            1.0, float, "regrown / pruned per update (< 1 shrinks to sparsity)", low=0.0, high=1.0
        ),
        "initial_sparsity": Knob(
            0.5, float, "with regrowth_rate < 1: sparsity at init (at most sparsity)", low=0.0,
            high=1.0, high_open=True,
        ),
        "redistribution": Knob(
            "momentum", str, "with grow_criterion momentum (SNFS): regrowth redistributed "
            "across layers by mean momentum (momentum, sparse_learning's) or kept per layer "
            "(none)", choices=("momentum", "none"),
        ),
    }  # fmt: skip
    dynamic = True

    def __init__(self, config=None):
        super().__init__(config)
        self.momentum: dict = {}  # SNFS: name -> dense momentum of the gradient
        self.momentum_beta = 0.9
        self.adjusted_growth = 0.0  # sparse_learning's smoothed residual of the growth
        self.adjustments: list[float] = []
        self.baseline_density: dict[str, float] = {}

    @classmethod
    def check(cls, config, where=""):
        if config["regrowth_rate"] < 1.0 and config["pattern"] == "n:m":
            refuse(
                where,
                f"regrowth_rate={config['regrowth_rate']!r} < 1 cannot keep an n:m pattern "
                "(its density is fixed): set regrowth_rate: 1 or another pattern",
            )

    @property
    def grows_by_momentum(self) -> bool:
        return self.values["grow_criterion"] == "momentum"

    @property
    def dense_gradient(self) -> bool:
        return self.values["grow_criterion"] in ("gradient", "momentum")

    @property
    def dense_gradient_every_step(self) -> bool:
        return self.grows_by_momentum

    # --- scores ---------------------------------------------------------------------------
    def drop_score(self, name, weight, training):
        if self.values["drop_criterion"] == "gradient":
            return training.dense_gradient(weight).abs()
        return weight.detach().abs()

    def grow_score(self, name, weight, training):
        criterion = self.values["grow_criterion"]
        if criterion == "random":
            return uniform_scores(weight, training.generator)
        if criterion == "momentum":
            return self.momentum[name].abs()
        return training.dense_gradient(weight).abs()

    # --- the engine: shrinking from initial_sparsity when regrowth_rate < 1 ---------------
    def make_engine(self, setup):
        """The shared engine; with regrowth_rate < 1 it starts at min(initial_sparsity,
        sparsity) and shrinks by update_end to each layer's count at the target sparsity."""
        from trainables.sparsity.distributions import layer_densities
        from trainables.sparsity.engine import mask_engine

        rate = self.values["regrowth_rate"]
        if rate >= 1.0:
            return mask_engine(self, setup)
        config, shape = setup.config, setup.common["pattern"]
        shapes = {name: tuple(w.shape) for name, w in setup.weights.items()}
        target_units = {
            name: max(1, round(setup.densities[name] * shape.n_units(shapes[name])))
            for name in shapes
        }
        start = 1.0 - min(self.values["initial_sparsity"], config["sparsity"])
        densities = layer_densities(shapes, start, config["distribution"], setup.dense_layers)
        return mask_engine(self, setup, densities, regrowth_rate=rate, target_units=target_units)

    # --- SNFS's state -----------------------------------------------------------------------
    def attach(self, training):
        import torch

        self.momentum_beta = training.gradient_momentum
        if self.grows_by_momentum:
            self.momentum = {name: torch.zeros_like(w) for name, w in training.weights.items()}
        self.baseline_density = {
            name: int(m.sum()) / m.numel() for name, m in training.masks.items()
        }

    def observe_gradients(self, training):
        for name, buffer in self.momentum.items():
            grad = training.weights[name].grad
            if grad is not None:
                buffer.mul_(self.momentum_beta).add_(grad)

    def state_dict(self):
        return {
            "momentum": {name: m.clone() for name, m in self.momentum.items()},
            "adjusted_growth": self.adjusted_growth,
            "adjustments": list(self.adjustments),
        }

    def load_state_dict(self, state):
        for name, buffer in state.get("momentum", {}).items():
            self.momentum[name].copy_(buffer)
        self.adjusted_growth = state.get("adjusted_growth", 0.0)
        self.adjustments = list(state.get("adjustments", []))

    # --- the update -------------------------------------------------------------------------
    def redistributes(self, training) -> bool:
        return (
            self.values["redistribution"] == "momentum"
            and self.grows_by_momentum
            and self.values["drop_criterion"] == "magnitude"
            and training.pattern.kind == "unstructured"
            and self.values["regrowth_rate"] >= 1.0
        )

    def new_masks(self, training, step, fraction):
        if self.redistributes(training):
            return self.snfs_masks(training, fraction)
        return super().new_masks(training, step, fraction)

    def snfs_masks(self, training, death_rate: float) -> dict:
        """Prune every layer by magnitude (ceil(death_rate * nonzeros)), then regrow the total
        removed across layers in proportion to each layer's mean |momentum| over its active
        weights, by momentum within the layer, as TimDettmers/sparse_learning's
        gather_statistics, calc_growth_redistribution, magnitude_death and momentum_growth.
        Layers that are fully dense take no part (there is nothing to grow into)."""
        masks = training.masks
        names = [n for n, m in masks.items() if not bool(m.all())]
        if not names:
            return {}
        variance, nonzeros, zeros = {}, {}, {}
        for name in names:
            mask = masks[name]
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
            sparsity = zeros[name] / masks[name].numel()
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
        regrowth = snfs_redistribute(variance, death, zeros, self.adjusted_growth, total_removed)
        new_masks = {}
        total_new = 0
        for name in names:
            mask, weight = masks[name], training.weights[name]
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
        baseline = sum(masks[name].numel() * self.baseline_density[name] for name in names)
        self.adjustments.append(baseline - total_new)
        self.adjusted_growth = (
            0.25 * self.adjusted_growth
            + 0.75 * (baseline - total_new)
            + sum(self.adjustments) / len(self.adjustments)
        )
        return new_masks


def snfs_redistribute(
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
