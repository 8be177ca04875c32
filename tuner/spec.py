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

from contract.errors import ConfigError
from contract.errors import SpecError as SpecError  # re-exported
from contract.metrics import METRICS
from search_spaces import SearchSpace, SpaceError, load_space
from trainables.config import FIELDS, check_value
from tuner import strict_yaml

KINDS = ("optimize", "random", "reproduction", "reevaluate", "evaluate")
ALGORITHMS = ("nsga2", "tpe", "gp", "random", "lhs", "grid")
SCHEDULERS = ("fifo", "moasha", "asha")  # tuner/schedulers.py
SEARCHING_KINDS = ("optimize", "random")  # the kinds that search a space
FROM_KINDS = ("reevaluate", "evaluate")  # the kinds that select configs from finished studies
BUILTIN_TRAINABLE = "trainables.train"
# Objectives of the fixed-config kinds: they score on test (their configs were chosen on val).
TEST_OBJECTIVES = {"test_error": "min", "train_flops": "min", "inference_flops": "min"}
REPRODUCTION_SPARSITIES = (
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99,
)  # fmt: skip
EVALUATE_SPARSITIES = (0.2, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)
MODES = ("min", "max")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class SearchConfig:
    algorithm: str = "nsga2"
    population_size: int = 8
    crossover_prob: float = 0.9
    mutation_prob: float | None = None  # Optuna's default: 1 / number of parameters
    swapping_prob: float = 0.5
    init: str | None = None  # "lhs": NSGA-II's first generation is a Latin-hypercube design
    constraints: list[str] = field(default_factory=list)  # e.g. ["inference_flops <= 5e4"]


@dataclass
class SchedulerConfig:
    """`scheduler:` of the spec: early stopping (tuner/schedulers.py). max_t defaults to the
    trial's epochs (fixed.epochs, else the trainer's default)."""

    algorithm: str = "fifo"  # fifo: every trial its full budget | moasha | asha
    grace_period: int = 1  # epochs before the first rung
    reduction_factor: float = 3  # rungs at grace_period * rf**k; 1/rf of a rung go on
    max_t: int | None = None  # the full budget, in epochs

    @property
    def early_stopping(self) -> bool:
        return self.algorithm != "fifo"


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
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    fixed: dict[str, Any] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int | None = None
    storage: str = "runs"
    trainable: str = BUILTIN_TRAINABLE  # or "package.module:function" (a custom trainable)
    sources: list[str] = field(default_factory=list)  # YAML key `from`: studies to select from
    layers: int = 2  # reevaluate: the first k non-dominated layers
    top: int = 10  # evaluate: the N most accurate layer-1 configs
    sparsities: list[float] = field(default_factory=list)
    trial_timeout_s: float | None = None  # wall clock per trial; past it the trial fails
    study_timeout_s: float | None = None  # wall clock per driver; past it the study pauses
    source: str = ""  # the YAML text after overrides, kept with the results

    @property
    def builtin(self) -> bool:
        return self.trainable == BUILTIN_TRAINABLE

    @property
    def study_dir(self) -> Path:
        return Path(self.storage) / self.name

    def load_space(self) -> SearchSpace:
        try:
            return load_space(self.space)
        except SpaceError as err:
            raise SpecError(str(err)) from None

    def trial_defaults(self) -> dict[str, Any]:
        """Hyperparameters every trial gets: the study's dataset and model, then `fixed`."""
        if not self.builtin:
            return dict(self.fixed)
        return {"dataset": self.dataset, "model": self.model, **self.fixed}


TOP_KEYS = {f for f in StudySpec.__dataclass_fields__ if f not in ("source", "sources")} | {"from"}


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
    try:
        value = strict_yaml.load(text) if text else ""
    except yaml.YAMLError as err:
        raise SpecError(f"--set {assignment!r}: the value is not valid YAML ({err})") from None
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


