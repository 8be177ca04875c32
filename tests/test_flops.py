from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from knobs import read_by
from torch import nn

from trainables.flops import forward_flops, swat_step_flops, train_step_flops
from trainables.sparsity import create_sparse_training, prunable_weights


def small_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_forward_flops_mlp_dense_and_masked():
    model = small_mlp()
    assert forward_flops(model, (4,)) == 2 * (4 * 3 + 3 * 2)
    masks = {
        "0.weight": torch.zeros(3, 4, dtype=torch.bool),
        "2.weight": torch.zeros(2, 3, dtype=torch.bool),
    }
    masks["0.weight"].view(-1)[:5] = True
    masks["2.weight"].view(-1)[:4] = True
    assert forward_flops(model, (4,), masks) == 2 * (5 + 4)
    # a layer missing from masks counts dense
    assert forward_flops(model, (4,), {"2.weight": masks["2.weight"]}) == 2 * (12 + 4)


def test_forward_flops_conv_output_positions():
    # 10x10 input; conv1: k3 s2 p1 -> 5x5; conv2: k3 s1 p0 -> 3x3; then linear on 4*3*3
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, bias=False),
        nn.Flatten(),
        nn.Linear(36, 5),
    )
    expected = 2 * (3 * 2 * 9 * 25 + 4 * 3 * 9 * 9 + 36 * 5)
    assert forward_flops(model, (2, 10, 10)) == expected


def test_forward_flops_counts_every_call_and_restores_modes():
    class Shortcut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.shortcut = nn.Linear(4, 4)
            self.dropout = nn.Dropout(0.5)

        def forward(self, x):
            return self.dropout(self.body(self.body(x))) + self.shortcut(x)

    model = Shortcut()
    model.train()
    model.dropout.eval()
    assert forward_flops(model, (4,)) == 3 * 2 * 16
    assert model.training and model.body.training and not model.dropout.training


def test_train_step_flops():
    assert train_step_flops(10, 100, dense_gradient=False) == 30
    assert train_step_flops(10, 100, dense_gradient=True) == 2 * 10 + 100


def test_rigl_ten_steps_total_flops_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    dense_flops = forward_flops(model, (8,))
    assert dense_flops == 2 * (8 * 16 + 16 * 4)
    training = create_sparse_training(
        model, method="rigl", sparsity=0.75, update_interval=5, total_steps=10
    )
    sparse_flops = 2 * (32 + 16)  # exact per-layer counts: 25% of 128 and of 64
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    total = 0
    for step in range(10):
        assert forward_flops(model, (8,), training.masks) == sparse_flops
        total += train_step_flops(
            forward_flops(model, (8,), training.masks),
            dense_flops,
            training.dense_gradient_step(step),
        )
        optimizer.zero_grad()
        model(torch.randn(4, 8)).sum().backward()
        if not training.after_backward(step, optimizer):
            optimizer.step()
        training.after_step()
    # two updates (rigl's schedule: step 0 and step 5 <= 0.75 * 10): 8 sparse steps + 2 RigL
    # steps (this loop passes the batch index, so the update batches are counted here)
    assert total == 8 * 3 * sparse_flops + 2 * (2 * sparse_flops + dense_flops)


# --- every method's training FLOPs by hand (RigL paper conventions) ---------------------------


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


F_D = 2 * (8 * 16 + 16 * 4)  # 384
F_S = 2 * (32 + 16)  # 75% sparse, exact per-layer counts: 96


