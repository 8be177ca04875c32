"""Components and their registries: every pluggable part is one class that declares its knobs.

As timm's `register_model`, a component registers itself under a name with a decorator
(`@OPTIMIZERS.register("adam")`). What differs: each component class declares its typed
knobs (`Knob`: default, type, doc, range or choices), and everything else is derived from
those declarations: the config table (`trainables.config.knob_table`), `--set` validation
and its messages, the knob tables of `--help` and the README, the Parquet `config/` columns
(only the knobs the chosen components read) and the "knob X is read only by ..." error.

One knob may be declared by several components (`dropout` by three models, `lr` by every
optimizer) when its declarations agree; two declarations that disagree (another default,
type or range) fail at import, so a default is never written twice with two values.

Torch-free: a component imports torch where it builds something, not at import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar


class RegistryError(TypeError):
    """A component declared inconsistently (a programming error, raised at import)."""


@dataclass(frozen=True)
class Knob:
    """One typed hyperparameter: its default, type, doc and allowed range or choices."""

    default: Any
    kind: type  # int, float, str, bool, or tuple (a list of floats, e.g. milestones)
    doc: str
    low: float | None = None  # inclusive bounds for numbers (and each element of a tuple)
    high: float | None = None
    high_open: bool = False  # True when `high` itself is not allowed (sparsity < 1)
    low_open: bool = False
    choices: tuple[str, ...] | None = None  # filled in lazily for registries (datasets, ...)

    def same_declaration(self, other: Knob) -> bool:
        """Whether two declarations agree on everything but the doc."""
        return dataclasses.replace(self, doc="") == dataclasses.replace(other, doc="")


class Component:
    """A pluggable part, registered under `name` in the registry of its `slot`.

    `knobs` are the hyperparameters it reads. `inert_knobs` names the declared knobs that do
    not change its behaviour in a given setting, with why (the registry tests check that
    every other knob does). An instance holds its knob values (`self.values`).
    """

    name: ClassVar[str] = ""
    slot: ClassVar[str] = ""  # the config knob that chooses a component: "optimizer", ...
    knobs: ClassVar[dict[str, Knob]] = {}
    inert_knobs: ClassVar[dict[str, str]] = {}

    def __init__(self, config: dict[str, Any] | None = None):
        config = config or {}
        self.values = {k: config.get(k, knob.default) for k, knob in self.knobs.items()}

    def __repr__(self) -> str:
        knobs = ", ".join(f"{k}={v!r}" for k, v in self.values.items())
        return f"{self.slot}={self.name}({knobs})"


class Registry:
    """Components of one slot by name. `register(name)` is the class decorator."""

    def __init__(self, slot: str, doc: str, base: type = Component, namespace: str = ""):
        self.slot = slot
        # knobs of one namespace share one definition per name; "" holds the hyperparameters
        self.namespace = namespace
        self.doc = doc
        self.base = base
        self.components: dict[str, Any] = {}
        self.component_knobs: dict[str, dict[str, Knob]] = {}  # (the class's own dict)

    def register(self, name: str) -> Callable[[Any], Any]:
        def decorate(cls):
            if not issubclass(cls, self.base):
                raise RegistryError(
                    f"{self.slot} {name!r}: {cls.__name__} is no {self.base.__name__}"
                )
            cls.name = name
            cls.slot = self.slot
            self.add(name, cls, cls.knobs)
            return cls

        return decorate

    def add(self, name: str, component: Any, knobs: dict[str, Knob]) -> None:
        """Register `component` (a class, or a factory function for models) with its knobs."""
        if name in self.components:
            raise RegistryError(f"{self.slot} {name!r} registered twice")
        for knob_name, knob in knobs.items():
            if not isinstance(knob, Knob):
                raise RegistryError(f"{self.slot} {name!r}: knob {knob_name!r} is not a Knob")
            check_consistent(knob_name, knob, f"{self.slot} {name!r}", self.namespace)
        self.components[name] = component
        self.component_knobs[name] = knobs

    def remove(self, name: str) -> None:
        """Unregister `name` (for tests that register a throwaway component)."""
        self.components.pop(name, None)
        for knob_name in self.component_knobs.pop(name, {}):
            key = (self.namespace, knob_name)
            if _DECLARATIONS.get(key, (None, ""))[1] == f"{self.slot} {name!r}":
                _DECLARATIONS.pop(key)

    def knobs_of(self, name: str) -> dict[str, Knob]:
        return dict(self.component_knobs[name])

    def declared(self) -> dict[str, Knob]:
        """Every knob some component of this registry reads (the first declaration)."""
        table: dict[str, Knob] = {}
        for knobs in self.component_knobs.values():
            for knob_name, knob in knobs.items():
                table.setdefault(knob_name, knob)
        return table

    def readers(self, knob_name: str) -> list[str]:
        """The components of this registry that read `knob_name`."""
        return [n for n, knobs in self.component_knobs.items() if knob_name in knobs]

    def __getitem__(self, name: str):
        if name not in self.components:
            raise KeyError(f"{self.slot}={name!r} is unknown; allowed: {', '.join(self)}")
        return self.components[name]

    def __contains__(self, name: object) -> bool:
        return name in self.components

    def __iter__(self) -> Iterator[str]:
        return iter(self.components)

    def __len__(self) -> int:
        return len(self.components)

    def create(self, name: str, config: dict[str, Any] | None = None, **kwargs):
        """An instance of component `name` holding its knobs' values from `config`."""
        return self[name](config, **kwargs)


# Every knob declared anywhere (registries and the general table), for the import-time check.
_DECLARATIONS: dict[tuple[str, str], tuple[Knob, str]] = {}


def check_consistent(name: str, knob: Knob, where: str, namespace: str = "") -> None:
    """Fail when `name` was declared before with another default, type or range."""
    earlier = _DECLARATIONS.get((namespace, name))
    if earlier is None:
        _DECLARATIONS[(namespace, name)] = (knob, where)
        return
    if not earlier[0].same_declaration(knob):
        raise RegistryError(
            f"knob {name!r} declared twice with different definitions: {where} has "
            f"default={knob.default!r} ({knob.kind.__name__}, {_bounds(knob)}), {earlier[1]} has "
            f"default={earlier[0].default!r} ({earlier[0].kind.__name__}, {_bounds(earlier[0])}); "
            "one knob has one definition: rename one or make them agree"
        )


def _bounds(knob: Knob) -> str:
    if knob.choices:
        return "choices " + "|".join(knob.choices)
    return f"[{knob.low}, {knob.high}]"
