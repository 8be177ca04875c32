from __future__ import annotations

import torch
from torch import nn

from trainables.flops import forward_flops, train_step_flops
from trainables.sparsity import create_sparse_training


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
    # one update (step 5 < 0.75 * 10; step 10 is past the end): 9 sparse steps + 1 RigL step
    assert total == 9 * 3 * sparse_flops + 2 * sparse_flops + dense_flops
