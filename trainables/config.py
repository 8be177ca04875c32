"""The hyperparameters of one training run: names, defaults, allowed values.

One table serves every entry point (the `train` command, study specs, `--set`, the Ray
trainable), so a bad value is refused the same way everywhere, naming the field, the value
and what is allowed. Unknown keys are an error, as in nanoGPT's configurator.

The table is derived (`knob_table`): `FIELDS` holds the general knobs (data, epochs, seed,
sparsity) and the slots that choose a component (`model`, `method`, `optimizer`,
`lr_schedule`); every component declares its own knobs in its registry
(trainables/registry.py), the slots it chooses in turn among them (a sparse method's `pattern`
and `distribution`). `make_config` resolves a config once: the
chosen components' knobs with their defaults filled in, nothing else; a knob that none of
the chosen components reads is an error naming the components that do.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from contract.errors import ConfigError as ConfigError  # re-exported
from trainables.catalog import registered_names
from trainables.registry import Knob, Registry, check_consistent

Field = Knob  # (the table's rows were `Field`s before components declared their knobs)


def _registry_choices(name: str) -> tuple[str, ...] | None:
    """The allowed values of a registry-valued knob, without importing torch."""
    if name in SLOTS:
        return tuple(slot_registries()[name])
    return registered_names(name)


# The knobs that choose a component, and where each one's registry lives. In resolution order:
# a slot is chosen when a general knob or a chosen component's knob names it (`pattern` is a
# knob of the sparse methods, so a dense config chooses no pattern).
SLOTS = {
    "model": "trainables.model_knobs:model_registry",
    "method": "trainables.sparsity.methods:METHODS",
    "pattern": "trainables.sparsity.patterns:PATTERNS",
    "distribution": "trainables.sparsity.distributions:DISTRIBUTIONS",
    "optimizer": "trainables.optimizers:OPTIMIZERS",
    "lr_schedule": "trainables.lr_schedules:LR_SCHEDULES",
}


def slot_registries() -> dict[str, Registry]:
    """The registries of components a config chooses, by slot (none imports torch)."""
    import importlib

    found = {}
    for slot, target in SLOTS.items():
        module, _, name = target.partition(":")
        found[slot] = getattr(importlib.import_module(module), name)
        if callable(found[slot]):  # the models: live once imported, declarations before
            found[slot] = found[slot]()
    return found


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
    "model": Field("mlp", str, "registered model family (its knobs: below)"),
    # sparsity (the method's own knobs, and its pattern's: declared by each component)
    "method": Field("dense", str, "sparse-training method (its knobs: below)"),
    "sparsity": Field(
        0.0,
        float,
        "fraction of prunable weights removed (0.9 keeps 10%); 0 for dense",
        low=0.0,
        high=1.0,
        high_open=True,
    ),
    # optimization
    "optimizer": Field("sgd", str, "optimizer (its knobs: below)"),
    "lr_schedule": Field("cosine", str, "learning-rate schedule (its knobs: below)"),
    "label_smoothing": Field(0.0, float, "label smoothing", low=0.0, high=1.0, high_open=True),
    "epochs": Field(20, int, "training epochs", low=1),
    "seed": Field(0, int, "training seed (init, masks, batch order)", low=0),
    "device": Field("auto", str, "auto | cpu | cuda | cuda:N", choices=None),
}


@dataclass(frozen=True)
class KnobRow:
    """One row of the derived knob table: the knob and the components that read it."""

    name: str
    knob: Knob
    readers: tuple[tuple[str, str], ...] = ()  # (slot, component); () for a general knob

    @property
    def general(self) -> bool:
        return not self.readers

    def readers_text(self) -> str:
        by_slot: dict[str, list[str]] = {}
        for slot, name in self.readers:
            by_slot.setdefault(slot, []).append(name)
        return "; ".join(f"{slot} {', '.join(names)}" for slot, names in by_slot.items())


def knob_table() -> dict[str, KnobRow]:
    """Every knob: the general ones (FIELDS) and those the registered components declare."""
    table = {name: KnobRow(name, knob) for name, knob in FIELDS.items()}
    for slot, registry in slot_registries().items():
        for component in registry:
            for name, knob in registry.knobs_of(component).items():
                row = table.get(name) or KnobRow(name, knob)
                table[name] = KnobRow(name, row.knob, (*row.readers, (slot, component)))
    return table


def format_knob_table(markdown: bool = False) -> str:
    """The knob table for `--help` and the README: name, type, default, allowed, read by, doc."""
    rows = []
    for row in knob_table().values():
        k = row.knob
        allowed = (
            "|".join(k.choices or _registry_choices(row.name) or ("any text",))
            if k.kind is str
            else _range_text(k)
            if k.kind in (int, float, tuple)
            else "true|false"
        )
        default = ",".join(f"{x:g}" for x in k.default) if k.kind is tuple else k.default
        kind = "list" if k.kind is tuple else k.kind.__name__
        rows.append((row.name, kind, str(default), allowed, row.readers_text() or "all", k.doc))
    if markdown:
        lines = [
            "| knob | type | default | allowed | read by | what |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            "| `{}` | {} | {} | {} | {} | {} |".format(*(c.replace("|", "\\|") for c in r))
            for r in rows
        ]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        f"  {r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[5]} "
        f"(allowed {r[3]}; read by {r[4]})"
        for r in rows
    )


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _range_text(f: Knob) -> str:
    lo = "(" if f.low_open else "["
    hi = ")" if f.high_open else "]"
    low = "-inf" if f.low is None else f"{f.low:g}"
    high = "inf" if f.high is None else f"{f.high:g}"
    return f"{lo}{low}, {high}{hi}"


def check_value(name: str, value: Any, where: str = "", table=None) -> Any:
    """Coerce `value` to the knob's type and check it; return it or raise ConfigError."""
    table = knob_table() if table is None else table
    if name not in table:
        raise ConfigError(
            f"{where}unknown hyperparameter {name!r}{_suggest(name, table)} "
            f"(known: {', '.join(table)})"
        )
    f = table[name].knob
    label = f"{where}{name}={value!r}"
    if f.kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{label}: expected a string ({f.doc})")
        choices = f.choices or _registry_choices(name)
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
    if f.kind is tuple:
        if not isinstance(value, list | tuple) or not value:
            raise ConfigError(f"{label}: expected a list of numbers, e.g. [0.5, 0.75] ({f.doc})")
        return tuple(_check_number(f, float, item, label) for item in value)
    return _check_number(f, f.kind, value, label)


