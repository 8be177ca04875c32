"""Every registered component, tested the way timm tests every model: it builds, trains one
epoch, round-trips its state_dict, and every knob it declares changes what it does (or is
documented as not doing so). Plus the rules of the registry itself."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
import torch

from trainables.config import (
    FIELDS,
    ConfigError,
    format_knob_table,
    knob_table,
    make_config,
    slot_registries,
)
from trainables.datasets import DeviceDataset, load_dataset
from trainables.lr_schedules import LR_SCHEDULES
from trainables.models import MODELS, create_model
from trainables.optimizers import OPTIMIZERS, SGD
from trainables.registry import Component, Knob, Registry, RegistryError
from trainables.sparsity import METHODS
from trainables.train import Trainer

SMALL_MODEL = {
    "mlp": {"depth": 2, "width": 16},
    "lenet5": {},
    "cnn3": {"channels": 8},
    "resnet": {"blocks": 1},
    "resnet18": {"channels": 8},
    "wrn": {"wrn_depth": 10, "widen_factor": 1},
}
COMPONENTS = [
    (slot, name) for slot, registry in slot_registries().items() for name in registry
]  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "data")


def tiny_images(n: int = 16) -> DeviceDataset:
    g = torch.Generator().manual_seed(0)

    def images(k):
        return torch.randint(0, 256, (k, 3, 16, 16), generator=g, dtype=torch.uint8)

    y = torch.arange(n) % 4
    return DeviceDataset(
        "tiny", images(n), y, images(8), torch.arange(8) % 4, images(8), torch.arange(8) % 4, 4,
    )  # fmt: skip


# The setting in which each sparse component's knobs act: a sparse method (a pattern or
# distribution needs one), a schedule that updates the masks within a short run, HyperSparse
# without its 60-epoch warm-up.
SPARSE_CONTEXT = {
    "method": lambda name: {"sparsity": 0.5} if METHODS[name].sparse else {},
    "pattern": lambda name: {"method": "static"} if name == "n:m" else {"method": "static",
                                                                       "sparsity": 0.5},
    "distribution": lambda name: {"method": "static", "sparsity": 0.5},
}  # fmt: skip
# Knobs that act only beside another knob's non-default value.
KNOB_CONTEXT = {
    "initial_sparsity": {"regrowth_rate": 0.5},
    "regrowth_rate": {"initial_sparsity": 0.2},  # shrinking from 80% to 50% density
    # ART's end and buffer decide when its accuracy check never passes (a sparse net)
    "update_end": {"sparsity": 0.97, "epochs": 6},
    "eta": {"sparsity": 0.97, "epochs": 6},
    "art_buffer": {"sparsity": 0.97, "epochs": 6, "update_end": 0.5, "seed": 3},  # 0 against 1
    "redistribution": {"grow_criterion": "momentum"},
    "topk_period": {"model": "cnn3", "channels": 8},  # SWAT reuses thresholds in convs only
}


def sparse_context(slot: str, name: str) -> dict:
    context = SPARSE_CONTEXT[slot](name) if slot in SPARSE_CONTEXT else {}
    method = context.get("method", name if slot == "method" else None)
    if method is not None:
        knobs = METHODS.knobs_of(method)
        if "update_interval" in knobs:
            context["update_interval"] = 5
        if "warmup_epochs" in knobs:
            context["warmup_epochs"] = 0
    return context


def component_config(slot: str, name: str) -> dict:
    """One epoch of a small run that uses component `name` in `slot`."""
    config = {"epochs": 2, "batch_size": 64, "device": "cpu", "seed": 3, slot: name}
    config.update(sparse_context(slot, name))
    if slot == "model" and name != "mlp":
        config.update(SMALL_MODEL[name], batch_size=8)
    elif slot == "model":
        config.update(SMALL_MODEL[name])
    else:
        config.update(depth=1, width=32)
    return config


def data_for(slot: str, name: str, digits) -> DeviceDataset:
    return tiny_images() if slot == "model" and name != "mlp" else digits


def other_value(name: str, knob: Knob):
    """A valid value of `knob` other than its default."""
    if knob.kind is bool:
        return not knob.default
    if knob.kind is tuple:
        return (0.3,)
    if knob.kind is str:
        choices = knob.choices or tuple(slot_registries()[name])  # a slot: its components
        return next(c for c in choices if c != knob.default)
    if knob.kind is int:
        value = knob.default + 1
        return value if knob.high is None or value <= knob.high else knob.default - 1
    if knob.default == 0:
        return 0.3 if knob.high is None else (knob.low + knob.high) / 2
    half = knob.default * 0.5
    return half if knob.low is None or half >= knob.low else knob.default * 1.5


@pytest.mark.parametrize(("slot", "name"), COMPONENTS, ids=[f"{s}-{n}" for s, n in COMPONENTS])
def test_component_trains_one_epoch_and_round_trips_its_state(slot, name, digits):
    data = data_for(slot, name, digits)
    config = make_config(component_config(slot, name))
    trainer = Trainer(config, data)
    first = trainer.run_epoch()
    assert first["epoch"] == 1 and math.isfinite(first["train_loss"])
    assert trainer.train_flops > 0
    # a second trainer restored from the first's state_dict continues identically
    buffer = io.BytesIO()  # as a checkpoint does: nothing shared with the live trainer
    torch.save(trainer.state_dict(), buffer)
    buffer.seek(0)
    restored = Trainer(config, data)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    if slot == "optimizer":
        assert (
            restored.optimizer.state_dict()["state"].keys()
            == trainer.optimizer.state_dict()["state"].keys()
        )
    a, b = trainer.run_epoch(), restored.run_epoch()
    assert a["train_loss"] == b["train_loss"] and a["val_accuracy"] == b["val_accuracy"]
    assert trainer.lr_at(trainer.step) == restored.lr_at(restored.step)


def knob_cases():
    for slot, registry in slot_registries().items():
        for name in registry:
            component = registry.components[name]
            inert = getattr(component, "inert_knobs", {})
            for knob in registry.knobs_of(name):
                yield pytest.param(slot, name, knob, inert.get(knob), id=f"{slot}-{name}-{knob}")


def behaviour(slot: str, name: str, config) -> torch.Tensor:
    """What the component does with these knobs, as numbers: the schedule's learning rates,
    the weights after a few optimizer steps, the model's train-mode output."""
    if slot == "lr_schedule":
        schedule = LR_SCHEDULES.create(name, config)
        return torch.tensor([schedule.lr_at(s, 100, config["lr"]) for s in range(100)])
    torch.manual_seed(0)
    if slot == "optimizer":
        model = torch.nn.Linear(8, 4)
        optimizer = OPTIMIZERS.create(name, config).build(model.parameters())
        x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
        for _ in range(5):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return model.weight.detach().clone()
    if slot in SPARSE_CONTEXT:  # what the masks and weights are after a short run
        data = tiny_images() if config["model"] != "mlp" else load_dataset("digits", "data")
        trainer = Trainer(config, data)
        while not trainer.finished:
            trainer.run_epoch()
        parts = [p.detach().flatten() for p in trainer.model.parameters()]
        parts += [m.flatten().float() for m in trainer.sparse.masks.values()]
        return torch.cat(parts)
    shape = (64,) if name == "mlp" else (3, 16, 16)
    model = create_model(name, shape, 4, **{k: config[k] for k in MODELS.knobs_of(name)})
    model.train()
    torch.manual_seed(1)
    out = model(torch.randn(4, *shape)).detach()
    return torch.cat(
        [out.flatten(), torch.tensor([float(sum(p.numel() for p in model.parameters()))])]
    )