def step_flops_over(method, steps=10, model=None, x_of=None, **knobs):
    """Per-sample FLOPs of every step of a short run, in the Trainer's order."""
    torch.manual_seed(0)
    model = model or tiny_mlp()
    training = create_sparse_training(
        model, method=method, sparsity=0.75 if method != "dense" else 0.0, total_steps=steps,
        input_shape=(8,),
        generator=torch.Generator().manual_seed(0), **read_by(method, update_interval=5), **knobs,
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    flops = []
    for step in range(steps):
        optimizer.zero_grad()
        x = x_of(step) if x_of else torch.randn(4, 8)
        model(x).sum().backward()
        flops.append(training.step_flops(step))
        if not training.after_backward(step, optimizer):
            optimizer.step()
        training.after_step()
    return flops, training


@pytest.mark.parametrize(
    ("method", "knobs", "expected"),
    [
        ("dense", {}, [3 * F_D] * 10),
        ("static", {}, [3 * F_S] * 10),
        ("set", {}, [3 * F_S] * 10),
        # the dense gradient only on the update steps: rigl's 0 and 5 (<= 7.5)
        ("rigl", {}, ([2 * F_S + F_D] + [3 * F_S] * 4) * 2),
        ("prune_regrow", {"grow_criterion": "random"}, [3 * F_S] * 10),
        (
            "prune_regrow",
            {"grow_criterion": "gradient"},
            ([2 * F_S + F_D] + [3 * F_S] * 4) * 2,
        ),  # fmt: skip
        # SNFS: the dense momentum needs the dense gradient on every step (per-layer counts
        # kept here; its redistribution moves weights, and FLOPs, between layers)
        (
            "prune_regrow",
            {"grow_criterion": "momentum", "redistribution": "none"},
            [2 * F_S + F_D] * 10,
        ),
    ],
)
def test_step_flops_by_hand_mlp(method, knobs, expected):
    flops, _ = step_flops_over(method, **knobs)
    assert flops == expected


def test_swat_step_flops_by_hand():
    # No ReLU, so the second layer's input (the first's output) has no zeros: top-K keeps
    # exactly 25% there. The first layer's input has only 4 nonzeros of 32 (< K = 8): 12.5%.
    torch.manual_seed(0)  # the weights decide ties at the threshold: the same in any test order
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    x = torch.zeros(4, 8)
    x[:, 0] = torch.tensor([1.0, -2.0, 3.0, 0.5])
    flops, training = step_flops_over("swat", model=model, x_of=lambda step: x)
    # per layer f_l (2 (1 - s_W) + (1 - s_A)): 256 (0.5 + 0.125) + 128 (0.5 + 0.25) at the
    # first step; later, outputs that only carry a bias tie across samples, and drop.py keeps
    # every tie at the threshold (|x| >= the K-th largest)
    assert flops[0] == 256 * 0.625 + 128 * 0.75
    assert all(f >= flops[0] for f in flops)
    assert training.activation_density["0.weight"] == 0.125


def test_swat_step_flops_formula():
    assert swat_step_flops({"a": 100, "b": 10}, {"a": 0.1, "b": 1.0}, {"a": 0.2, "b": 0.5}) == (
        100 * (0.2 + 0.2) + 10 * (2.0 + 0.5)
    )


def test_art_flops_count_dense_phases_checks_and_fine_tuning():
    torch.manual_seed(0)
    model = tiny_mlp()
    training = create_sparse_training(
        model, method="hypersparse", sparsity=0.75, total_steps=6, steps_per_epoch=2,
        warmup_epochs=1, update_end=0.5, input_shape=(8,),
    )  # fmt: skip
    assert training.prune_epoch == 2  # round(0.5 * 3) = 2 > warm-up 1
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(6, 8), torch.randint(0, 4, (6,))
    trainer = SimpleNamespace(
        model=model, optimizer=optimizer, data=SimpleNamespace(x_train=x, y_train=y),
        train_accuracy=2.0,  # the check never passes: ART prunes at prune_epoch
    )  # fmt: skip
    total = 0
    for step in range(6):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x[:3]), y[:3])
        penalty = training.loss_penalty()
        (loss if penalty is None else loss + penalty).backward()
        total += 3 * training.step_flops(step)  # a batch of 3 samples
        if not training.after_backward(step, optimizer):
            optimizer.step()
        training.after_step()
        if step % 2 == 1:
            total += training.on_epoch_end(trainer)
    # epochs 1-2 dense (warm-up, regularized): 4 steps x 3 samples x 3 f_D; the one check
    # after epoch 2: 6 samples x f_S of mag_prune's keep (|w| > sorted |w|[floor(0.75 * 192)]:
    # 47 weights of the Linear layers: 2 x 47); epoch 3 sparse: 2 steps x 3 samples x 3 f_S
    f_s = 2 * 47
    assert total == 4 * 3 * 3 * F_D + 6 * f_s + 2 * 3 * 3 * f_s


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(4, 8, 1, stride=2, bias=False)

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.shortcut(x))


def small_resnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), Block(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )  # fmt: skip


# by hand, on 3x8x8: stem 4x3x3x3 at 8x8, conv1 8x4x3x3 at 4x4, conv2 8x8x3x3 at 4x4,
# shortcut 8x4x1x1 at 4x4, fc 10x8 once
RESNET_DENSE = 2 * (108 * 64 + 288 * 16 + 576 * 16 + 32 * 16 + 80)  # 42656


def test_forward_flops_small_resnet_counts_first_layer_and_shortcut():
    model = small_resnet()
    assert forward_flops(model, (3, 8, 8)) == RESNET_DENSE == 42656
    weights = prunable_weights(model)
    masks = {name: torch.zeros_like(w, dtype=torch.bool) for name, w in weights.items()}
    masks["2.shortcut.weight"][:3] = True  # 3 of 8 filters: 12 weights at 16 positions
    masks["0.weight"].view(-1)[:5] = True  # 5 stem weights at 64 positions
    assert forward_flops(model, (3, 8, 8), masks) == 2 * (12 * 16 + 5 * 64)


def test_rigl_training_flops_small_resnet_by_hand():
    torch.manual_seed(0)
    model = small_resnet()
    training = create_sparse_training(
        model, method="rigl", sparsity=0.5, update_interval=5, total_steps=10,
        input_shape=(3, 8, 8),
    )  # fmt: skip
    f_s = RESNET_DENSE // 2  # every layer exactly half (all counts even)
    assert training.sparse_forward_flops() == f_s
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    total = 0
    for step in range(10):
        optimizer.zero_grad()
        model(torch.randn(2, 3, 8, 8)).sum().backward()
        total += 2 * training.step_flops(step)
        if not training.after_backward(step, optimizer):
            optimizer.step()
        training.after_step()
    # rigl's updates at steps 0 and 5: 8 sparse steps + 2 with the dense gradient
    assert total == 2 * (8 * 3 * f_s + 2 * (2 * f_s + RESNET_DENSE))
