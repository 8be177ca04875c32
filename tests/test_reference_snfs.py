"""SNFS (prune_regrow with grow_criterion momentum) against sparse_learning, ported op for op.

Reference: TimDettmers/sparse_learning, commit 04b18e247434436477e4fe11b0012cf0a1c40f15,
`sparselearning/core.py`: `Masking.truncate_weights` with death_mode 'magnitude', growth_mode
'momentum', redistribution_mode 'momentum' (`gather_statistics`,
`calc_growth_redistribution`, `magnitude_death`, `momentum_growth`, the adjusted_growth
smoothing). The momentum is the same tensor on both sides (the reference reads SGD's
momentum_buffer; sparsetune keeps its own dense momentum of the gradient).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from trainables.sparsity import create_sparse_training

# tiny tensors: one torch thread (conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ReferenceMasking:
    """The parts of Masking that one truncate_weights call runs."""

    def __init__(self, masks, baseline_nonzero, death_rate):
        self.masks = {n: m.float().clone() for n, m in masks.items()}
        self.baseline_nonzero = baseline_nonzero
        self.death_rate = death_rate
        self.adjusted_growth = 0
        self.adjustments = []

    def truncate_weights(self, weights, momentum):
        self.gather_statistics(momentum)
        name2regrowth = self.calc_growth_redistribution()
        for name, weight in weights.items():
            self.masks[name][:] = self.magnitude_death(self.masks[name], weight, name)
        total_nonzero_new = 0
        for name in weights:
            new_mask = self.masks[name].data.byte()
            total_regrowth = math.floor(name2regrowth[name] * 1.0)
            new_mask = self.momentum_growth(new_mask, total_regrowth, momentum[name])
            self.masks[name] = new_mask.float()
            total_nonzero_new += new_mask.sum().item()
        self.adjustments.append(self.baseline_nonzero - total_nonzero_new)
        self.adjusted_growth = (0.25 * self.adjusted_growth
                                + (0.75 * (self.baseline_nonzero - total_nonzero_new))
                                + np.mean(self.adjustments))  # fmt: skip

    def gather_statistics(self, momentum):
        self.name2nonzeros, self.name2zeros, self.name2variance = {}, {}, {}
        self.total_variance, self.total_removed = 0.0, 0
        for name, mask in self.masks.items():
            self.name2variance[name] = torch.abs(momentum[name][mask.bool()]).mean().item()
            if not np.isnan(self.name2variance[name]):
                self.total_variance += self.name2variance[name]
            self.name2nonzeros[name] = mask.sum().item()
            self.name2zeros[name] = mask.numel() - self.name2nonzeros[name]
            sparsity = self.name2zeros[name] / float(mask.numel())
            death_rate = self.death_rate
            if sparsity < 0.2:
                expected_vs_actual = (1.0 / len(self.name2variance)) / self.name2variance[name]
                if expected_vs_actual < 1.0:
                    death_rate = min(sparsity, death_rate)
            self.total_removed += math.ceil(death_rate * self.name2nonzeros[name])

    def calc_growth_redistribution(self):
        for name in self.name2variance:
            self.name2variance[name] /= self.total_variance
        residual, mean_residual, name2regrowth, i = 9999, 0, {}, 0
        while residual > 0 and i < 1000:
            residual = 0
            for name in self.name2variance:
                sparsity = self.name2zeros[name] / float(self.masks[name].numel())
                death_rate = self.death_rate
                if sparsity < 0.2:
                    expected_vs_actual = (1.0 / len(self.name2variance)) / self.name2variance[name]
                    if expected_vs_actual < 1.0:
                        death_rate = min(sparsity, death_rate)
                num_remove = math.ceil(death_rate * self.name2nonzeros[name])
                max_regrowth = self.name2zeros[name] + num_remove
                if name in name2regrowth:
                    regrowth = name2regrowth[name]
                else:
                    regrowth = math.ceil(
                        self.name2variance[name] * (self.total_removed + self.adjusted_growth)
                    )
                regrowth += mean_residual
                if regrowth > 0.99 * max_regrowth:
                    name2regrowth[name] = 0.99 * max_regrowth
                    residual += regrowth - name2regrowth[name]
                else:
                    name2regrowth[name] = regrowth
            mean_residual = residual / len(name2regrowth) if name2regrowth else 0
            i += 1
        return name2regrowth

    def magnitude_death(self, mask, weight, name):
        num_remove = math.ceil(self.death_rate_for(name) * self.name2nonzeros[name])
        if num_remove == 0.0:
            return weight.data != 0.0
        num_zeros = self.name2zeros[name]
        x, _ = torch.sort(torch.abs(weight.data.view(-1)))
        k = math.ceil(num_zeros + num_remove)
        threshold = x[k - 1].item()
        return torch.abs(weight.data) > threshold

    def death_rate_for(self, name):
        sparsity = self.name2zeros[name] / float(self.masks[name].numel())
        death_rate = self.death_rate
        if sparsity < 0.2:
            expected_vs_actual = (1.0 / len(self.name2variance)) / self.name2variance[name]
            if expected_vs_actual < 1.0:
                death_rate = min(sparsity, death_rate)
        return death_rate

    def momentum_growth(self, new_mask, total_regrowth, momentum):
        grad = momentum * (new_mask == 0).float()
        _, idx = torch.sort(torch.abs(grad).flatten(), descending=True, stable=True)
        new_mask.data.view(-1)[idx[:total_regrowth]] = 1
        return new_mask


def make(sparsity, conv):
    torch.manual_seed(0)
    if conv:
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(),
            nn.Linear(16 * 2 * 2, 10),
        )  # fmt: skip
    else:
        model = nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.Linear(40, 20), nn.ReLU(),
                              nn.Linear(20, 5))  # fmt: skip
    training = create_sparse_training(
        model, method="prune_regrow", grow_criterion="momentum", sparsity=sparsity,
        update_interval=1, update_end=1.0, drop_fraction=0.3, total_steps=10**5,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    return model, training


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
def test_snfs_update_equals_truncate_weights(sparsity, conv):
    _, training = make(sparsity, conv)
    masks = {n: m.clone() for n, m in training.masks.items()}
    baseline = sum(m.numel() * (int(m.sum()) / m.numel()) for m in masks.values())
    generator = torch.Generator().manual_seed(4)
    reference = None
    for update in range(3):  # the adjusted_growth state carries over
        with torch.no_grad():
            for name, weight in training.weights.items():
                weight.copy_(torch.randn(weight.shape, generator=generator) * training.masks[name])
        momentum = {n: torch.randn(w.shape, generator=generator)
                    for n, w in training.weights.items()}  # fmt: skip
        for name, buffer in training.method.momentum.items():
            buffer.copy_(momentum[name])
        fraction = training.drop_fraction_at(update + 1)
        if reference is None:
            reference = ReferenceMasking(masks, baseline, fraction)
        reference.death_rate = fraction
        weights = {n: w.detach().clone() for n, w in training.weights.items()}
        reference.truncate_weights(weights, momentum)
        new = training.method.snfs_masks(training, fraction)
        for name in masks:
            assert torch.equal(new[name], reference.masks[name].bool()), (update, name)
            training.masks[name].copy_(new[name])
        training.masks_changed()
        assert training.method.adjusted_growth == pytest.approx(reference.adjusted_growth)


def test_snfs_moves_weights_across_layers_and_none_keeps_them():
    _, training = make(0.8, conv=False)
    before = {n: int(m.sum()) for n, m in training.masks.items()}
    # layer 0's momentum is 10x the others': redistribution grows there
    generator = torch.Generator().manual_seed(0)
    for i, buffer in enumerate(training.method.momentum.values()):
        buffer.copy_(torch.randn(buffer.shape, generator=generator) * (10.0 if i == 0 else 1.0))
    new = training.method.snfs_masks(training, 0.3)
    after = {n: int(m.sum()) for n, m in new.items()}
    first = next(iter(before))
    assert after[first] > before[first]
    _, per_layer = make(0.8, conv=False)
    per_layer.method.values["redistribution"] = "none"
    assert not per_layer.method.redistributes(per_layer)
