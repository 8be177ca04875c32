"""``report.html``: one self-contained interactive page of a study (no network to open it).

Plotly draws the figures: ``plotly.js`` is inlined once in the page, hover templates show a
point's trial, and a click event filters the table, all without a server (Bokeh needs its
own JS too, but its click-to-filter needs a CustomJS callback per plot; Vega-Lite via altair
inlines three scripts and its tooltips are plain key/value lists). Everything else is a few
lines of inline JS: the sortable layer-1 table and the click filter.

What the page holds:
- the Pareto front on each pair of objectives, one trace per layer (layer 1 first), every
  completed ranked trial one point; hovering shows its trial id, method, sparsity and every
  config value; clicking a point filters the trials table to that trial;
- the hypervolume history over trials (completion order);
- for re-evaluations, accuracy against sparsity per method, mean with a +-1 std band over
  seeds;
- the layer-1 table and a table of all ranked trials, sortable by clicking a header.

Imports neither torch nor Ray.
"""

from __future__ import annotations

import html
import itertools
import math
from pathlib import Path

import pandas as pd

from results.report import (
    METHOD,
    SPARSITY,
    accuracy_by_sparsity,
    accuracy_metric,
    is_reevaluation,
    table_columns,
)

LAYER_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#7f7f7f"]
METHOD_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"]
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _value(value) -> str:
    if _missing(value):
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def hover_text(row: pd.Series, objectives: dict[str, str]) -> str:
    """The tooltip of one trial: id, method, sparsity, objectives, then every config value."""
    lines = [f"<b>trial {html.escape(str(row.get('trial_id', '?')))}</b>"]
    if "layer" in row:
        lines.append(f"layer {int(row['layer'])}")
    lines.append(f"method: {_value(row.get(METHOD))}")
    lines.append(f"sparsity: {_value(row.get(SPARSITY))}")
    lines += [f"{o}: {_value(row.get(o))}" for o in objectives]
    for column in sorted(c for c in row.index if c.startswith("config/")):
        if column in (METHOD, SPARSITY):
            continue
        value = row[column]
        if _missing(value):
            continue  # a knob the trial's method doesn't read
        lines.append(f"{html.escape(column[len('config/') :])}: {html.escape(_value(value))}")
    return "<br>".join(lines)


def pareto_figures(ranked: pd.DataFrame, objectives: dict[str, str]) -> list:
    """One scatter per pair of objectives, one trace per layer; customdata is the trial id."""
    import plotly.graph_objects as go

    figures = []
    texts = [hover_text(row, objectives) for _, row in ranked.iterrows()]
    ranked = ranked.assign(_hover=texts)
    for x, y in itertools.combinations(objectives, 2):
        fig = go.Figure()
        for layer, group in ranked.groupby("layer", sort=True):
            color = LAYER_COLORS[min(int(layer), len(LAYER_COLORS)) - 1]
            fig.add_trace(
                go.Scatter(
                    x=group[x], y=group[y], mode="markers", name=f"layer {int(layer)}",
                    marker={"color": color, "size": 9 if layer == 1 else 7,
                            "opacity": 1.0 if layer == 1 else 0.6},
                    customdata=group["trial_id"].astype(str),
                    hovertext=group["_hover"], hovertemplate="%{hovertext}<extra></extra>",
                )
            )  # fmt: skip
        fig.update_layout(
            title=f"{x} ({objectives[x]}) vs {y} ({objectives[y]})",
            xaxis_title=x, yaxis_title=y, height=460, margin={"t": 50, "b": 50},
            legend_title_text="non-dominated layer", hovermode="closest",
        )  # fmt: skip
        for axis, name in (("xaxis", x), ("yaxis", y)):
            if name.endswith("flops") and (ranked[name] > 0).all():
                fig.update_layout(**{axis: {"type": "log", "title": name}})
        figures.append(fig)
    return figures


