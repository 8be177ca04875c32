"""HyperSparse and ART against the authors' code, ported op for op on identical tensors.

Reference: GreenAutoML4FAS/HyperSparse, commit beff812aef7c7c3bf452e30a92e1ed600f71e582:
`loss/HyperSparse.py` (`hyperSparse`, `grad_HS_loss`), `utils/pruner.py` (`mag_prune`),
`utils/misc.py` (`ModelBuffer`), `utils/art.py` (`ART.forward_epoch`,
`get_best_pruned_val`), `train.py` (`trainModel`: the rewind to the best pruned copy and a
new SGD for the fine-tuning), `utils/arg.py` (defaults: lambda_init 5e-6, eta 1.05,
warmup_epochs 60, size_model_buffer 1).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from trainables.sparsity import METHODS, create_sparse_training
from trainables.sparsity.hypersparse import hypersparse_gradient, hypersparse_loss

# tiny tensors: one torch thread (conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the ports ------------------------------------------------------------------------------
def is_prunable_module(m):
    return isinstance(m, nn.Conv2d | nn.Linear)


def get_w_tens(model):
    return torch.cat([torch.reshape(m.weight, [-1, 1]) for m in model.modules()
                      if is_prunable_module(m)], dim=0).squeeze()  # fmt: skip


def reference_hypersparse(model, prune_rate):
    w = get_w_tens(model)
    w_abs = w.abs()
    w_sort, _ = torch.sort(w_abs.detach())
    prune_idx = math.floor(prune_rate * w_sort.shape[0])
    s = 0.6585 / w_sort[prune_idx]
    w_tanh = torch.tanh(s * w_abs)
    w_sum = torch.sum(w_tanh)
    hs_loss = w_abs * w_sum
    hs_loss = hs_loss.reshape(-1)
    hs_loss /= w_tanh.sum().detach()
    hs_loss -= w.abs()
    return hs_loss.sum()


def reference_grad_hs_loss(model, prune_rate):
    w = get_w_tens(model).detach()
    w_abs = w.abs()
    w_sort, _ = torch.sort(w_abs)
    idx = math.floor(prune_rate * w_sort.shape[0])
    s = (0.6585 / w_sort[idx]).item()
    w_tanh_deriv = s / (torch.cosh(s * w_abs) ** 2)
    factor = w_abs.sum() / torch.tanh(s * w_abs).sum()
    grad = torch.sign(w) * w_tanh_deriv * factor
    count, w_grad = 0, {}
    for name, m in model.named_modules():
        if is_prunable_module(m):
            w_grad[name] = grad[count : count + m.weight.numel()].reshape(m.weight.shape)
            count += m.weight.numel()
    return w_grad


def reference_mag_prune_masks(model, prune_rate):
    w = torch.cat([m.weight.data.abs().reshape(-1) for m in model.modules()
                   if is_prunable_module(m)])  # fmt: skip
    w_sort, _ = torch.sort(w)
    prune_thresh = w_sort[math.floor(w.shape[0] * prune_rate)]
    return {name: m.weight.data.abs() > prune_thresh
            for name, m in model.named_modules() if is_prunable_module(m)}  # fmt: skip


class ReferenceModelBuffer:
    def __init__(self, names, max_size, avg_list):
        self.max_size, self.middle = max_size, max_size // 2
        self.names, self.avg_list = names, avg_list
        self.length = 0
        self.lists = {name: [] for name in names}

    def update(self, new):
        for k, v in new.items():
            self.lists[k].append(v)
            if len(self.lists[k]) > self.max_size:
                self.lists[k].pop(0)
            self.length = len(self.lists[k])

    def get_middle_elem(self):
        idx = min(self.length - 1, self.middle)
        ret = {name: self.lists[name][idx] for name in self.names}
        for name in self.avg_list:
            ret["mean_" + name] = self.avg_val(name)
        return ret

    def avg_val(self, name):
        return sum(self.lists[name]) / len(self.lists[name])


def reference_art(accuracies, dense_accuracies, size_model_buffer):
    """ART.forward_epoch over epochs: (terminating art epoch, chosen art epoch) or None."""
    buffer = ReferenceModelBuffer(["art_epoch", "train_acc_pr"], 2 * size_model_buffer + 1,
                                  ["train_acc_pr"])  # fmt: skip
    best = {"art_epoch": 0, "train_acc_pr": 0.0, "mean_train_acc_pr": 0.0}
    for art_epoch, (acc_pr, acc_dense) in enumerate(
        zip(accuracies, dense_accuracies, strict=True), 1
    ):
        buffer.update({"art_epoch": art_epoch, "train_acc_pr": acc_pr})
        if buffer.avg_val("train_acc_pr") > best["train_acc_pr"]:
            best = buffer.get_middle_elem()
        if best["mean_train_acc_pr"] > acc_dense:
            return art_epoch, best["art_epoch"]
    return None


# --- the loss and its closed-form gradient ----------------------------------------------------
def model_with_conv():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 20), nn.ReLU(),
        nn.Linear(20, 5),
    )  # fmt: skip


@pytest.mark.parametrize("prune_rate", [0.5, 0.8, 0.9, 0.95])
def test_loss_and_gradient_equal_hyper_sparse_and_grad_hs_loss(prune_rate):
    model = model_with_conv()
    weights = [m.weight for m in model.modules() if is_prunable_module(m)]
    assert hypersparse_loss(weights, prune_rate).item() == pytest.approx(
        reference_hypersparse(model, prune_rate).item(), abs=1e-4
    )
    expected = reference_grad_hs_loss(model, prune_rate)
    got = hypersparse_gradient(weights, prune_rate)
    for (name, grad), mine in zip(expected.items(), got, strict=True):
        assert torch.allclose(mine.view_as(grad), grad, rtol=1e-4, atol=1e-7), name
    # and the autograd gradient of the reference loss is the same closed form
    reference_hypersparse(model, prune_rate).backward()
    for weight, mine in zip(weights, got, strict=True):
        assert torch.allclose(weight.grad, mine.view_as(weight), rtol=1e-3, atol=1e-6)


def test_training_adds_lambda_times_grad_hs_loss():
    model = model_with_conv()
    training = create_sparse_training(
        model, method="hypersparse", sparsity=0.9, warmup_epochs=0, lambda_init=5e-6, eta=1.05,
        total_steps=40, steps_per_epoch=4, input_shape=(3, 6, 6),
    )  # fmt: skip
    training.epoch = 3
    for m in model.modules():
        if is_prunable_module(m):
            m.weight.grad = torch.zeros_like(m.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    training.after_backward(0, optimizer)
    alpha = 5e-6 * 1.05 ** float(3 - 0)  # train.py: lambda_init * eta ** (epoch - warmup)
    for name, grad in reference_grad_hs_loss(model, 0.9).items():
        weight = dict(model.named_modules())[name].weight
        assert torch.allclose(weight.grad, alpha * grad, rtol=1e-4, atol=1e-12), name


@pytest.mark.parametrize("prune_rate", [0.5, 0.8, 0.9, 0.95])
def test_pruned_masks_equal_mag_prune(prune_rate):
    model = model_with_conv()
    training = create_sparse_training(
        model, method="hypersparse", sparsity=prune_rate, total_steps=10, input_shape=(3, 6, 6)
    )
    expected = reference_mag_prune_masks(model, prune_rate)
    got = training.pruned_masks()
    for name, mask in expected.items():
        assert torch.equal(got[f"{name}.weight"], mask), name


def test_defaults_are_the_references():
    knobs = METHODS.knobs_of("hypersparse")
    assert knobs["lambda_init"].default == 5e-6
    assert knobs["eta"].default == 1.05
    assert knobs["warmup_epochs"].default == 60
    assert knobs["art_buffer"].default == 1
    assert knobs["art_restart"].default is True


# --- ART: the buffer, the check, the rewind ---------------------------------------------------
SEQUENCES = [
    # (pruned accuracies per ART epoch, dense accuracies per ART epoch)
    ([0.10, 0.30, 0.50, 0.70, 0.90, 0.95], [0.99] * 3 + [0.6] * 3),
    ([0.50, 0.90, 0.20, 0.30, 0.95, 0.96, 0.97], [0.9] * 7),
    ([0.0, 0.0, 0.2, 0.8, 0.1, 0.9], [0.5] * 6),
]


@pytest.mark.parametrize("size_model_buffer", [0, 1, 2])
@pytest.mark.parametrize(("accuracies", "dense"), SEQUENCES)
def test_art_terminates_and_rewinds_as_the_reference(accuracies, dense, size_model_buffer):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    epochs = 20
    training = create_sparse_training(
        model, method="hypersparse", sparsity=0.8, warmup_epochs=0, update_end=1.0,
        total_steps=epochs * 2, steps_per_epoch=2, art_buffer=size_model_buffer,
        input_shape=(8,),
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    expected = reference_art(accuracies, dense, size_model_buffer)
    scores = iter(accuracies)
    training.pruned_accuracy = lambda *args: next(scores)  # the copy's accuracy, as given
    data = SimpleNamespace(x_train=torch.randn(6, 8), y_train=torch.zeros(6, dtype=torch.long))
    snapshots = {}
    for epoch, acc_dense in enumerate(dense, 1):
        with torch.no_grad():  # the model moves every epoch
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
        optimizer.state[model[0].weight]["momentum_buffer"] = torch.ones_like(model[0].weight)
        trainer = SimpleNamespace(model=model, optimizer=optimizer, data=data,
                                  train_accuracy=acc_dense, step=epoch * 2)  # fmt: skip
        training.on_epoch_end(trainer)
        if training.pruned:
            break
    if expected is None:
        assert not training.pruned
        return
    stop, chosen = expected
    assert training.pruned and training.epoch == stop
    # rewound to the chosen epoch's copy, pruned by mag_prune of that copy
    chosen_model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    chosen_model.load_state_dict(snapshots[chosen])
    masks = reference_mag_prune_masks(chosen_model, 0.8)
    for name, mask in masks.items():
        assert torch.equal(training.masks[f"{name}.weight"], mask)
        assert torch.equal(
            dict(model.named_modules())[name].weight, snapshots[chosen][f"{name}.weight"] * mask
        )
    assert torch.equal(model[0].bias, snapshots[chosen]["0.bias"])
    assert optimizer.state == {}  # a new SGD for the fine-tuning
    assert training.lr_restart_step == stop * 2


def test_trainer_restarts_the_lr_schedule_for_the_fine_tuning():
    from trainables.datasets import load_dataset
    from trainables.train import Trainer

    config = {
        "method": "hypersparse",
        "sparsity": 0.9,
        "epochs": 4,
        "width": 16,
        "depth": 1,
        "warmup_epochs": 1,
        "lambda_init": 1e-4,
        "eta": 2.0,
        "update_end": 0.5,
    }
    trainer = Trainer(config, load_dataset("digits"))
    trainer.run_epoch()
    trainer.run_epoch()  # regularized epoch; the prune is forced at epoch round(0.5 * 4) = 2
    assert trainer.sparse.pruned
    start = trainer.sparse.lr_restart_step
    assert start == trainer.step
    assert trainer.lr_at(start) == pytest.approx(config_lr := 0.1)
    assert trainer.lr_at(trainer.total_steps) == pytest.approx(0.0, abs=1e-12)
    assert config_lr > trainer.lr_at(start + 1)
