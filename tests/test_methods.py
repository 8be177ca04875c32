"""Every sparse-training method against its paper: masks, schedules, SWAT's autograd Function,
HyperSparse's gradient and ART's schedule, and the `train` command for every method."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from knobs import read_by
from torch import nn

from trainables.config import ConfigError, check_value, make_config
from trainables.sparsity import METHODS, create_sparse_training, layer_densities
from trainables.sparsity.hypersparse import (
    hypersparse_gradient,
    hypersparse_loss,
    hypersparse_scale,
)
from trainables.sparsity.swat import SwatLinear, swat_keep_count

SPARSE = [name for name in METHODS if METHODS[name].sparse]


# tiny tensors: one torch thread (conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


DYNAMIC = ["set", "rigl", "prune_regrow"]
# Every way a dynamic drop/grow rule can be set up (method, extra knobs).
DYNAMIC_SETTINGS = [
    ("set", {}),
    ("set", {"set_sign_split": True}),
    ("rigl", {}),
    ("prune_regrow", {"drop_criterion": "magnitude", "grow_criterion": "random"}),
    ("prune_regrow", {"drop_criterion": "gradient", "grow_criterion": "gradient"}),
    ("prune_regrow", {"drop_criterion": "magnitude", "grow_criterion": "momentum"}),
]
IDS = [f"{m}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for m, kw in DYNAMIC_SETTINGS]


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 8)
    )


def batches(steps: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield (
            torch.randn(12, 16, generator=generator),
            torch.randint(0, 8, (12,), generator=generator),
        )


def make(method: str, model: nn.Module | None = None, **knobs):
    torch.manual_seed(0)
    model = model or mlp()
    # the shared settings go to the methods that read them; `knobs` go as given (refused by
    # name where the method does not read them)
    shared = read_by(method, update_interval=2, drop_fraction=0.5, warmup_epochs=1)
    arguments = {
        "sparsity": 0.8,
        "total_steps": 24,
        "generator": torch.Generator().manual_seed(1),
        "input_shape": (16,),
        "steps_per_epoch": 4,
        **shared,
        **knobs,
    }
    training = create_sparse_training(model, method=method, **arguments)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, training, optimizer


def run(model, training, optimizer, steps: int, on_backward=None, on_step=None):
    """The Trainer's step order, with a fake trainer for on_epoch_end every 4 steps."""
    data = list(batches(steps))
    for step, (x, y) in enumerate(data):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        penalty = training.loss_penalty()
        (loss if penalty is None else loss + penalty).backward()
        before = {n: m.clone() for n, m in training.masks.items()}
        skip = training.after_backward(step, optimizer)
        if not skip:
            optimizer.step()
        training.after_step()  # SET rewires here, after the optimizer step
        if on_backward is not None:
            on_backward(step, before)
        if on_step is not None:
            on_step(step)
        if (step + 1) % 4 == 0:
            x_all = torch.cat([b[0] for b in data])
            y_all = torch.cat([b[1] for b in data])
            trainer = SimpleNamespace(
                model=model,
                optimizer=optimizer,
                data=SimpleNamespace(x_train=x_all, y_train=y_all),
                train_accuracy=1.01,  # never reached: ART prunes at its prune_epoch
            )
            training.on_epoch_end(trainer)


def counts(training) -> dict[str, int]:
    return {name: int(mask.sum()) for name, mask in training.masks.items()}


def expected_counts(model, sparsity, distribution="uniform") -> dict[str, int]:
    shapes = {
        n: tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, nn.Linear)
    }
    densities = layer_densities(shapes, 1 - sparsity, distribution)
    return {f"{n}.weight": max(1, round(densities[n] * math.prod(s))) for n, s in shapes.items()}


# --- shared properties, over every registered method -----------------------------------------


def test_registry_has_every_method_of_the_field():
    assert set(METHODS) == {"dense", "static", "set", "rigl", "prune_regrow", "swat", "hypersparse"}


