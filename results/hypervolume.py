"""Hypervolume of trial tables over named objectives (exact, with moocore).

The hypervolume is the volume of objective space that the trials dominate, bounded by a
reference point that is worse than every trial in every objective. Objectives may be
"min" or "max"; "max" columns are negated (and so is their reference value), so the
volume is computed on a minimization problem and is the same either way.

**Reference-point rule** (``reference=None``): per objective, the worst value over the
ranked rows (all objectives finite) plus 10% of that objective's range (best to worst):
``worst + 0.1 * (worst - best)`` for "min", ``worst - 0.1 * (best - worst)`` for "max". If
all rows have the same value the range is taken as ``|worst|`` (1 if that is 0), so every
ranked trial lies strictly inside the box and contributes. The rule follows the data, so
compare hypervolumes of different studies only under one explicit reference (pass
``reference``, or the one ``reference_point`` gives for their union). Points that are not
strictly better than the reference in every objective contribute nothing.

``hypervolume_history`` uses one fixed reference (from all ranked rows of the frame) for
every prefix of the trials in completion order, so the history never decreases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from results.pareto import minimization_matrix
from results.study import COMPLETED, completion_order

REFERENCE_MARGIN = 0.1
MAX_EXACT_OBJECTIVES = 4


def _finite_rows(points: np.ndarray) -> np.ndarray:
    return points[np.isfinite(points).all(axis=1)]


def reference_point(
    df: pd.DataFrame, objectives: dict[str, str], margin: float = REFERENCE_MARGIN
) -> dict[str, float]:
    """The default reference point (in the objectives' own units and directions).

    Per objective: the worst ranked value pushed ``margin`` of the range further out (see the
    module docstring). Raises ValueError when no row has all objectives finite.
    """
    points = _finite_rows(minimization_matrix(df, objectives))
    if len(points) == 0:
        raise ValueError(
            f"no row has finite values for all of {list(objectives)}: no reference point"
        )
    worst, best = points.max(axis=0), points.min(axis=0)
    span = worst - best
    fallback = np.where(worst != 0, np.abs(worst), 1.0)
    span = np.where(span > 0, span, fallback)
    reference_min = worst + margin * span
    return {
        name: float(-value if mode == "max" else value)
        for (name, mode), value in zip(objectives.items(), reference_min, strict=True)
    }


def _reference_vector(
    reference: Mapping[str, float] | Sequence[float] | None,
    df: pd.DataFrame,
    objectives: dict[str, str],
) -> np.ndarray:
    """The reference point in minimization form (max objectives negated)."""
    if reference is None:
        reference = reference_point(df, objectives)
    if isinstance(reference, Mapping):
        missing = [name for name in objectives if name not in reference]
        if missing:
            raise ValueError(f"reference has no value for objective(s) {missing}")
        values = [reference[name] for name in objectives]
    else:
        values = list(reference)
        if len(values) != len(objectives):
            raise ValueError(
                f"reference has {len(values)} values for {len(objectives)} objectives "
                f"{list(objectives)}"
            )
    vector = np.asarray(values, dtype=float)
    if not np.isfinite(vector).all():
        raise ValueError(f"reference point must be finite, got {values}")
    signs = np.array([-1.0 if mode == "max" else 1.0 for mode in objectives.values()])
    return vector * signs


def _check_dimension(objectives: dict[str, str]) -> None:
    if not 1 <= len(objectives) <= MAX_EXACT_OBJECTIVES:
        raise ValueError(
            f"hypervolume is exact here for 1 to {MAX_EXACT_OBJECTIVES} objectives, "
            f"got {len(objectives)}: {list(objectives)}"
        )


def _volume(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact hypervolume of minimization ``points`` (finite rows) below ``reference``."""
    import moocore  # ~0.4 s to import: only when a volume is computed

    inside = points[(points < reference).all(axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(moocore.hypervolume(inside, ref=reference))


def hypervolume(
    df: pd.DataFrame,
    objectives: dict[str, str],
    reference: Mapping[str, float] | Sequence[float] | None = None,
) -> float:
    """Exact hypervolume of the rows of ``df`` over ``objectives`` (column -> "min" | "max").

    ``reference`` gives the reference point in the objectives' own units, as a dict by
    column or a sequence in the order of ``objectives``; None applies the rule of the module
    docstring (worst value + 10% of the range). Rows with a NaN/inf objective are ignored;
    filter by status first if failed trials should not count (``results.study.completed``).
    """
    _check_dimension(objectives)
    points = _finite_rows(minimization_matrix(df, objectives))
    if len(points) == 0:
        return 0.0
    return _volume(points, _reference_vector(reference, df, objectives))


def hypervolume_history(
    df: pd.DataFrame,
    objectives: dict[str, str],
    reference: Mapping[str, float] | Sequence[float] | None = None,
) -> pd.DataFrame:
    """Hypervolume after each trial, in completion order.

    One row per trial of ``df`` (order: ``results.study.completion_order``) with columns
    ``trial`` (1, 2, ...), ``trial_id`` and ``status`` when ``df`` has them, ``hypervolume``
    (of the completed trials so far; a failed trial repeats the previous value) and
    ``hypervolume_fraction`` (hypervolume divided by the volume of the box from the best
    value of each objective over the whole frame to the reference point: 1.0 would mean
    one trial was best at everything). The reference is fixed for the whole history: the
    given one, or the rule's point over all completed rows of ``df``.
    """
    _check_dimension(objectives)
    ordered = completion_order(df)
    points = minimization_matrix(ordered, objectives)
    counts = np.isfinite(points).all(axis=1)
    if "status" in ordered.columns:
        counts &= ordered["status"].eq(COMPLETED).to_numpy(dtype=bool, na_value=False)
    history = pd.DataFrame({"trial": np.arange(1, len(ordered) + 1)})
    for column in ("trial_id", "status"):
        if column in ordered.columns:
            history[column] = ordered[column].to_numpy()
    if not counts.any():
        history["hypervolume"] = 0.0
        history["hypervolume_fraction"] = 0.0
        return history
    ref = _reference_vector(reference, ordered[counts], objectives)
    volumes = np.zeros(len(ordered))
    current = 0.0
    for i in range(len(ordered)):
        if counts[i]:
            current = _volume(points[: i + 1][counts[: i + 1]], ref)
        volumes[i] = current
    box = float(np.prod(np.clip(ref - points[counts].min(axis=0), 0.0, None)))
    history["hypervolume"] = volumes
    history["hypervolume_fraction"] = volumes / box if box > 0 else 0.0
    return history
