"""Every registered model family: output shape, parameter counts against published values,
forward and backward on CPU, state_dict round trip, and every sparse-training method of
`trainables.sparsity.METHODS` training it for one epoch through the real Trainer."""

from __future__ import annotations

import math

import pytest
import torch
from knobs import read_by

from trainables.config import ConfigError, make_config
from trainables.datasets import DeviceDataset
from trainables.models import MODELS, create_model, model_knobs
from trainables.models.mlp import hidden_widths
from trainables.sparsity import METHODS, prunable_weights

# Small settings per family, so a CPU step takes milliseconds.
SMALL = {
    "mlp": {"depth": 2, "width": 16},
    "lenet5": {},
    "cnn3": {"channels": 8},
    "resnet": {"blocks": 1},
    "resnet18": {"channels": 8},
    "wrn": {"wrn_depth": 10, "widen_factor": 1},
}
IMAGE_SHAPES = [(1, 28, 28), (3, 32, 32)]


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_registered_model_has_small_settings():
    assert set(MODELS) == set(SMALL), "add the new family to SMALL"


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_output_shape_forward_backward(name, shape):
    torch.manual_seed(0)
    model = create_model(name, shape, 7, **SMALL[name])
    x = torch.randn(4, *shape)
    out = model(x)
    assert out.shape == (4, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert prunable_weights(model), "nothing for a sparse method to mask"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_state_dict_round_trip(name):
    shape = (3, 32, 32)
    torch.manual_seed(1)
    a = create_model(name, shape, 10, **SMALL[name]).eval()
    torch.manual_seed(2)
    b = create_model(name, shape, 10, **SMALL[name]).eval()
    x = torch.randn(2, *shape)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize(
    ("name", "knobs", "shape", "published"),
    [
        ("resnet", {"blocks": 3}, (3, 32, 32), 0.27e6),  # ResNet-20, He et al. 2016 Table 6
        ("resnet", {"blocks": 1}, (3, 32, 32), 0.078e6),  # ResNet-8 (option A)
        ("resnet", {"blocks": 4}, (3, 32, 32), 0.36e6),  # ResNet-26
        ("resnet18", {}, (3, 32, 32), 11.17e6),  # kuangliu/pytorch-cifar ResNet18
        ("wrn", {"wrn_depth": 16, "widen_factor": 8}, (3, 32, 32), 11.0e6),  # WRN-16-8
        ("wrn", {"wrn_depth": 28, "widen_factor": 10}, (3, 32, 32), 36.5e6),  # WRN-28-10
        ("wrn", {"wrn_depth": 22, "widen_factor": 2}, (3, 32, 32), 1.08e6),  # WRN-22-2
        ("lenet5", {}, (1, 32, 32), 61_706),  # LeCun et al. 1998 sizes, 10 classes
    ],
)
def test_parameter_counts_match_published(name, knobs, shape, published):
    n = count(create_model(name, shape, 10, **knobs))
    assert abs(n - published) / published < 0.04, n


def test_mlp_widths_and_default_layout_unchanged():
    assert hidden_widths(5, 100, 200, 50) == [200, 150, 100, 75, 50]
    assert hidden_widths(3, 64) == [64, 64, 64] and hidden_widths(1, 64, 32) == [32]
    model = create_model("mlp", (64,), 10, depth=2, width=128, dropout=0.0)
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    assert shapes == [
        ("1.weight", (128, 64)), ("1.bias", (128,)), ("3.weight", (128, 128)),
        ("3.bias", (128,)), ("5.weight", (10, 128)), ("5.bias", (10,)),
    ]  # fmt: skip
    assert count(model) == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    wide = create_model("mlp", (64,), 10, depth=3, width=32, first_width=64, last_width=16)
    assert [p.shape[0] for n, p in wide.named_parameters() if n.endswith("weight")] == [
        64, 32, 16, 10,
    ]  # fmt: skip


def test_knobs_reach_only_the_family_that_names_them():
    assert set(model_knobs("resnet")) == {"blocks"}
    assert set(model_knobs("wrn")) == {"wrn_depth", "widen_factor", "dropout"}
    a = create_model("resnet", (3, 32, 32), 10, blocks=2, width=999, depth=7)
    assert count(a) == count(create_model("resnet", (3, 32, 32), 10, blocks=2))


def test_conv_models_refuse_tabular_inputs_and_bad_wrn_depth():
    with pytest.raises(ConfigError, match="needs image inputs"):
        create_model("resnet", (28,), 2)
    with pytest.raises(ConfigError, match="6 n \\+ 4"):
        create_model("wrn", (3, 32, 32), 10, wrn_depth=18)


def tiny_images(channels: int = 3, size: int = 16, n: int = 16) -> DeviceDataset:
    g = torch.Generator().manual_seed(0)

    def images(k):
        return torch.randint(0, 256, (k, channels, size, size), generator=g, dtype=torch.uint8)

    y = torch.arange(n) % 4
    return DeviceDataset(
        "tiny", images(n), y, images(8), torch.arange(8) % 4, images(8), torch.arange(8) % 4, 4,
        default_augment="flip_translate",
    )  # fmt: skip


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_sparsity_method_trains_every_model(model):
    """The methods registered now (another engineer adds to METHODS), one epoch each."""
    from trainables.train import Trainer

    data = tiny_images()
    for method in METHODS:
        config = make_config(
            {
                "model": model, "method": method, "epochs": 1, "batch_size": 8, "device": "cpu",
                **read_by(method, sparsity=0.5 * METHODS[method].sparse, update_interval=1),
                **SMALL[model],
            }
        )  # fmt: skip
        trainer = Trainer(config, data)
        metrics = trainer.run_epoch()
        assert metrics["epoch"] == 1, method
        assert math.isfinite(metrics["train_loss"]), method
        assert 0 <= metrics["val_accuracy"] <= 1 and metrics["train_flops"] > 0, method
        if METHODS[method].sparse:
            assert metrics["density"] < 0.9, (model, method, metrics["density"])