@pytest.mark.parametrize(
    ("method", "distribution"),
    [(m, d) for m in SPARSE for d in ("uniform", "erk") if "distribution" in METHODS.knobs_of(m)]
    + [(m, "uniform") for m in SPARSE if "distribution" not in METHODS.knobs_of(m)],
)
def test_layer_counts_exact_after_every_update(method, distribution):
    model, training, optimizer = make(method, **read_by(method, distribution=distribution))
    expected = expected_counts(model, 0.8, distribution)

    def check(step):
        if method == "hypersparse":  # dense until its prune, then the global count
            if training.pruned:
                assert sum(counts(training).values()) == round(0.2 * training.total_params())
            else:
                assert training.density() == 1.0
        elif method == "swat":  # drop.py's k = ceil(density * numel)
            shapes = {n: w.numel() for n, w in training.weights.items()}
            assert counts(training) == {
                n: swat_keep_count(training.densities[n], numel) for n, numel in shapes.items()
            }, step
        else:
            assert counts(training) == expected, step
        if method != "swat":  # swat keeps its dense weights; the forward masks them
            for name, weight in training.weights.items():
                assert torch.all(weight[~training.masks[name]] == 0)

    run(model, training, optimizer, 24, on_step=check)
    if method == "hypersparse":
        assert training.pruned


@pytest.mark.parametrize(("method", "knobs"), DYNAMIC_SETTINGS, ids=IDS)
def test_grown_weights_are_zero_and_drop_count_follows_cosine(method, knobs):
    model, training, optimizer = make(method, **knobs)
    updates = []

    def check(step, before):
        if training.last_update_step != step:  # not an update step
            assert all(torch.equal(before[n], m) for n, m in training.masks.items())
            return
        for name, mask in training.masks.items():
            grown = mask & ~before[name]
            dropped = before[name] & ~mask
            assert torch.all(training.weights[name][grown] == 0), (step, name)
            if knobs.get("grow_criterion") != "momentum":  # SNFS moves counts across layers
                assert int(grown.sum()) == int(dropped.sum())
            fraction = training.drop_fraction_at(step)
            if knobs.get("set_sign_split"):
                continue  # rounded per sign: checked in its own test
            # dropped-and-regrown positions count as kept, so at most the scheduled number
            # (SNFS redistributes across layers: its count is checked by its own test)
            if knobs.get("grow_criterion") != "momentum":
                assert int(dropped.sum()) <= int(fraction * int(before[name].sum()))
        updates.append(step)

    run(model, training, optimizer, 24, on_backward=check)
    # rigl's schedule: from step 0, every 2 steps, to end_step = 0.75 * 24 inclusive
    assert updates == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]


@pytest.mark.parametrize(("method", "knobs"), DYNAMIC_SETTINGS, ids=IDS)
def test_no_mask_change_from_update_end(method, knobs):
    model, training, optimizer = make(method, update_end=0.5, **knobs)
    snapshot = {}

    def check(step):
        if step == 11:  # 0.5 * 24 = 12: step 12 and later never update
            snapshot.update({n: m.clone() for n, m in training.masks.items()})
        if step >= 12:
            assert not training.is_update_step(step)
            assert all(torch.equal(snapshot[n], m) for n, m in training.masks.items())

    run(model, training, optimizer, 24, on_step=check)


def test_drop_fraction_cosine_schedule_values():
    _, training, _ = make("rigl", drop_fraction=0.4, update_end=0.5)
    end = 12
    for step in range(0, 24):
        expected = 0.2 * (1 + math.cos(math.pi * step / end)) if step < end else 0.0
        assert training.drop_fraction_at(step) == pytest.approx(expected)


def test_drop_count_equals_schedule_when_no_regrowth_of_dropped():
    # grow scores: inactive positions get huge gradients, so nothing dropped can regrow
    mask = torch.tensor([True, True, True, True, False, False, False, False])
    model = nn.Sequential(nn.Linear(8, 1, bias=False))
    training = create_sparse_training(
        model, method="rigl", sparsity=0.5, update_interval=1, drop_fraction=0.5,
        total_steps=8, input_shape=(8,),
    )  # fmt: skip
    training.masks["0.weight"].copy_(mask.view(1, 8))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.4, -0.1, 0.3, 0.2, 0, 0, 0, 0]]))
    model[0].weight.grad = torch.tensor([[0.0, 0, 0, 0, 5, 1, 3, 2]])
    training.last_update_step = 0
    training.after_backward(1, torch.optim.SGD(model.parameters(), lr=0.1))
    # fraction at step 1 of 6: 0.25 * (1 + cos(pi/6)) = 0.4665 -> int(1.87) = 1 dropped (rigl)
    assert training.masks["0.weight"].view(-1).tolist() == [
        True, False, True, True, True, False, False, False
    ]  # fmt: skip


