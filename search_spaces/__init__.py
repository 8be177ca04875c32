"""Search spaces as YAML: float, int, categorical, log scale, and conditions.

A space file (`search_spaces/<name>.yaml`, or any path) lists parameters:

    sparsity: {type: float, low: 0.0, high: 0.99, when: "method != dense", inactive: 0.0}

`to_tune()` turns the space into Ray Tune domains (every parameter is always sampled, so
NSGA-II's crossover and mutation see one fixed-length genome); `resolve()` then applies the
conditions to a sampled config: a parameter whose `when` is false takes its `inactive`
value, or is dropped (recorded as null) when it has none.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SPACES_DIR = Path(__file__).parent
TYPES = ("float", "int", "categorical")
_CONDITION = re.compile(r"^\s*(\w+)\s*(==|!=|not in|in)\s*(.+?)\s*$")


class SpaceError(ValueError):
    """A malformed search space; the message names the parameter and the fix."""


@dataclass(frozen=True)
class Condition:
    name: str
    op: str
    value: Any

    @classmethod
    def parse(cls, text: str, where: str) -> Condition:
        match = _CONDITION.match(str(text))
        if not match:
            raise SpaceError(
                f"{where}: condition {text!r} not understood; write e.g. "
                "'method != dense' or 'method in [set, rigl]'"
            )
        name, op, value = match.groups()
        value = yaml.safe_load(value)
        if op in ("in", "not in") and not isinstance(value, list):
            raise SpaceError(f"{where}: condition {text!r}: '{op}' needs a list, e.g. [set, rigl]")
        return cls(name, op, value)

    def holds(self, config: dict[str, Any]) -> bool:
        actual = config.get(self.name)
        return {
            "==": lambda: actual == self.value,
            "!=": lambda: actual != self.value,
            "in": lambda: actual in self.value,
            "not in": lambda: actual not in self.value,
        }[self.op]()

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.value}"


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    when: Condition | None = None
    inactive: Any = None

    def to_tune(self):
        from ray import tune

        if self.type == "categorical":
            return tune.choice(list(self.choices))
        if self.type == "int":  # Tune's integer upper bounds are exclusive
            sampler = tune.lograndint if self.log else tune.randint
            return sampler(int(self.low), int(self.high) + 1)
        return (tune.loguniform if self.log else tune.uniform)(self.low, self.high)

    def from_unit(self, u: float) -> Any:
        """Map u in [0, 1) to a value, so that equal strata of u are equal strata of the
        domain (in log space for log dimensions): how a Latin-hypercube row becomes a config."""
        if self.type == "categorical":
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        if self.type == "int":  # strata over [low, high + 1) so every integer gets its share
            low, high = self.low, self.high + 1
        else:
            low, high = self.low, self.high
        if self.log:
            value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        else:
            value = low + u * (high - low)
        if self.type == "int":
            return int(min(max(math.floor(value), self.low), self.high))
        return float(min(max(value, self.low), self.high))

    def values_to_check(self) -> list[Any]:
        """The values that must be valid hyperparameters: bounds or choices, and `inactive`."""
        values = list(self.choices) if self.type == "categorical" else [self.low, self.high]
        return values + ([self.inactive] if self.inactive is not None else [])


def _number(value: Any, where: str) -> float:
    # PyYAML reads 1e-3 (no dot) as a string: accept it as the number it means.
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpaceError(f"{where}={value!r}: expected a number") from None
    if not math.isfinite(number):
        raise SpaceError(f"{where}={value!r}: expected a finite number")
    return number


def parse_parameter(name: str, body: dict[str, Any], where: str) -> Parameter:
    where = f"{where}{name}"
    if not isinstance(body, dict):
        raise SpaceError(f"{where}: expected a mapping like {{type: float, low: 0, high: 1}}")
    allowed = {"type", "low", "high", "log", "choices", "when", "inactive"}
    unknown = set(body) - allowed
    if unknown:
        raise SpaceError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    kind = body.get("type", "categorical" if "choices" in body else None)
    if kind not in TYPES:
        raise SpaceError(f"{where}.type={kind!r}: allowed {', '.join(TYPES)}")
    when = Condition.parse(body["when"], where) if "when" in body else None
    if kind == "categorical":
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{where}.choices: a non-empty list is required for a categorical")
        return Parameter(
            name, kind, choices=tuple(choices), when=when, inactive=body.get("inactive")
        )
    if "low" not in body or "high" not in body:
        raise SpaceError(f"{where}: {kind} parameters need both low and high")
    low, high = _number(body["low"], f"{where}.low"), _number(body["high"], f"{where}.high")
    log = bool(body.get("log", False))
    if low > high:
        raise SpaceError(f"{where}: low={low:g} is above high={high:g}")
    if log and low <= 0:
        raise SpaceError(f"{where}: a log scale needs low > 0 (got low={low:g})")
    if kind == "int" and (low != int(low) or high != int(high)):
        raise SpaceError(f"{where}: int bounds must be whole numbers (got {low:g}, {high:g})")
    inactive = body.get("inactive")
    return Parameter(name, kind, low, high, log, when=when, inactive=inactive)


@dataclass(frozen=True)
class SearchSpace:
    name: str
    parameters: dict[str, Parameter]
    trainable: str | None = None  # set for a custom trainable's space: its own hyperparameters

    def to_tune(self, exclude: tuple[str, ...] | set[str] = ()) -> dict[str, Any]:
        """Ray Tune domains for every parameter not in `exclude` (the study's fixed ones)."""
        return {n: p.to_tune() for n, p in self.parameters.items() if n not in exclude}

    def latin_hypercube(
        self, n: int, seed: int, exclude: tuple[str, ...] | set[str] = ()
    ) -> list[dict[str, Any]]:
        """A Latin-hypercube design of n configs (scipy.stats.qmc): every dimension is cut into
        n equal strata (log strata for log dimensions) and each stratum holds exactly one config."""
        from scipy.stats import qmc

        names = [name for name in self.parameters if name not in exclude]
        if not names:
            return [{} for _ in range(n)]
        unit = qmc.LatinHypercube(d=len(names), rng=seed).random(n)
        return [
            {
                name: self.parameters[name].from_unit(float(u))
                for name, u in zip(names, row, strict=True)
            }
            for row in unit
        ]

    def resolve(self, config: dict[str, Any]) -> dict[str, Any]:
        """Apply the conditions: inactive parameters take their `inactive` value or are dropped."""
        resolved = dict(config)
        for name, param in self.parameters.items():
            if param.when is None or name not in resolved or param.when.holds(resolved):
                continue
            if param.inactive is None:
                resolved.pop(name)
            else:
                resolved[name] = param.inactive
        return resolved

    def check(self, check_value) -> None:
        """Validate every bound, choice and inactive value with `check_value(name, value, where)`,
        and every condition's subject exists."""
        for name, param in self.parameters.items():
            for value in param.values_to_check():
                if param.type == "int" and value is not None and not isinstance(value, str):
                    value = int(value)
                check_value(name, value, f"search space {self.name!r}: ")
            if param.when and param.when.name not in self.parameters:
                raise SpaceError(
                    f"search space {self.name!r}: {name}.when refers to {param.when.name!r}, "
                    f"which is not a parameter of the space"
                )


def available_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str) -> SearchSpace:
    """A space by name (`search_spaces/<name>.yaml`) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = SPACES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise SpaceError(
            f"space={name_or_path!r}: no such search space; built in: "
            f"{', '.join(available_spaces())} (or give a path to a .yaml file)"
        )
    body = yaml.safe_load(path.read_text()) or {}
    params = body.get("parameters") if isinstance(body, dict) else None
    if not isinstance(params, dict) or not params:
        raise SpaceError(f"{path}: expected a top-level 'parameters:' mapping")
    unknown = set(body) - {"parameters", "trainable"}
    if unknown:
        raise SpaceError(
            f"{path}: unknown top-level keys {sorted(unknown)}; allowed: parameters, trainable"
        )
    where = f"search space {path.stem!r}: "
    parameters = {n: parse_parameter(n, b, where) for n, b in params.items()}
    return SearchSpace(path.stem, parameters, body.get("trainable"))
