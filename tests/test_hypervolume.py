"""Hypervolume against an independent grid count; config identity; aggregation over seeds."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from results.aggregate import (
    CONFIG_ID,
    RUN_SPECIFIC,
    aggregate_over_seeds,
    config_hash,
    config_id,
    with_config_id,
)
from results.hypervolume import hypervolume, hypervolume_history, reference_point
from results.pareto import non_dominated_layers


def grid_hypervolume(points: np.ndarray, modes: list[str], reference: list[int]) -> int:
    """Count the unit cells of the integer grid dominated by integer points (exact).

    Works in the objectives' own directions: for "min" the cell [c, c+1) up to the reference
    is dominated by p if p <= c; for "max" the cell [c, c+1) down to the reference is
    dominated by p if p >= c + 1.
    """
    axes = []
    for j, mode in enumerate(modes):
        if mode == "min":
            low = min(int(points[:, j].min()), reference[j]) if len(points) else reference[j]
            axes.append(np.arange(low, reference[j]))
        else:
            high = max(int(points[:, j].max()), reference[j]) if len(points) else reference[j]
            axes.append(np.arange(reference[j], high))
    total = 0
    for cell in itertools.product(*axes):
        for p in points:
            if all(
                p[j] <= cell[j] if mode == "min" else p[j] >= cell[j] + 1
                for j, mode in enumerate(modes)
            ):
                total += 1
                break
    return total


def random_case(seed: int, n_objectives: int):
    """Small integer points (ties, duplicates), mixed modes, a reference some points miss."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 25 if n_objectives < 4 else 12))
    values = rng.integers(0, 6 if n_objectives < 4 else 4, size=(n, n_objectives))
    if n > 2:
        values[-1] = values[0]  # an exact duplicate
    modes = rng.choice(["min", "max"], size=n_objectives).tolist()
    # reference mostly beyond the worst value, sometimes inside the cloud (some points miss)
    reference = [
        int(rng.integers(4, 8)) if mode == "min" else int(rng.integers(-2, 2)) for mode in modes
    ]
    names = [f"f{k}" for k in range(n_objectives)]
    df = pd.DataFrame(values, columns=names)
    return df, dict(zip(names, modes, strict=True)), reference


@pytest.mark.parametrize("n_objectives", [2, 3, 4])
def test_hypervolume_equals_the_grid_count(n_objectives: int) -> None:
    for seed in range(40 if n_objectives < 4 else 20):
        df, objectives, reference = random_case(seed * 7 + n_objectives, n_objectives)
        expected = grid_hypervolume(df.to_numpy(), list(objectives.values()), reference)
        assert hypervolume(df, objectives, reference) == pytest.approx(expected, abs=1e-9)
        as_dict = dict(zip(objectives, reference, strict=True))
        assert hypervolume(df, objectives, as_dict) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("n_objectives", [2, 3, 4])
def test_hypervolume_is_the_volume_of_layer_one(n_objectives: int) -> None:
    """Only layer 1 adds volume: dropping the other layers or duplicating rows changes nothing."""
    for seed in range(10):
        df, objectives, reference = random_case(seed + 100 * n_objectives, n_objectives)
        front = df[non_dominated_layers(df, objectives) == 1]
        doubled = pd.concat([df, df, front])
        volume = hypervolume(df, objectives, reference)
        assert hypervolume(front, objectives, reference) == pytest.approx(volume)
        assert hypervolume(doubled, objectives, reference) == pytest.approx(volume)