# --- RigL, SET, prune_regrow by hand ----------------------------------------------------------


def test_rigl_grows_exactly_the_top_gradient_inactive_positions():
    model = nn.Sequential(nn.Linear(6, 2, bias=False))
    training = create_sparse_training(
        model, method="rigl", sparsity=0.5, update_interval=1, drop_fraction=0.5,
        total_steps=100, input_shape=(6,), count_rounding="round",
    )  # fmt: skip
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    training.masks["0.weight"].copy_(mask)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.9, 0.1, 0.5, 0, 0, 0], [-0.8, 0.2, -0.05, 0, 0, 0]]))
    model[0].weight.grad = torch.tensor([[0, 0, 0, 0.3, 4.0, -0.1], [0, 0, 0, -7.0, 0.2, 0.6]])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert round(training.drop_fraction_at(1) * 6) == 3  # int() would give 2
    skip = training.after_backward(1, optimizer)
    # drop the 3 smallest |w| (0.1, 0.05, 0.2); grow the 3 largest |grad| among the inactive
    # (-7.0, 4.0, 0.6); grown weights start at 0
    assert training.masks["0.weight"].int().tolist() == [[1, 0, 1, 0, 1, 0], [1, 0, 0, 1, 0, 1]]
    assert model[0].weight[0, 4] == 0 and model[0].weight[1, 3] == 0 and model[0].weight[1, 5] == 0
    assert skip  # the weight update is skipped on a mask-update step (the default)


