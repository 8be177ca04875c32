"""The study spec: one YAML file, validated completely before Ray starts.

Unknown keys are an error (with a suggestion); every message names the field, the value and
what is allowed. `--set key=value` overrides a field (`--set trials=8 --set fixed.epochs=2`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from search_spaces import SearchSpace, SpaceError, load_space
from trainables.config import FIELDS, ConfigError, check_value
from trainables.train import METRICS

KINDS = (
    "optimize",
)  # reproduction, reevaluate, evaluate and random arrive with the searches issue
ALGORITHMS = ("nsga2", "tpe", "random")
MODES = ("min", "max")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SpecError(ConfigError):
    """A bad study spec."""


@dataclass
class SearchConfig:
    algorithm: str = "nsga2"
    population_size: int = 8
    crossover_prob: float = 0.9
    mutation_prob: float | None = None  # Optuna's default: 1 / number of parameters
    swapping_prob: float = 0.5


@dataclass
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0


@dataclass
class StudySpec:
    name: str
    objectives: dict[str, str]
    trials: int
    kind: str = "optimize"
    description: str = ""
    dataset: str = "digits"
    model: str = "mlp"
    space: str = "mlp"
    seeds: list[int] = field(default_factory=lambda: [0])
    search: SearchConfig = field(default_factory=SearchConfig)
    fixed: dict[str, Any] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int | None = None
    storage: str = "runs"
    source: str = ""  # the YAML text after overrides, kept with the results

    @property
    def study_dir(self) -> Path:
        return Path(self.storage) / self.name

    def load_space(self) -> SearchSpace:
        return load_space(self.space)

    def trial_defaults(self) -> dict[str, Any]:
        """Hyperparameters every trial gets: the study's dataset and model, then `fixed`."""
        return {"dataset": self.dataset, "model": self.model, **self.fixed}


TOP_KEYS = {f for f in StudySpec.__dataclass_fields__ if f != "source"}
REQUIRED = ("name", "objectives", "trials")


def _unknown(key: str, allowed, where: str) -> SpecError:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    if where == "" and key in FIELDS:
        hint = f"; hyperparameters go under 'fixed:' (fixed: {{{key}: ...}}) or in the search space"
    return SpecError(f"unknown key {where + key!r}{hint} (allowed: {', '.join(sorted(allowed))})")


def apply_override(body: dict[str, Any], assignment: str) -> None:
    """`key=value` or `a.b=value`; the value is parsed as YAML (numbers, lists, booleans)."""
    if "=" not in assignment:
        raise SpecError(f"--set {assignment!r}: expected key=value, e.g. --set trials=8")
    key, text = assignment.split("=", 1)
    value = yaml.safe_load(text) if text else ""
    target = body
    parts = key.strip().split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise SpecError(f"--set {assignment!r}: {part!r} is not a mapping")
    target[parts[-1]] = value


def _sub(cls, body: Any, where: str):
    if body is None:
        return cls()
    if not isinstance(body, dict):
        raise SpecError(f"{where}: expected a mapping, got {body!r}")
    allowed = set(cls.__dataclass_fields__)
    for key in body:
        if key not in allowed:
            raise _unknown(key, allowed, f"{where}.")
    return cls(**body)


def _positive_int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{where}={value!r}: expected a whole number >= {minimum}")
    return value


def parse_spec(body: dict[str, Any], source: str = "") -> StudySpec:
    if not isinstance(body, dict):
        raise SpecError("the spec must be a YAML mapping of keys to values")
    for key in body:
        if key not in TOP_KEYS:
            raise _unknown(key, TOP_KEYS, "")
    for key in REQUIRED:
        if body.get(key) in (None, {}, ""):
            example = {
                "name": "name: my-study",
                "objectives": "objectives: {val_error: min, train_flops: min}",
                "trials": "trials: 24",
            }[key]
            raise SpecError(f"{key} is required (e.g. {example})")

    name = str(body["name"])
    if not NAME.match(name):
        raise SpecError(f"name={name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    kind = body.get("kind", "optimize")
    if kind not in KINDS:
        raise SpecError(f"kind={kind!r} is not available; allowed: {', '.join(KINDS)}")

    objectives = body["objectives"]
    if not isinstance(objectives, dict):
        raise SpecError(
            f"objectives={objectives!r}: expected a mapping of metric to min|max, "
            "e.g. {val_error: min, train_flops: min}"
        )
    for metric, mode in objectives.items():
        if metric not in METRICS:
            raise _unknown(metric, METRICS, "objectives.")
        if mode not in MODES:
            raise SpecError(f"objectives.{metric}={mode!r}: allowed min, max")

    search = _sub(SearchConfig, body.get("search"), "search")
    if search.algorithm not in ALGORITHMS:
        raise SpecError(f"search.algorithm={search.algorithm!r}: allowed {', '.join(ALGORITHMS)}")
    _positive_int(search.population_size, "search.population_size", 2)
    for prob in ("crossover_prob", "mutation_prob", "swapping_prob"):
        value = getattr(search, prob)
        if value is not None and not (isinstance(value, int | float) and 0 <= value <= 1):
            raise SpecError(f"search.{prob}={value!r}: expected a probability in [0, 1]")

    resources = _sub(Resources, body.get("resources"), "resources")
    for res in ("cpu", "gpu"):
        value = getattr(resources, res)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise SpecError(
                f"resources.{res}={value!r}: expected a number >= 0 (fractions allowed)"
            )
    if resources.cpu == 0 and resources.gpu == 0:
        raise SpecError("resources: a trial needs some cpu or gpu (e.g. resources: {cpu: 1})")

    seeds = body.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise SpecError(f"seeds={seeds!r}: expected a non-empty list of whole numbers, e.g. [1, 2]")
    for i, seed in enumerate(seeds):
        _positive_int(seed, f"seeds[{i}]", 0)
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"seeds={seeds!r}: seeds must be distinct")

    fixed = body.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SpecError(f"fixed={fixed!r}: expected a mapping of hyperparameter to value")
    spec = StudySpec(
        name=name,
        kind=kind,
        description=str(body.get("description", "")),
        objectives=dict(objectives),
        trials=_positive_int(body["trials"], "trials"),
        dataset=body.get("dataset", "digits"),
        model=body.get("model", "mlp"),
        space=str(body.get("space", body.get("model", "mlp"))),
        seeds=list(seeds),
        search=search,
        fixed=dict(fixed),
        resources=resources,
        max_concurrent=None
        if body.get("max_concurrent") is None
        else _positive_int(body["max_concurrent"], "max_concurrent"),
        storage=str(body.get("storage", "runs")),
        source=source,
    )
    # Hyperparameters: the dataset, model, fixed values and the space's bounds, all checked
    # against the trainable's table, so `sparsity: 1.5` fails here and not in a trial.
    try:
        check_value("dataset", spec.dataset)
        check_value("model", spec.model)
        for key, value in spec.fixed.items():
            spec.fixed[key] = check_value(key, value, "fixed.")
        spec.load_space().check(check_value)
    except (ConfigError, SpaceError) as err:
        raise SpecError(str(err)) from None
    return spec


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudySpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} not found (ready specs are in studies/)")
    try:
        body = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    body = body or {}
    for assignment in overrides:
        apply_override(body, assignment)
    return parse_spec(body, source=yaml.safe_dump(body, sort_keys=False))
