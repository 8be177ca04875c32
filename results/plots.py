"""Pareto-front plots as PNG.

Uses matplotlib's object API with the Agg canvas (no pyplot): no global state, no GUI,
safe in Ray workers and threads.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from results.pareto import LAYER_COLUMN, minimization_matrix, non_dominated_layers

DPI = 120
PANEL_SIZE_INCHES = 4.2
MAX_PANELS_PER_ROW = 3
FRONT_COLOR = "#d62728"
OTHER_LAYERS_COLOR = "#b0b0b0"
# Counts such as FLOPs, parameters and bytes spanning more than this many decades get log axes.
LOG_AXIS_MIN_DECADES = 2.0


def wants_log_axis(values: np.ndarray) -> bool:
    """Log axis for positive count-like values (not fractions such as errors) over > 2 decades."""
    values = values[np.isfinite(values)]
    if len(values) < 2 or values.min() <= 0 or values.max() <= 1:
        return False
    return math.log10(values.max() / values.min()) > LOG_AXIS_MIN_DECADES


def _layer_style(layer: int, max_layers: int) -> dict:
    """Layer 1 prominent, layers 2..max_layers fading blues, the rest grey."""
    if layer == 1:
        return {
            "color": FRONT_COLOR,
            "s": 42,
            "edgecolors": "black",
            "linewidths": 0.6,
            "zorder": 4,
        }
    if layer <= max_layers:
        # lighter with depth: layer 2 is the darkest of these
        shade = 0.25 + 0.45 * (layer - 2) / max(max_layers - 2, 1)
        color = (shade, shade + 0.15 * (1 - shade), 0.85)
        return {"color": color, "s": 22, "alpha": 0.85, "zorder": 3}
    return {"color": OTHER_LAYERS_COLOR, "s": 12, "alpha": 0.6, "zorder": 2}


def _front_staircase(front: pd.DataFrame, x: str, y: str, objectives: dict[str, str]) -> np.ndarray:
    """Corner points of the attainment staircase of ``front`` projected on (x, y).

    Layer-1 points of a >2-objective front need not be non-dominated in a 2-D projection,
    so the line joins only the projection's own non-dominated points, best x first; a
    "steps-post" line through them traces the boundary of the region they dominate.
    """
    pair = {x: objectives[x], y: objectives[y]}
    projected_front = front[non_dominated_layers(front, pair).to_numpy() == 1]
    projected_front = projected_front.drop_duplicates(subset=[x, y])
    best_x_first = np.argsort(minimization_matrix(projected_front, {x: objectives[x]})[:, 0])
    return projected_front[[x, y]].to_numpy(dtype=float)[best_x_first]


def _draw_panel(
    ax: Axes,
    ranked: pd.DataFrame,
    x: str,
    y: str,
    objectives: dict[str, str],
    max_layers: int,
) -> None:
    layers = ranked[LAYER_COLUMN].to_numpy()
    for layer in range(1, max_layers + 1):
        members = layers == layer
        if members.any():
            style = _layer_style(layer, max_layers)
            ax.scatter(
                ranked.loc[members, x], ranked.loc[members, y], label=f"layer {layer}", **style
            )
    beyond = layers > max_layers
    if beyond.any():
        style = _layer_style(max_layers + 1, max_layers)
        label = f"layers > {max_layers}"
        ax.scatter(ranked.loc[beyond, x], ranked.loc[beyond, y], label=label, **style)
    staircase = _front_staircase(ranked[layers == 1], x, y, objectives)
    if len(staircase) >= 2:
        ax.plot(
            staircase[:, 0],
            staircase[:, 1],
            drawstyle="steps-post",
            color=FRONT_COLOR,
            linewidth=1.2,
            zorder=3.5,
        )
    for axis_name, set_scale in ((x, ax.set_xscale), (y, ax.set_yscale)):
        if wants_log_axis(ranked[axis_name].to_numpy(dtype=float)):
            set_scale("log")
    ax.set_xlabel(f"{x} ({objectives[x]})")
    ax.set_ylabel(f"{y} ({objectives[y]})")
    ax.grid(True, which="major", alpha=0.3)


def save_png(figure, path: str | Path) -> Path:
    """Write a figure as PNG, creating its folder; every plot of the results package ends here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path


def plot_pareto_front(
    df: pd.DataFrame,
    objectives: dict[str, str],
    path: str | Path,
    title: str | None = None,
    max_layers: int = 3,
) -> Path:
    """Scatter the trials on every pair of objectives, coloured by non-dominated layer; save PNG.

    ``df`` should have a "layer" column (see ``results.pareto.with_layers``); if it has none,
    the layers are computed here. Unranked rows (layer 0: NaN/inf objectives) are not drawn.
    """
    if len(objectives) < 2:
        raise ValueError(f"a Pareto plot needs at least 2 objectives, got {list(objectives)}")
    if max_layers < 1:
        raise ValueError(f"max_layers must be >= 1, got {max_layers}")
    if LAYER_COLUMN not in df.columns:
        df = df.assign(**{LAYER_COLUMN: non_dominated_layers(df, objectives)})
    minimization_matrix(df, objectives)  # validates names, modes and numeric dtypes
    ranked = df[df[LAYER_COLUMN] > 0]

    pairs = list(itertools.combinations(objectives, 2))
    columns = min(len(pairs), MAX_PANELS_PER_ROW)
    rows = math.ceil(len(pairs) / columns)
    figure = Figure(
        figsize=(PANEL_SIZE_INCHES * columns, PANEL_SIZE_INCHES * rows), layout="constrained"
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (x, y) in zip(axes, pairs, strict=False):
        _draw_panel(ax, ranked, x, y, objectives, max_layers)
    for ax in axes[len(pairs) :]:
        ax.set_visible(False)
    if ranked.empty:
        axes[0].text(
            0.5, 0.5, "no ranked trials", ha="center", va="center", transform=axes[0].transAxes
        )
    else:
        axes[0].legend(loc="best", fontsize="small", framealpha=0.8)
    if title:
        figure.suptitle(title)

    return save_png(figure, path)
