"""SET's sign split against the authors' rewireMask, ported op for op on identical tensors.

Reference: dcmocanu/sparse-evolutionary-artificial-neural-networks, commit
d8c613654d2d415bf40516d32f649bf42a1f7b0b, `SET-MLP-Keras-Weights-Mask/set_mlp_keras_cifar10.py`:
`rewireMask` (and its helpers `find_first_pos`, `find_last_pos`). Inactive weights are exactly 0
there (the Keras MaskWeights constraint), so every zero, an active one included, is removed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from trainables.sparsity import create_sparse_training


# --- the port ---------------------------------------------------------------------------------
def find_first_pos(array, value):
    return (np.abs(array - value)).argmin()


def find_last_pos(array, value):
    return array.shape[0] - (np.abs(array - value))[::-1].argmin()


def reference_rewire_core(weights, zeta):
    """rewireMask up to weightMaskCore (the kept weights), and noRewires for noWeights."""
    values = np.sort(weights.ravel())
    first_zero = find_first_pos(values, 0)
    last_zero = find_last_pos(values, 0)
    largest_negative = values[int((1 - zeta) * first_zero)]
    smallest_positive = values[
        int(min(values.shape[0] - 1, last_zero + zeta * (values.shape[0] - last_zero)))
    ]
    rewired = weights.copy()
    rewired[rewired > smallest_positive] = 1
    rewired[rewired < largest_negative] = 1
    rewired[rewired != 1] = 0
    return rewired.astype(bool)


# tiny tensors: one torch thread (conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


LAYERS = {
    "linear": lambda: nn.Sequential(nn.Linear(30, 20, bias=False)),
    "conv": lambda: nn.Sequential(nn.Conv2d(3, 8, 3, bias=False)),
}


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
@pytest.mark.parametrize("zeta", [0.3, 0.5, 0.05])
def test_sign_split_keeps_what_rewire_mask_keeps_exact_zeros_removed(kind, sparsity, zeta):
    torch.manual_seed(0)
    model = LAYERS[kind]()
    training = create_sparse_training(
        model, method="set", sparsity=sparsity, set_sign_split=True, update_interval=1,
        drop_fraction=zeta, update_end=1.0, total_steps=10**6,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    (name,) = training.weights
    weight, mask = training.weights[name], training.masks[name]
    generator = torch.Generator().manual_seed(int(zeta * 100) + int(sparsity * 10))
    values = torch.randn(weight.shape, generator=generator)
    active = mask.clone()
    # a few active weights exactly 0 (grown weights start at 0): the reference removes them
    zero_positions = active.flatten().nonzero().squeeze(1)[:5]
    values.view(-1)[zero_positions] = 0.0
    with torch.no_grad():
        weight.copy_(values * active)
    fraction = training.drop_fraction_at(1)
    assert fraction == pytest.approx(zeta, rel=1e-5)
    kept = reference_rewire_core(weight.detach().numpy().copy(), fraction)
    n_grow = int(active.sum()) - int(kept.sum())  # noRewires = noWeights - sum(core)
    new = training.method.sign_split_update(training, name, weight, mask, fraction)
    kept_t = torch.from_numpy(kept)
    assert torch.equal(new & kept_t, kept_t)  # everything the reference keeps is kept
    assert torch.equal(active & ~new & ~kept_t, active & ~new)  # and all else it removes
    dropped = active & ~kept_t
    assert bool(dropped.view(-1)[zero_positions].all())  # the exact zeros are removed
    regrown = new & ~kept_t
    assert int(regrown.sum()) == n_grow  # grown back to the layer's count
    assert int(new.sum()) == int(active.sum())
