from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from trainables.sparsity import (
    METHODS,
    create_sparse_training,
    layer_densities,
    prunable_weights,
    random_masks,
    update_mask,
)


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )


def conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def expected_counts(model: nn.Module, sparsity: float, distribution: str) -> dict[str, int]:
    shapes = {name: tuple(w.shape) for name, w in prunable_weights(model).items()}
    densities = layer_densities(shapes, 1.0 - sparsity, distribution)
    return {name: max(1, round(densities[name] * math.prod(s))) for name, s in shapes.items()}


def counts(training) -> dict[str, int]:
    return {name: int(mask.sum()) for name, mask in training.masks.items()}


def assert_inactive_zero(training) -> None:
    for name, weight in training.weights.items():
        assert torch.all(weight[~training.masks[name]] == 0), name


# --- masks ------------------------------------------------------------------------------


def test_prunable_weights_are_linear_and_conv_weights_in_order():
    weights = prunable_weights(conv_net())
    assert list(weights) == ["0.weight", "3.weight", "7.weight"]
    assert [tuple(w.shape) for w in weights.values()] == [(8, 3, 3, 3), (16, 8, 3, 3), (10, 16)]


def test_random_masks_exact_counts_and_at_least_one():
    weights = {"a": torch.zeros(10, 10), "b": torch.zeros(3, 7)}
    masks = random_masks(weights, {"a": 0.37, "b": 0.001}, torch.Generator().manual_seed(0))
    assert int(masks["a"].sum()) == 37
    assert int(masks["b"].sum()) == 1
    assert masks["a"].dtype == torch.bool and masks["a"].shape == (10, 10)


def test_update_mask_drops_lowest_active_and_grows_highest_inactive():
    mask = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.bool)
    # Inactive positions get the lowest drop scores: they must not count as droppable.
    drop = torch.tensor([5.0, 1.0, 3.0, 2.0, -9.0, -9.0, -9.0, -9.0])
    # Active position 0 has the top grow score: it must not count as growable.
    grow = torch.tensor([99.0, 0.0, 0.0, 0.0, 0.5, 7.0, 0.1, 6.0])
    new = update_mask(mask, drop, grow, n_update=2)
    # drops 1 and 3 (scores 1, 2), grows 5 and 7 (scores 7, 6)
    assert new.tolist() == [True, False, True, False, False, True, False, True]
    assert mask.tolist() == [True, True, True, True, False, False, False, False]  # unchanged


def test_update_mask_lets_just_dropped_positions_regrow():
    mask = torch.tensor([[1, 1], [0, 0]], dtype=torch.bool)
    drop = torch.tensor([[0.1, 0.9], [0.0, 0.0]])
    grow = torch.tensor([[8.0, 0.0], [1.0, 2.0]])
    new = update_mask(mask, drop, grow, n_update=2)
    # both dropped; position (0, 0) regrows by its grow score, with (1, 1)
    assert new.tolist() == [[True, False], [False, True]]
    assert update_mask(mask, drop, grow, n_update=0).equal(mask)


def test_update_mask_rejects_n_update_beyond_active():
    mask = torch.tensor([1, 0, 0], dtype=torch.bool)
    with pytest.raises(ValueError, match="n_update"):
        update_mask(mask, torch.zeros(3), torch.zeros(3), n_update=2)


# --- distributions ----------------------------------------------------------------------


def test_erk_by_hand_two_layers():
    shapes = {"a": (8, 4), "b": (2, 8)}  # raw: 12/32 and 10/16
    densities = layer_densities(shapes, 0.5, "erk")
    eps = (0.5 * 48) / (12 / 32 * 32 + 10 / 16 * 16)  # 24 / 22
    assert densities["a"] == pytest.approx(eps * 12 / 32)
    assert densities["b"] == pytest.approx(eps * 10 / 16)
    assert densities["a"] * 32 + densities["b"] * 16 == pytest.approx(24)


def test_erk_conv_raw_density_uses_all_dims():
    shapes = {"conv": (16, 8, 3, 3), "fc": (10, 16)}
    densities = layer_densities(shapes, 0.2, "erk")
    ratio = densities["conv"] / densities["fc"]
    assert ratio == pytest.approx(((16 + 8 + 3 + 3) / (16 * 8 * 9)) / ((10 + 16) / 160))


