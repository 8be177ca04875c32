"""A Markdown report of a study, with PNG plots, in ``<storage>/<name>/report.md``.

The report has the study's facts (kind, trial counts, objectives, provenance), the layer-1
table, the hypervolume of the completed trials and its history over trials, the Pareto
front on every pair of objectives (layers coloured), the layer sizes, and, for
re-evaluations (several seeds per config, ``config/sparsity`` and ``config/method``
columns), accuracy against sparsity per method with +-1 std bands.

Files written (new names only; the study's own files are read, never rewritten):
``report.md``, ``report-pareto.png``, ``report-hypervolume.png`` and, for re-evaluations,
``report-accuracy-sparsity.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from contract.columns import COMPLETED, GIT_COMMIT_KEY, HARDWARE_KEY, STOPPED, VERSIONS_KEY
from results.aggregate import CONFIG_ID, aggregate_over_seeds, with_config_id
from results.hypervolume import MAX_EXACT_OBJECTIVES, hypervolume_history, reference_point
from results.pareto import LAYER_COLUMN, with_layers
from results.parquet import TRIALS, read_metadata, read_table
from results.study import OBJECTIVES_KEY, ResultsError, completed, study_objectives
from results.tables import format_markdown_table, format_number

REPORT = "report.md"
PARETO_PLOT = "report-pareto.png"
HYPERVOLUME_PLOT = "report-hypervolume.png"
ACCURACY_PLOT = "report-accuracy-sparsity.png"

LAYER1_COLUMNS = [
    "trial_id", "config/method", "config/sparsity", "config/distribution",
    "config/update_interval", "config/depth", "config/width", "config/lr", "density",
    "val_accuracy",
]  # fmt: skip
REEVALUATION_KINDS = ("reevaluate", "evaluate", "reproduction")
ACCURACY_METRICS = ("test_accuracy", "val_accuracy")
METHOD, SPARSITY, SEED = "config/method", "config/sparsity", "seed"


@dataclass
class Report:
    path: Path
    plots: list[Path] = field(default_factory=list)
    html: Path | None = None  # the interactive report.html
    hypervolume: float | None = None
    layer1: pd.DataFrame | None = None


def table_columns(df: pd.DataFrame, objectives: dict[str, str], lead: list[str]) -> list[str]:
    """``lead`` + the layer-1 columns + the objectives, those present and not all null."""
    wanted = lead + LAYER1_COLUMNS + [o for o in objectives if o not in LAYER1_COLUMNS]
    seen: list[str] = []
    for column in wanted:
        if column in df.columns and column not in seen and df[column].notna().any():
            seen.append(column)
    return seen


def is_reevaluation(df: pd.DataFrame) -> bool:
    """Trials of configs trained at several sparsities and seeds (a re-evaluation study).

    True when the table has ``config/method`` and ``config/sparsity`` and either its
    ``kind`` is a re-evaluation kind or some config was trained with more than one seed.
    """
    if METHOD not in df.columns or SPARSITY not in df.columns or df.empty:
        return False
    if "kind" in df.columns and df["kind"].isin(REEVALUATION_KINDS).any():
        return True
    if SEED not in df.columns or df[SEED].isna().all():
        return False
    ids = df[CONFIG_ID] if CONFIG_ID in df.columns else with_config_id(df)[CONFIG_ID]
    return bool((df[SEED].groupby(ids).nunique() > 1).any())


def accuracy_metric(df: pd.DataFrame) -> str | None:
    """The accuracy to plot against sparsity: test_accuracy, else val_accuracy."""
    for metric in ACCURACY_METRICS:
        if metric in df.columns and df[metric].notna().any():
            return metric
    return None


def accuracy_by_sparsity(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, std and count of ``metric`` per (method, sparsity), over seeds (and configs)."""
    rows = df[df[SPARSITY].notna() | (df[METHOD] == "dense")]
    rows = rows.assign(**{SPARSITY: rows[SPARSITY].fillna(0.0).astype(float)})
    table = aggregate_over_seeds(rows, [metric], by=[METHOD, SPARSITY])
    table = table[[METHOD, SPARSITY, "count", f"{metric}_mean", f"{metric}_std"]]
    return table.sort_values([METHOD, SPARSITY], kind="stable").reset_index(drop=True)


