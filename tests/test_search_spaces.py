from __future__ import annotations

import pytest

from search_spaces import Condition, SpaceError, available_spaces, load_space, parse_parameter
from trainables.config import check_value


@pytest.mark.parametrize("name", available_spaces())
def test_every_builtin_space_is_valid(name):
    space = load_space(name)
    if space.trainable is None:  # the built-in trainer's hyperparameters, checked by its table
        space.check(check_value)
    assert space.to_tune().keys() == space.parameters.keys()


def test_mlp_space_matches_the_default_study():
    space = load_space("mlp")
    assert space.parameters["method"].choices == ("dense", "static", "set", "rigl")
    assert space.parameters["update_interval"].log and space.parameters["lr"].log
    assert space.parameters["sparsity"].high == 0.99


def test_int_domain_includes_its_upper_bound():
    from ray.tune.search.sample import Integer

    param = parse_parameter("depth", {"type": "int", "low": 1, "high": 4}, "")
    domain = param.to_tune()
    assert isinstance(domain, Integer) and (domain.lower, domain.upper) == (1, 5)
    samples = {domain.sample() for _ in range(400)}
    assert samples == {1, 2, 3, 4}


def test_log_domain_samples_on_a_log_scale():
    import numpy as np

    domain = parse_parameter(
        "u", {"type": "int", "low": 1, "high": 10000, "log": True}, ""
    ).to_tune()
    samples = np.array(domain.sample(size=4000))
    # Uniform in log10: about a quarter of the samples in each decade [1,10), [10,100), ...
    below_100 = np.mean(samples < 100)
    assert 0.4 < below_100 < 0.6


def test_resolve_applies_conditions():
    space = load_space("mlp")
    dense = space.resolve(
        {"method": "dense", "sparsity": 0.7, "distribution": "erk", "update_interval": 5, "lr": 0.1}
    )
    assert dense["sparsity"] == 0.0  # inactive value
    assert "distribution" not in dense and "update_interval" not in dense  # dropped -> null
    static = space.resolve({"method": "static", "sparsity": 0.7, "update_interval": 5})
    assert static["sparsity"] == 0.7 and "update_interval" not in static
    rigl = space.resolve({"method": "rigl", "sparsity": 0.7, "update_interval": 5})
    assert rigl["update_interval"] == 5


@pytest.mark.parametrize(
    "text, config, holds",
    [
        ("method != dense", {"method": "set"}, True),
        ("method != dense", {"method": "dense"}, False),
        ("method in [set, rigl]", {"method": "rigl"}, True),
        ("method not in [set, rigl]", {"method": "rigl"}, False),
        ("depth == 2", {"depth": 2}, True),
    ],
)
def test_conditions(text, config, holds):
    assert Condition.parse(text, "x").holds(config) is holds


@pytest.mark.parametrize(
    "body, message",
    [
        ({"type": "float", "low": 1, "high": 0}, "above high"),
        ({"type": "float", "low": 0, "high": 1, "log": True}, "log scale needs low > 0"),
        ({"type": "int", "low": 0.5, "high": 3}, "whole numbers"),
        ({"type": "categorical", "choices": []}, "non-empty list"),
        ({"type": "float", "low": 0, "high": 1, "step": 2}, "unknown keys"),
        ({"type": "float", "low": 0, "high": 1, "when": "method is dense"}, "not understood"),
        ({"type": "vector"}, "allowed float, int, categorical"),
    ],
)
def test_malformed_parameters(body, message):
    with pytest.raises(SpaceError, match=message):
        parse_parameter("p", body, "")


def condition_mismatches(space) -> list[str]:
    """Where a knob's `when` is active for a searched component that does not read it, or
    inactive for one that does (the registry's declarations decide)."""
    from trainables.config import knob_table

    table = knob_table()
    found = []
    for knob, param in space.parameters.items():
        readers = set(table[knob].readers)
        for slot in {s for s, _ in readers}:
            if slot not in space.parameters or (param.when and param.when.name != slot):
                continue
            for component in space.parameters[slot].choices:
                active = param.when is None or param.when.holds({slot: component})
                if active != ((slot, component) in readers):
                    found.append(
                        f"{knob} is {'active' if active else 'inactive'} for {slot}={component}, "
                        f"which {'does not read' if active else 'reads'} it"
                    )
    return found


BUILTIN_TRAINER_SPACES = [n for n in available_spaces() if load_space(n).trainable is None]


@pytest.mark.parametrize("name", BUILTIN_TRAINER_SPACES)
def test_space_conditions_are_what_the_registry_says(name):
    """A knob's `when` is active for exactly the searched components that read it (update_end
    for set, rigl, prune_regrow and hypersparse; block_size for pattern block), so a space file
    cannot drift from the methods' declarations."""
    assert condition_mismatches(load_space(name)) == []


def test_a_space_that_disagrees_with_the_registry_is_caught(tmp_path):
    path = tmp_path / "drift.yaml"
    path.write_text(
        "parameters:\n"
        "  method: {type: categorical, choices: [set, rigl]}\n"
        "  skip_weight_update_on_mask_update: {type: categorical, choices: [true, false], "
        "when: 'method in [set, rigl]'}\n"
        "  block_size: {type: int, low: 2, high: 8}\n"
    )
    assert condition_mismatches(load_space(str(path))) == [
        "skip_weight_update_on_mask_update is active for method=set, which does not read it"
    ]  # (block_size: its reader, pattern, is not searched here; the spec check covers it)