def test_erk_makes_a_layer_dense_when_its_density_exceeds_one():
    shapes = {name: tuple(w.shape) for name, w in prunable_weights(mlp()).items()}
    densities = layer_densities(shapes, 0.5, "erk")
    # unscaled, the 10x64 layer would get density 2.15; dense, the rest share what is left
    assert densities["4.weight"] == 1.0
    rest = (0.5 * (8192 + 8192 + 640) - 640) / (8192 + 8192)
    assert densities["0.weight"] == pytest.approx(rest)
    assert densities["2.weight"] == pytest.approx(rest)


@pytest.mark.parametrize("density", [1.0, 0.5, 0.1, 0.01])
@pytest.mark.parametrize("make_model", [mlp, conv_net])
def test_erk_densities_at_most_one_and_total_on_budget(make_model, density):
    weights = prunable_weights(make_model())
    shapes = {name: tuple(w.shape) for name, w in weights.items()}
    densities = layer_densities(shapes, density, "erk")
    assert all(0 < d <= 1 for d in densities.values())
    total = sum(w.numel() for w in weights.values())
    active = sum(int(m.sum()) for m in random_masks(weights, densities).values())
    assert abs(active - density * total) <= len(weights)


def test_dense_layers_forced_dense_and_out_of_budget():
    shapes = {"a": (8, 4), "b": (2, 8), "c": (4, 4)}
    densities = layer_densities(shapes, 0.5, "erk", dense_layers=("c",))
    assert densities["c"] == 1.0
    assert densities == {**layer_densities({"a": (8, 4), "b": (2, 8)}, 0.5, "erk"), "c": 1.0}
    assert layer_densities(shapes, 0.3, "uniform", dense_layers=("a",)) == {
        "a": 1.0,
        "b": 0.3,
        "c": 0.3,
    }


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"density": 0.0}, "density"),
        ({"density": 1.5}, "density"),
        ({"distribution": "normal"}, "distribution"),
        ({"dense_layers": ("nope",)}, "dense_layers"),
    ],
)
def test_layer_densities_rejects_bad_arguments(kwargs, name):
    arguments = {"shapes": {"a": (4, 4)}, "density": 0.5, **kwargs}
    with pytest.raises(ValueError, match=name):
        layer_densities(**arguments)


# --- methods: init ----------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("distribution", ["uniform", "erk"])
@pytest.mark.parametrize("make_model", [mlp, conv_net])
def test_init_exact_active_count_per_layer(make_model, distribution, sparsity):
    model = make_model()
    training = create_sparse_training(
        model,
        method="static",
        sparsity=sparsity,
        distribution=distribution,
        total_steps=10,
        generator=torch.Generator().manual_seed(0),
    )
    assert counts(training) == expected_counts(model, sparsity, distribution)
    assert_inactive_zero(training)
    if distribution == "uniform":
        assert training.density() == pytest.approx(1 - sparsity, abs=0.01)
    # the masks were applied to the model's own weights
    nonzero = sum(int((w != 0).sum()) for w in prunable_weights(model).values())
    assert nonzero == training.nonzero_params()
    assert training.total_params() == sum(w.numel() for w in prunable_weights(model).values())


# --- methods: training ------------------------------------------------------------------