def test_flipping_a_column_and_its_mode_keeps_the_volume() -> None:
    df = pd.DataFrame({"a": [1.0, 2.0, 3.5], "b": [3.0, 1.5, 1.0], "c": [0.2, 0.9, 0.4]})
    objectives = {"a": "min", "b": "min", "c": "max"}
    flipped = df.assign(b=-df["b"])
    flipped_objectives = {"a": "min", "b": "max", "c": "max"}
    reference = {"a": 4.0, "b": 4.0, "c": 0.0}
    expected = hypervolume(df, objectives, reference)
    assert expected > 0
    assert hypervolume(flipped, flipped_objectives, {**reference, "b": -4.0}) == pytest.approx(
        expected
    )
    # objective order does not matter either
    reordered = {"c": "max", "a": "min", "b": "min"}
    assert hypervolume(df, reordered, reference) == pytest.approx(expected)


def test_two_objective_volume_by_hand() -> None:
    df = pd.DataFrame({"err": [0.1, 0.3, 0.3, 0.5], "acc": [0.2, 0.6, 0.6, 0.5]})
    # min err, max acc; reference err 1.0, acc 0.0:
    # (0.1, 0.2) gives 0.9 x 0.2; (0.3, 0.6) adds 0.7 x 0.4; (0.5, 0.5) is dominated
    volume = hypervolume(df, {"err": "min", "acc": "max"}, [1.0, 0.0])
    assert volume == pytest.approx(0.9 * 0.2 + 0.7 * 0.4)


def test_default_reference_is_worst_plus_ten_percent_of_the_range() -> None:
    df = pd.DataFrame(
        {"err": [0.1, 0.5, np.nan], "flops": [100.0, 300.0, 50.0], "acc": [0.9, 0.5, 0.1]}
    )
    objectives = {"err": "min", "flops": "min", "acc": "max"}
    reference = reference_point(df, objectives)
    # the NaN row is not ranked, so it does not move the reference
    assert reference == pytest.approx({"err": 0.54, "flops": 320.0, "acc": 0.46})
    assert hypervolume(df, objectives) == pytest.approx(hypervolume(df, objectives, reference))
    # constant objective: the range falls back to |worst| (1 when that is 0)
    constant = pd.DataFrame({"a": [2.0, 2.0], "b": [0.0, 0.0]})
    assert reference_point(constant, {"a": "min", "b": "max"}) == pytest.approx(
        {"a": 2.2, "b": -0.1}
    )
    assert hypervolume(constant, {"a": "min", "b": "max"}) == pytest.approx(0.2 * 0.1)


def test_non_finite_rows_and_empty_frames() -> None:
    df = pd.DataFrame({"a": [1.0, np.nan, np.inf], "b": [1.0, 0.0, 0.0]})
    objectives = {"a": "min", "b": "min"}
    assert hypervolume(df, objectives, [2.0, 2.0]) == pytest.approx(1.0)
    assert hypervolume(df.iloc[1:], objectives, [2.0, 2.0]) == 0.0
    with pytest.raises(ValueError, match="no row has finite values"):
        reference_point(df.iloc[1:], objectives)


def test_bad_arguments_are_named() -> None:
    df = pd.DataFrame({f"f{k}": [1.0] for k in range(5)})
    with pytest.raises(ValueError, match="1 to 4 objectives"):
        hypervolume(df, {f"f{k}": "min" for k in range(5)})
    with pytest.raises(ValueError, match="2 values for 3 objectives"):
        hypervolume(df, {"f0": "min", "f1": "min", "f2": "min"}, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"no value for objective\(s\) \['f1'\]"):
        hypervolume(df, {"f0": "min", "f1": "min"}, {"f0": 2.0})
    with pytest.raises(ValueError, match="unknown objective column"):
        hypervolume(df, {"nope": "min"})


