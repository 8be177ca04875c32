"""Multi-objective early stopping at equal training epochs: hypervolume against total epochs.

Four arms, each a real study through `tuner.study.run_study` on one local Ray (2 trials at a
time), per task and search seed:

  (a) NSGA-II, every trial its full budget (`scheduler: fifo`, what a study does without one)
  (b) MO-ASHA with NSGA-II proposals
  (c) MO-ASHA with random proposals (Syne Tune's MOASHA)
  (d) Ray's ASHA on `val_error` alone, random proposals (what Ray users do today)

Tasks: `digits` (the default study's space and objectives) and `synthetic`: the same MLP space
on generated Fashion-MNIST-format files (28x28, 10 classes of blurred blob templates mixed with
a second class and heavy noise), whose learning curves keep improving for longer.

Compute is counted in **training epochs**, not seconds (the machine is shared): each trial
adds the epochs it trained when it finishes, and the hypervolume of the full-budget trials so
far is recorded against that running total. (a) gets `--full-trials` trials of `max_t` epochs
(its total, E, is the budget); (b)-(d) get more trials and are read up to E. One reference
point per task, fixed before any run: val_error 1, train_flops 2x and inference_flops 1.1x
those of the largest dense model of the space trained `max_t` epochs (RigL's dense gradients
can exceed dense training, hence 2x). The hypervolume is taken over val_error and the log10
of both FLOPs objectives (units: error x decades^2): the FLOPs span four orders of magnitude,
and on a linear scale the cheap half of the front is invisible (every arm's hypervolume sits
within 0.1% of the others').

Reported: the median (over seeds) hypervolume against total epochs (PNG), the epochs each arm
needs to reach the median final hypervolume of (a), and why: how well a rung's ranking
predicts the final one (Spearman of val_error at each rung against the last epoch, over (a)'s
full learning curves) and MO-ASHA's rung statistics.

Runs are kept in `--out` (one folder per study plus `runs.parquet`); a rerun skips what is
done, so an interrupted benchmark goes on where it stopped.

    ./uvrun python benchmarks/mo_early_stopping.py            # 5 seeds, both tasks
    ./uvrun python benchmarks/mo_early_stopping.py --quick    # smoke run: 1 seed, tiny
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.common import (  # noqa: E402
    ROOT,
    Section,
    cli,
    command_of,
    machine_short,
    passed_args,
    progress,
    table,
)

OBJECTIVES = {"val_error": "min", "train_flops": "min", "inference_flops": "min"}
ARMS = {
    "a": ("NSGA-II, full budget", "nsga2", "fifo"),
    "b": ("MO-ASHA + NSGA-II", "nsga2", "moasha"),
    "c": ("MO-ASHA + random", "random", "moasha"),
    "d": ("Ray ASHA on val_error + random", "random", "asha"),
}
TASKS = ("digits", "synthetic")
PNG = "mo_early_stopping.png"


# -- the synthetic task ------------------------------------------------------------------------
def write_idx(folder: Path, prefix: str, images: np.ndarray, targets: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    header = struct.pack(">iiii", 2051, n, h, w)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
    labels = struct.pack(">ii", 2049, n) + targets.astype(np.uint8).tobytes()
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)


def write_synthetic(data_dir: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    """Fashion-MNIST-format files: each image is its class's template (4 signed Gaussian blobs)
    plus up to 0.7 of another class's, shifted up to 2 pixels, under noise of sd 0.9."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    templates = []
    for _ in range(10):
        t = np.zeros((28, 28))
        for _ in range(4):
            cy, cx = rng.uniform(6, 22, 2)
            s = rng.uniform(2, 5)
            t += rng.choice([-1, 1]) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        templates.append(t / np.abs(t).max())
    templates = np.array(templates)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.arange(n) % 10)
        other = (y + rng.integers(1, 10, n)) % 10
        x = rng.uniform(0.5, 1.0, (n, 1, 1)) * templates[y]
        x += rng.uniform(0.0, 0.7, (n, 1, 1)) * templates[other]
        shifts = rng.integers(-2, 3, (n, 2))
        x = np.stack(
            [np.roll(img, tuple(s), axis=(0, 1)) for img, s in zip(x, shifts, strict=True)]
        )
        x += 0.9 * rng.standard_normal(x.shape)
        return np.clip(128 + 60 * x, 0, 255).astype(np.uint8), y

    folder = data_dir / "FashionMNIST" / "raw"
    write_idx(folder, "train", *sample(n_train))
    write_idx(folder, "t10k", *sample(n_test))


