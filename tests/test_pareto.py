"""Non-dominated sorting against an independent brute force, plus its invariants."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from results import pareto
from results.pareto import dominates, non_dominated_layers, with_layers


def brute_force_layers(points: list[tuple[float, ...]], modes: list[str]) -> list[int]:
    """Peel layers with plain loops: a point is in the current layer if nothing left beats it."""

    def beats(p: tuple[float, ...], q: tuple[float, ...]) -> bool:
        no_worse, better = True, False
        for a, b, mode in zip(p, q, modes, strict=True):
            if mode == "max":
                a, b = -a, -b
            if a > b:
                no_worse = False
            if a < b:
                better = True
        return no_worse and better

    layers = [0] * len(points)
    remaining = set(range(len(points)))
    layer = 0
    while remaining:
        layer += 1
        current = {i for i in remaining if not any(beats(points[j], points[i]) for j in remaining)}
        for i in current:
            layers[i] = layer
        remaining -= current
    return layers


def random_points(seed: int, n_objectives: int) -> tuple[pd.DataFrame, dict[str, str]]:
    """Small integer grid so that ties and exact duplicates are common."""
    rng = np.random.default_rng(seed)
    n_rows = int(rng.integers(1, 60))
    values = rng.integers(0, 6, size=(n_rows, n_objectives))
    names = [f"obj{k}" for k in range(n_objectives)]
    modes = rng.choice(["min", "max"], size=n_objectives).tolist()
    # a shuffled, non-default index checks alignment with df.index
    index = rng.permutation(n_rows) * 10 + 7
    return pd.DataFrame(values, columns=names, index=index), dict(zip(names, modes, strict=True))


@pytest.mark.parametrize("n_objectives", [2, 3, 4])
def test_matches_brute_force_on_random_integer_points(n_objectives: int) -> None:
    for seed in range(60):
        df, objectives = random_points(seed * 10 + n_objectives, n_objectives)
        points = list(df.itertuples(index=False, name=None))
        expected = brute_force_layers(points, list(objectives.values()))
        layers = non_dominated_layers(df, objectives)
        assert layers.index.equals(df.index)
        assert layers.tolist() == expected, f"seed {seed}"


def test_chunked_comparison_matches_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    # force many tiny chunks so the chunk boundaries are exercised
    monkeypatch.setattr(pareto, "_MAX_PAIRWISE_CELLS", 7)
    df, objectives = random_points(12345, 3)
    points = list(df.itertuples(index=False, name=None))
    expected = brute_force_layers(points, list(objectives.values()))
    assert non_dominated_layers(df, objectives).tolist() == expected


def test_result_is_an_int_series_named_layer() -> None:
    df = pd.DataFrame({"a": [1.0, 2.0, 0.5], "b": [2.0, 1.0, 3.0]})
    layers = non_dominated_layers(df, {"a": "min", "b": "min"})
    assert layers.dtype == np.int64
    assert layers.name == "layer"
    assert layers.tolist() == [1, 1, 1]


def test_max_objective_flips_the_direction() -> None:
    df = pd.DataFrame({"err": [0.1, 0.2], "acc": [0.9, 0.8]})
    assert non_dominated_layers(df, {"err": "min", "acc": "max"}).tolist() == [1, 2]
    assert non_dominated_layers(df, {"err": "max", "acc": "min"}).tolist() == [2, 1]


def test_duplicates_share_a_layer() -> None:
    df = pd.DataFrame({"a": [1, 1, 2, 2], "b": [1, 1, 2, 2]})
    assert non_dominated_layers(df, {"a": "min", "b": "min"}).tolist() == [1, 1, 2, 2]


def test_non_finite_rows_get_layer_zero_and_do_not_affect_the_rest() -> None:
    df = pd.DataFrame(
        {
            "a": [1.0, np.nan, 0.0, 2.0, -np.inf, 3.0],
            "b": [1.0, 0.0, np.nan, 0.0, 0.0, np.inf],
        }
    )
    layers = non_dominated_layers(df, {"a": "min", "b": "min"})
    assert layers.tolist() == [1, 0, 0, 1, 0, 0]


def test_nullable_columns_with_missing_values_are_unranked() -> None:
    df = pd.DataFrame({"a": pd.array([1, None, 2], dtype="Int64"), "b": [2.0, 1.0, 1.0]})
    assert non_dominated_layers(df, {"a": "min", "b": "min"}).tolist() == [1, 0, 1]


def test_empty_frame_gives_empty_series() -> None:
    df = pd.DataFrame({"a": pd.Series(dtype=float), "b": pd.Series(dtype=float)})
    assert non_dominated_layers(df, {"a": "min", "b": "max"}).empty


@pytest.mark.parametrize("n_objectives", [2, 3, 4])
def test_layer_invariants(n_objectives: int) -> None:
    rng = np.random.default_rng(n_objectives)
    names = [f"o{k}" for k in range(n_objectives)]
    df = pd.DataFrame(rng.integers(0, 8, size=(300, n_objectives)), columns=names)
    modes = dict(zip(names, itertools.cycle(["min", "max"]), strict=False))
    signs = np.array([1 if modes[n] == "min" else -1 for n in names])
    points = df.to_numpy() * signs
    layers = non_dominated_layers(df, modes).to_numpy()
    assert layers.min() == 1
    assert set(np.unique(layers)) == set(range(1, layers.max() + 1))  # no gaps
    for k in range(1, layers.max() + 1):
        members = points[layers == k]
        for p, q in itertools.permutations(members, 2):
            assert not dominates(p, q)
        for q in points[layers == k + 1]:
            assert any(dominates(p, q) for p in members)


def test_dominates() -> None:
    assert dominates(np.array([1, 2]), np.array([1, 3]))
    assert not dominates(np.array([1, 3]), np.array([1, 2]))
    assert not dominates(np.array([1, 2]), np.array([1, 2]))  # equal points
    assert not dominates(np.array([0, 3]), np.array([1, 2]))  # incomparable
    with pytest.raises(ValueError, match="shape"):
        dominates(np.array([1, 2]), np.array([1, 2, 3]))


def test_unknown_column_is_named_with_the_allowed_ones() -> None:
    df = pd.DataFrame({"val_error": [0.1], "train_flops": [1e9]})
    with pytest.raises(ValueError, match=r"'val_eror'.*val_error, train_flops"):
        non_dominated_layers(df, {"val_eror": "min", "train_flops": "min"})


def test_unknown_mode_is_named_with_the_allowed_ones() -> None:
    df = pd.DataFrame({"val_error": [0.1], "train_flops": [1e9]})
    with pytest.raises(ValueError, match=r"'train_flops'.*'minimize'.*min, max"):
        non_dominated_layers(df, {"val_error": "min", "train_flops": "minimize"})


def test_no_objectives_and_text_columns_are_rejected() -> None:
    df = pd.DataFrame({"val_error": [0.1], "method": ["rigl"]})
    with pytest.raises(ValueError, match="empty"):
        non_dominated_layers(df, {})
    with pytest.raises(ValueError, match="'method' is not numeric"):
        non_dominated_layers(df, {"val_error": "min", "method": "min"})


def test_with_layers_sorts_by_layer_then_first_objective_best_first() -> None:
    df = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d", "e"],
            "acc": [0.7, 0.9, np.nan, 0.8, 0.6],
            "flops": [1.0, 3.0, 1.0, 2.0, 2.0],
        }
    )
    ranked = with_layers(df, {"acc": "max", "flops": "min"})
    assert ranked["trial_id"].tolist() == ["b", "d", "a", "e", "c"]
    assert ranked["layer"].tolist() == [1, 1, 1, 2, 0]
    assert ranked["layer"].dtype == np.int64
    assert "layer" not in df.columns  # the input is not modified