@pytest.mark.parametrize(("slot", "name", "knob", "inert_reason"), list(knob_cases()))
def test_every_declared_knob_changes_behaviour_or_says_why_not(slot, name, knob, inert_reason):
    registry = slot_registries()[slot]
    declaration = registry.knobs_of(name)[knob]
    base = {slot: name, **(SMALL_MODEL.get(name, {}) if slot == "model" else {})}
    if slot in SPARSE_CONTEXT:
        base.update(sparse_context(slot, name), epochs=3, device="cpu")
        base.update(KNOB_CONTEXT.get(knob, {}))
        if base.get("model", "mlp") == "mlp":
            base.update(depth=1, width=32)
    if knob in base:  # a shrunken model's knob: vary it from the small value
        changed_value = base[knob] + (6 if knob == "wrn_depth" else 1)  # wrn: depth 6 n + 4
    elif knob == "art_buffer":  # a window of 1 against 3 epochs: 5 needs a longer run
        changed_value = 0
    else:
        changed_value = other_value(knob, declaration)
    default = make_config(base)
    changed = make_config({**base, knob: changed_value})
    differs = not torch.equal(behaviour(slot, name, default), behaviour(slot, name, changed))
    if inert_reason:
        assert not differs, f"{knob} is documented as inert ({inert_reason}) but changes {name}"
    else:
        assert differs, f"{slot} {name}: {knob}={changed_value!r} changes nothing; document it"