def test_set_sign_split_drops_smallest_positive_and_largest_negative():
    model = nn.Sequential(nn.Linear(8, 1, bias=False))
    training = create_sparse_training(
        model, method="set", sparsity=0.25, update_interval=1, drop_fraction=1.0,
        total_steps=1000, set_sign_split=True, input_shape=(8,),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    weight = torch.tensor([[0.5, 0.1, 0.3, 0.7, -0.2, -0.9, -0.05, 0.0]])
    training.masks["0.weight"].copy_(weight != 0)
    with torch.no_grad():
        model[0].weight.copy_(weight)
    model[0].weight.grad = torch.zeros_like(weight)
    training.drop_fraction = 0.5 / training.drop_fraction_at(1) * training.drop_fraction
    assert training.drop_fraction_at(1) == pytest.approx(0.5)
    training.after_backward(1, torch.optim.SGD(model.parameters(), lr=0.1))
    new = training.masks["0.weight"].view(-1)
    # 4 positive (drop 2 smallest: 0.1, 0.3), 3 negative (drop round(1.5)=2 closest to 0:
    # -0.05, -0.2); -0.9 survives though |-0.9| > 0.5, as in SET's sign split; 4 regrown.
    assert int(new.sum()) == 7
    assert new[0] and new[3] and new[5]
    dropped_or_regrown = [1, 2, 4, 6, 7]
    assert int(new[dropped_or_regrown].sum()) == 4


def test_prune_regrow_momentum_grows_by_dense_momentum():
    model, training, optimizer = make(
        "prune_regrow", grow_criterion="momentum", update_interval=3, drop_fraction=0.3
    )
    grown_any = []

    def check(step, before):
        if training.last_update_step == step:
            for name, mask in training.masks.items():
                grown = mask & ~before[name]
                if grown.any():
                    # every grown position beats every position left inactive on |momentum|
                    score = training.method.momentum[name].abs()
                    assert score[grown].min() >= score[~mask].max()
                    grown_any.append(step)

    run(model, training, optimizer, 12, on_backward=check)
    assert grown_any
    assert all(training.dense_gradient_step(s) for s in range(12))  # SNFS: every step


def test_prune_regrow_shrinks_to_its_target_by_update_end():
    model, training, optimizer = make(
        "prune_regrow", regrowth_rate=0.5, initial_sparsity=0.5, sparsity=0.8,
        update_unit="epochs", update_interval=1, grow_criterion="random",
    )  # fmt: skip
    assert training.update_interval == 4  # 1 epoch of 4 steps
    assert training.density() == pytest.approx(0.5, abs=0.01)
    densities = []
    run(model, training, optimizer, 24, on_step=lambda s: densities.append(training.density()))
    assert all(a >= b for a, b in zip(densities, densities[1:], strict=False))  # only shrinks
    assert counts(training) == expected_counts(model, 0.8)


# --- patterns ---------------------------------------------------------------------------------


def assert_whole_blocks(mask: torch.Tensor, b: int) -> None:
    matrix = mask.reshape(mask.shape[0], -1)
    for i in range(0, matrix.shape[0], b):
        for j in range(0, matrix.shape[1], b):
            tile = matrix[i : i + b, j : j + b]
            assert tile.all() or not tile.any(), (i, j)


@pytest.mark.parametrize("method", SPARSE)
def test_block_masks_are_whole_blocks_after_every_update(method):
    model, training, optimizer = make(method, pattern="block", block_size=4)

    def check(step):
        for mask in training.masks.values():
            assert_whole_blocks(mask, 4)

    check(-1)
    run(model, training, optimizer, 24, on_step=check)
    if method in DYNAMIC:
        assert all(not m.all() for m in training.masks.values())


@pytest.mark.parametrize("method", SPARSE)
def test_two_four_masks_keep_exactly_two_of_every_four(method):
    model, training, optimizer = make(method, pattern="n:m", nm_n=2, nm_m=4, sparsity=0.5)

    def check(step):
        if method == "hypersparse" and not training.pruned:
            return
        for mask in training.masks.values():
            groups = mask.reshape(-1, 4).sum(dim=1)
            assert torch.all(groups == 2), step

    check(-1)
    run(model, training, optimizer, 24, on_step=check)


def test_block_rigl_grows_the_block_with_the_largest_gradient_norm():
    model = nn.Sequential(nn.Linear(4, 4, bias=False))
    training = create_sparse_training(
        model, method="rigl", sparsity=0.5, pattern="block", block_size=2, update_interval=1,
        drop_fraction=0.5, total_steps=1000, input_shape=(4,),
    )  # fmt: skip
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    training.masks["0.weight"].copy_(mask)
    with torch.no_grad():  # block (0,0) norm 0.2, block (0,1) norm 2
        model[0].weight.copy_(torch.tensor([[0.1, 0.1, 1, 1], [0.1, 0.1, 1, 1], [0, 0, 0, 0],
                                            [0, 0, 0, 0.0]]))  # fmt: skip
    # bottom-left block: |grad| norm 4; bottom-right: 2; top-left: 0
    model[0].weight.grad = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [2, 2, 1, 1], [2, 2, 1, 1.0]])
    training.drop_fraction = 0.5 / training.drop_fraction_at(1) * 0.5
    training.after_backward(1, torch.optim.SGD(model.parameters(), lr=0.1))
    assert training.masks["0.weight"].int().tolist() == [
        [0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]
    ]  # fmt: skip


def test_n_m_layer_not_a_multiple_of_m_stays_dense():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    training = create_sparse_training(
        model, method="static", sparsity=0.5, pattern="n:m", total_steps=10
    )
    assert training.masks["0.weight"].all()  # 6 inputs: no 2:4 groups
    assert torch.all(training.masks["2.weight"].reshape(-1, 4).sum(1) == 2)


def test_dense_first_last_matches_closed_form():
    model = mlp()
    training = create_sparse_training(
        model, method="static", sparsity=0.8, distribution="erk", dense_first_last=True,
        total_steps=10,
    )  # fmt: skip
    assert training.masks["0.weight"].all() and training.masks["4.weight"].all()
    # the middle layer alone carries the budget (dense layers are out of it, as in rigl)
    assert int(training.masks["2.weight"].sum()) == round(0.2 * 32 * 24)


# --- SWAT -------------------------------------------------------------------------------------


