"""SWAT's CPU fast path (fused masking, selection on the bit patterns, counts from the
selection, reused buffers) computes what the plain ops compute, on the inputs that stress it:
ties at the threshold (quantized pixels), thresholds of 0, float64, non-contiguous inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.sparsity import create_sparse_training
from trainables.sparsity.swat import sparse_activations, topk_activations_counted


def plain_top_k(x: torch.Tensor, density: float) -> tuple[float, torch.Tensor]:
    """drop.py's drop_nhwc_send_th with a sort: the K-th largest |x|, every |x| >= it kept."""
    k = math.ceil(density * x.numel())
    threshold = x.abs().reshape(-1).sort(descending=True).values[k - 1]
    return threshold.item(), x.masked_fill(x.abs() < threshold, 0.0)


def inputs():
    g = torch.Generator().manual_seed(3)
    yield "relu", torch.relu(torch.randn(64, 300, generator=g))
    # 17 levels: many ties at any threshold
    yield "quantized", torch.randint(-8, 9, (32, 200), generator=g).float() / 8
    yield "float64", torch.randn(16, 50, generator=g, dtype=torch.float64)
    yield "non-contiguous", torch.randn(40, 90, generator=g).t()[:, ::2]
    yield "mostly zeros", torch.zeros(20, 20).index_fill_(1, torch.tensor([3]), -1.5)


@pytest.mark.parametrize("density", [0.5, 0.1, 0.01])
@pytest.mark.parametrize(("kind", "x"), list(inputs()), ids=[k for k, _ in inputs()])
def test_activation_top_k_and_count_equal_the_plain_ops(kind, x, density):
    expected_threshold, expected = plain_top_k(x, density)
    scratch = torch.full(x.shape, 7.0, dtype=x.dtype)  # a dirty reused buffer
    threshold, got, kept = topk_activations_counted(x, density, scratch)
    assert threshold.item() == expected_threshold
    assert threshold.dtype == x.dtype
    assert torch.equal(got, expected)
    assert got.data_ptr() != x.data_ptr()
    if kept is not None:  # the count taken from the selection, ties included
        assert kept == int(torch.count_nonzero(expected))
    # the threshold reused (SWAT's topk_period) masks as the plain comparison
    y = x * 0.9
    assert torch.equal(sparse_activations(y, threshold), y.masked_fill(y.abs() < threshold, 0))


def test_masks_sparse_weights_and_counts_follow_the_weights_over_steps():
    """Over SGD steps (conv reuse in between exact top-Ks, linear exact every step): the mask is
    |W| >= the K-th largest |W|, the forward's weight is W * mask, the FLOP count's nnz is the
    mask's count, exactly as computed by the plain ops."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    training = create_sparse_training(
        model, method="swat", sparsity=0.8, topk_period=2, total_steps=10,
        input_shape=(3, 6, 6),
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    linear = list(training.weights)[1]
    for step in range(5):
        for name, weight in training.weights.items():
            mask = training.masks[name]
            assert torch.equal(training.sparse_weight(name), weight.detach().masked_fill(~mask, 0))
            assert training.layer_nnz()[name] == int(mask.sum())
        w = training.weights[linear].detach()
        k = math.ceil(0.2 * w.numel())
        kth = w.abs().reshape(-1).sort(descending=True).values[k - 1]
        assert torch.equal(training.masks[linear], w.abs() >= kth), step
        optimizer.zero_grad()
        # quantized inputs: ties at the activation threshold
        x = torch.randint(-2, 3, (16, 3, 6, 6)).float()
        model(x).square().mean().backward()
        training.after_backward(step, optimizer)
        optimizer.step()
        training.after_step()
    # a mask changed from outside, announced by masks_changed(): the counts follow it
    training.masks[linear].zero_()
    training.masks_changed()
    assert training.layer_nnz()[linear] == 0
    assert torch.count_nonzero(training.sparse_weight(linear)) == 0
