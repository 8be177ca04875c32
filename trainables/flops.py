"""Theoretical FLOPs, as the RigL paper counts them (Evci et al. 2020, Appendix H).

A FLOP is a multiply or an add, so a multiply-accumulate is 2 FLOPs (the micronet counter that
the RigL paper used). Only nn.Linear and nn.Conv2d are counted: every one that runs, including
the first layer and shortcut convolutions. Elementwise work (activations, normalization,
pooling, residual adds) is not counted: it is small next to the matrix products and the same
for every sparse-training method.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from trainables.sparsity.masks import prunable_layers


@torch.no_grad()
def output_positions(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Weight name -> output positions of its nn.Linear / nn.Conv2d for one sample of shape
    `input_shape` (H_out * W_out for a convolution, 1 for a Linear on a vector), summed over
    every call (a module called twice, weight sharing, counts twice; one never called, 0).

    Runs one dummy sample in eval mode, then restores every module's mode.
    """
    layers = prunable_layers(model)
    names = {module: name for name, module in layers.items()}
    positions = dict.fromkeys(layers, 0)

    def count(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        # Batch 1, so output.numel() / out_channels is the number of output positions.
        positions[names[module]] += output.numel() // module.weight.shape[0]

    handles = [module.register_forward_hook(count) for module in layers.values()]
    modes = {module: module.training for module in model.modules()}
    parameter = next(model.parameters())
    try:
        model.eval()
        model(torch.zeros((1, *input_shape), dtype=parameter.dtype, device=parameter.device))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.train(training)
    return positions


def layer_flops(positions: dict[str, int], nnz: dict[str, int]) -> dict[str, int]:
    """Forward FLOPs per layer of one sample: 2 * nnz(weight) * output positions."""
    return {name: 2 * nnz[name] * count for name, count in positions.items()}


def forward_flops(
    model: nn.Module, input_shape: tuple[int, ...], masks: dict[str, Tensor] | None = None
) -> int:
    """FLOPs of one forward pass of one sample of shape `input_shape` (no batch dimension).

    Each nn.Linear / nn.Conv2d costs 2 * nnz(weight) * output positions (H_out * W_out for a
    convolution, 1 for a Linear on a vector): one multiply and one add per active weight and
    position; a bias add takes the place of the first accumulate, so biases add nothing. nnz is
    the mask's count where `masks` (keyed by weight name, as `prunable_weights`) has the layer,
    else weight.numel() (dense).
    """
    masks = masks or {}
    nnz = {
        name: int(masks[name].sum()) if name in masks else module.weight.numel()
        for name, module in prunable_layers(model).items()
    }
    return sum(layer_flops(output_positions(model, input_shape), nnz).values())


def train_step_flops(sparse_flops: int, dense_flops: int, dense_gradient: bool) -> int:
    """FLOPs of one training step per sample, from the forward FLOPs of the sparse and the dense
    model: forward f_S plus backward 2 f_S (gradients of activations and of weights), or on a
    step that needs the dense weight gradient (a RigL update) 2 f_S + f_D."""
    if dense_gradient:
        return 2 * sparse_flops + dense_flops
    return 3 * sparse_flops


def swat_step_flops(
    dense_layer_flops: dict[str, int],
    weight_density: dict[str, float],
    activation_density: dict[str, float],
) -> float:
    """SWAT (Raihan & Aamodt 2020) per sample: each layer's dense forward FLOPs f_l times
    (1 - s_W) for the forward, (1 - s_W) for the input gradient (sparse weights) and (1 - s_A)
    for the weight gradient (sparse saved activations): f_l * (2 (1 - s_W) + (1 - s_A))."""
    return sum(
        f * (2 * weight_density[name] + activation_density[name])
        for name, f in dense_layer_flops.items()
    )