def test_swat_weight_gradient_uses_the_sparse_activations_by_hand():
    x = torch.tensor([[1.0, -4.0, 0.5], [3.0, 0.2, -2.0]], requires_grad=True)
    weight = torch.tensor([[0.1, -2.0, 0.3], [1.5, 0.05, -0.7]], requires_grad=True)
    bias = torch.zeros(2, requires_grad=True)
    mask = torch.tensor([[False, True, False], [True, False, True]])  # top-3 |w|
    # top-3 |x| of the batch: -4, 3, -2
    x_sparse = torch.tensor([[0.0, -4.0, 0.0], [3.0, 0.0, -2.0]])
    out = SwatLinear.apply(x, weight, bias, weight.detach() * mask, x_sparse)
    # forward with the sparse weights and the dense input
    w_s = torch.tensor([[0.0, -2.0, 0.0], [1.5, 0.0, -0.7]])
    assert torch.allclose(out, x.detach() @ w_s.T)
    grad_out = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    out.backward(grad_out)
    # dL/dW[j, i] = sum_b g[b, j] * x_sparse[b, i]  (dense: also at masked-out weights)
    expected_w = torch.tensor(
        [[1 * 0 + -1 * 3, 1 * -4 + -1 * 0, 1 * 0 + -1 * -2],
         [2 * 0 + 0.5 * 3, 2 * -4 + 0.5 * 0, 2 * 0 + 0.5 * -2]]
    )  # fmt: skip
    assert torch.allclose(weight.grad, expected_w)
    # dL/dx = g @ W_S (sparse weights)
    assert torch.allclose(x.grad, grad_out @ w_s)
    assert torch.allclose(bias.grad, grad_out.sum(0))


def test_swat_selects_top_k_activations_and_weights_in_training():
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, -2.0, 0.3, 0.0], [1.5, 0.05, -0.7, 0.2]]))
    training = create_sparse_training(
        model, method="swat", sparsity=0.5, total_steps=10, input_shape=(4,)
    )
    assert training.masks["0.weight"].tolist() == [[False, True, True, False],
                                                   [True, False, True, False]]  # fmt: skip
    x = torch.tensor([[1.0, -4.0, 0.5, 0.1], [3.0, 0.2, -2.0, 0.0]])
    model(x).sum().backward()
    x_sparse = torch.tensor([[0.0, -4.0, 0.0, 0.0], [3.0, 0.0, -2.0, 0.0]])  # top 4 of 8 |x|..
    x_sparse[0, 0] = 1.0  # .. are -4, 3, -2 and 1
    assert torch.allclose(model[0].weight.grad, torch.ones(2, 2) @ x_sparse)
    assert training.activation_density["0.weight"] == 0.5
    # no gradient masking and no zeroed weights: dropped weights can come back
    assert not training.after_backward(0, torch.optim.SGD(model.parameters(), lr=0.1))
    assert model[0].weight.grad[0, 0] != 0


def test_swat_conv_function_matches_autograd_when_nothing_is_dropped():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
    model.load_state_dict(dense.state_dict())
    create_sparse_training(model, method="swat", sparsity=0.0, total_steps=10)
    x = torch.randn(2, 2, 4, 4)
    dense(x).square().sum().backward()
    model(x).square().sum().backward()
    for a, b in zip(dense.parameters(), model.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5)


# --- HyperSparse / ART ------------------------------------------------------------------------


def test_hypersparse_gradient_matches_its_closed_form():
    torch.manual_seed(0)
    weights = [torch.randn(5, 4, requires_grad=True), torch.randn(3, requires_grad=True)]
    sparsity = 0.7
    hypersparse_loss(weights, sparsity).backward()
    closed = hypersparse_gradient(weights, sparsity)
    for weight, grad in zip(weights, closed, strict=True):
        assert torch.allclose(weight.grad.reshape(-1), grad, atol=1e-6)
    # and by hand: s = 0.6585 / |w| at the floor(0.7 * 23) = 16th sorted position
    flat = torch.cat([w.detach().reshape(-1) for w in weights]).double()
    s = 0.6585 / flat.abs().sort().values[16].item()
    assert hypersparse_scale(weights, sparsity) == pytest.approx(s)
    by_hand = [
        math.copysign(1, w) * s / math.cosh(s * abs(w)) ** 2
        * flat.abs().sum().item() / sum(math.tanh(s * abs(v)) for v in flat.tolist())
        for w in flat.tolist()
    ]  # fmt: skip
    got = torch.cat([w.grad.reshape(-1) for w in weights]).tolist()
    assert got == pytest.approx(by_hand, rel=1e-4, abs=1e-7)


