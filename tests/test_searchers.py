"""Searchers without Ray: the LHS design, NSGA-II seeded by it, config lists, grids, constraints."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from search_spaces import load_space, parse_parameter
from tuner.searchers import (
    ConfigListSearch,
    LatinHypercubeSampler,
    constraint_values,
    create_sampler,
    grid_configs,
    objective_values,
    parse_constraint,
)
from tuner.spec import SearchConfig, SpecError


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
    with pytest.raises(SpecError, match="not understood"):
        parse_constraint("flops < 5")


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
