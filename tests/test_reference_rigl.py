"""RigL and SET against google-research/rigl, ported op for op on identical tensors.

Reference: google-research/rigl, commit 6e49b9113156298e3e847e9fdf2415b091593c5b,
`rigl/sparse_optimizers_base.py`: `SparseSETOptimizerBase._get_update_op` (the mask update),
`is_mask_update_iter` / `cond_mask_update_op` / `get_drop_fraction` (the schedule),
`SparseRigLOptimizerBase.apply_gradients` (an update batch replaces the optimizer step, so
global_step does not advance) and `SparseSETOptimizerBase.apply_gradients` (the optimizer step
first, then the mask update). The ports use noise_std = 0 (the reference adds N(0, 1e-5) noise
to the drop score to break ties; the fixed tensors here have none).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from trainables.sparsity import create_sparse_training


# --- the ports ------------------------------------------------------------------------------
def reference_get_update_op(score_drop, score_grow, mask, drop_fraction):
    """_get_update_op with reinit_when_same=False: (new mask, new connections)."""
    n_total = score_drop.size
    n_ones = int(mask.sum())
    n_prune = int(np.float32(n_ones) * np.float32(drop_fraction))  # cast(n_ones * f, int32)
    n_keep = n_ones - n_prune
    # masked |w|: inactive positions score 0 (abs(mask * weights))
    sorted_indices = np.argsort(-score_drop.reshape(-1), kind="stable")  # top_k(k=n_total)
    mask1 = np.zeros(n_total)
    mask1[sorted_indices[:n_keep]] = 1
    grow = score_grow.reshape(-1).astype(np.float64)
    lifted = np.where(mask1 == 1, grow.min() - 1, grow)
    sorted_indices = np.argsort(-lifted, kind="stable")
    mask2 = np.zeros(n_total)
    mask2[sorted_indices[:n_prune]] = 1
    assert (mask1 * mask2).sum() == 0  # the reference's Assert: disjoint
    new_connections = (mask2 == 1) & (mask.reshape(-1) == 0)
    return (mask1 + mask2).reshape(mask.shape).astype(bool), new_connections.reshape(mask.shape)


def reference_schedule(n_batches, frequency, end_step, rigl):
    """apply_gradients + cond_mask_update_op over batches: [(batch, global_step, update)]."""
    global_step, last_update_step, events = 0, -frequency, []
    for batch in range(n_batches):
        in_range = global_step >= 0 and (global_step <= end_step or end_step < 0)
        update = in_range and last_update_step + frequency <= global_step
        events.append((batch, global_step, update))
        if update:
            last_update_step = global_step
        if not (rigl and update):  # RigL: the update op replaces apply_gradient_op
            global_step += 1
    return events


def reference_cosine_drop_fraction(initial, global_step, end_step, begin_step=0):
    """learning_rate_decay.cosine_decay(initial, global_step, end_step - begin_step)."""
    decay_steps = end_step - begin_step
    step = min(global_step, decay_steps)
    return initial * 0.5 * (1 + math.cos(math.pi * step / decay_steps))


# --- helpers ----------------------------------------------------------------------------------
LAYERS = {
    "linear": lambda: nn.Sequential(nn.Linear(20, 12, bias=False)),
    "conv": lambda: nn.Sequential(nn.Conv2d(4, 6, 3, bias=False)),
}


def setup(kind, sparsity, method, **knobs):
    torch.manual_seed(7)
    model = LAYERS[kind]()
    training = create_sparse_training(
        model, method=method, sparsity=sparsity, update_interval=1, update_end=1.0,
        drop_fraction=0.3, total_steps=1000, generator=torch.Generator().manual_seed(3), **knobs,
    )  # fmt: skip
    (name,) = training.weights
    return model, training, name, training.weights[name], training.masks[name]


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.95])
def test_rigl_mask_update_equals_reference(kind, sparsity):
    model, training, name, weight, mask = setup(kind, sparsity, "rigl")
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        weight.copy_(torch.randn(weight.shape, generator=generator) * mask)
    weight.grad = torch.randn(weight.shape, generator=generator)
    old = mask.clone()
    fraction = training.drop_fraction_at(5)
    score_drop = (weight.detach() * old).abs().numpy()
    expected, new_connections = reference_get_update_op(
        score_drop, weight.grad.abs().numpy(), old.numpy(), fraction
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.state[weight]["momentum_buffer"] = torch.ones_like(weight)
    kept_values = weight.detach().clone()
    training.last_update_step = 4
    assert training.after_backward(5, optimizer) is True  # RigL skips the optimizer step
    assert np.array_equal(mask.numpy(), expected)
    grown = torch.from_numpy(new_connections)
    assert grown.sum() > 0
    assert torch.all(weight[grown] == 0)  # grow_init zeros
    assert torch.all(optimizer.state[weight]["momentum_buffer"][grown] == 0)  # reset_momentum
    survivors = mask & old
    assert torch.equal(weight[survivors], kept_values[survivors])


@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_set_rewires_after_the_weight_update_as_the_reference(kind, sparsity):
    """SET: the optimizer step, then _get_update_op on the updated weights with random grow
    scores (the same draw as sparsetune's generator)."""
    model, training, name, weight, mask = setup(kind, sparsity, "set")
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        weight.copy_(torch.randn(weight.shape, generator=generator) * mask)
    weight.grad = torch.randn(weight.shape, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    old = mask.clone()
    training.last_update_step = 4
    assert training.after_backward(5, optimizer) is False  # SET never skips the weight update
    assert torch.equal(mask, old)  # ... and rewires only after it
    optimizer.step()
    updated = weight.detach().clone()
    replay = torch.Generator()
    replay.set_state(training.generator.get_state())
    score_grow = torch.rand(weight.shape, generator=replay).numpy()
    expected, _ = reference_get_update_op(
        (updated * old).abs().numpy(), score_grow, old.numpy(), training.drop_fraction_at(5)
    )
    training.after_step()
    assert np.array_equal(mask.numpy(), expected)


@pytest.mark.parametrize("rigl", [True, False], ids=["rigl", "set"])
@pytest.mark.parametrize(("frequency", "end_step"), [(3, 20), (5, 17), (1, 6)])
def test_schedule_and_step_counting_equal_the_reference(rigl, frequency, end_step):
    """The Trainer's loop (step counts optimizer steps) against apply_gradients."""
    total_steps = 40
    training = create_sparse_training(
        nn.Sequential(nn.Linear(8, 8)), method="rigl" if rigl else "set", sparsity=0.5,
        update_interval=frequency, update_end=end_step / total_steps, total_steps=total_steps,
    )  # fmt: skip
    step, events = 0, []
    for batch in range(30):
        update = training.is_update_step(step)
        events.append((batch, step, update))
        if update:
            training.last_update_step = step  # what after_backward records
        skip = rigl and update and training.skip_weight_update_on_mask_update
        if not skip:
            step += 1  # trainables.train: only an applied optimizer step advances it
    assert events == reference_schedule(30, frequency, end_step, rigl)
    assert events[0][2]  # the first batch is an update
    for _, global_step, _ in events:
        expected = reference_cosine_drop_fraction(0.3, global_step, end_step)
        assert training.drop_fraction_at(global_step) == pytest.approx(expected, abs=1e-12)


def test_trainer_counts_optimizer_steps_not_batches():
    """In a real Trainer run, RigL's update batches do not advance the step counter."""
    from trainables.datasets import load_dataset
    from trainables.train import Trainer

    trainer = Trainer(
        {"method": "rigl", "sparsity": 0.9, "epochs": 1, "width": 16, "depth": 1,
         "update_interval": 5, "batch_size": 64},
        load_dataset("digits"),
    )  # fmt: skip
    calls = []
    original = trainer.sparse.after_backward

    def recording(step, optimizer):
        skip = original(step, optimizer)
        calls.append((step, skip))
        return skip

    trainer.sparse.after_backward = recording
    trainer.run_epoch()
    update_steps = [step for step, skip in calls if skip]
    assert len(calls) == trainer.steps_per_epoch
    assert trainer.step == len(calls) - len(update_steps)
    assert update_steps == list(range(0, 5 * len(update_steps), 5)) and len(update_steps) >= 2
    steps = [step for step, _ in calls]
    for step in update_steps:  # the update batch and the next one share the step number
        assert steps.count(step) == 2


@pytest.mark.parametrize("rounding", ["floor", "round"])
def test_count_rounding_knob(rounding):
    _, training, name, weight, mask = setup("linear", 0.5, "rigl", count_rounding=rounding)
    n_active = int(mask.sum())  # 120
    fraction = 0.3 * (1 + math.cos(math.pi * 7 / 1000)) / 2
    expected = int(n_active * fraction) if rounding == "floor" else round(n_active * fraction)
    assert training.count(n_active, training.drop_fraction_at(7)) == expected
    assert training.count(10, 0.29) == (2 if rounding == "floor" else 3)


# tiny tensors: one torch thread (conftest.one_torch_thread)
pytestmark = pytest.mark.usefixtures("one_torch_thread")
