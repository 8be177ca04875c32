"""The hyperparameters of one training run: names, defaults, allowed values.

One table serves every entry point (the `train` command, study specs, `--set`, the Ray
trainable), so a bad value is refused the same way everywhere, naming the field, the value
and what is allowed. Unknown keys are an error, as in nanoGPT's configurator.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from contract.errors import ConfigError as ConfigError  # re-exported
from trainables.catalog import registered_names


@dataclass(frozen=True)
class Field:
    default: Any
    kind: type  # int, float, str, bool
    doc: str
    low: float | None = None  # inclusive bounds for numbers
    high: float | None = None
    high_open: bool = False  # True when `high` itself is not allowed (sparsity < 1)
    low_open: bool = False
    choices: tuple[str, ...] | None = None  # registries' names come from trainables.catalog


FIELDS: dict[str, Field] = {
    # data
    "dataset": Field("digits", str, "dataset name"),
    "data_dir": Field("data", str, "where datasets are downloaded and cached"),
    "batch_size": Field(64, int, "training batch size", low=1),
    "augment": Field(
        "auto",
        str,
        "image augmentation in batch on the device; auto: flip_translate for cifar10, "
        "translate for svhn, none otherwise",
        choices=("auto", "none", "flip", "translate", "flip_translate"),
    ),
    "val_fraction": Field(
        0.2,
        float,
        "fraction of the training set held out for validation (folds = 1)",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    ),  # fmt: skip
    "folds": Field(1, int, "k of a stratified k-fold validation (1: one holdout)", low=1, high=20),
    "fold": Field(0, int, "which fold validates (0 to folds - 1)", low=0, high=19),
    "full_train": Field(
        False, bool, "train on train+val and score on test (re-evaluation); val metrics are NaN"
    ),
    # model
    "model": Field("mlp", str, "registered model family"),
    "depth": Field(2, int, "number of hidden layers (mlp)", low=1, high=16),
    "width": Field(128, int, "hidden units per layer (mlp)", low=1, high=65536),
    "dropout": Field(0.0, float, "dropout probability", low=0.0, high=1.0, high_open=True),
    "first_width": Field(0, int, "mlp: first hidden layer's width (0: width)", low=0, high=65536),
    "last_width": Field(0, int, "mlp: last hidden layer's width (0: width)", low=0, high=65536),
    "blocks": Field(3, int, "resnet: basic blocks per stage (3: ResNet-20)", low=1, high=4),
    "channels": Field(64, int, "cnn3, resnet18: filters of the first stage", low=1, high=1024),
    "wrn_depth": Field(16, int, "wrn: depth, 6 n + 4 (16, 22, 28)", low=10, high=40),
    "widen_factor": Field(8, int, "wrn: width multiplier", low=1, high=16),
    # sparsity
    "method": Field("dense", str, "sparse-training method"),
    "sparsity": Field(
        0.0,
        float,
        "fraction of prunable weights removed (0.9 keeps 10%)",
        low=0.0,
        high=1.0,
        high_open=True,
    ),
    "distribution": Field("uniform", str, "how the global sparsity is spread over layers"),
    "sparse_init": Field(True, bool, "rescale initial weights by 1/sqrt(layer density)"),
    "update_interval": Field(100, int, "steps between mask updates", low=1),
    "update_end": Field(
        0.75,
        float,
        "fraction of training after which masks stop changing",
        low=0.0,
        high=1.0,
        low_open=True,
    ),
    "drop_fraction": Field(
        0.3,
        float,
        "fraction of active weights replaced per update (cosine-decayed)",
        low=0.0,
        high=1.0,
    ),
    "pattern": Field(
        "unstructured",
        str,
        "mask shape: unstructured | block (block_size x block_size) | n:m (nm_n of every "
        "nm_m inputs; quote it in YAML)",
        choices=("unstructured", "block", "n:m"),
    ),
    "block_size": Field(4, int, "block side b of a block pattern (b x b tiles)", low=1),
    "nm_n": Field(2, int, "n of an n:m pattern (kept per group; 2:4 is nm_n=2, nm_m=4)", low=1),
    "nm_m": Field(4, int, "m of an n:m pattern (group size; must exceed nm_n)", low=2),
    "dense_first_last": Field(False, bool, "keep the first and last prunable layer dense"),
    "update_unit": Field(
        "steps", str, "unit of update_interval: steps | epochs", choices=("steps", "epochs")
    ),
    "skip_weight_update_on_mask_update": Field(
        True,
        bool,
        "rigl, prune_regrow: skip the optimizer step on a mask-update step (rigl's reference); "
        "set always steps, then rewires",
    ),
    "count_rounding": Field(
        "floor",
        str,
        "set, rigl, prune_regrow: drop count int(n * fraction) (floor, rigl's) or round",
        choices=("floor", "round"),
    ),
    "redistribution": Field(
        "momentum",
        str,
        "prune_regrow with grow_criterion momentum (SNFS): regrowth redistributed across "
        "layers by mean momentum (momentum, sparse_learning's) or kept per layer (none)",
        choices=("momentum", "none"),
    ),
    "set_sign_split": Field(
        False, bool, "set: drop positive and negative weights separately (Mocanu et al.)"
    ),
    "drop_criterion": Field(
        "magnitude",
        str,
        "prune_regrow drop score: magnitude | gradient",
        choices=("magnitude", "gradient"),
    ),
    "grow_criterion": Field(
        "gradient",
        str,
        "prune_regrow grow score: random | gradient | momentum (SNFS)",
        choices=("random", "gradient", "momentum"),
    ),
    "regrowth_rate": Field(
        1.0,
        float,
        "prune_regrow: regrown / pruned per update (< 1 shrinks to sparsity)",
        low=0.0,
        high=1.0,
    ),
    "initial_sparsity": Field(
        0.5,
        float,
        "prune_regrow with regrowth_rate < 1: sparsity at init (at most sparsity)",
        low=0.0,
        high=1.0,
        high_open=True,
    ),
    "topk_period": Field(1, int, "swat: steps between exact top-K (thresholds reused)", low=1),
    "warmup_epochs": Field(
        60, int, "hypersparse: dense epochs before regularization (reference 60)", low=0
    ),
    "lambda_init": Field(
        5e-6,
        float,
        "hypersparse: initial regularization weight (reference 5e-6; short runs: ~1e-4)",
        low=0.0,
        low_open=True,
    ),
    "eta": Field(
        1.05,
        float,
        "hypersparse: regularization growth per epoch, >= 1 (reference 1.05; short runs: ~2)",
        low=1.0,
    ),
    "art_buffer": Field(
        1, int, "hypersparse: ART averages 2 * art_buffer + 1 epochs' pruned accuracy", low=0
    ),
    "art_restart": Field(
        True,
        bool,
        "hypersparse: fine-tune with a fresh optimizer state and a restarted lr schedule",
    ),
    "regularizer": Field(
        "hypersparse",
        str,
        "hypersparse regularizer: hypersparse | l1 | l2",
        choices=("hypersparse", "l1", "l2"),
    ),
    # optimization
    "lr": Field(0.1, float, "peak learning rate (SGD, cosine schedule)", low=0.0, low_open=True),
    "momentum": Field(0.9, float, "SGD momentum (Nesterov)", low=0.0, high=1.0, high_open=True),
    "weight_decay": Field(5e-4, float, "L2 weight decay", low=0.0),
    "label_smoothing": Field(0.0, float, "label smoothing", low=0.0, high=1.0, high_open=True),
    "epochs": Field(20, int, "training epochs", low=1),
    "seed": Field(0, int, "training seed (init, masks, batch order)", low=0),
    "device": Field("auto", str, "auto | cpu | cuda | cuda:N", choices=None),
}


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _range_text(f: Field) -> str:
    lo = "(" if f.low_open else "["
    hi = ")" if f.high_open else "]"
    low = "-inf" if f.low is None else f"{f.low:g}"
    high = "inf" if f.high is None else f"{f.high:g}"
    return f"{lo}{low}, {high}{hi}"


def check_value(name: str, value: Any, where: str = "") -> Any:
    """Coerce `value` to the field's type and check it; return it or raise ConfigError."""
    if name not in FIELDS:
        raise ConfigError(
            f"{where}unknown hyperparameter {name!r}{_suggest(name, FIELDS)} "
            f"(known: {', '.join(FIELDS)})"
        )
    f = FIELDS[name]
    label = f"{where}{name}={value!r}"
    if f.kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{label}: expected a string ({f.doc})")
        choices = f.choices or registered_names(name)
        if name == "device":
            if value not in ("auto", "cpu") and not value.startswith("cuda"):
                raise ConfigError(f"{label}: allowed auto, cpu, cuda or cuda:N")
        elif choices is not None and value not in choices:
            raise ConfigError(
                f"{label} is not one of the allowed values: {', '.join(choices)}"
                f"{_suggest(value, choices)}"
            )
        return value
    if f.kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{label}: expected true or false ({f.doc})")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{label}: expected a number ({f.doc}), allowed {_range_text(f)}")
    if f.kind is int:
        if float(value) != int(value):
            raise ConfigError(f"{label}: expected a whole number ({f.doc})")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{label}: must be finite, allowed {_range_text(f)}")
    too_low = f.low is not None and (value <= f.low if f.low_open else value < f.low)
    too_high = f.high is not None and (value >= f.high if f.high_open else value > f.high)
    if too_low or too_high:
        raise ConfigError(f"{label} is out of range: allowed {_range_text(f)} ({f.doc})")
    return value