def test_knob_declared_twice_with_different_defaults_fails_at_declaration():
    registry = Registry("optimizer_test", "a throwaway registry")
    momentum = dataclasses.replace(SGD.knobs["momentum"], default=0.5)
    with pytest.raises(RegistryError, match="'momentum' declared twice"):

        @registry.register("slow_sgd")
        class SlowSGD(Component):
            knobs = {"momentum": momentum}

    with pytest.raises(RegistryError, match="'epochs' declared twice"):  # a general knob too
        registry.add("short", object, {"epochs": dataclasses.replace(FIELDS["epochs"], default=3)})
    # the same declaration twice is one knob read by two components
    registry.add("also_sgd", object, {"momentum": SGD.knobs["momentum"]})
    assert registry.readers("momentum") == ["also_sgd"]


def test_model_constructor_and_knobs_must_agree():
    from trainables.models import register_model

    with pytest.raises(RegistryError, match="declare every keyword"):

        @register_model("undeclared")
        def undeclared(input_shape, num_classes, depth: int = 2):
            return torch.nn.Identity()

    assert "undeclared" not in MODELS


def test_a_knob_the_chosen_components_do_not_read_is_an_error_naming_its_readers():
    with pytest.raises(ConfigError) as error:
        make_config({"optimizer": "adam", "momentum": 0.5}, where="--set ")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("--set momentum=0.5 is read only by optimizer sgd")
    assert "optimizer=adam" in message
    with pytest.raises(ConfigError, match="read only by lr_schedule step"):
        make_config({"gamma": 0.5})
    with pytest.raises(ConfigError, match="depth=3 is read only by model mlp"):
        make_config({"model": "resnet", "depth": 3})
    with pytest.raises(ConfigError, match=r"milestones=\[2\].*out of range"):
        make_config({"lr_schedule": "step", "milestones": [2]})


def test_resolved_config_holds_exactly_the_chosen_components_knobs():
    adam = make_config({"optimizer": "adam", "lr_schedule": "step"})
    assert {"beta1", "beta2", "eps", "milestones", "gamma", "lr", "depth"} <= set(adam)
    assert "momentum" not in adam and "nesterov" not in adam and "warmup_fraction" not in adam
    assert adam["milestones"] == (0.5, 0.75) and adam.to_dict()["milestones"] == [0.5, 0.75]
    with pytest.raises(AttributeError):
        adam.lr = 1.0  # immutable
    assert make_config(adam) == adam  # resolving a resolved config changes nothing