def test_art_schedule_lambda_check_and_prune():
    model, training, optimizer = make(
        "hypersparse", lambda_init=1e-3, eta=2.0, warmup_epochs=2, update_end=1.0
    )
    assert training.penalty_value() is None  # warm-up: dense, unregularized
    training.epoch = 2
    assert training.lambda_at(2) == pytest.approx(1e-3)
    assert training.lambda_at(4) == pytest.approx(4e-3)
    assert training.loss_penalty() is None  # the gradient is added in closed form instead
    penalty = training.penalty_value()
    weights = [training.weights[n] for n in training.regularized]
    assert penalty.item() == pytest.approx(1e-3 * hypersparse_loss(weights, 0.8).item(), abs=1e-9)
    # a check that passes prunes at once, as mag_prune: keep |w| > sorted |w|[floor(0.8 n)]
    x = torch.randn(10, 16)
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # labels the pruned copy can partly get right (acc > 0)
    data = SimpleNamespace(x_train=x, y_train=y)
    trainer = SimpleNamespace(model=model, optimizer=optimizer, data=data, train_accuracy=-1.0)
    magnitudes = torch.cat([w.detach().abs().reshape(-1) for w in training.weights.values()])
    n = magnitudes.numel()
    threshold = magnitudes.sort().values[math.floor(0.8 * n)]
    expected = {name: w.detach().abs() > threshold for name, w in training.weights.items()}
    flops = training.on_epoch_end(trainer)
    assert training.pruned and training.epoch == 3
    for name, weight in training.weights.items():
        assert torch.equal(training.masks[name], expected[name])
        assert torch.all(weight[~training.masks[name]] == 0)
    assert training.nonzero_params() == n - math.floor(0.8 * n) - 1
    # the check pass: one pruned forward per training sample
    assert flops == 10 * training.sparse_forward_flops()
    assert training.penalty_value() is None  # fine-tuning: no regularization
    assert optimizer.state == {}  # a fresh optimizer for the fine-tuning (art_restart)


def test_art_prunes_at_prune_epoch_when_the_check_never_passes():
    model, training, optimizer = make("hypersparse", warmup_epochs=1, update_end=0.5)
    assert training.prune_epoch == 3  # round(0.5 * 6 epochs)
    run(model, training, optimizer, 8)  # 2 epochs: warm-up, one regularized check (fails)
    assert not training.pruned and len(training.checks) == 1
    run(model, training, optimizer, 4)
    assert training.pruned


@pytest.mark.parametrize("regularizer", ["l1", "l2"])
def test_art_baseline_regularizers(regularizer):
    _, training, _ = make(
        "hypersparse", regularizer=regularizer, warmup_epochs=0, lambda_init=1e-4, eta=2.0
    )
    weights = [training.weights[n] for n in training.regularized]
    expected = sum((w.abs() if regularizer == "l1" else w.square()).sum() for w in weights)
    assert training.penalty_value().item() == pytest.approx(1e-4 * expected.item(), rel=1e-5)


# --- knobs, errors, resume --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "field"),
    [
        ({"pattern": "2:4"}, "pattern"),
        ({"pattern": "n:m", "nm_n": 4, "nm_m": 4, "sparsity": 0.0}, "nm_n"),
        ({"pattern": "n:m", "sparsity": 0.9}, "sparsity"),
        ({"pattern": "block", "block_size": 0}, "block_size"),
        ({"drop_criterion": "random"}, "drop_criterion"),
        ({"grow_criterion": "magnitude"}, "grow_criterion"),
        ({"regrowth_rate": 1.5}, "regrowth_rate"),
        ({"regrowth_rate": 0.5}, "regrowth_rate"),  # only for prune_regrow
        ({"update_unit": "minutes"}, "update_unit"),
        ({"update_unit": "epochs", "steps_per_epoch": None}, "steps_per_epoch"),
        ({"topk_period": 0}, "topk_period"),
        ({"eta": 0.5}, "eta"),
        ({"lambda_init": 0.0}, "lambda_init"),
        ({"regularizer": "l3"}, "regularizer"),
        ({"set_sign_split": True}, "set_sign_split"),  # rigl has no sign split
    ],
)
def test_bad_knobs_raise_naming_the_field(knobs, field):
    with pytest.raises(ValueError, match=field):
        make("rigl", **knobs)


