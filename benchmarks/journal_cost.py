"""What the Optuna journal costs per trial, against Optuna's in-memory storage.

The searcher's own work per trial (NSGA-II's ask and tell, 3 objectives, the default study's
8 sampled parameters) with (a) in-memory storage, as sparsetune runs it; (b) the same plus
`tuner.journal.JournalRecorder.record` of each told trial into the journal file, as sparsetune
does for optuna-dashboard; (c) the journal as the sampler's own storage (what passing
`storage=` to OptunaSearch would cost). No Ray, no training: only the storage's part.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (  # noqa: E402
    Section,
    cli,
    command_of,
    machine_short,
    passed_args,
    progress,
    table,
)

DISTRIBUTIONS = {
    "method": optuna.distributions.CategoricalDistribution(["dense", "static", "set", "rigl"]),
    "sparsity": optuna.distributions.FloatDistribution(0.0, 0.99),
    "distribution": optuna.distributions.CategoricalDistribution(["uniform", "erk"]),
    "update_interval": optuna.distributions.IntDistribution(10, 1000, log=True),
    "lr": optuna.distributions.FloatDistribution(1e-3, 0.5, log=True),
    "weight_decay": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True),
    "depth": optuna.distributions.IntDistribution(1, 4),
    "width": optuna.distributions.IntDistribution(16, 256, log=True),
}
OBJECTIVES = ["val_error", "train_flops", "inference_flops"]


def one_run(kind: str, trials: int, folder: Path) -> float:
    """Seconds per trial of ask + tell (+ record) over `trials` trials."""
    from tuner.journal import JournalRecorder, open_journal

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = folder / f"{kind}.log"
    storage = open_journal(path) if kind == "journal storage" else None
    study = optuna.create_study(
        storage=storage, directions=["minimize"] * 3,
        sampler=optuna.samplers.NSGAIISampler(population_size=8, seed=1),
    )  # fmt: skip
    recorder = JournalRecorder(path, "bench/seed-1", ["min"] * 3, OBJECTIVES)
    start = time.perf_counter()
    for i in range(trials):
        trial = study.ask(DISTRIBUTIONS)
        values = [trial.params["sparsity"], trial.params["lr"], float(trial.params["width"])]
        study.tell(trial, values)
        if kind == "in-memory + journal record":
            recorder.record(study._storage.get_trial(trial._trial_id), f"t{i}")
    return (time.perf_counter() - start) / trials


def run(args) -> Section:
    trials = 40 if args.quick else args.trials
    kinds = ["in-memory", "in-memory + journal record", "journal storage"]
    results: dict[str, list[float]] = {k: [] for k in kinds}
    for repeat in range(args.repeats):
        for kind in kinds:
            with tempfile.TemporaryDirectory() as folder:
                results[kind].append(one_run(kind, trials, Path(folder)))
            progress(f"{kind} run {repeat + 1}: {1e3 * results[kind][-1]:.2f} ms/trial")
    base = statistics.median(results["in-memory"])
    rows = []
    for kind in kinds:
        per = statistics.median(results[kind])
        rows.append([kind, f"{1e3 * per:.2f} ms", f"{1e3 * (per - base):+.2f} ms",
                     f"{per / base:.2f}x"])  # fmt: skip
    recorded = statistics.median(results["in-memory + journal record"]) - base
    body = "\n".join([
        f"{machine_short()}. {trials} trials of NSGA-II (population 8, 3 objectives, the default "
        f"study's 8 parameters), ask + tell, median of {args.repeats} runs; no training.",
        "",
        table(["storage", "per trial", "against in-memory", "ratio"], rows),
        "",
        f"- What sparsetune pays for the journal: **{1e3 * recorded:.2f} ms per trial** (one "
        "append of the told trial, on the driver), against trials of seconds.",
        "- The journal as the sampler's own storage costs more per trial (every ask and tell "
        "goes through the log) and leaves a killed driver's running trials in it for good; "
        "sparsetune keeps the sampler in memory and records told trials (tuner/journal.py).",
    ])  # fmt: skip
    return Section(
        name="journal_cost",
        title="Optuna journal: cost per trial against in-memory storage",
        command=command_of("journal_cost.py", passed_args()),
        body=body,
        numbers={"record_ms_per_trial": round(1e3 * recorded, 3), "trials": trials},
    )


def add_arguments(parser) -> None:
    parser.add_argument("--trials", type=int, default=200, help="trials per run (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per storage (default 3)")


if __name__ == "__main__":
    cli(__doc__, add_arguments, run)
