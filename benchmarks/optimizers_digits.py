"""Optimizers and learning-rate schedules on digits: each against the default (SGD 0.1 with
Nesterov momentum 0.9, cosine), measured in the same run with the same seeds.

The dynamic-sparsity experiments train with Adam at 1e-3 and a constant rate; this shows a
2-layer MLP (64-128-128-10) reaching the default's accuracy with it, dense and at 90%
sparsity (RigL). In-process (no Ray), one run at a time, one torch thread.

    ./uvrun python benchmarks/optimizers_digits.py [--epochs 10] [--seeds 3]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    Section,
    cli,
    command_of,
    machine_short,
    passed_args,
    progress,
    table,
)
from trainables.config import make_config  # noqa: E402
from trainables.datasets import load_dataset  # noqa: E402
from trainables.train import Trainer  # noqa: E402

# (row label, knobs); the first row is the baseline every other row is compared with
SETTINGS = [
    ("sgd 0.1, nesterov 0.9, cosine (default)", {}),
    ("adam 1e-3, constant", {"optimizer": "adam", "lr": 1e-3, "lr_schedule": "constant"}),
    ("adamw 1e-3, linear_warmup_cosine", {"optimizer": "adamw", "lr": 1e-3,
                                          "lr_schedule": "linear_warmup_cosine"}),
    ("sgd 0.1, nesterov 0.9, step", {"lr_schedule": "step"}),
]  # fmt: skip
METHODS = [("dense", {"method": "dense"}), ("rigl 90%", {"method": "rigl", "sparsity": 0.9})]


def run(args) -> Section:
    epochs, seeds = (2, 1) if args.quick else (args.epochs, args.seeds)
    torch.set_num_threads(1)
    data = load_dataset("digits", "data")
    start = time.perf_counter()
    rows = []
    numbers = {}
    for method_label, method in METHODS:
        baseline = None
        for label, knobs in SETTINGS:
            accuracies = []
            for seed in range(1, seeds + 1):
                config = {"depth": 2, "width": 128, "epochs": epochs, "device": "cpu",
                          "seed": seed, **method, **knobs}  # fmt: skip
                trainer = Trainer(make_config(config), data)
                while not trainer.finished:
                    metrics = trainer.run_epoch()
                accuracies.append(100 * metrics["test_accuracy"])
            mean = statistics.mean(accuracies)
            sd = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
            baseline = mean if baseline is None else baseline
            rows.append((method_label, label, f"{mean:.2f} ± {sd:.2f}", f"{mean - baseline:+.2f}"))
            numbers[f"{method_label}/{label}"] = round(mean, 2)
            progress(f"{method_label}, {label}: {mean:.2f}% ({time.perf_counter() - start:.0f} s)")
    body = "\n".join([
        f"{machine_short()}; torch {torch.__version__}, 1 thread, in-process (no Ray). MLP "
        f"64-128-128-10 on scikit-learn's digits (test split of 360 images), batch 64, {epochs} "
        f"epochs, weight decay 5e-4, seeds 1-{seeds}; test accuracy as mean ± sd over seeds, "
        "and its difference from the default optimizer (first row of each method) in the same "
        f"run. {len(rows) * seeds} runs in {time.perf_counter() - start:.0f} s.",
        "",
        table(["model", "optimizer, schedule", "test accuracy %", "vs default (points)"], rows),
    ])  # fmt: skip
    return Section(
        name="optimizers_digits",
        title="Optimizers and learning-rate schedules on digits (Adam 1e-3 constant vs SGD)",
        command=command_of("optimizers_digits.py", passed_args()),
        body=body,
        numbers=numbers,
    )


def add_arguments(parser) -> None:
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)


if __name__ == "__main__":
    cli(__doc__, add_arguments, run)