def hypervolume_figure(history: pd.DataFrame):
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Scatter(
            x=history["trial"], y=history["hypervolume_fraction"], mode="lines+markers",
            line={"shape": "hv", "color": "#d62728"}, name="hypervolume",
            customdata=history.get("trial_id", history["trial"]).astype(str),
            hovertemplate="after trial %{x} (%{customdata}): %{y:.2%} of the box<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        title="hypervolume over trials (fraction of the box to the reference point)",
        xaxis_title="trials, in completion order", yaxis_title="hypervolume / box volume",
        yaxis_tickformat=".0%", height=380, margin={"t": 50, "b": 50},
    )  # fmt: skip
    return fig


def accuracy_figure(done: pd.DataFrame, metric: str):
    """Mean accuracy per method against sparsity, with a +-1 std band over seeds."""
    import plotly.graph_objects as go

    table = accuracy_by_sparsity(done, metric)
    fig = go.Figure()
    for i, (method, group) in enumerate(table.groupby(METHOD, sort=True)):
        color = METHOD_COLORS[i % len(METHOD_COLORS)]
        x = group[SPARSITY].tolist()
        mean = group[f"{metric}_mean"]
        std = group[f"{metric}_std"].fillna(0.0)
        upper, lower = (mean + std).tolist(), (mean - std).tolist()
        fig.add_trace(
            go.Scatter(
                x=x + x[::-1], y=upper + lower[::-1], fill="toself", fillcolor=color,
                opacity=0.2, line={"width": 0}, hoverinfo="skip", showlegend=False,
                legendgroup=str(method),
            )
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=x, y=mean, mode="lines+markers", name=f"{method}", legendgroup=str(method),
                line={"color": color}, customdata=group[["count"]].join(std.rename("std")),
                hovertemplate=f"{method} sparsity %{{x}}: %{{y:.4f}} ± %{{customdata[1]:.4f}} "
                "(n=%{customdata[0]})<extra></extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        title=f"{metric} against sparsity (mean ± std over seeds)", xaxis_title="sparsity",
        yaxis_title=metric, height=420, margin={"t": 50, "b": 50},
    )  # fmt: skip
    return fig


def html_table(df: pd.DataFrame, columns: list[str], table_id: str) -> str:
    """A sortable table (click a header); each row carries its trial id for the click filter."""
    head = "".join(
        f'<th data-col="{i}" title="click to sort">{html.escape(c)}</th>'
        for i, c in enumerate(columns)
    )
    rows = []
    for _, row in df.iterrows():
        cells = []
        for c in columns:
            value = row.get(c)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            key = "" if not number or _missing(value) else f' data-sort="{float(value)!r}"'
            cells.append(f"<td{key}>{html.escape(_value(value))}</td>")
        trial = html.escape(str(row.get("trial_id", "")))
        rows.append(f'<tr data-trial="{trial}">{"".join(cells)}</tr>')
    return (
        f'<table id="{table_id}" class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


SCRIPT = """
function sortTable(table, col) {
  const body = table.tBodies[0];
  const asc = table.dataset.sortCol == col ? table.dataset.sortDir != "asc" : true;
  table.dataset.sortCol = col; table.dataset.sortDir = asc ? "asc" : "desc";
  const rows = Array.from(body.rows);
  const key = r => { const c = r.cells[col]; return c.dataset.sort !== undefined ?
                     parseFloat(c.dataset.sort) : c.textContent; };
  rows.sort((a, b) => { const x = key(a), y = key(b);
    const d = (typeof x === "number" && typeof y === "number") ? x - y :
              String(x).localeCompare(String(y));
    return asc ? d : -d; });
  rows.forEach(r => body.appendChild(r));
  table.querySelectorAll("th").forEach(th => th.classList.remove("asc", "desc"));
  table.querySelectorAll("th")[col].classList.add(asc ? "asc" : "desc");
}
document.querySelectorAll("table.sortable th").forEach(th =>
  th.addEventListener("click", () => sortTable(th.closest("table"), +th.dataset.col)));
function filterTrials(trial) {
  const rows = document.querySelectorAll("#trials-table tbody tr");
  let shown = 0;
  rows.forEach(r => { const on = trial === null || r.dataset.trial === trial;
                      r.style.display = on ? "" : "none"; if (on) shown++; });
  document.getElementById("filter-note").textContent = trial === null ?
    "all " + rows.length + " ranked trials (click a point to show only its trial)" :
    "trial " + trial + " (" + shown + " row)";
  document.getElementById("show-all").style.display = trial === null ? "none" : "";
}
document.getElementById("show-all").addEventListener("click", () => filterTrials(null));
document.querySelectorAll(".pareto-plot").forEach(div => div.on("plotly_click",
  ev => filterTrials(String(ev.points[0].customdata))));
filterTrials(null);
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { cursor: pointer; background: #f4f4f4; user-select: none; }
th.asc::after { content: " \\25B2"; } th.desc::after { content: " \\25BC"; }
.facts { color: #555; } button { margin-left: 1em; }
"""


def _figure_div(fig, div_id: str, css_class: str = "") -> str:
    div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)
    return f'<div class="{css_class}">{div}</div>' if css_class else div