def test_yaml_two_four_trap_is_refused_with_the_fix():
    import yaml

    value = yaml.safe_load("pattern: 2:4")["pattern"]
    assert value == 124  # PyYAML 1.1 reads it as sexagesimal
    with pytest.raises(ConfigError, match=r"pattern=124.*quote"):
        check_value("pattern", value)
    config = make_config({"method": "static", "pattern": "n:m", "nm_n": 2, "nm_m": 4})
    assert (config["nm_n"], config["nm_m"]) == (2, 4)


@pytest.mark.parametrize("method", SPARSE)
def test_state_dict_round_trip_resumes_exactly(method):
    model_a, a, opt_a = make(method)
    run(model_a, a, opt_a, 8)
    model_b, b, opt_b = make(method)
    model_b.load_state_dict(model_a.state_dict())
    opt_b.load_state_dict(opt_a.state_dict())
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    assert a.density() == b.density()


# --- the train command, for every method ------------------------------------------------------


@pytest.mark.parametrize("method", list(METHODS))
def test_train_command_json_for_every_method(method, capsys):
    import run_study

    knobs = read_by(method, method=method, sparsity=0.9 if method != "dense" else 0.0, epochs=2,
                    width=16, update_interval=5)  # fmt: skip
    sets = [arg for name, value in knobs.items() for arg in ("--set", f"{name}={value}")]
    code = run_study.main(["train", *sets, "--json"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["epoch"] == 2 and not metrics["diverged"]
    expected_density = 1.0 if method == "dense" else 0.1
    assert metrics["density"] == pytest.approx(expected_density, abs=0.01)
    assert metrics["model_bytes_csr"] > 0 and metrics["model_bytes_dense"] > 0
    nnz = metrics["nonzero_params"]
    assert metrics["model_bytes_csr"] == nnz * 8 + 4 * (16 + 1 + 16 + 1 + 10 + 1)
    assert metrics["train_flops"] > 0 and metrics["inference_flops"] > 0


@pytest.mark.parametrize(
    ("method", "knobs"),
    [
        ("swat", {"topk_period": 3}),
        ("hypersparse", {"warmup_epochs": 1}),
        ("prune_regrow", {"grow_criterion": "momentum"}),
        ("set", {"set_sign_split": True}),
        ("rigl", {"pattern": "block", "block_size": 2}),
    ],
)
def test_trainer_resume_matches_uninterrupted_run(method, knobs):
    from trainables.datasets import load_dataset
    from trainables.train import Trainer, train

    digits = load_dataset("digits")
    config = {"epochs": 3, "width": 32, "depth": 1, "method": method, "sparsity": 0.8,
              **read_by(method, update_interval=4), **knobs}  # fmt: skip
    straight = list(train(config, digits))[-1]
    first = Trainer(config, digits)
    first.run_epoch()
    second = Trainer(config, digits)
    second.load_state_dict(first.state_dict())
    while not second.finished:
        resumed = second.run_epoch()
    for key in ("val_accuracy", "train_loss", "train_flops", "nonzero_params", "epoch"):
        assert resumed[key] == straight[key], key


@pytest.mark.parametrize("method", ["static", "rigl", "swat"])
def test_conv_block_masks_are_whole_blocks_of_the_im2col_matrix(method):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )  # fmt: skip
    training = create_sparse_training(
        model, method=method, sparsity=0.7, pattern="block", block_size=4, total_steps=6,
        input_shape=(3, 6, 6), **read_by(method, update_interval=1),
    )  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    initial = {n: m.clone() for n, m in training.masks.items()}
    for step in range(4):
        optimizer.zero_grad()
        model(torch.randn(4, 3, 6, 6)).square().sum().backward()
        if not training.after_backward(step, optimizer):
            optimizer.step()
        training.after_step()
        for mask in training.masks.values():
            assert_whole_blocks(mask, 4)  # 8 x 27 and 8 x 72 matrices, edge tiles cut short
    if method == "rigl":
        assert any(not torch.equal(initial[n], m) for n, m in training.masks.items())