def make_config(overrides: dict[str, Any] | None = None, where: str = "") -> dict[str, Any]:
    """Defaults updated by `overrides`, every value checked. Unknown keys raise ConfigError."""
    config = {name: f.default for name, f in FIELDS.items()}
    for name, value in (overrides or {}).items():
        config[name] = check_value(name, value, where)
    _apply_pattern_sparsity(config, given=set(overrides or {}), where=where)
    return config


def _apply_pattern_sparsity(config: dict[str, Any], given: set[str], where: str) -> None:
    """An n:m pattern fixes the density of every sparse layer at nm_n/nm_m: the sparsity is
    taken from it when not given, and a sparsity that contradicts it is refused."""
    if config["pattern"] != "n:m" or config["method"] == "dense":
        return
    n, m = config["nm_n"], config["nm_m"]
    if n >= m:
        raise ConfigError(
            f"{where}nm_n={n}, nm_m={m}: an n:m pattern keeps nm_n of every nm_m weights, so "
            "nm_n must be below nm_m (2:4 is nm_n=2, nm_m=4)"
        )
    implied = 1 - n / m
    if "sparsity" not in given:
        config["sparsity"] = implied
    elif not math.isclose(config["sparsity"], implied, abs_tol=1e-9):
        raise ConfigError(
            f"{where}sparsity={config['sparsity']!r} contradicts pattern n:m ({n}:{m}), whose "
            f"masks are {n}/{m} dense: leave sparsity out or set sparsity={implied:g}"
        )