def _check_number(f: Knob, kind: type, value: Any, label: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{label}: expected a number ({f.doc}), allowed {_range_text(f)}")
    if kind is int:
        if not math.isfinite(value) or float(value) != int(value):
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


class Config(Mapping):
    """A resolved config: every knob the run reads, with the value it uses. Immutable."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]):
        object.__setattr__(self, "_values", dict(values))

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a resolved Config is immutable; resolve a new one")

    def __reduce__(self):
        return (Config, (self._values,))

    def __repr__(self) -> str:
        return f"Config({self._values!r})"

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples): for JSON, YAML, Parquet and Tune."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._values.items()}


def chosen_components(config: Mapping[str, Any]) -> dict[str, str]:
    """slot -> the component `config` chooses (its value, or the default), for each slot that
    is chosen at all: a general slot always, a nested one (`pattern`, `distribution`) when a
    chosen component reads it (a dense config chooses no pattern)."""
    registries = slot_registries()
    chosen: dict[str, str] = {}
    for slot in SLOTS:
        if slot in FIELDS:
            default = FIELDS[slot].default
        else:
            declared = [
                registries[s].knobs_of(c)[slot]
                for s, c in chosen.items()
                if c in registries[s] and slot in registries[s].knobs_of(c)
            ]
            if not declared:
                continue
            default = declared[0].default
        chosen[slot] = config.get(slot, default)
    return chosen


def make_config(overrides: Mapping[str, Any] | None = None, where: str = "") -> Config:
    """Resolve a config: every override checked, defaults filled in for the general knobs and
    for the knobs of the chosen components (model, method, its pattern and distribution,
    optimizer, lr_schedule), nothing else; then the chosen method's rules across knobs.

    Unknown keys raise ConfigError, and so does a knob that none of the chosen components
    reads (naming the components that do).
    """
    table = knob_table()
    overrides = dict(overrides or {})
    checked = {name: check_value(name, value, where, table) for name, value in overrides.items()}
    chosen = chosen_components(checked)
    registries = slot_registries()
    config = {name: checked.get(name, knob.default) for name, knob in FIELDS.items()}
    for slot, component in chosen.items():
        for name, knob in registries[slot].knobs_of(component).items():
            config[name] = checked.get(name, knob.default)
    for name, value in checked.items():
        if name not in config:
            row = table[name]
            using = ", ".join(
                f"{slot}={chosen[slot]}" if slot in chosen else f"no {slot}"
                for slot in dict(row.readers)
            )
            raise ConfigError(
                f"{where}{name}={value!r} is read only by {row.readers_text()}, not by the "
                f"chosen {using}: remove {name}, or choose a component that reads it"
            )
    method = registries["method"][config["method"]]
    if not method.sparse and config["sparsity"] != 0.0:
        raise ConfigError(
            f"{where}sparsity={config['sparsity']!r} with method={config['method']}: "
            f"{config['method']} trains every weight, so it reads no sparsity; remove sparsity "
            "(or set 0), or choose a sparse method"
        )
    _apply_pattern_sparsity(config, given=set(checked), where=where)
    method.check(config, where)
    return Config(config)


def _apply_pattern_sparsity(config: dict[str, Any], given: set[str], where: str) -> None:
    """An n:m pattern fixes the density of every sparse layer at nm_n/nm_m: the sparsity is
    taken from it when not given, and a sparsity that contradicts it is refused."""
    if config.get("pattern") != "n:m":
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


# `sparsity` is general (every trial records it: 0 for dense) but read by the sparse methods
# only: where the chosen method is dense, a nonzero sparsity is unread, as a component's knob
# is (a study that pins sparsity 0.9 and searches the method trains its dense trials at 0).
SPARSE_METHODS_ONLY = "sparsity"


def reading_slots(name: str, table: dict[str, KnobRow] | None = None) -> set[str]:
    """The slots whose components read knob `name` (empty for a general knob)."""
    if name == SPARSE_METHODS_ONLY:
        return {"method"}
    table = knob_table() if table is None else table
    return {slot for slot, _ in table[name].readers} if name in table else set()


def unread_knobs(config: Mapping[str, Any]) -> list[str]:
    """The knobs of `config` that none of its chosen components reads (for dropping them when
    a config changes component, e.g. a re-evaluation that swaps the method)."""
    table = knob_table()
    chosen = chosen_components(config)
    methods = slot_registries()["method"]
    dense = chosen["method"] in methods and not methods[chosen["method"]].sparse
    return [
        name
        for name in config
        if name in table
        and (
            (name == SPARSE_METHODS_ONLY and dense and config[name] != 0.0)
            or (
                not table[name].general
                and not any(chosen.get(s) == c for s, c in table[name].readers)
            )
        )
    ]


# A general knob has one definition too: a component that redeclares one must agree with it.
for _name, _knob in FIELDS.items():
    check_consistent(_name, _knob, "trainables/config.py FIELDS")