def test_history_follows_completion_order_with_one_reference() -> None:
    df = pd.DataFrame(
        {
            "trial_id": ["c", "a", "b", "d"],
            "status": ["completed", "completed", "failed", "completed"],
            "x": [1.0, 3.0, np.nan, 2.0],
            "y": [3.0, 1.0, np.nan, 2.0],
            # row order differs from completion order
            "finished_at": pd.to_datetime(
                ["2026-01-01 10:03", "2026-01-01 10:01", "2026-01-01 10:02", "2026-01-01 10:04"],
                utc=True,
            ),
        }
    )
    objectives = {"x": "min", "y": "min"}
    history = hypervolume_history(df, objectives, reference=[4.0, 4.0])
    assert history["trial_id"].tolist() == ["a", "b", "c", "d"]
    assert history["trial"].tolist() == [1, 2, 3, 4]
    # b failed: the volume stays; the grid count gives the expected volumes
    expected = [
        grid_hypervolume(np.array(points), ["min", "min"], [4, 4])
        for points in ([[3, 1]], [[3, 1]], [[3, 1], [1, 3]], [[3, 1], [1, 3], [2, 2]])
    ]
    assert history["hypervolume"].tolist() == pytest.approx(expected)
    # the box runs from the best x and y (1, 1) to the reference (4, 4)
    assert history["hypervolume_fraction"].tolist() == pytest.approx([v / 9 for v in expected])
    # default reference: from every completed row, fixed for the whole history
    default = hypervolume_history(df, objectives)
    completed = df[df["status"] == "completed"]
    assert default["hypervolume"].iloc[-1] == pytest.approx(hypervolume(completed, objectives))
    assert default["hypervolume"].is_monotonic_increasing


def test_history_without_finished_at_keeps_row_order() -> None:
    df = pd.DataFrame({"trial_id": ["p", "q"], "x": [2.0, 1.0], "y": [1.0, 2.0]})
    history = hypervolume_history(df, {"x": "min", "y": "min"}, [3.0, 3.0])
    assert history["trial_id"].tolist() == ["p", "q"]
    assert history["hypervolume"].tolist() == pytest.approx([2.0, 3.0])


# --- config identity -------------------------------------------------------------------


def configs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial_id": ["t1", "t2", "t3", "t4"],
            "seed": [1, 2, 1, 3],
            "config/method": ["rigl", "rigl", "set", "rigl"],
            "config/sparsity": [0.9, 0.9, 0.9, 0.9],
            "config/width": [64, 64, 64, 64],
            "config/update_interval": pd.array([100, 100, pd.NA, 100], dtype="Int64"),
            "config/seed": [1, 2, 1, 3],
            "config/data_dir": ["/a", "/b", "/a", "/c"],
            "config/device": ["cpu", "cuda:0", "cpu", "cpu"],
            "val_error": [0.10, 0.14, 0.20, 0.12],
        }
    )


def test_config_id_ignores_seed_and_run_specific_columns() -> None:
    ids = config_id(configs())
    assert ids.name == CONFIG_ID
    assert ids.iloc[0] == ids.iloc[1] == ids.iloc[3] != ids.iloc[2]
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


def test_config_id_is_stable_across_column_order_dtypes_and_missing_values() -> None:
    df = configs()
    base = config_id(df)
    assert config_id(df[df.columns[::-1]]).tolist() == base.tolist()
    as_float = df.assign(**{"config/width": df["config/width"].astype(float)})
    assert config_id(as_float).tolist() == base.tolist()
    as_object = df.astype({"config/update_interval": object})
    assert config_id(as_object).tolist() == base.tolist()
    # a null hyperparameter equals an absent one, whether None, NaN or NA
    row = df.iloc[[2]].drop(columns="config/update_interval")
    assert config_id(row).iloc[0] == base.iloc[2]
    with_nan = df.iloc[[2]].astype({"config/update_interval": float})
    assert config_id(with_nan).iloc[0] == base.iloc[2]
    # the index is kept, for joining back
    shuffled = df.set_index(pd.Index([9, 3, 7, 1]))
    assert config_id(shuffled).index.tolist() == [9, 3, 7, 1]


