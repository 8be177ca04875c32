#!/usr/bin/env python3
"""sparsetune: multi-objective hyperparameter optimization of sparse training on Ray Tune.

    run_study.py run studies/default.yaml [--set trials=8 --set fixed.epochs=2]
    run_study.py train --set method=rigl --set sparsity=0.9 [--json]

Thin on purpose: it parses, then calls tuner/, trainables/ and results/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

LAYER_TABLE_COLUMNS = [
    "trial_id", "config/method", "config/sparsity", "config/distribution",
    "config/update_interval", "config/depth", "config/width", "config/lr", "density",
    "val_accuracy",
]  # fmt: skip


def parse_assignments(assignments: list[str]) -> dict:
    import yaml

    from trainables.config import ConfigError

    values = {}
    for assignment in assignments:
        if "=" not in assignment:
            raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. --set sparsity=0.9")
        key, text = assignment.split("=", 1)
        values[key.strip()] = yaml.safe_load(text) if text else ""
    return values


def cmd_run(args: argparse.Namespace) -> int:
    from results.tables import format_table
    from tuner.spec import load_spec
    from tuner.study import run_study

    spec = load_spec(args.spec, args.set)  # every check happens here, before Ray starts
    start = time.monotonic()
    result = run_study(
        spec, overwrite=args.overwrite, address=args.address, dashboard=not args.no_dashboard
    )
    trials = result.trials
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    print(
        f"\nstudy {spec.name!r} finished in {time.monotonic() - start:.0f}s: "
        + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    )
    if len(result.pareto):
        layer1 = result.pareto[result.pareto["layer"] == 1]
        objectives = [m for m in spec.objectives if m not in LAYER_TABLE_COLUMNS]
        print(f"\nlayer 1 (non-dominated over {', '.join(spec.objectives)}): {len(layer1)} trials")
        print(format_table(layer1, LAYER_TABLE_COLUMNS + objectives))
    print(f"\nfiles in {result.study_dir}:")
    for name in ("trials.parquet", "history.parquet", "pareto.parquet", "pareto.png", "spec.yaml"):
        if (result.study_dir / name).exists():
            print(f"  {result.study_dir / name}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from trainables.config import make_config
    from trainables.train import Trainer

    config = make_config(parse_assignments(args.set), where="--set ")
    trainer = Trainer(config)
    metrics = {}
    while not trainer.finished:
        metrics = trainer.run_epoch()
        if not args.json:
            m = metrics
            print(
                f"epoch {m['epoch']:>3}/{config['epochs']}  loss {m['train_loss']:.4f}  "
                f"val_accuracy {m['val_accuracy']:.4f}  train_flops {m['train_flops']:.3e}",
                file=sys.stderr,
                flush=True,
            )
    if args.json:
        print(json.dumps({"config": config, "metrics": metrics}, indent=2))
    else:
        width = max(map(len, metrics))
        for name, value in metrics.items():
            print(f"{name:<{width}}  {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_study.py",
        description="Multi-objective hyperparameter optimization of sparse training on Ray Tune.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a study spec on Ray Tune",
        description="Run a study: one search per seed, Parquet as trials finish, then the "
        "Pareto layers, a PNG of the front and the layer-1 table.",
    )
    run.add_argument("spec", help="study spec YAML, e.g. studies/default.yaml")
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a spec field (repeatable): --set trials=8 --set fixed.epochs=2",
    )  # fmt: skip
    run.add_argument(
        "--overwrite", action="store_true", help="replace an existing study of that name"
    )
    run.add_argument(
        "--address", default=None,
        help="Ray cluster to join (e.g. auto); default: start a local Ray on this machine",
    )  # fmt: skip
    run.add_argument(
        "--no-dashboard", action="store_true", help="start the local Ray without its dashboard"
    )
    run.set_defaults(func=cmd_run)

    train = sub.add_parser(
        "train",
        help="train one configuration in-process, without Ray",
        description="Train one configuration in this process (no Ray) and print its metrics: "
        "the way to debug a config.",
    )
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a hyperparameter (repeatable): --set method=rigl --set sparsity=0.9",
    )  # fmt: skip
    train.add_argument(
        "--json", action="store_true", help="print the config and final metrics as JSON"
    )
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from trainables.config import ConfigError
    from tuner.study import StudyExistsError

    try:
        return args.func(args)
    except (ConfigError, StudyExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