def task_overrides(task: str, data_dir: Path) -> list[str]:
    if task == "digits":
        return ["dataset=digits"]
    return ["dataset=fashion_mnist", f"fixed.data_dir={data_dir}"]


def reference_point(task: str, data_dir: Path, max_t: int) -> dict[str, float]:
    """Fixed per task before any run, from the largest dense model of the space (see above)."""
    from search_spaces import load_space
    from trainables.datasets import load_dataset
    from trainables.train import Trainer

    space = load_space("mlp").parameters
    dataset = "digits" if task == "digits" else "fashion_mnist"
    data = load_dataset(dataset, str(data_dir), download=False)
    config = {"dataset": dataset, "model": "mlp", "method": "dense", "epochs": 1,
              "depth": int(space["depth"].high), "width": int(space["width"].high)}  # fmt: skip
    trainer = Trainer(config, data)
    metrics = trainer.run_epoch()
    return {
        "val_error": 1.0,
        "train_flops": 2.0 * max_t * float(metrics["train_flops"]),
        "inference_flops": 1.1 * float(metrics["inference_flops"]),
    }


# -- running the studies -----------------------------------------------------------------------
def arm_spec(task, arm, seed, trials, max_t, out: Path, data_dir: Path):
    """The study spec of one arm, task and seed: studies/moasha.yaml with the arm's search
    and scheduler (the `search:` mapping replaced whole: a setting such as population_size
    is refused by a search that does not read it)."""
    from tuner.spec import load_spec

    _, algorithm, scheduler = ARMS[arm]
    search = (
        "{algorithm: nsga2, population_size: 4}" if algorithm == "nsga2" else "{algorithm: random}"
    )
    overrides = [
        f"storage={out}", f"name={task}-{arm}-seed{seed}", f"seeds=[{seed}]", f"trials={trials}",
        f"fixed.epochs={max_t}", f"scheduler.max_t={max_t}", f"scheduler.algorithm={scheduler}",
        "scheduler.grace_period=1", "scheduler.reduction_factor=3", f"search={search}",
        "max_concurrent=2", *task_overrides(task, data_dir),
    ]  # fmt: skip
    return load_spec(ROOT / "studies" / "moasha.yaml", overrides)


def run_one(task, arm, seed, trials, max_t, out: Path, data_dir: Path):
    """One study: its trials (status, epoch, objectives, finished_at) and history."""
    from results.parquet import read_table
    from tuner.study import run_study

    spec = arm_spec(task, arm, seed, trials, max_t, out, data_dir)
    name = spec.name
    with contextlib.redirect_stdout(io.StringIO()):  # the per-trial lines: not here
        run_study(spec, overwrite=True, dashboard=False)
    study_dir = out / name
    trials_df = read_table(study_dir / "trials.parquet")
    keep = ["trial_id", "status", "epoch", "finished_at", *OBJECTIVES]
    frame = trials_df[[c for c in keep if c in trials_df]].copy()
    frame["task"], frame["arm"], frame["seed"] = task, arm, seed
    history = read_table(study_dir / "history.parquet")
    history = history[["trial_id", "epoch", "val_error"]].assign(task=task, arm=arm, seed=seed)
    return frame, history


def epochs_used(frame: pd.DataFrame, max_t: int) -> np.ndarray:
    """Training epochs each trial consumed: the epoch it reached (a failure before any: 0)."""
    epochs = pd.to_numeric(frame["epoch"], errors="coerce").fillna(0).to_numpy(dtype=float)
    return np.where(frame["status"].eq("completed").to_numpy(), max_t, epochs)


LOG_OBJECTIVES = ("train_flops", "inference_flops")


def log_costs(values: pd.DataFrame | dict) -> pd.DataFrame | dict:
    """The FLOPs objectives as log10 (they span four orders of magnitude)."""
    if isinstance(values, dict):
        return {k: float(np.log10(v)) if k in LOG_OBJECTIVES else v for k, v in values.items()}
    out = values.copy()
    for column in LOG_OBJECTIVES:
        out[column] = np.log10(pd.to_numeric(out[column], errors="coerce").clip(lower=1.0))
    return out


