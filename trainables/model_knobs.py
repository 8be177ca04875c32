"""The model families' knobs, declared without torch.

A spec is validated before torch loads, so the knobs each model family reads (their types,
defaults and ranges) live here, where the validator can import them; each family's module
registers its constructor with its entry (`@register_model("mlp", MODEL_KNOBS["mlp"])`), and
registration checks that the constructor's keywords and defaults are exactly these.
"""

from __future__ import annotations

import sys

from trainables.registry import Knob, Registry

DROPOUT = Knob(0.0, float, "dropout probability", low=0.0, high=1.0, high_open=True)
CHANNELS = Knob(64, int, "cnn3, resnet18: filters of the first stage", low=1, high=1024)

MODEL_KNOBS: dict[str, dict[str, Knob]] = {
    "lenet5": {"dropout": DROPOUT},
    "cnn3": {"dropout": DROPOUT, "channels": CHANNELS},
    "resnet": {"blocks": Knob(3, int, "resnet: blocks per stage (3: ResNet-20)", low=1, high=4)},
    "resnet18": {"channels": CHANNELS},
    "wrn": {
        "wrn_depth": Knob(16, int, "wrn: depth, 6 n + 4 (16, 22, 28)", low=10, high=40),
        "widen_factor": Knob(8, int, "wrn: width multiplier", low=1, high=16),
        "dropout": DROPOUT,
    },
    "mlp": {
        "depth": Knob(2, int, "mlp: number of hidden layers", low=1, high=16),
        "width": Knob(128, int, "mlp: hidden units per layer", low=1, high=65536),
        "dropout": DROPOUT,
        "first_width": Knob(0, int, "mlp: first hidden width (0: width)", low=0, high=65536),
        "last_width": Knob(0, int, "mlp: last hidden width (0: width)", low=0, high=65536),
    },
}

_DECLARED = Registry("model", "registered model family (declarations only, without torch)")
for _name, _knobs in MODEL_KNOBS.items():
    _DECLARED.add(_name, None, _knobs)


def model_registry() -> Registry:
    """The live model registry once torch models are imported (it holds models that tests
    register too), else these declarations."""
    live = getattr(sys.modules.get("trainables.models"), "MODELS", None)
    return live if live is not None else _DECLARED
