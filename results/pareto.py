"""Non-dominated sorting (Deb et al., NSGA-II) of trial tables over named objectives.

Layer 1 is the non-dominated set, layer 2 the non-dominated set of the rest, and so on.
Rows whose objectives are not all finite (NaN, inf: failed or diverged trials) are not
ranked and get layer 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from contract.columns import LAYER as LAYER_COLUMN

OBJECTIVE_MODES = ("min", "max")

UNRANKED_LAYER = 0

# Upper bound on pairs compared at once (two bool matrices of this many cells, ~32 MB).
_MAX_PAIRWISE_CELLS = 16_000_000


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """True if point ``a`` Pareto-dominates ``b``; both already in minimization form."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"points must have the same shape, got {a.shape} and {b.shape}")
    return bool(np.all(a <= b) and np.any(a < b))


def validate_objectives(df: pd.DataFrame, objectives: dict[str, str]) -> None:
    """Raise ValueError naming the first bad objective column or mode."""
    if not objectives:
        raise ValueError("objectives is empty: give at least one {column: 'min' | 'max'}")
    for column, mode in objectives.items():
        if column not in df.columns:
            allowed = ", ".join(map(str, df.columns))
            raise ValueError(f"unknown objective column {column!r}; allowed columns: {allowed}")
        if mode not in OBJECTIVE_MODES:
            allowed = ", ".join(OBJECTIVE_MODES)
            raise ValueError(f"objective {column!r} has mode {mode!r}; allowed modes: {allowed}")


def minimization_matrix(df: pd.DataFrame, objectives: dict[str, str]) -> np.ndarray:
    """(n_rows, n_objectives) float matrix with 'max' objectives negated."""
    validate_objectives(df, objectives)
    columns = []
    for column, mode in objectives.items():
        try:
            values = df[column].to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"objective column {column!r} is not numeric (dtype {df[column].dtype})"
            ) from error
        columns.append(-values if mode == "max" else values)
    return np.column_stack(columns) if columns else np.empty((len(df), 0))


def _domination_counts(dominators: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """How many rows of ``dominators`` dominate each target row (chunked: bounded memory)."""
    counts = np.zeros(len(targets), dtype=np.int64)
    if len(dominators) == 0 or len(targets) == 0:
        return counts
    chunk = max(1, _MAX_PAIRWISE_CELLS // len(targets))
    for start in range(0, len(dominators), chunk):
        block = dominators[start : start + chunk]
        # one 2-D pass per objective: much faster than reducing a 3-D array over a short axis
        no_worse = np.ones((len(block), len(targets)), dtype=bool)
        better_somewhere = np.zeros_like(no_worse)
        for k in range(targets.shape[1]):
            mine, theirs = block[:, k, None], targets[None, :, k]
            no_worse &= mine <= theirs
            better_somewhere |= mine < theirs
        counts += (no_worse & better_somewhere).sum(axis=0)
    return counts


def _layers_of_finite_points(points: np.ndarray) -> np.ndarray:
    """Layer (1-based) of every row of a finite minimization matrix.

    Deb's fast non-dominated sort without storing the n x n domination matrix: count each
    point's dominators once, then peel a layer and subtract what its members dominated.
    Total work is O(n^2 * m) however many layers there are.
    """
    layers = np.zeros(len(points), dtype=np.int64)
    remaining = np.arange(len(points))
    counts = _domination_counts(points, points)
    layer = 0
    while len(remaining):
        layer += 1
        in_layer = counts == 0
        if not in_layer.any():  # impossible for a strict partial order; never loop forever
            raise RuntimeError("non-dominated sorting found a cycle of domination")
        members = remaining[in_layer]
        layers[members] = layer
        remaining, counts = remaining[~in_layer], counts[~in_layer]
        counts -= _domination_counts(points[members], points[remaining])
    return layers


def non_dominated_layers(df: pd.DataFrame, objectives: dict[str, str]) -> pd.Series:
    """Non-dominated layer of every row: 1 = non-dominated, 2 = non-dominated among the rest, ...

    ``objectives`` maps column -> "min" | "max". Rows with any NaN/inf objective get layer 0
    (not ranked). Duplicate points share a layer, as neither dominates the other. Returns an
    int64 Series named "layer", aligned with ``df.index``.
    """
    points = minimization_matrix(df, objectives)
    finite = np.isfinite(points).all(axis=1)
    layers = np.full(len(df), UNRANKED_LAYER, dtype=np.int64)
    layers[finite] = _layers_of_finite_points(points[finite])
    return pd.Series(layers, index=df.index, name=LAYER_COLUMN)


def with_layers(df: pd.DataFrame, objectives: dict[str, str]) -> pd.DataFrame:
    """Copy of ``df`` with an int column "layer", sorted by layer then the first objective.

    The first objective is sorted best first (ascending for "min", descending for "max").
    Unranked rows (layer 0) go last, so ``head()`` shows the front.
    """
    layers = non_dominated_layers(df, objectives)
    ranked = df.assign(**{LAYER_COLUMN: layers.to_numpy()})
    first_column, first_mode = next(iter(objectives.items()))
    sort_layer = layers.where(layers != UNRANKED_LAYER, np.iinfo(np.int64).max)
    first_key = minimization_matrix(df, {first_column: first_mode})[:, 0]
    order = np.lexsort((first_key, sort_layer.to_numpy()))  # last key is the primary one
    return ranked.iloc[order]