def plot_accuracy_vs_sparsity(
    df: pd.DataFrame, path: str | Path, metric: str = "test_accuracy", title: str | None = None
) -> Path:
    """Accuracy against sparsity, one line per method, mean +- 1 std band over seeds.

    A method trained at a single sparsity (dense, at 0) is drawn as a dashed horizontal line
    with its band across the whole range, as the reference the sparse methods are read
    against.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from results.plots import save_png

    table = accuracy_by_sparsity(df, metric)
    mean, std = table[f"{metric}_mean"], table[f"{metric}_std"].fillna(0.0)
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    sparsities = table[SPARSITY].to_numpy(dtype=float)
    span = (sparsities.min(), sparsities.max()) if len(table) else (0.0, 1.0)
    colors = iter(f"C{i}" for i in range(10 * max(1, table[METHOD].nunique())))
    for method, group in table.groupby(METHOD, sort=True):
        color = next(colors)
        m, s = mean[group.index].to_numpy(), std[group.index].to_numpy()
        n = int(group["count"].max())
        label = f"{method} (n={n})" if group["count"].nunique() == 1 else f"{method} (n<={n})"
        if len(group) == 1 and span[1] > span[0]:
            ax.axhline(m[0], color=color, linestyle="--", linewidth=1.2, label=label)
            ax.axhspan(m[0] - s[0], m[0] + s[0], color=color, alpha=0.15, linewidth=0)
            continue
        x = group[SPARSITY].to_numpy(dtype=float)
        ax.plot(x, m, marker="o", markersize=4, color=color, label=label)
        ax.fill_between(x, m - s, m + s, color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel("sparsity")
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    if len(table):
        ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return save_png(figure, path)


def plot_hypervolume_history(history: pd.DataFrame, path: str | Path, title: str | None = None):
    """Hypervolume (as a fraction of the box up to the reference point) against trials."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from results.plots import FRONT_COLOR, save_png

    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.step(history["trial"], history["hypervolume_fraction"], where="post", color=FRONT_COLOR)
    if "status" in history.columns:
        failed = history[~history["status"].isin([COMPLETED, STOPPED])]
        stopped = history[history["status"] == STOPPED]
        if len(stopped):
            ax.scatter(
                stopped["trial"], stopped["hypervolume_fraction"], marker="|", color="grey",
                label="stopped early (not ranked)", zorder=2,
            )  # fmt: skip
        if len(failed):
            ax.scatter(
                failed["trial"], failed["hypervolume_fraction"], marker="x", color="black",
                label="failed / diverged trial", zorder=3,
            )  # fmt: skip
        if len(failed) or len(stopped):
            ax.legend(loc="lower right", fontsize="small")
    ax.set_xlabel("trials, in completion order")
    ax.set_ylabel("hypervolume / box volume")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    return save_png(figure, path)


def stopped_section(trials: pd.DataFrame, objectives: dict[str, str]) -> list[str]:
    """Markdown lines on the trials an early-stopping scheduler stopped (none: no lines).

    They are kept apart: not ranked, not in the hypervolume (their `train_flops` is small only
    because they stopped). Per epoch reached: how many, and their best first objective then.
    """
    if "status" not in trials or not (trials["status"] == STOPPED).any():
        return []
    stopped = trials[trials["status"] == STOPPED]
    first, mode = next(iter(objectives.items()))
    md = ["", "## Stopped early", ""]
    md.append(
        f"{len(stopped)} of {len(trials)} trials were stopped by the scheduler before their "
        "full budget: kept in the Parquet with their history, never ranked or counted in the "
        "hypervolume."
    )
    if "epoch" in stopped and first in stopped:
        best = "min" if mode == "min" else "max"
        table = stopped.groupby("epoch")[first].agg(["count", best]).reset_index()
        table.columns = ["epoch reached", "trials", f"{best} {first}"]
        md += ["", format_markdown_table(table, list(table.columns))]
    return md


def _provenance_lines(metadata: dict[str, str]) -> list[str]:
    lines = []
    if GIT_COMMIT_KEY in metadata:
        lines.append(f"- commit: `{metadata[GIT_COMMIT_KEY][:12]}`")
    for key, label in ((VERSIONS_KEY, "versions"), (HARDWARE_KEY, "hardware")):
        if key in metadata:
            try:
                values = json.loads(metadata[key])
                text = ", ".join(f"{k} {v if v != '' else '-'}" for k, v in values.items())
            except (json.JSONDecodeError, AttributeError):
                text = metadata[key]
            lines.append(f"- {label}: {text}")
    return lines


def _number(value: float) -> str:
    return format_number(float(value), 4)