def train(training, model, steps, optimizer, seed=0, on_step=None):
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x = torch.randn(16, 64, generator=generator)
        y = torch.randint(0, 10, (16,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if not training.after_backward(step, optimizer):
            optimizer.step()
        training.after_step()
        if on_step is not None:
            on_step(step)


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


@pytest.mark.parametrize("method", ["set", "rigl"])
@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_dynamic_methods_preserve_counts_and_zero_inactive(method, distribution):
    torch.manual_seed(0)
    model = mlp()
    training = create_sparse_training(
        model,
        method=method,
        sparsity=0.8,
        distribution=distribution,
        update_interval=2,
        drop_fraction=0.5,
        total_steps=20,
        generator=torch.Generator().manual_seed(1),
    )
    initial_counts = counts(training)
    initial_masks = {name: mask.clone() for name, mask in training.masks.items()}

    def check(step):
        assert counts(training) == initial_counts, step
        assert_inactive_zero(training)

    train(training, model, 20, sgd(model), on_step=check)
    changed = sum(int((m ^ initial_masks[n]).sum()) for n, m in training.masks.items())
    assert changed > 0  # the masks really moved


def test_rigl_grows_top_gradient_positions_at_zero_with_reset_momentum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8, bias=False))
    training = create_sparse_training(
        model,
        method="rigl",
        sparsity=0.5,
        update_interval=1,
        update_end=1.0,
        drop_fraction=0.25,
        total_steps=1000,
        generator=torch.Generator().manual_seed(0),
    )
    weight, mask = training.weights["0.weight"], training.masks["0.weight"]
    old_mask = mask.clone()
    n_update = int(training.drop_fraction_at(1) * 32)  # rigl's int() cast: 7.99... -> 7
    assert n_update == 7

    # by hand: distinct magnitudes and gradients, every position with a known rank; inactive
    # weights nonzero too, so that only the update itself can make grown weights 0
    with torch.no_grad():
        weight.copy_((torch.randperm(64).float() + 1).view(8, 8))
    weight.grad = (torch.randperm(64).float() + 1).view(8, 8)
    grad = weight.grad.clone()
    optimizer = sgd(model)
    momentum = torch.randn(8, 8) + 10  # nonzero everywhere
    optimizer.state[weight]["momentum_buffer"] = momentum.clone()

    active = old_mask.flatten().nonzero().squeeze(1).tolist()
    dropped = sorted(active, key=lambda i: weight.flatten()[i].item())[:n_update]
    after_drop = old_mask.flatten().clone()
    after_drop[dropped] = False
    inactive = (~after_drop).nonzero().squeeze(1).tolist()
    grown = sorted(inactive, key=lambda i: -grad.flatten()[i].item())[:n_update]
    expected = after_drop.clone()
    expected[grown] = True

    assert training.dense_gradient_step(1)
    assert training.after_backward(1, optimizer) is True  # skip the optimizer step
    assert mask.flatten().equal(expected)
    new = (mask & ~old_mask).flatten()
    assert new.sum() > 0
    assert torch.all(weight.flatten()[new] == 0)
    buffer = optimizer.state[weight]["momentum_buffer"].flatten()
    changed = (mask ^ old_mask).flatten()
    assert torch.all(buffer[changed] == 0)
    assert buffer[~changed].equal(momentum.flatten()[~changed])
    # the gradient is masked by the new mask
    assert torch.all(weight.grad[~mask] == 0)


def test_mask_update_resets_adam_state_but_not_its_step():
    model = nn.Sequential(nn.Linear(8, 8))
    training = create_sparse_training(
        model, method="rigl", sparsity=0.5, update_interval=1, update_end=1.0, total_steps=100
    )
    optimizer = torch.optim.Adam(model.parameters())
    x = torch.randn(4, 8)
    model(x).sum().backward()
    optimizer.step()  # populate state
    weight = training.weights["0.weight"]
    state = optimizer.state[weight]
    for key in ("exp_avg", "exp_avg_sq"):
        state[key].fill_(1.0)
    old_mask = training.masks["0.weight"].clone()
    training.after_backward(1, optimizer)
    changed = training.masks["0.weight"] ^ old_mask
    assert changed.any()
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.all(state[key][changed] == 0)
        assert torch.all(state[key][~changed] == 1)
    assert state["step"].item() == 1


def test_skip_weight_update_only_on_update_steps_and_when_asked():
    def make(skip, method="rigl"):
        model = mlp()
        # set reads no skip knob: it always steps, then rewires
        skip_knob = {"skip_weight_update_on_mask_update": skip} if method != "set" else {}
        training = create_sparse_training(
            model, method=method, sparsity=0.5, update_interval=5, total_steps=100, **skip_knob
        )
        model(torch.randn(4, 64)).sum().backward()
        return training, torch.optim.SGD(training.weights.values(), lr=0.1)

    training, optimizer = make(True)
    assert training.after_backward(0, optimizer) is True  # rigl updates at step 0
    assert training.after_backward(0, optimizer) is False  # the same step again: no update
    assert training.after_backward(4, optimizer) is False
    assert training.after_backward(5, optimizer) is True
    training, optimizer = make(False)
    assert training.after_backward(0, optimizer) is False
    # SET never skips: it steps, then rewires in after_step
    training, optimizer = make(True, method="set")
    before = {n: m.clone() for n, m in training.masks.items()}
    assert training.after_backward(0, optimizer) is False
    assert all(torch.equal(before[n], m) for n, m in training.masks.items())
    training.after_step()
    assert any(not torch.equal(before[n], m) for n, m in training.masks.items())


def test_schedule_cosine_drop_fraction_and_no_updates_from_update_end():
    training = create_sparse_training(
        mlp(),
        method="rigl",
        sparsity=0.9,
        update_interval=10,
        update_end=0.75,
        drop_fraction=0.3,
        total_steps=200,
    )
    for step in (0, 10, 50, 75, 149):
        expected = 0.3 / 2 * (1 + math.cos(math.pi * step / 150))
        assert training.drop_fraction_at(step) == pytest.approx(expected)
    assert training.drop_fraction_at(0) == pytest.approx(0.3)
    assert training.drop_fraction_at(150) == 0.0
    updates = []
    for step in range(200):
        assert training.dense_gradient_step(step) == training.is_update_step(step)
        if training.is_update_step(step):
            updates.append(step)
            training.last_update_step = step  # what after_backward records
    assert updates == list(range(0, 151, 10))  # rigl: from step 0 to end_step inclusive


