"""Masks over the prunable weights, and the one mask update every dynamic method shares."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Only the weights of these layers are masked; biases and norm parameters stay dense, as in rigl.
PRUNABLE_LAYERS = (nn.Linear, nn.Conv2d)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Weight name (as in `named_parameters()`) -> its nn.Linear / nn.Conv2d, in module order."""
    return {
        f"{name}.weight" if name else "weight": module
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_LAYERS)
    }


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weight name -> weight of every nn.Linear and nn.Conv2d, in module order."""
    return {name: module.weight for name, module in prunable_layers(model).items()}


def random_masks(
    weights: dict[str, Tensor],
    densities: dict[str, float],
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Bool masks with exactly round(density * numel) (at least 1) active positions per layer.

    The positions are uniformly random. Exact counts (rather than Bernoulli draws) make the
    per-layer density, and hence the FLOP count, a function of the configuration alone.
    """
    masks = {}
    for name, weight in weights.items():
        if name not in densities:
            raise ValueError(f"densities has no entry for weight {name!r}")
        density = densities[name]
        if not 0.0 <= density <= 1.0:
            raise ValueError(f"densities[{name!r}] must be in [0, 1], got {density}")
        n_active = max(1, round(density * weight.numel()))
        # Draw on the generator's device (a CPU generator cannot draw on CUDA), then move.
        device = generator.device if generator is not None else weight.device
        positions = torch.randperm(weight.numel(), generator=generator, device=device)[:n_active]
        mask = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
        mask[positions.to(weight.device)] = True
        masks[name] = mask.view(weight.shape)
    return masks


def update_mask(mask: Tensor, drop_score: Tensor, grow_score: Tensor, n_update: int) -> Tensor:
    """Drop the `n_update` active positions with the lowest `drop_score`, then grow the `n_update`
    inactive positions (after the drop) with the highest `grow_score`.

    Just-dropped positions may regrow, as in rigl. The number of active positions is preserved
    exactly. Returns a new bool mask; `mask` is not modified.
    """
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    if drop_score.shape != mask.shape or grow_score.shape != mask.shape:
        raise ValueError(
            f"drop_score {tuple(drop_score.shape)} and grow_score {tuple(grow_score.shape)} "
            f"must have the mask's shape {tuple(mask.shape)}"
        )
    flat = mask.flatten()
    active = flat.nonzero().squeeze(1)
    if not 0 <= n_update <= active.numel():
        raise ValueError(
            f"n_update must be in [0, {active.numel()}] (active count), got {n_update}"
        )
    new = flat.clone()
    # Select among the candidate indices only, so scores of +-inf or ties with masked-out
    # positions can never pick a position from the wrong set.
    lowest = drop_score.flatten()[active].topk(n_update, largest=False).indices
    new[active[lowest]] = False
    inactive = (~new).nonzero().squeeze(1)
    highest = grow_score.flatten()[inactive].topk(n_update).indices
    new[inactive[highest]] = True
    return new.view(mask.shape)
