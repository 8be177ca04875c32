"""Searchers without Ray: the LHS design, NSGA-II seeded by it, config lists, grids, constraints."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from search_spaces import load_space, parse_parameter
from trainables.config import ConfigError
from tuner.search_algorithms import SEARCHERS
from tuner.searchers import (
    ConfigListSearch,
    LatinHypercubeSampler,
    constraint_values,
    create_sampler,
    grid_configs,
    objective_values,
    parse_constraint,
)
from tuner.spec import SearchConfig, SpecError, parse_spec


@pytest.mark.parametrize("n", [1, 5, 16, 50])
def test_latin_hypercube_has_one_point_per_stratum(n):
    space = load_space("mlp")
    design = space.latin_hypercube(n, seed=3)
    assert len(design) == n
    for name in ("lr", "weight_decay", "sparsity"):
        p = space.parameters[name]
        values = np.array([d[name] for d in design])
        if p.log:
            u = (np.log(values) - math.log(p.low)) / (math.log(p.high) - math.log(p.low))
        else:
            u = (values - p.low) / (p.high - p.low)
        assert sorted(np.floor(u * n).astype(int).clip(0, n - 1)) == list(range(n))
    # categorical strata: the n draws are spread evenly over the choices
    methods = [d["method"] for d in design]
    counts = [methods.count(m) for m in ("dense", "static", "set", "rigl")]
    assert max(counts) - min(counts) <= 1 or n < 4


def test_int_log_dimension_stays_in_bounds_and_is_monotone():
    p = parse_parameter("u", {"type": "int", "low": 1, "high": 1000, "log": True}, "")
    values = [p.from_unit(u) for u in np.linspace(0, 0.999999, 200)]
    assert values == sorted(values) and values[0] == 1 and values[-1] == 1000


def test_design_is_reproducible_and_seeded():
    space = load_space("mlp")
    assert space.latin_hypercube(8, seed=1) == space.latin_hypercube(8, seed=1)
    assert space.latin_hypercube(8, seed=1) != space.latin_hypercube(8, seed=2)


def test_nsga2_first_generation_is_the_design_and_its_parents_come_from_it():
    population = 6
    space = load_space("mlp")
    search = SearchConfig(algorithm="nsga2", population_size=population, init="lhs")
    sampler = create_sampler(search, seed=0, space=space)
    assert isinstance(sampler._random_sampler, LatinHypercubeSampler)
    design = sampler._random_sampler.design
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-3, 0.5, log=True)
        wd = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        return (math.log(lr) + 3) ** 2, (math.log(wd) + 10) ** 2

    study.optimize(objective, n_trials=3 * population)
    first = study.trials[:population]
    assert [t.params["lr"] for t in first] == pytest.approx([d["lr"] for d in design])
    assert all(t.system_attrs["NSGAIISampler:generation"] == 0 for t in first)
    parents = sampler.get_parent_population(study, 1)
    assert {t.number for t in parents} <= set(range(population)) and parents


def test_config_list_search_saves_and_restores_its_place(tmp_path):
    configs = [{"lr": 0.1}, {"lr": 0.2}, {"lr": 0.3}]
    search = ConfigListSearch(configs)
    assert search.suggest("a") == {"lr": 0.1} and search.suggest("b") == {"lr": 0.2}
    assert search.suggest("a") == {"lr": 0.1}  # a restored trial asks again: same config
    search.save(str(tmp_path / "s.pkl"))
    restored = ConfigListSearch([])
    restored.restore(str(tmp_path / "s.pkl"))
    assert restored.suggest("c") == {"lr": 0.3}
    assert restored.suggest("d") == ConfigListSearch.FINISHED


def test_grid_is_the_product_of_categorical_choices(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(
        "parameters:\n  method: {choices: [set, rigl]}\n  distribution: {choices: [uniform, erk]}\n"
        "  lr: {type: float, low: 0.01, high: 0.1}\n"
    )
    space = load_space(str(path))
    with pytest.raises(SpecError, match="grid needs categorical"):
        grid_configs(space)
    grid = grid_configs(space, exclude={"lr"})
    assert len(grid) == 4 and {(g["method"], g["distribution"]) for g in grid} == {
        ("set", "uniform"), ("set", "erk"), ("rigl", "uniform"), ("rigl", "erk")
    }  # fmt: skip


@pytest.mark.parametrize("algorithm", ["nsga2", "tpe", "gp", "random"])
def test_every_optuna_algorithm_builds_a_sampler(algorithm):
    sampler = create_sampler(SearchConfig(algorithm=algorithm), seed=0)
    assert isinstance(sampler, optuna.samplers.BaseSampler)


def test_constraints_follow_optunas_sign_convention():
    assert parse_constraint("inference_flops <= 5e4") == ("inference_flops", "<=", 5e4)
    values = constraint_values(
        {"inference_flops": 4e4, "density": 0.2}, ["inference_flops <= 5e4", "density >= 0.3"]
    )
    assert values[0] < 0 < values[1]  # the first holds, the second does not
    with pytest.raises(ConfigError, match="not understood"):  # (the spec raises a SpecError)
        parse_constraint("flops < 5")


@pytest.mark.parametrize("algorithm", ["nsga2", "tpe", "gp"])
def test_constraints_reach_the_samplers_as_trial_constraints(algorithm):
    """Told through `Trial.set_constraint` (Optuna 5), not the deprecated `constraints_func`
    (a FutureWarning, removed in v7): no warning, and every told trial carries its values."""
    import warnings

    from ray.tune.search.sample import Float

    from tuner.searchers import create_optuna_searcher

    texts = ["density >= 0.5", "val_error <= 0.5"]
    search = SearchConfig(algorithm=algorithm, population_size=4, constraints=texts)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        searcher = create_optuna_searcher(search, {"val_error": "min", "train_flops": "min"}, 0)
    searcher.set_search_properties(None, None, {"x": Float(0.0, 1.0)})
    feasible = {1, 2, 5, 6}  # the rest dominate them, but break a constraint
    for i in range(8 if algorithm != "gp" else 5):
        assert searcher.suggest(f"t{i}") is not None
        ok = i in feasible
        result = {
            "val_error": 0.4 if ok else 0.05 * (i + 1),
            "train_flops": 9.0 if ok else 8.0 - i,
            "density": 0.6 if ok else 0.1,
        }
        searcher.on_trial_complete(f"t{i}", result)
    study = searcher.optuna_study
    for trial in study.trials:
        ok = trial.number in feasible
        expected = {"density >= 0.5": 0.5 - (0.6 if ok else 0.1)}
        expected["val_error <= 0.5"] = (0.4 if ok else 0.05 * (trial.number + 1)) - 0.5
        assert trial.constraints == pytest.approx(expected)
    if algorithm == "nsga2":
        # constrained domination: generation 2's parents are the feasible trials, although
        # on the objectives alone every infeasible trial dominates them
        sampler = study.sampler
        parents = {t.number for t in sampler.get_parent_population(study, 2)}
        assert parents == feasible


@pytest.mark.parametrize(
    "result, values",
    [
        ({"a": 1.0, "b": 2}, [1.0, 2.0]),
        ({"a": float("nan"), "b": 2}, None),
        ({"a": float("inf"), "b": 2}, None),
        ({"b": 2}, None),
        ({"a": 1.0, "b": 2, "diverged": True}, None),
        ({"a": "x", "b": 2}, None),
        (None, None),
    ],
)
def test_objective_values_refuse_bad_results(result, values):
    assert objective_values(result, ["a", "b"]) == values


@pytest.mark.parametrize("algorithm", list(SEARCHERS))
def test_every_registered_search_algorithm_builds_from_a_spec(algorithm):
    """Each algorithm of the registry, from a spec's `search:` with its own settings: an
    Optuna sampler that suggests in the space, or a design of configs."""
    cls = SEARCHERS[algorithm]
    body = {
        "name": "s", "objectives": {"val_error": "min"}, "trials": 4,
        "search": {"algorithm": algorithm, **{k: knob.default for k, knob in cls.knobs.items()}},
    }  # fmt: skip
    if algorithm == "grid":
        body["fixed"] = {k: 0.01 for k in ("lr", "weight_decay", "sparsity")}
        body["fixed"].update(update_interval=10, depth=1, width=16)
    spec = parse_spec(body)
    assert spec.search.algorithm == algorithm
    component = SEARCHERS.create(algorithm, spec.search.settings)
    space = load_space("mlp")
    if cls.config_list:
        design = component.design(space, 4, 0, set(spec.fixed))
        assert design and all("method" in point for point in design)
    else:
        sampler = create_sampler(spec.search, seed=0, space=space)
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: t.suggest_float("lr", 1e-3, 0.5, log=True), n_trials=2)
        assert len(study.trials) == 2


def test_search_settings_are_checked_against_the_chosen_algorithm():
    body = {"name": "s", "objectives": {"val_error": "min"}, "trials": 4}
    with pytest.raises(SpecError, match=r"search.population_size=16 is read only by .*nsga2"):
        parse_spec({**body, "search": {"algorithm": "tpe", "population_size": 16}})
    with pytest.raises(SpecError, match=r"search.population_size=1 is out of range"):
        parse_spec({**body, "search": {"population_size": 1}})
    with pytest.raises(SpecError, match="unknown key 'search.popsize'"):
        parse_spec({**body, "search": {"popsize": 8}})
    with pytest.raises(SpecError, match="not available; allowed: nsga2, tpe"):
        parse_spec({**body, "search": {"algorithm": "cmaes"}})
    with pytest.raises(SpecError, match="only the nsga2, tpe, gp searches take constraints"):
        parse_spec({**body, "search": {"algorithm": "random", "constraints": ["density <= 1"]}})
    spec = parse_spec({**body, "search": {"mutation_prob": None, "crossover_prob": 1}})
    assert spec.search.mutation_prob is None and spec.search.crossover_prob == 1.0


def test_nsga2_initial_sampler_hook_still_exists_in_optuna():
    """The one private Optuna API we use (tuner.searchers.set_initial_sampler): NSGA-II's
    generation-0 sampler. If Optuna renames it, this fails and says where to look."""
    from tuner.searchers import set_initial_sampler

    sampler = optuna.samplers.NSGAIISampler(population_size=4, seed=0)
    assert isinstance(getattr(sampler, "_random_sampler", None), optuna.samplers.BaseSampler), (
        f"optuna {optuna.__version__} changed NSGAIISampler._random_sampler: update "
        "tuner.searchers.set_initial_sampler"
    )
    design = [{"x": 0.123}, {"x": 0.456}, {"x": 0.789}, {"x": 0.321}]
    set_initial_sampler(sampler, LatinHypercubeSampler(design, seed=0))
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=4)
    assert [t.params["x"] for t in study.trials] == [0.123, 0.456, 0.789, 0.321]
    with pytest.raises(RuntimeError, match="no _random_sampler"):
        set_initial_sampler(optuna.samplers.RandomSampler(), None)


@pytest.mark.parametrize("setting", list(SEARCHERS["nsga2"].knobs))
def test_every_nsga2_setting_changes_what_it_suggests(setting, tmp_path):
    """Each declared setting of a search algorithm changes its suggestions (12 Optuna trials
    of a 2-objective toy problem, default against one changed setting)."""
    path = tmp_path / "xy.yaml"
    path.write_text(
        "parameters:\n  x: {type: float, low: 0.0, high: 1.0}\n"
        "  y: {type: float, low: 0.0, high: 1.0}\n"
    )
    space = load_space(str(path))
    changed = {
        "population_size": 3, "crossover_prob": 0.1, "mutation_prob": 0.9,
        "swapping_prob": 0.05, "init": "lhs",
    }[setting]  # fmt: skip

    def suggestions(settings):
        algorithm = SEARCHERS.create("nsga2", {"population_size": 4, **settings})
        study = optuna.create_study(
            directions=["minimize", "minimize"], sampler=algorithm.sampler(0, space)
        )
        study.optimize(
            lambda t: (t.suggest_float("x", 0, 1), 1 - t.suggest_float("y", 0, 1) ** 2),
            n_trials=12,
        )
        return [(t.params["x"], t.params["y"]) for t in study.trials]

    assert suggestions({}) != suggestions({setting: changed})