def test_static_mask_never_changes_and_dense_keeps_all_weights():
    torch.manual_seed(0)
    model = mlp()
    static = create_sparse_training(model, method="static", sparsity=0.7, total_steps=10)
    before = {name: mask.clone() for name, mask in static.masks.items()}
    assert not any(static.is_update_step(step) for step in range(10))
    train(static, model, 10, sgd(model))
    assert all(static.masks[name].equal(mask) for name, mask in before.items())
    assert_inactive_zero(static)

    model = mlp()
    dense = create_sparse_training(model, method="dense", sparsity=0.0, total_steps=10)
    train(dense, model, 10, sgd(model))
    assert all(mask.all() for mask in dense.masks.values())
    assert all(torch.all(w != 0) for w in prunable_weights(model).values())
    assert dense.density() == 1.0
    assert dense.nonzero_params() == dense.total_params() == 64 * 128 + 128 * 64 + 64 * 10
    assert not any(dense.dense_gradient_step(step) for step in range(10))


def test_layer_densities_of_training():
    training = create_sparse_training(mlp(), method="static", sparsity=0.75, total_steps=1)
    assert training.layer_densities() == {"0.weight": 0.25, "2.weight": 0.25, "4.weight": 0.25}


def test_state_dict_round_trip_resumes_exactly():
    torch.manual_seed(0)
    model_a = mlp()
    model_b = copy.deepcopy(model_a)

    def make(model, seed):
        return create_sparse_training(
            model,
            method="set",
            sparsity=0.8,
            update_interval=2,
            total_steps=20,
            generator=torch.Generator().manual_seed(seed),
        )

    training_a, optimizer_a = make(model_a, 1), sgd(model_a)
    train(training_a, model_a, 10, optimizer_a)
    checkpoint = copy.deepcopy(
        (model_a.state_dict(), optimizer_a.state_dict(), training_a.state_dict())
    )

    training_b, optimizer_b = make(model_b, 2), sgd(model_b)  # different masks and generator
    assert any(not training_b.masks[n].equal(m) for n, m in training_a.masks.items())
    model_b.load_state_dict(checkpoint[0])
    optimizer_b.load_state_dict(checkpoint[1])
    training_b.load_state_dict(checkpoint[2])
    assert all(training_b.masks[n].equal(m) for n, m in training_a.masks.items())

    # continue both from step 10: SET's random growth must match too
    def continue_training(training, model, optimizer):
        generator = torch.Generator().manual_seed(5)
        for step in range(10, 20):
            x = torch.randn(16, 64, generator=generator)
            y = torch.randint(0, 10, (16,), generator=generator)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if not training.after_backward(step, optimizer):
                optimizer.step()
            training.after_step()

    continue_training(training_a, model_a, optimizer_a)
    continue_training(training_b, model_b, optimizer_b)
    assert all(training_b.masks[n].equal(m) for n, m in training_a.masks.items())
    for name, weight in training_a.weights.items():
        assert training_b.weights[name].equal(weight)


def test_load_state_dict_rejects_another_method():
    a = create_sparse_training(mlp(), method="set", sparsity=0.5, total_steps=10)
    b = create_sparse_training(mlp(), method="rigl", sparsity=0.5, total_steps=10)
    with pytest.raises(ValueError, match="method"):
        b.load_state_dict(a.state_dict())


def test_methods_registry():
    assert set(METHODS) >= {"dense", "static", "set", "rigl"}


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"method": "magic"}, "method"),
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": -0.1}, "sparsity"),
        ({"distribution": "normal"}, "distribution"),
        ({"update_interval": 0}, "update_interval"),
        ({"update_interval": 2.5}, "update_interval"),
        ({"update_end": 1.5}, "update_end"),
        ({"drop_fraction": -0.1}, "drop_fraction"),
        ({"drop_fraction": 1.1}, "drop_fraction"),
        ({"total_steps": 0}, "total_steps"),
    ],
)
def test_create_sparse_training_rejects_bad_arguments(kwargs, name):
    arguments = {"method": "rigl", "sparsity": 0.5, "total_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=name):
        create_sparse_training(mlp(), **arguments)
