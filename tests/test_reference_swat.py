"""SWAT against the authors' code, ported op for op on identical tensors.

Reference: AamirRaihan/SWAT, commit 482d24538516633968a7cdf63a1e98e28c4d38af:
- `SWAT-code/cifar10-100-code/topk/drop.py`: `matrix_drop` / `matrix_drop_th` (linear weights
  and activations), `drop_nhwc` / `drop_nhwc_send_th` (conv weights and activations),
  `drop_threshold` (reuse);
- `SWAT-code/cifar10-100-code/custom_layers/custom_conv.py` (`sparsify_weight`,
  `sparsify_activation`: exact every `period` batches, the saved threshold in between) and
  `custom_linear.py` (always exact): both at the layer's own sparsity `self.sparsity[layer]`;
- `SWAT-code/cifar10-100-code/dynamic_sparsity.py`: `init(mode="constant")` then
  `erdos_renyi_kernel(include_kernel=True)` for SWAT-ERK's per-layer sparsities.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from trainables.models import create_model
from trainables.sparsity import create_sparse_training, prunable_weights
from trainables.sparsity.swat import topk_activations

# tiny tensors: one torch thread (conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the ports ------------------------------------------------------------------------------
def drop_send_th(tensor, select_percentage):
    """matrix_drop_th / drop_nhwc_send_th: (tensor * index, threshold)."""
    k = int(math.ceil(select_percentage * tensor.numel()))
    threshold = tensor.reshape(-1).abs().topk(k)[0][-1]
    index = (tensor.abs() >= threshold).type_as(tensor)
    return tensor * index, threshold


def drop_threshold(tensor, threshold):
    return tensor * (tensor.abs() >= threshold).type_as(tensor)


def erdos_renyi_kernel_sparsities(shapes, density):
    """dynamic_sparsity.layerSparsity: init('constant', density) with every layer sparsified,
    then erdos_renyi_kernel(include_kernel=True). Returns name -> sparsity."""
    layer_zeros = {name: np.prod(s) - np.prod(s) * density for name, s in shapes.items()}
    dense_layers = set()
    while True:
        divisor, rhs, raw = 0, 0, {}
        for name, shape in shapes.items():
            n_param = np.prod(shape)
            n_zeros = layer_zeros[name]
            if name in dense_layers:
                rhs -= n_zeros
            else:
                rhs += n_param - n_zeros
                raw[name] = np.sum(shape) / np.prod(shape)
                divisor += raw[name] * n_param
        eps = rhs / divisor
        max_prob = np.max(list(raw.values()))
        if max_prob * eps > 1:
            dense_layers.update(name for name, p in raw.items() if p == max_prob)
        else:
            break
    return {name: 0.0 if name in dense_layers else 1.0 - eps * raw[name] for name in shapes}


# --- SWAT-ERK ---------------------------------------------------------------------------------
def test_swat_erk_activation_densities_on_resnet20_at_90_equal_the_reference():
    model = create_model("resnet", (3, 32, 32), 10, blocks=3)
    training = create_sparse_training(
        model, method="swat", sparsity=0.9, distribution="erk", total_steps=10,
        input_shape=(3, 32, 32),
    )  # fmt: skip
    shapes = {name: tuple(w.shape) for name, w in prunable_weights(model).items()}
    assert len(shapes) == 20  # 19 convolutions and the classifier
    reference = erdos_renyi_kernel_sparsities(shapes, 0.1)
    for name in shapes:
        assert training.target_activation_density[name] == pytest.approx(
            1.0 - reference[name], abs=1e-12
        ), name
        assert training.densities[name] == pytest.approx(1.0 - reference[name], abs=1e-12)
    # not the global 10% for every layer: the small first conv and the classifier are denser
    densities = training.target_activation_density
    assert max(densities.values()) > 0.3 and min(densities.values()) < 0.1


# --- drop.py: weights and activations ---------------------------------------------------------
@pytest.mark.parametrize("density", [0.5, 0.2, 0.1, 0.05])
@pytest.mark.parametrize("shape", [(64, 300), (8, 16, 6, 6)], ids=["linear", "conv"])
def test_activation_top_k_equals_drop_py(density, shape):
    x = torch.relu(torch.randn(shape, generator=torch.Generator().manual_seed(1)))
    expected, expected_threshold = drop_send_th(x, density)
    threshold, got = topk_activations(x, density)
    assert torch.equal(got, expected)
    assert threshold.item() == expected_threshold.item()


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.95])
def test_weight_top_k_and_period_equal_the_reference_layers(sparsity):
    """A conv and a linear layer over a few steps with topk_period 3: the conv reuses its
    weight threshold between exact top-Ks, the linear layer is exact every step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    period = 3
    training = create_sparse_training(
        model, method="swat", sparsity=sparsity, topk_period=period, total_steps=20,
        input_shape=(3, 6, 6),
    )  # fmt: skip
    conv_name, linear_name = list(training.weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    select = 1.0 - sparsity
    thresholds = {}
    for step in range(7):
        # the forward of this step uses the masks from the last after_step (or init)
        weights = {n: w.detach().clone() for n, w in training.weights.items()}
        for name, weight in weights.items():
            is_conv = name == conv_name
            if not is_conv or step % period == 0:  # custom_linear: always matrix_drop_th
                expected, thresholds[name] = drop_send_th(weight, select)
            else:  # custom_conv between exact steps: drop_threshold with the saved one
                expected = drop_threshold(weight, thresholds[name])
            assert torch.equal(training.masks[name], expected != 0), (step, name)
        optimizer.zero_grad()
        x = torch.randn(16, 3, 6, 6)
        model(x).square().mean().backward()
        assert training.after_backward(step, optimizer) is False
        optimizer.step()
        training.after_step()