def test_knob_table_is_derived_from_the_registries():
    table = knob_table()
    assert table["momentum"].readers == (("optimizer", "sgd"),)
    assert {n for _, n in table["dropout"].readers} == {"mlp", "lenet5", "cnn3", "wrn"}
    assert {n for _, n in table["lr"].readers} == set(OPTIMIZERS)
    assert table["epochs"].general
    text = format_knob_table()
    for name in table:
        assert name in text
    markdown = format_knob_table(markdown=True)
    assert markdown.count("\n") == len(table) + 1
    assert "| `beta1` | float | 0.9 | [0, 1) | optimizer adam, adamw |" in markdown
    assert "| `milestones` | list | 0.5,0.75 | (0, 1) | lr_schedule step |" in markdown


def test_train_help_lists_every_knob():
    import run_study

    parser = run_study.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    text = train.format_help()
    assert "momentum" in text and "read by optimizer sgd" in text
    assert all(name in text for name in knob_table())


def test_the_general_table_holds_no_component_knob():
    """Every knob a component reads is declared by that component; the general table keeps
    what every run reads (data, budget, seed, device, sparsity) and the slots."""
    general = {name for name, row in knob_table().items() if row.general}
    assert general == {
        "dataset", "data_dir", "batch_size", "augment", "val_fraction", "folds", "fold",
        "full_train", "model", "method", "sparsity", "optimizer", "lr_schedule",
        "label_smoothing", "epochs", "seed", "device",
    }  # fmt: skip


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_grown_weights_start_without_optimizer_state(optimizer):
    """Every optimizer's per-element state (SGD's momentum, Adam's two moments) is zeroed
    where a sparse method grows weights."""
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    component = OPTIMIZERS.create(optimizer, make_config({"optimizer": optimizer}))
    torch_optimizer = component.build(model.parameters())
    model(torch.randn(5, 6)).sum().backward()
    torch_optimizer.step()
    state = torch_optimizer.state[model.weight]
    per_element = {k: v for k, v in state.items() if v.shape == model.weight.shape}
    assert per_element and all(v.abs().sum() > 0 for v in per_element.values())
    grown = torch.zeros_like(model.weight, dtype=torch.bool)
    grown[0, :3] = True
    component.reset_state(torch_optimizer, model.weight, grown)
    for value in per_element.values():
        assert (value[grown] == 0).all() and (value[~grown] != 0).any()
    # a sparse method's mask update resets exactly the positions it changed
    from trainables.sparsity import create_sparse_training

    net = torch.nn.Sequential(torch.nn.Linear(16, 8))
    training = create_sparse_training(
        net, method="rigl", sparsity=0.5, total_steps=100, optimizer=optimizer
    )
    torch_optimizer = component.build(net.parameters())
    net(torch.randn(5, 16)).sum().backward()
    torch_optimizer.step()
    weight = net[0].weight
    state = [v for v in torch_optimizer.state[weight].values() if v.shape == weight.shape]
    for value in state:
        value.fill_(1.0)
    before = training.masks["0.weight"].clone()
    net(torch.randn(5, 16)).square().sum().backward()
    training.after_backward(0, torch_optimizer)  # rigl's update at step 0
    changed = before ^ training.masks["0.weight"]
    assert changed.any()
    for value in state:
        assert (value[changed] == 0).all() and (value[~changed] == 1).all()


def test_adam_at_1e3_constant_trains_digits_as_well_as_sgd(digits):
    """The dynamic-sparsity experiments' setting (Adam 1e-3, constant rate) against the
    project's default (SGD 0.1 Nesterov, cosine): a 2-layer MLP on digits."""
    common = {"depth": 2, "width": 128, "epochs": 10, "device": "cpu", "seed": 1}
    results = {}
    for name, knobs in {
        "sgd": {},
        "adam": {"optimizer": "adam", "lr": 1e-3, "lr_schedule": "constant"},
    }.items():
        trainer = Trainer(make_config({**common, **knobs}), digits)
        while not trainer.finished:
            metrics = trainer.run_epoch()
        results[name] = metrics["val_accuracy"]
    assert results["sgd"] > 0.9
    assert results["adam"] >= results["sgd"] - 0.02, results
