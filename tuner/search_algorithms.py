"""Search algorithms as components: `search.algorithm` = nsga2 | tpe | gp | random | lhs | grid,
each one class with its own typed settings (the spec's `search:` keys), registered by name.

The spec's `search:` section is validated from these declarations (unknown keys, types,
ranges, and settings that the chosen algorithm does not read); `tuner/searchers.py` builds
the Optuna sampler or the config list from the chosen class. Imports neither Ray nor (until a
sampler is built) Optuna, so a bad `search:` fails fast.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from trainables.config import ConfigError, check_value
from trainables.registry import Component, Knob, Registry

_CONSTRAINT = re.compile(r"^\s*(\w+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


def parse_constraint(text: str) -> tuple[str, str, float]:
    """'inference_flops <= 5e4' -> (metric, op, bound)."""
    match = _CONSTRAINT.match(str(text))
    if not match:
        raise ConfigError(
            f"search.constraints: {text!r} not understood; write e.g. 'inference_flops <= 5e4'"
        )
    metric, op, bound = match.groups()
    return metric, op, float(bound)


class SearchAlgorithm(Component):
    """How a study picks configs. Either an Optuna sampler (`sampler`) behind Tune's
    OptunaSearch, or a fixed list of configs (`config_list`, `design`)."""

    config_list = False  # True: the configs are known up front (lhs, grid)
    takes_constraints = False  # ranks feasible trials first (Optuna's Trial.constraints)

    def sampler(self, seed: int, space=None, exclude=()):
        raise NotImplementedError

    def design(self, space, trials: int, seed: int, exclude) -> list[dict[str, Any]]:
        raise NotImplementedError


# its settings are spec keys (search.population_size), not trial hyperparameters
SEARCHERS = Registry(
    "search.algorithm", "how a study picks the configs to try", SearchAlgorithm, "search"
)


@SEARCHERS.register("nsga2")
class NSGA2(SearchAlgorithm):
    """Optuna's NSGA-II: generations of `population_size`, crossover and mutation."""

    takes_constraints = True
    knobs = {
        "population_size": Knob(8, int, "nsga2: trials per generation", low=2),
        "crossover_prob": Knob(0.9, float, "nsga2: crossover probability", low=0.0, high=1.0),
        "mutation_prob": Knob(
            None,
            float,
            "nsga2: mutation probability (default: 1 / number of parameters)",
            low=0.0,
            high=1.0,
        ),  # fmt: skip
        "swapping_prob": Knob(0.5, float, "nsga2: uniform crossover's swap", low=0.0, high=1.0),
        "init": Knob(
            None,
            str,
            "nsga2: lhs makes the first generation a Latin-hypercube design",
            choices=("lhs",),
        ),  # fmt: skip
    }

    def sampler(self, seed: int, space=None, exclude=()):
        import optuna

        v = self.values
        sampler = optuna.samplers.NSGAIISampler(
            population_size=v["population_size"],
            crossover_prob=v["crossover_prob"],
            mutation_prob=v["mutation_prob"],
            swapping_prob=v["swapping_prob"],
            seed=seed,
        )
        if v["init"] == "lhs" and space is not None:
            from tuner.searchers import LatinHypercubeSampler, set_initial_sampler

            design = space.latin_hypercube(v["population_size"], seed, exclude)
            set_initial_sampler(sampler, LatinHypercubeSampler(design, seed))
        return sampler


@SEARCHERS.register("tpe")
class TPE(SearchAlgorithm):
    """Optuna's multivariate TPE (multi-objective: MOTPE)."""

    takes_constraints = True

    def sampler(self, seed: int, space=None, exclude=()):
        import optuna

        return optuna.samplers.TPESampler(seed=seed, multivariate=True)


@SEARCHERS.register("gp")
class GP(SearchAlgorithm):
    """Optuna's Gaussian-process sampler."""

    takes_constraints = True

    def sampler(self, seed: int, space=None, exclude=()):
        import optuna

        return optuna.samplers.GPSampler(seed=seed)


@SEARCHERS.register("random")
class RandomSearch(SearchAlgorithm):
    """Independent uniform samples (Optuna's RandomSampler)."""

    def sampler(self, seed: int, space=None, exclude=()):
        import optuna

        return optuna.samplers.RandomSampler(seed=seed)


@SEARCHERS.register("lhs")
class LatinHypercube(SearchAlgorithm):
    """A Latin-hypercube design of `trials` configs (kind random's unbiased sample)."""

    config_list = True

    def design(self, space, trials: int, seed: int, exclude) -> list[dict[str, Any]]:
        return space.latin_hypercube(trials, seed, exclude=exclude)


@SEARCHERS.register("grid")
class Grid(SearchAlgorithm):
    """Every combination of the space's categorical parameters."""

    config_list = True

    def design(self, space, trials: int, seed: int, exclude) -> list[dict[str, Any]]:
        from tuner.searchers import grid_configs

        return grid_configs(space, exclude=exclude)


def search_settings(body: dict[str, Any], algorithm: str) -> dict[str, Any]:
    """The `search:` mapping checked against the registry: `algorithm`, `constraints` and the
    chosen algorithm's settings (defaults filled in). Raises ConfigError naming the key."""
    if algorithm not in SEARCHERS:
        raise ConfigError(
            f"search.algorithm={algorithm!r} is not available; allowed: {', '.join(SEARCHERS)}"
        )
    chosen = SEARCHERS[algorithm]
    declared = SEARCHERS.declared()
    settings: dict[str, Any] = {}
    for key, value in body.items():
        if key in ("algorithm", "constraints"):
            continue
        if key not in declared:
            allowed = ["algorithm", "constraints", *declared]
            raise ConfigError(f"unknown key 'search.{key}' (allowed: {', '.join(allowed)})")
        if key not in chosen.knobs:
            readers = ", ".join(SEARCHERS.readers(key))
            raise ConfigError(
                f"search.{key}={value!r} is read only by search.algorithm {readers}, not by "
                f"the chosen {algorithm}: remove it, or choose {readers}"
            )
        knob = chosen.knobs[key]
        if value is None and knob.default is None:
            settings[key] = None  # "leave it out": the algorithm's own default
        else:
            settings[key] = check_value(key, value, "search.", {key: _Row(knob)})
    constraints = body.get("constraints") or []
    if not isinstance(constraints, list):
        raise ConfigError(f"search.constraints={constraints!r}: expected a list of strings")
    if constraints and not chosen.takes_constraints:
        takers = ", ".join(n for n in SEARCHERS if SEARCHERS[n].takes_constraints)
        raise ConfigError(f"search.constraints: only the {takers} searches take constraints")
    for text in constraints:
        parse_constraint(text)
    defaults = {k: knob.default for k, knob in chosen.knobs.items()}
    return {"algorithm": algorithm, "constraints": list(constraints), **defaults, **settings}


@dataclasses.dataclass(frozen=True)
class _Row:  # the shape check_value expects of a table row
    knob: Knob