def hv_curve(frame: pd.DataFrame, reference: dict[str, float], max_t: int) -> pd.DataFrame:
    """Hypervolume of the full-budget trials (val_error x log10 FLOPs) against total epochs,
    in the order the trials finished."""
    from results.hypervolume import hypervolume_history

    ordered = frame.sort_values("finished_at", kind="stable").reset_index(drop=True)
    history = hypervolume_history(log_costs(ordered), OBJECTIVES, log_costs(reference))
    return pd.DataFrame(
        {
            "epochs": np.cumsum(epochs_used(ordered, max_t)),
            "hv": history["hypervolume"].to_numpy(),
            "full": np.cumsum(ordered["status"].eq("completed").to_numpy()),
        }
    )


def hv_at(curve: pd.DataFrame, epochs: float, column: str = "hv") -> float:
    """The curve's value (hypervolume, or `full`: full-budget trials) once `epochs` are spent."""
    seen = curve[curve["epochs"] <= epochs]
    return float(seen[column].iloc[-1]) if len(seen) else 0.0


def epochs_to_reach(curve: pd.DataFrame, target: float, budget: float) -> float:
    hit = curve[(curve["hv"] >= target - 1e-12) & (curve["epochs"] <= budget)]
    return float(hit["epochs"].iloc[0]) if len(hit) else np.inf


# -- the analysis ------------------------------------------------------------------------------
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def rung_predictiveness(history: pd.DataFrame, rungs: list[int], max_t: int) -> dict[int, float]:
    """Spearman of val_error at each rung against the last epoch, over (a)'s full curves."""
    full = history[history["arm"] == "a"]
    wide = full.pivot_table(index=["seed", "trial_id"], columns="epoch", values="val_error")
    out = {}
    for rung in rungs:
        if rung in wide and max_t in wide:
            both = wide[[rung, max_t]].dropna()
            out[rung] = spearman(both[rung].to_numpy(), both[max_t].to_numpy())
    return out


def rung_statistics(frames: pd.DataFrame, arm: str, rungs: list[int], max_t: int) -> list[str]:
    """Per rung: trials that reached it and the share that went on (over seeds)."""
    mine = frames[frames["arm"] == arm]
    reached = epochs_used(mine, max_t)
    cells = []
    for rung in rungs:
        at = (reached >= rung).sum()
        past = (reached > rung).sum()
        cells.append(f"{rung}: {at} -> {past} ({past / max(at, 1):.0%})")
    return cells


