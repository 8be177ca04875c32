"""Every sparse-training method at 50/80/90/95% sparsity on digits (MLP 64-128-128-10).

Prints a Markdown table: test accuracy (mean and spread over seeds), training FLOPs relative
to dense (the same seeds), the density reached, and the wall time of training (train_seconds,
mean per run). Same config for every method (epochs, lr, batch size, update interval), so the
rows differ only in the method. In-process (no Ray), one run at a time.

    uv run python benchmarks/methods_digits.py [--epochs 40] [--seeds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainables.datasets import load_dataset  # noqa: E402
from trainables.train import Trainer  # noqa: E402

# (row label, method, knobs). Variants of one method are separate rows.
VARIANTS = [
    ("static", "static", {}),
    ("set", "set", {}),
    ("set (sign split)", "set", {"set_sign_split": True}),
    ("rigl", "rigl", {}),
    ("prune_regrow (mag/grad)", "prune_regrow", {}),
    ("prune_regrow SNFS (mag/momentum)", "prune_regrow", {"grow_criterion": "momentum"}),
    ("prune_regrow (grad/random, regrowth 0.5)", "prune_regrow",
     {"drop_criterion": "gradient", "grow_criterion": "random", "regrowth_rate": 0.5}),
    ("swat (SWAT-U)", "swat", {}),
    ("swat (SWAT-ERK)", "swat", {"distribution": "erk"}),
    ("hypersparse (ART + HS)", "hypersparse", {"warmup_epochs": 2}),
    ("hypersparse (ART + l1)", "hypersparse", {"warmup_epochs": 2, "regularizer": "l1"}),
    ("hypersparse (ART + l2)", "hypersparse", {"warmup_epochs": 2, "regularizer": "l2"}),
]  # fmt: skip
SPARSITIES = (0.5, 0.8, 0.9, 0.95)


def run(config: dict, data) -> dict:
    trainer = Trainer(config, data)
    metrics = {}
    while not trainer.finished:
        metrics = trainer.run_epoch()
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--update-interval", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("digits", "data")
    base = {"epochs": args.epochs, "lr": args.lr, "update_interval": args.update_interval}
    seeds = range(args.seeds)
    start = time.perf_counter()

    def runs(method: str, sparsity: float, knobs: dict) -> list[dict]:
        return [
            run({**base, "method": method, "sparsity": sparsity, "seed": s, **knobs}, data)
            for s in seeds
        ]

    dense = runs("dense", 0.0, {})
    dense_flops = statistics.mean(m["train_flops"] for m in dense)

    def row(label: str, sparsity: float, results: list[dict]) -> str:
        acc = [100 * m["test_accuracy"] for m in results]
        spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
        flops = statistics.mean(m["train_flops"] for m in results) / dense_flops
        density = statistics.mean(m["density"] for m in results)
        seconds = statistics.mean(m["train_seconds"] for m in results)
        return (
            f"| {label} | {sparsity:.2f} | {statistics.mean(acc):.2f} ± {spread:.2f} | "
            f"{flops:.3f} | {density:.3f} | {seconds:.2f} |"
        )

    print(
        "| method | sparsity | test accuracy % (mean ± sd) | train FLOPs / dense | density "
        "| train s (per run) |"
    )
    print("|---|---|---|---|---|---|")
    print(row("dense", 0.0, dense), flush=True)
    for sparsity in SPARSITIES:
        for label, method, knobs in VARIANTS:
            print(row(label, sparsity, runs(method, sparsity, knobs)), flush=True)
    print(
        f"\n{len(seeds)} seeds x (1 + {len(VARIANTS)} x {len(SPARSITIES)}) configs, "
        f"epochs={args.epochs}, lr={args.lr}, update_interval={args.update_interval}, "
        f"batch 64, MLP depth 2 width 128; total {time.perf_counter() - start:.0f}s on "
        f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, 1 thread"
    )


if __name__ == "__main__":
    main()
