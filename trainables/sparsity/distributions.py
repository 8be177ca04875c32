"""How a global density is spread over layers: `distribution` = uniform | erk, as components.

Torch-free: a spec is checked against these declarations before torch loads.
"""

from __future__ import annotations

import math

from trainables.registry import Component, Registry


class Distribution(Component):
    """Spreads a density over the budgeted layers (the dense ones are left out of the budget)."""

    def densities(self, shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
        raise NotImplementedError


DISTRIBUTIONS = Registry(
    "distribution", "how the global sparsity is spread over layers", base=Distribution
)


@DISTRIBUTIONS.register("uniform")
class Uniform(Distribution):
    """Every layer at the global density."""

    def densities(self, shapes, density):
        return {name: density for name in shapes}


@DISTRIBUTIONS.register("erk")
class ERK(Distribution):
    """Erdos-Renyi-Kernel (Evci et al. 2020): density_l proportional to sum(shape_l) /
    prod(shape_l), so small layers stay denser (rigl's get_sparsities_erdos_renyi with
    erk_power_scale=1). eps is solved so the active weights total `density * total`; a layer
    whose density would exceed 1 is made dense and eps re-solved over the rest, one layer at a
    time (as rigl does), until none exceeds 1."""

    def densities(self, shapes, density):
        n_params = {name: math.prod(shape) for name, shape in shapes.items()}
        raw = {name: sum(shape) / n_params[name] for name, shape in shapes.items()}
        made_dense: set[str] = set()
        while True:
            sparse = [name for name in shapes if name not in made_dense]
            if not sparse:
                break
            # eps * sum_sparse(raw_l * n_l) + sum_dense(n_l) = density * sum_all(n_l)
            budget = density * sum(n_params.values()) - sum(n_params[name] for name in made_dense)
            eps = budget / sum(raw[name] * n_params[name] for name in sparse)
            max_raw = max(raw[name] for name in sparse)
            if eps * max_raw <= 1.0:
                break
            # As rigl: the densest layers go dense, then re-solve. (eps only grows when a layer
            # goes dense, so this ends with the same dense set as taking every exceeding layer
            # at once.)
            made_dense.update(name for name in sparse if raw[name] == max_raw)
        # min() guards the last sparse layer against 1 + rounding error.
        return {name: 1.0 if name in made_dense else min(1.0, eps * raw[name]) for name in shapes}


def layer_densities(
    shapes: dict[str, tuple[int, ...]],
    density: float,
    distribution: str = "uniform",
    dense_layers: tuple[str, ...] = (),
) -> dict[str, float]:
    """Per-layer densities whose active weights add up to `density` of all budgeted weights.
    `dense_layers` are forced dense and, as in rigl, left out of the budget."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"distribution must be one of {tuple(DISTRIBUTIONS)}, got {distribution!r}"
        )
    unknown = [name for name in dense_layers if name not in shapes]
    if unknown:
        raise ValueError(f"dense_layers names {unknown} that are not in shapes {list(shapes)}")
    budgeted = {name: shape for name, shape in shapes.items() if name not in dense_layers}
    densities = {name: 1.0 for name in dense_layers}
    densities.update(DISTRIBUTIONS.create(distribution).densities(budgeted, density))
    return {name: densities[name] for name in shapes}