def figure(curves: dict, budgets: dict, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from results.plots import save_png

    tasks = sorted({task for task, _ in curves})
    fig = Figure(figsize=(5.2 * len(tasks), 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(tasks)))
    for ax, task in zip(axes, tasks, strict=True):
        grid = np.linspace(0, budgets[task], 200)
        for i, arm in enumerate(ARMS):
            runs = curves.get((task, arm), [])
            if not runs:
                continue
            values = np.array([[hv_at(c, e) for e in grid] for c in runs])
            median = np.median(values, axis=0)
            ax.step(grid, median, where="post", color=f"C{i}", label=f"({arm}) {ARMS[arm][0]}")
            if len(runs) > 1:
                low, high = np.percentile(values, [25, 75], axis=0)
                ax.fill_between(grid, low, high, step="post", color=f"C{i}", alpha=0.15, lw=0)
        ax.axvline(0.4 * budgets[task], color="grey", ls=":", lw=1)
        ax.set_title(f"{task}: median (IQR) over seeds")
        ax.set_xlabel("total training epochs")
        ax.set_ylabel("hypervolume (val_error x log10 FLOPs)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
    return save_png(fig, path)


# -- the benchmark -----------------------------------------------------------------------------
def run(args) -> Section:
    from tuner.schedulers import rung_levels
    from tuner.study import init_ray

    os.environ.setdefault("SPARSETUNE_DOWNLOAD", "0")
    if args.quick:
        seeds, max_t, full_trials, es_trials, asha_trials = [1], 3, 3, 8, 10
        tasks = TASKS
    else:
        seeds = list(range(1, args.seeds + 1))
        max_t, full_trials, es_trials = args.max_t, args.full_trials, args.es_trials
        asha_trials = args.asha_trials
        tasks = tuple(args.tasks)
    # a smoke run has its own folder: runs of another size in --out are started over
    out = Path(args.out or f"runs/bench-mo-early-stopping{'-quick' if args.quick else ''}")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    if not (data_dir / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").exists():
        write_synthetic(data_dir, n_train=args.synthetic_train, n_test=args.synthetic_test)
    rungs = rung_levels(1, 3, max_t)
    # what makes runs comparable (seeds are not: more seeds extend a finished run)
    config = {"max_t": max_t, "full_trials": full_trials, "es_trials": es_trials,
              "asha_trials": asha_trials, "synthetic_train": args.synthetic_train}  # fmt: skip
    done_path, history_path = out / "runs.parquet", out / "history.parquet"
    config_path = out / "config.json"
    if config_path.exists() and json.loads(config_path.read_text()) != config:
        if args.analyze_only:
            raise SystemExit(
                f"error: {out} holds runs of other sizes ({config_path.read_text()}); pass the "
                "same --max-t/--full-trials/--es-trials/--asha-trials (or --quick) as that run"
            )
        for path in (done_path, history_path, out / "references.json"):
            path.unlink(missing_ok=True)  # other sizes: start over
    config_path.write_text(json.dumps(config))
    frames = pd.read_parquet(done_path) if done_path.exists() else pd.DataFrame()
    histories = pd.read_parquet(history_path) if history_path.exists() else pd.DataFrame()
    if args.analyze_only:  # what is done, for the seeds asked
        seeds = sorted(set(seeds) & set(frames["seed"])) if len(frames) else []
    # computed once per --out and kept: every run and every later analysis uses the same point
    ref_path = out / "references.json"
    references = json.loads(ref_path.read_text()) if ref_path.exists() else {}
    for task in tasks:
        if task not in references:
            references[task] = reference_point(task, data_dir, max_t)
    ref_path.write_text(json.dumps(references))
    if not args.analyze_only:
        init_ray(dashboard=False)
    start = time.monotonic()
    # seed by seed: a run cut short still has every task and arm for its first seeds
    plan = [(t, a, s) for s in seeds for t in tasks for a in ARMS]
    for i, (task, arm, seed) in enumerate(plan):
        if args.analyze_only:
            break
        if len(frames) and ((frames["task"] == task) & (frames["arm"] == arm)
                            & (frames["seed"] == seed)).any():  # fmt: skip
            continue
        trials = {"a": full_trials, "d": asha_trials}.get(arm, es_trials)
        frame, history = run_one(task, arm, seed, trials, max_t, out, data_dir)
        frames = pd.concat([frames, frame], ignore_index=True)
        histories = pd.concat([histories, history], ignore_index=True)
        frames.to_parquet(done_path)
        histories.to_parquet(history_path)
        shutil.rmtree(out / f"{task}-{arm}-seed{seed}", ignore_errors=True)  # keep the tables
        used = int(epochs_used(frame, max_t).sum())
        progress(
            f"[{i + 1}/{len(plan)}] {task} ({arm}) seed {seed}: {len(frame)} trials, "
            f"{used} epochs, {(frame['status'] == 'completed').sum()} full "
            f"({time.monotonic() - start:.0f}s)"
        )

    body, numbers = [], {}
    curves: dict = {}
    budgets = {}
    rows = []
    for task in tasks:
        ref = references[task]
        budget = full_trials * max_t  # (a)'s total: the equal-epochs budget
        budgets[task] = budget
        for arm in ARMS:
            for seed in seeds:
                mine = frames[(frames.task == task) & (frames.arm == arm) & (frames.seed == seed)]
                if len(mine):
                    curves.setdefault((task, arm), []).append(hv_curve(mine, ref, max_t))
        finals_a = [hv_at(c, budget) for c in curves.get((task, "a"), [])]
        target = float(np.median(finals_a)) if finals_a else float("nan")
        for arm, (label, _, _) in ARMS.items():
            runs = curves.get((task, arm), [])
            if not runs:
                continue
            mine = frames[(frames.task == task) & (frames.arm == arm)]
            final = [hv_at(c, budget) for c in runs]
            at40 = [hv_at(c, 0.4 * budget) for c in runs]
            full40 = [hv_at(c, 0.4 * budget, "full") for c in runs]
            reach = [epochs_to_reach(c, target, budget) for c in runs]
            median_reach = float(np.median(reach))
            reach_text = (
                f"{median_reach:.0f} ({median_reach / budget:.0%})"
                if np.isfinite(median_reach)
                else f"not within {budget}"
            )
            full = [hv_at(c, budget, "full") for c in runs]
            used = mine.groupby("seed").apply(lambda f: epochs_used(f, max_t).sum())
            rows.append([task, f"({arm}) {label}", f"{np.median(used):.0f}",
                         f"{np.median(full):.0f}", f"{np.median(full40):.0f}",
                         f"{np.median(at40):.4f}",
                         f"{np.median(final):.4f}", reach_text,
                         f"{sum(np.isfinite(reach))}/{len(reach)}"])  # fmt: skip
            numbers[f"{task}.{arm}.final_hv"] = round(float(np.median(final)), 4)
            numbers[f"{task}.{arm}.epochs_to_a"] = median_reach
    body.append(
        f"{len(seeds)} search seeds per arm; max_t {max_t} epochs (rungs {rungs}, "
        f"reduction factor 3); (a) {full_trials} trials = {full_trials * max_t} epochs, the "
        f"budget every arm is read at; (b), (c) {es_trials} trials, (d) {asha_trials} (enough to "
        "spend the budget). 2 trials at a time. "
        f"Machine: {machine_short()} (shared with other jobs: epochs, not seconds, are the "
        "measure)."
    )
    body.append("")
    body.append(
        table(
            ["task", "arm", "epochs run (median)", "full-budget trials", "of them by 40%",
             "HV at 40% of budget",
             "HV at budget", "epochs to reach (a)'s final HV (median)", "seeds that reach it"],
            rows,
        )
    )  # fmt: skip
    body += ["", "Reference points (fixed per task): " + "; ".join(
        f"{t}: " + ", ".join(f"{k} {v:.4g}" for k, v in references[t].items()) for t in tasks
    ) + "."]  # fmt: skip
    body += ["", "Why, from the data:", ""]
    for task in tasks:
        task_hist = histories[histories["task"] == task] if len(histories) else histories
        rho = rung_predictiveness(task_hist, rungs, max_t) if len(task_hist) else {}
        rho_text = ", ".join(f"epoch {r}: {v:.2f}" for r, v in rho.items())
        numbers[f"{task}.spearman"] = {int(k): round(v, 3) for k, v in rho.items()}
        task_frames = frames[frames["task"] == task]
        stats_b = "; ".join(rung_statistics(task_frames, "b", rungs, max_t))
        stats_c = "; ".join(rung_statistics(task_frames, "c", rungs, max_t))
        body.append(
            f"- {task}: Spearman rank correlation of val_error at a rung with val_error at "
            f"epoch {max_t}, over (a)'s full learning curves: {rho_text}. Trials reaching each "
            f"rung -> going on, all seeds: (b) {stats_b}; (c) {stats_c}."
        )
    # a smoke run's figure stays with its runs; RESULTS.md's is benchmarks/mo_early_stopping.png
    png_path = Path(args.png) if args.png else (out if args.quick else ROOT / "benchmarks") / PNG
    png = figure(curves, budgets, png_path)
    body += [
        "",
        f"![hypervolume against total epochs]({os.path.relpath(png, ROOT / 'benchmarks')})",
    ]
    return Section(
        name="mo_early_stopping",
        title="Multi-objective early stopping (MO-ASHA) at equal training epochs",
        command=command_of("mo_early_stopping.py", passed_args()),
        body="\n".join(body),
        numbers=numbers,
    )


def add_arguments(parser) -> None:
    parser.add_argument("--seeds", type=int, default=5, help="search seeds per arm (default 5)")
    parser.add_argument("--max-t", type=int, default=9, help="full budget in epochs (default 9)")
    parser.add_argument(
        "--full-trials", type=int, default=6, help="trials of (a); its epochs are the budget"
    )
    parser.add_argument("--es-trials", type=int, default=28, help="trials of (b) and (c)")
    parser.add_argument(
        "--asha-trials",
        type=int,
        default=34,
        help="trials of (d) (it stops more: ~1.6 epochs each)",
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--synthetic-train", type=int, default=1000, help="synthetic images")
    parser.add_argument("--synthetic-test", type=int, default=500)
    parser.add_argument(
        "--out",
        default=None,
        help="runs kept here, resumable (default: runs/bench-mo-early-stopping[-quick])",
    )
    parser.add_argument(
        "--png", default=None, help=f"the figure (default: benchmarks/{PNG}; --quick: in --out)"
    )
    parser.add_argument(
        "--analyze-only", action="store_true", help="no new runs: report the seeds done in --out"
    )


if __name__ == "__main__":
    cli(__doc__, add_arguments, run)