def write_report(
    study_dir: str | Path,
    objectives: dict[str, str] | None = None,
    out_dir: str | Path | None = None,
) -> Report:
    """Write ``report.md`` and its plots for the study in ``study_dir`` (into ``out_dir``,
    default the study folder). Objectives default to the study's stored ones."""
    from results.plots import plot_pareto_front

    study_dir = Path(study_dir)
    out_dir = Path(out_dir) if out_dir is not None else study_dir
    trials = read_table(study_dir / TRIALS)
    metadata = read_metadata(study_dir / TRIALS)
    objectives = objectives or study_objectives(study_dir)
    if not objectives:
        raise ResultsError(
            f"{study_dir / TRIALS} stores no objectives (metadata {OBJECTIVES_KEY}); give them"
        )
    name = str(trials["study"].iloc[0]) if "study" in trials and len(trials) else study_dir.name
    done = completed(trials)
    ranked = with_layers(done, objectives) if len(done) else done.assign(**{LAYER_COLUMN: []})
    ranked = ranked[ranked[LAYER_COLUMN] > 0]
    layer1 = ranked[ranked[LAYER_COLUMN] == 1]
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(path=out_dir / REPORT, layer1=layer1)

    counts = trials["status"].value_counts() if "status" in trials else pd.Series(dtype=int)
    status_text = ", ".join(f"{n} {s}" for s, n in counts.sort_index().items())
    kind = str(trials["kind"].iloc[0]) if "kind" in trials and len(trials) else "-"
    objective_text = ", ".join(f"`{o}` ({m})" for o, m in objectives.items())
    md = [f"# Study `{name}`", ""]
    md += [f"- kind: {kind}", f"- trials: {len(trials)} ({status_text or 'no status'})"]
    md += [f"- objectives: {objective_text}", f"- files: `{study_dir}`"]
    md += _provenance_lines(metadata)

    md += ["", f"## Layer 1: {len(layer1)} non-dominated of {len(ranked)} ranked trials", ""]
    md.append(format_markdown_table(layer1, table_columns(layer1, objectives, [])) or "(none)")
    sizes = ranked[LAYER_COLUMN].value_counts().sort_index()
    if len(sizes):
        md += ["", "Trials per layer: " + ", ".join(f"{k}: {v}" for k, v in sizes.items()) + "."]

    md += stopped_section(trials, objectives)

    md += ["", "## Hypervolume", ""]
    history = None
    if len(ranked) and len(objectives) <= MAX_EXACT_OBJECTIVES:
        reference = reference_point(ranked, objectives)
        history = hypervolume_history(trials, objectives, reference)
        report.hypervolume = float(history["hypervolume"].iloc[-1])
        fraction = float(history["hypervolume_fraction"].iloc[-1])
        ref_text = ", ".join(f"`{o}` {v:.6g}" for o, v in reference.items())
        md.append(
            f"Hypervolume of the {len(ranked)} completed trials: **{_number(report.hypervolume)}**"
            f" ({fraction:.2%} of the box from the best value of each objective to the"
            " reference point)."
        )
        md += ["", f"Reference point (worst completed value + 10% of the range): {ref_text}."]
        marks = sorted({max(1, round(len(history) * q)) for q in (0.1, 0.25, 0.5, 0.75, 1.0)})
        md += ["", "| after trial | hypervolume | fraction of the box |", "|---:|---:|---:|"]
        for mark in marks:
            row = history.iloc[mark - 1]
            md.append(
                f"| {mark} | {_number(row['hypervolume'])} | {row['hypervolume_fraction']:.2%} |"
            )
        title = f"{name}: hypervolume over trials"
        report.plots.append(plot_hypervolume_history(history, out_dir / HYPERVOLUME_PLOT, title))
        md += ["", f"![hypervolume history]({HYPERVOLUME_PLOT})"]
    else:
        md.append(
            "No completed trials to measure."
            if not len(ranked)
            else f"Not computed: exact only for up to {MAX_EXACT_OBJECTIVES} objectives."
        )

    if len(objectives) >= 2:
        md += ["", "## Pareto front", ""]
        md.append(
            "Every pair of objectives; layer 1 in red with its staircase, later layers fading."
        )
        title = f"{name}: non-dominated layers over {', '.join(objectives)}"
        report.plots.append(plot_pareto_front(ranked, objectives, out_dir / PARETO_PLOT, title))
        md += ["", f"![Pareto front]({PARETO_PLOT})"]

    metric = accuracy_metric(done)
    if metric and is_reevaluation(done):
        table = accuracy_by_sparsity(done, metric)
        md += ["", f"## {metric} against sparsity", ""]
        md.append(f"Per method, mean and std over seeds (`count` rows each) of `{metric}`.")
        md += ["", format_markdown_table(table, list(table.columns))]
        title = f"{name}: {metric} against sparsity"
        report.plots.append(plot_accuracy_vs_sparsity(done, out_dir / ACCURACY_PLOT, metric, title))
        md += ["", f"![{metric} against sparsity]({ACCURACY_PLOT})"]

    from contract.columns import REPORT_HTML
    from results.report_html import write_html_report

    facts = [f"kind: {kind}", f"trials: {len(trials)} ({status_text or 'no status'})"]
    facts += [f"objectives: {', '.join(f'{o} ({m})' for o, m in objectives.items())}"]
    facts += [line.removeprefix("- ").replace("`", "") for line in _provenance_lines(metadata)]
    report.html = write_html_report(
        out_dir / REPORT_HTML, name, trials, ranked, objectives, history, facts
    )
    md += ["", f"Interactive version (hover, click, sort): [{REPORT_HTML}]({REPORT_HTML})."]

    text = "\n".join(md) + "\n"
    temp = report.path.with_name(f".{REPORT}.tmp")
    temp.write_text(text)
    temp.replace(report.path)
    return report