def write_html_report(
    path: str | Path,
    name: str,
    trials: pd.DataFrame,
    ranked: pd.DataFrame,
    objectives: dict[str, str],
    history: pd.DataFrame | None,
    facts: list[str],
) -> Path:
    """Write the page: ``ranked`` holds the completed trials with their ``layer``."""
    import plotly.offline

    path = Path(path)
    parts = [f"<h1>Study {html.escape(name)}</h1>"]
    parts.append('<ul class="facts">' + "".join(f"<li>{html.escape(f)}</li>" for f in facts))
    parts.append("</ul>")
    layer1 = ranked[ranked["layer"] == 1]
    parts.append(f"<h2>Layer 1: {len(layer1)} non-dominated of {len(ranked)} ranked trials</h2>")
    parts.append(html_table(layer1, table_columns(layer1, objectives, ["trial_id"]), "layer1"))
    if history is not None and len(history):
        parts.append("<h2>Hypervolume</h2>")
        parts.append(_figure_div(hypervolume_figure(history), "hypervolume"))
    if len(objectives) >= 2 and len(ranked):
        parts.append("<h2>Pareto front</h2>")
        parts.append(
            "<p>Every pair of objectives; colours are non-dominated layers (layer 1 red). "
            "Hover a point for its trial and config; click it to filter the table below.</p>"
        )
        for i, fig in enumerate(pareto_figures(ranked, objectives)):
            parts.append(_figure_div(fig, f"pareto-{i}", "pareto-plot-box"))
    metric = accuracy_metric(ranked)
    if metric and is_reevaluation(ranked):
        parts.append(f"<h2>{html.escape(metric)} against sparsity</h2>")
        parts.append(_figure_div(accuracy_figure(ranked, metric), "accuracy-sparsity"))
    parts.append(
        '<h2>Trials</h2><p><span id="filter-note"></span>'
        '<button id="show-all" type="button">show all</button></p>'
    )
    columns = table_columns(ranked, objectives, ["trial_id", "layer", "status"])
    parts.append(html_table(ranked.sort_values("layer", kind="stable"), columns, "trials-table"))
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(name)}: sparsetune report</title><style>{STYLE}</style>"
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>"
        + "\n".join(parts)
        # the Pareto divs get their class for the click handler once Plotly has drawn them
        + "<script>document.querySelectorAll('.pareto-plot-box .plotly-graph-div')"
        ".forEach(d => d.classList.add('pareto-plot'));" + SCRIPT + "</script></body></html>"
    )
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(page, encoding="utf-8")
    temp.replace(path)
    return path