def test_config_id_tells_values_and_kinds_apart() -> None:
    assert config_hash({"a": 1}) == config_hash({"config/a": 1.0})
    assert config_hash({"a": 1}) != config_hash({"a": True})
    assert config_hash({"a": 1}) != config_hash({"a": "1"})
    assert config_hash({"a": 0.9}) != config_hash({"a": 0.95})
    assert config_hash({"a": 1, "b": 2}) != config_hash({"a": 2, "b": 1})
    # a config identified across sparsities
    df = configs().assign(**{"config/sparsity": [0.5, 0.9, 0.5, 0.8]})
    across = config_id(df, exclude=(*RUN_SPECIFIC, "sparsity"))
    assert across.iloc[0] == across.iloc[1] == across.iloc[3]


def test_config_id_is_the_same_in_another_process() -> None:
    code = (
        "import pandas as pd\n"
        "from results.aggregate import config_id\n"
        "df = pd.DataFrame({'config/method': ['rigl'], 'config/lr': [0.1], 'config/width': [64],"
        " 'config/seed': [3]})\n"
        "print(config_id(df).iloc[0])\n"
    )
    env_hash_seed = {"PYTHONHASHSEED": "12345"}
    output = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
        env={**os.environ, **env_hash_seed},
    ).stdout.strip()
    here = pd.DataFrame(
        {"config/width": [64], "config/lr": [0.1], "config/method": ["rigl"], "config/seed": [9]}
    )
    assert output == config_id(here).iloc[0]
    # and it is pinned: a change to the canonical form changes every stored id
    assert output == config_hash({"method": "rigl", "lr": 0.1, "width": 64}) == "a841ff8c3985fe24"


# --- aggregation over seeds --------------------------------------------------------------


def test_aggregate_over_seeds_by_config_id() -> None:
    df = configs()
    table = aggregate_over_seeds(df, ["val_error"])
    assert table.columns[0] == CONFIG_ID
    assert len(table) == 2
    rigl = table[table["config/method"] == "rigl"].iloc[0]
    errors = np.array([0.10, 0.14, 0.12])
    assert rigl["count"] == 3
    assert rigl["val_error_mean"] == pytest.approx(errors.mean())
    assert rigl["val_error_std"] == pytest.approx(errors.std(ddof=1))
    single = table[table["config/method"] == "set"].iloc[0]
    assert single["count"] == 1 and np.isnan(single["val_error_std"])
    # per-seed columns drop out; the config's hyperparameters stay
    assert "config/seed" not in table.columns and "config/data_dir" not in table.columns
    assert {"config/width", "config/sparsity", "config/update_interval"} <= set(table.columns)
    # first-seen order, and an existing config_id column is used as it is
    assert table[CONFIG_ID].tolist() == with_config_id(df)[CONFIG_ID].unique().tolist()


def test_aggregate_over_seeds_by_columns_skips_nan_metrics() -> None:
    df = pd.DataFrame(
        {
            "config/method": ["set", "set", "set", "rigl"],
            "config/sparsity": [0.5, 0.5, 0.9, 0.5],
            "seed": [1, 2, 1, 1],
            "acc": [0.8, np.nan, 0.6, 0.9],
            "loss": [1.0, 2.0, 3.0, 4.0],
        }
    )
    table = aggregate_over_seeds(df, ["acc", "loss"], by=["config/method", "config/sparsity"])
    assert table[["config/method", "config/sparsity"]].values.tolist() == [
        ["set", 0.5],
        ["set", 0.9],
        ["rigl", 0.5],
    ]
    assert table["count"].tolist() == [2, 1, 1]
    assert table["acc_mean"].tolist() == pytest.approx([0.8, 0.6, 0.9])
    assert table["loss_mean"].tolist() == pytest.approx([1.5, 3.0, 4.0])
    assert table["loss_std"].iloc[0] == pytest.approx(np.std([1.0, 2.0], ddof=1))
    with pytest.raises(ValueError, match="unknown metric"):
        aggregate_over_seeds(df, ["nope"])
    with pytest.raises(ValueError, match="unknown grouping"):
        aggregate_over_seeds(df, ["acc"], by="nope")