def _timeout(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise SpecError(
            f"{where}={value!r}: expected seconds > 0 (e.g. {where}: 600), or leave it out"
        )
    return float(value)


def check_trainable(path: str) -> str:
    """A custom trainable, 'package.module:function' or 'file.py:function': importable now,
    so a typo fails before Ray starts. File paths become absolute (workers run elsewhere)."""
    target, _, name = path.rpartition(":")
    if not target or not re.match(r"^\w+$", name):
        raise SpecError(
            f"trainable={path!r}: write 'package.module:function' or 'path/to/file.py:function' "
            "(a function of the config that calls ray.tune.report)"
        )
    if target.endswith(".py"):
        if not Path(target).is_file():
            raise SpecError(f"trainable={path!r}: file {target!r} not found")
        path = f"{Path(target).resolve()}:{name}"
    from tuner.imports import import_function

    try:
        function = import_function(path)
    except (ImportError, AttributeError, SyntaxError) as err:
        raise SpecError(f"trainable={path!r} cannot be imported: {err}") from None
    except Exception as err:  # the module's own code raised while it was imported
        first = (str(err).strip().splitlines() or [""])[0][:200]
        if target.endswith(".py"):
            where, see = target, f"python {target}"
        else:
            where, see = f"module {target}", f"python -c 'import {target}'"
        raise SpecError(
            f"trainable={path!r}: importing {where} raised {type(err).__name__}: {first} "
            f"(fix that file; `{see}` shows the traceback)"
        ) from None
    if not callable(function):
        raise SpecError(
            f"trainable={path!r}: {name} is not a function (it is {repr(function)[:40]}); "
            f"write `def {name}(config): ... ray.tune.report(metrics)`"
        )
    return path


def _required(body: dict[str, Any], key: str, example: str) -> Any:
    if body.get(key) in (None, {}, "", []):
        raise SpecError(f"{key} is required (e.g. {example})")
    return body[key]


def parse_spec(body: dict[str, Any], source: str = "") -> StudySpec:
    if not isinstance(body, dict):
        raise SpecError("the spec must be a YAML mapping of keys to values")
    for key in body:
        if key not in TOP_KEYS:
            raise _unknown(key, TOP_KEYS, "")
    name = str(_required(body, "name", "name: my-study"))
    if not NAME.match(name):
        raise SpecError(f"name={name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    kind = body.get("kind", "optimize")
    if kind not in KINDS:
        raise SpecError(f"kind={kind!r} is not available; allowed: {', '.join(KINDS)}")
    trainable = str(body.get("trainable", BUILTIN_TRAINABLE))
    builtin = trainable == BUILTIN_TRAINABLE
    if not builtin:
        trainable = check_trainable(trainable)

    searching = kind in SEARCHING_KINDS
    if searching:
        objectives = _required(body, "objectives", "objectives: {val_error: min, train_flops: min}")
    else:
        objectives = body.get("objectives") or dict(TEST_OBJECTIVES)
    if not isinstance(objectives, dict):
        raise SpecError(
            f"objectives={objectives!r}: expected a mapping of metric to min|max, "
            "e.g. {val_error: min, train_flops: min}"
        )
    for metric, mode in objectives.items():
        if builtin and metric not in METRICS:
            raise _unknown(metric, METRICS, "objectives.")
        if mode not in MODES:
            raise SpecError(f"objectives.{metric}={mode!r}: allowed min, max")

    search = _sub(SearchConfig, body.get("search"), "search")
    if kind == "random":  # shorthand: an unbiased Latin-hypercube sample of the space
        search.algorithm = "lhs"
    if search.algorithm not in ALGORITHMS:
        raise SpecError(f"search.algorithm={search.algorithm!r}: allowed {', '.join(ALGORITHMS)}")
    _positive_int(search.population_size, "search.population_size", 2)
    for prob in ("crossover_prob", "mutation_prob", "swapping_prob"):
        value = getattr(search, prob)
        if value is not None and not (isinstance(value, int | float) and 0 <= value <= 1):
            raise SpecError(f"search.{prob}={value!r}: expected a probability in [0, 1]")
    if search.init not in (None, "lhs"):
        raise SpecError(f"search.init={search.init!r}: allowed lhs (or leave it out)")
    if search.init and search.algorithm != "nsga2":
        raise SpecError("search.init: lhs seeds NSGA-II's first generation; use algorithm: nsga2")
    if not isinstance(search.constraints, list):
        raise SpecError(f"search.constraints={search.constraints!r}: expected a list of strings")
    if search.constraints and search.algorithm not in ("nsga2", "tpe", "gp"):
        raise SpecError("search.constraints: only the nsga2, tpe and gp searches take constraints")
    for text in search.constraints:
        from tuner.searchers import parse_constraint  # late: searchers import this module

        metric, _, _ = parse_constraint(text)
        if builtin and metric not in METRICS:
            raise _unknown(metric, METRICS, "search.constraints: ")

    scheduler = _sub(SchedulerConfig, body.get("scheduler"), "scheduler")
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

    sources = body.get("from") or []
    if isinstance(sources, str):
        sources = [sources]
    if kind in FROM_KINDS:
        if not sources:
            raise SpecError(f"from is required for kind {kind} (e.g. from: [digits-nsga2])")
    elif sources:
        raise SpecError(f"from: only the {' and '.join(FROM_KINDS)} kinds select from studies")
    sparsities = body.get("sparsities") or []
    if not isinstance(sparsities, list):
        raise SpecError(f"sparsities={sparsities!r}: expected a list, e.g. [0.5, 0.9]")
    trials = body.get("trials")
    if searching:
        trials = _positive_int(_required(body, "trials", "trials: 24"), "trials")
    elif trials is not None:
        raise SpecError(f"trials: kind {kind} runs a fixed set of configs; leave trials out")

    spec = StudySpec(
        name=name,
        kind=kind,
        description=str(body.get("description", "")),
        objectives=dict(objectives),
        trials=trials or 0,
        dataset=body.get("dataset", "digits"),
        model=body.get("model", "mlp"),
        space=str(body.get("space", body.get("model", "mlp"))),
        seeds=list(seeds),
        search=search,
        scheduler=scheduler,
        fixed=dict(fixed),
        resources=resources,
        max_concurrent=None
        if body.get("max_concurrent") is None
        else _positive_int(body["max_concurrent"], "max_concurrent"),
        storage=str(body.get("storage", "runs")),
        trainable=trainable,
        sources=[str(x) for x in sources],
        layers=_positive_int(body.get("layers", 2), "layers"),
        top=_positive_int(body.get("top", 10), "top"),
        sparsities=list(sparsities),
        trial_timeout_s=_timeout(body.get("trial_timeout_s"), "trial_timeout_s"),
        study_timeout_s=_timeout(body.get("study_timeout_s"), "study_timeout_s"),
        source=source,
    )
    if not builtin:
        spec.load_space()  # a custom trainable's hyperparameters are its own: check the form
        check_scheduler(spec)
        return spec
    # Hyperparameters: the dataset, model, fixed values, sparsities and the space's bounds, all
    # checked against the trainable's table, so `sparsity: 1.5` fails here and not in a trial.
    try:
        check_value("dataset", spec.dataset)
        check_value("model", spec.model)
        for key, value in spec.fixed.items():
            spec.fixed[key] = check_value(key, value, "fixed.")
        for i, value in enumerate(spec.sparsities):
            spec.sparsities[i] = check_value("sparsity", value, f"sparsities[{i}]: ")
        if searching:
            space = spec.load_space()
            if space.trainable is not None:
                raise SpecError(
                    f"space={spec.space!r} is the search space of the custom trainable "
                    f"{space.trainable}; set trainable: {space.trainable} or use another space"
                )
            space.check(check_value)
            if not set(space.parameters) - set(spec.trial_defaults()):
                raise SpecError(
                    f"the search space is empty: every parameter of space={spec.space!r} is "
                    "pinned by fixed/dataset/model; remove one from fixed, or use a space "
                    "with parameters to search"
                )
    except (ConfigError, SpaceError) as err:
        raise SpecError(str(err)) from None
    check_scheduler(spec)  # after fixed.epochs is checked: max_t is compared with it
    return spec


def check_scheduler(spec: StudySpec) -> None:
    """The `scheduler:` section: its knobs, and max_t against the trials' epoch budget."""
    config = spec.scheduler
    if config.algorithm not in SCHEDULERS:
        allowed = ", ".join(SCHEDULERS)
        raise SpecError(f"scheduler.algorithm={config.algorithm!r}: allowed {allowed}")
    if not config.early_stopping:
        return
    if spec.kind not in SEARCHING_KINDS:
        raise SpecError(
            f"scheduler.algorithm={config.algorithm}: kind {spec.kind} trains a fixed set of "
            "configs to the end; early stopping is for the optimize and random kinds"
        )
    _positive_int(config.grace_period, "scheduler.grace_period")
    rf = config.reduction_factor
    if isinstance(rf, bool) or not isinstance(rf, int | float) or not rf > 1:
        raise SpecError(f"scheduler.reduction_factor={rf!r}: expected a number > 1 (e.g. 3)")
    epochs = spec.fixed.get("epochs")
    if epochs is None and spec.builtin:
        epochs = FIELDS["epochs"].default
    if config.max_t is None:
        if epochs is None:
            raise SpecError(
                "scheduler.max_t is required for a custom trainable without fixed.epochs "
                "(the full budget, in the epochs or training_iteration it reports)"
            )
        config.max_t = epochs
    _positive_int(config.max_t, "scheduler.max_t")
    if epochs is not None and config.max_t != epochs:
        raise SpecError(
            f"scheduler.max_t={config.max_t} but every trial trains epochs={epochs}: set them "
            f"equal (fixed.epochs={config.max_t}) or leave scheduler.max_t out"
        )
    if config.grace_period >= config.max_t:
        raise SpecError(
            f"scheduler.grace_period={config.grace_period} >= max_t={config.max_t}: no rung to "
            "stop a trial at; lower grace_period or raise the epochs"
        )
    if spec.builtin and "epochs" in spec.load_space().parameters and "epochs" not in spec.fixed:
        raise SpecError(
            f"scheduler.algorithm={config.algorithm}: space={spec.space!r} searches epochs; "
            "early stopping needs one budget for every trial: pin it (fixed.epochs=...)"
        )


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudySpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} not found (ready specs are in studies/)")
    try:
        body = strict_yaml.load(path.read_text())
    except strict_yaml.DuplicateKeyError as err:
        raise SpecError(
            f"{path}: duplicate key {err.key!r} at line {err.line} (first at line "
            f"{err.first_line}); keep one of them"
        ) from None
    except yaml.YAMLError as err:  # one line: where, and what the parser expected
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(
            f"{path}: not valid YAML{where}: {problem} (check brackets, quotes and indentation)"
        ) from None
    body = body or {}
    for assignment in overrides:
        apply_override(body, assignment)
    return parse_spec(body, source=yaml.safe_dump(body, sort_keys=False))
