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
from pathlib import Path

from contract.errors import ConfigError  # light: the results commands don't load torch

LAYER_TABLE_COLUMNS = [
    "trial_id", "config/method", "config/sparsity", "config/distribution",
    "config/update_interval", "config/depth", "config/width", "config/lr", "density",
    "val_accuracy",
]  # fmt: skip


def parse_assignments(assignments: list[str]) -> dict:
    import yaml

    from contract.errors import ConfigError
    from tuner import strict_yaml

    values = {}
    for assignment in assignments:
        if "=" not in assignment:
            raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. --set sparsity=0.9")
        key, text = assignment.split("=", 1)
        try:
            values[key.strip()] = strict_yaml.load(text) if text else ""
        except yaml.YAMLError as err:
            raise ConfigError(
                f"--set {assignment!r}: the value is not valid YAML ({err})"
            ) from None
    return values


class KnobHelpParser(argparse.ArgumentParser):
    """`train --help` ends with the knob table, derived from the registries when asked for
    (building it imports the model registry, so the other commands don't pay for it)."""

    def format_help(self) -> str:
        from trainables.config import format_knob_table

        self.epilog = (
            "hyperparameters (--set NAME=VALUE; a knob is read only by the components named "
            "in 'read by'):\n" + format_knob_table()
        )
        return super().format_help()


EXIT_ALL_FAILED = 1
TOP_ERRORS = 3


def error_counts(trials) -> list[tuple[str, int]]:
    """The failed trials' errors (first line), most common first."""
    from contract.columns import ERROR, FAILED, STATUS

    if not len(trials) or ERROR not in trials.columns:
        return []
    failed = trials[trials[STATUS] == FAILED][ERROR].dropna().astype(str)
    firsts = failed.map(lambda text: (text.strip().splitlines() or [""])[0][:200])
    return list(firsts.value_counts().items())


def resume_hint(spec) -> str:
    storage = "" if spec.storage == "runs" else f" --storage {spec.storage}"
    return f"continue with run_study.py resume {spec.name}{storage}"


def print_stopped(spec, result, interrupts) -> int:
    """A study paused (Ctrl-C, SIGTERM, study_timeout_s): what is done, how to go on."""
    done = len(result.trials)
    if result.timed_out:
        print(
            f"\nstopped at study_timeout_s={spec.study_timeout_s:g}: {done} of "
            f"{result.budget} trials done; {resume_hint(spec)}",
            flush=True,
        )
        return 0
    if not result.started:
        print("\ninterrupted before the study started: nothing was written", flush=True)
    else:
        print(
            f"\ninterrupted: {done} of {result.budget} trials done; {resume_hint(spec)}",
            flush=True,
        )
    return interrupts.exit_code


def print_outcome(spec, result, seconds: float) -> int:
    """The summary line (counts by status, top errors), the layer-1 table; the exit code."""
    from contract.columns import FAILED, STATUS

    trials = result.trials
    counts = trials[STATUS].value_counts().to_dict() if len(trials) else {}
    errors = error_counts(trials)
    if len(trials) and counts.get(FAILED, 0) == len(trials):
        top, times = errors[0] if errors else ("no error recorded", len(trials))
        print(
            f"error: every trial of study {spec.name!r} failed ({len(trials)} of "
            f"{result.budget}); the most common error ({times}x): {top}",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_ALL_FAILED
    print_result(spec, result, seconds)
    return 0


def print_result(spec, result, seconds: float) -> None:
    from results.tables import format_table
    from tuner.callbacks import duration

    trials = result.trials
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    from contract.columns import COMPLETED, DIVERGED, FAILED

    statuses = [COMPLETED, FAILED, DIVERGED]
    statuses += sorted(set(counts) - set(statuses))
    print(
        f"\nstudy {spec.name!r} finished in {duration(seconds)}: "
        + ", ".join(f"{counts.get(status, 0)} {status}" for status in statuses)
    )
    errors = error_counts(trials)
    if errors:
        print("top errors:")
        for text, times in errors[:TOP_ERRORS]:
            print(f"  {times}x {text}")
    if len(result.pareto):
        layer1 = result.pareto[result.pareto["layer"] == 1]
        objectives = [m for m in spec.objectives if m not in LAYER_TABLE_COLUMNS]
        columns = LAYER_TABLE_COLUMNS if spec.builtin else ["trial_id"]
        config = [c for c in layer1.columns if c.startswith("config/")] if not spec.builtin else []
        print(f"\nlayer 1 (non-dominated over {', '.join(spec.objectives)}): {len(layer1)} trials")
        print(format_table(layer1, columns + config + objectives))
    print(f"\nfiles in {result.study_dir}:")
    names = ("trials.parquet", "history.parquet", "pareto.parquet", "summary.parquet",
             "pareto.png", "spec.yaml")  # fmt: skip
    for name in names:
        if (result.study_dir / name).exists():
            print(f"  {result.study_dir / name}")


def drive(args: argparse.Namespace, spec, **how) -> int:
    """Run or resume `spec` with Ctrl-C as a pause; print the outcome; the exit code."""
    from tuner.interrupt import Interrupts
    from tuner.lock import StudyLock

    # a study another driver runs is refused in a second, before torch and Ray are imported
    StudyLock(spec.storage, spec.name).check_free()
    from tuner.study import run_study

    start = time.monotonic()
    with Interrupts() as interrupts:
        result = run_study(
            spec, address=args.address, dashboard=not args.no_dashboard,
            interrupts=interrupts, verbose=args.verbose, **how,
        )  # fmt: skip
        if result.interrupted or result.timed_out:
            return print_stopped(spec, result, interrupts)
        return print_outcome(spec, result, time.monotonic() - start)


def cmd_run(args: argparse.Namespace) -> int:
    from tuner.spec import load_spec

    # every check happens here, before torch or Ray is imported (a typo costs milliseconds)
    spec = load_spec(args.spec, args.set)
    return drive(args, spec, overwrite=args.overwrite)


def cmd_resume(args: argparse.Namespace) -> int:
    from tuner.study import load_study_spec

    # the study is where it is now: --storage, whatever its spec.yaml says
    spec = load_study_spec(args.name, args.storage)
    return drive(args, spec, resume=True)


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
        print(json.dumps({"config": config.to_dict(), "metrics": metrics}, indent=2))
    else:
        width = max(map(len, metrics))
        for name, value in metrics.items():
            print(f"{name:<{width}}  {value}")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from results.cli import query_command

    return query_command(args.name, args.sql, storage=args.storage, out=args.out)


def cmd_pareto(args: argparse.Namespace) -> int:
    from results.cli import pareto_command

    return pareto_command(args.names, args.storage, args.objectives, args.out)


def cmd_report(args: argparse.Namespace) -> int:
    from results.cli import report_command

    return report_command(args.name, args.storage, args.objectives)


def cmd_submit(args: argparse.Namespace) -> int:
    from tuner.cluster import submit_study, wait_for_job

    sub = submit_study(args.address, args.spec, args.set, python=args.python)
    print(f"submitted study {sub.study!r} as Ray Job {sub.job_id}")
    print(f"  entrypoint: {sub.entrypoint}")
    print(f"  follow its logs: ray job logs --follow --address {sub.address} {sub.job_id}")
    print(f"  its state:       run_study.py status --address {sub.address}")
    print(f"  its output:      run_study.py logs {sub.job_id} --address {sub.address}")
    print(f"  stop it:         run_study.py stop {sub.job_id} --address {sub.address}")
    if not args.wait:
        return 0
    status = wait_for_job(args.address, sub.job_id)
    print(f"job {sub.job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def cmd_status(args: argparse.Namespace) -> int:
    import pandas as pd

    from results.status import list_study_dirs, study_progress
    from results.tables import format_table

    if args.job:  # kept for scripts: the same as `logs JOB --address ... --no-follow`
        from tuner.cluster import job_logs

        print(job_logs(args.address, args.job), end="")
        return 0
    if args.address:
        from tuner.cluster import study_jobs

        rows = study_jobs(args.address)
        if not rows:
            print(f"no studies on the cluster at {args.address}")
            return 0
        for row in rows:  # progress from the study's Parquet, where this machine can read it
            # (a relative storage is relative to the job's working dir on the head: not here)
            study_dir = Path(row["storage"] or "runs") / row["study"]
            if study_dir.is_absolute() and study_dir.is_dir():
                progress = study_progress(study_dir)
                row.update({k: v for k, v in progress.items() if k not in ("study", "state")})
    else:
        dirs = (
            [Path(args.storage) / name for name in args.names]
            if args.names
            else list_study_dirs(args.storage)
        )
        missing = [d for d in dirs if not d.is_dir()]
        if missing:
            raise ConfigError(f"no study {missing[0].name!r}: {missing[0]} does not exist")
        if not dirs:
            print(f"no studies in {args.storage}")
            return 0
        rows = [study_progress(d) for d in dirs]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    print(format_table(pd.DataFrame(rows), columns))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from tuner.lifecycle import stop_job, stop_local

    if args.address:
        print(stop_job(args.address, args.job, args.timeout))
    else:
        study_dir = Path(args.storage) / args.job
        if not study_dir.is_dir():
            raise ConfigError(
                f"no study {args.job!r} in {args.storage} (a Ray Job id needs --address)"
            )
        print(stop_local(study_dir, args.timeout))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from tuner.lifecycle import follow_job, follow_local

    try:
        if args.address:
            follow_job(args.address, args.job, follow=not args.no_follow)
        else:
            study_dir = Path(args.storage) / args.job
            if not study_dir.is_dir():
                raise ConfigError(
                    f"no study {args.job!r} in {args.storage} (a Ray Job id needs --address)"
                )
            follow_local(study_dir, follow=not args.no_follow)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from tuner.dashboard import serve_dashboard

    return serve_dashboard(args.name, args.storage, args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_study.py",
        description="Multi-objective hyperparameter optimization of sparse training on Ray Tune.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # where a study's driver runs: run and resume take the same two options
    ray_options = argparse.ArgumentParser(add_help=False)
    ray_options.add_argument(
        "--address", default=None,
        help="Ray cluster to join (e.g. auto); default: start a local Ray on this machine",
    )  # fmt: skip
    ray_options.add_argument(
        "--no-dashboard", action="store_true", help="start the local Ray without its dashboard"
    )
    ray_options.add_argument(
        "--verbose", action="store_true",
        help="also show Ray's and Tune's notices here (they always go to <study>/driver.log)",
    )  # fmt: skip

    run = sub.add_parser(
        "run",
        parents=[ray_options],
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
    run.set_defaults(func=cmd_run)

    resume = sub.add_parser(
        "resume",
        parents=[ray_options],
        help="continue an interrupted study with its searcher's state",
        description="Continue an interrupted study (a killed driver, a lost head node): "
        "finished trials stay, unfinished ones run again, the searcher goes on where it was.",
    )
    resume.add_argument("name", help="the study's name (its folder under --storage)")
    resume.add_argument(
        "--storage", default="runs",
        help="the folder (or URI) holding the study now (default: runs); a moved or copied "
        "study resumes where it is, whatever its spec.yaml says",
    )  # fmt: skip
    resume.set_defaults(func=cmd_resume)

    train = sub.add_parser(
        "train",
        help="train one configuration in-process, without Ray",
        description="Train one configuration in this process (no Ray) and print its metrics: "
        "the way to debug a config.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.__class__ = KnobHelpParser  # (add_parser takes no parser class of its own)
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a hyperparameter (repeatable): --set method=rigl --set sparsity=0.9",
    )  # fmt: skip
    train.add_argument(
        "--json", action="store_true", help="print the config and final metrics as JSON"
    )
    train.set_defaults(func=cmd_train)

    storage_help = "folder holding the studies (default: runs)"
    objectives_help = "objectives as NAME=min|max (default: those stored in the study)"
    query = sub.add_parser(
        "query",
        help="SQL over a study's Parquet (DuckDB)",
        description="Run SQL over a study's Parquet with DuckDB. Tables: trials, history, "
        'pareto; quote names with a slash: SELECT "config/method", val_error FROM trials.',
    )
    query.add_argument("name", help="study name: the folder <storage>/<name>")
    query.add_argument("sql", help='SQL, e.g. "SELECT count(*) FROM trials"')
    query.add_argument("--storage", default="runs", help=storage_help)
    query.add_argument(
        "--out", default=None, metavar="FILE",
        help="write the result to FILE (.parquet or .csv) instead of printing it",
    )  # fmt: skip
    query.set_defaults(func=cmd_query)

    pareto = sub.add_parser(
        "pareto",
        help="non-dominated layers over one or more studies together",
        description="Non-dominated layers over the completed trials of one or more studies "
        "together; prints the layer-1 table. Writes nothing unless --out.",
    )
    pareto.add_argument("names", nargs="+", metavar="NAME", help="study names (merged)")
    pareto.add_argument("--storage", default="runs", help=storage_help)
    pareto.add_argument(
        "--objectives", nargs="+", default=None, metavar="NAME=MODE",
        help=objectives_help + "; required when the studies' objectives differ",
    )  # fmt: skip
    pareto.add_argument(
        "--out", default=None, metavar="FILE",
        help="write the ranked trials with their layer to FILE (.parquet or .csv)",
    )  # fmt: skip
    pareto.set_defaults(func=cmd_pareto)

    report = sub.add_parser(
        "report",
        help="write a Markdown report with plots for a study",
        description="Write <storage>/<name>/report.md: the layer-1 table, hypervolume over "
        "trials, Pareto-front plots and, for re-evaluations, accuracy against sparsity.",
    )
    report.add_argument("name", help="study name: the folder <storage>/<name>")
    report.add_argument("--storage", default="runs", help=storage_help)
    report.add_argument(
        "--objectives", nargs="+", default=None, metavar="NAME=MODE", help=objectives_help
    )
    report.set_defaults(func=cmd_report)

    dashboard = sub.add_parser(
        "dashboard",
        help="optuna-dashboard on a study's Optuna journal (live while it runs)",
        description="Serve optuna-dashboard on <storage>/<name>/optuna-journal.log, bound to "
        "127.0.0.1: each search seed is an Optuna study <name>/seed-<n> with its objectives' "
        "names, Pareto front, hypervolume history and parameter importances. Prints the URL.",
    )
    dashboard.add_argument("name", help="study name: the folder <storage>/<name>")
    dashboard.add_argument("--storage", default="runs", help=storage_help)
    dashboard.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one, printed)"
    )
    dashboard.set_defaults(func=cmd_dashboard)

    address_help = "the head's dashboard (Jobs API) address, e.g. http://127.0.0.1:8265"
    submit = sub.add_parser(
        "submit",
        help="run a study spec as a Ray Job on a cluster",
        description="Submit a study to a Ray cluster as a Ray Job (the project as working "
        "dir): prints the job id and how to follow its logs. The token comes from "
        "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.",
    )
    submit.add_argument("spec", help="study spec YAML in the project, e.g. studies/default.yaml")
    submit.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a spec field (repeatable): --set storage=s3://bucket/runs",
    )  # fmt: skip
    submit.add_argument("--address", required=True, help=address_help)
    submit.add_argument(
        "--python", default="python", help="the cluster's Python for the driver (default: python)"
    )
    submit.add_argument("--wait", action="store_true", help="wait for the job to end")
    submit.set_defaults(func=cmd_submit)

    status = sub.add_parser(
        "status",
        help="each study's progress: counts, budget, hypervolume, best values, time left",
        description="Each study's progress from its Parquet and driver record: state "
        "(running / ended / interrupted), completed / failed / stopped of the budget, the "
        "hypervolume and best value per objective so far, elapsed and remaining time. Local "
        "studies under --storage (all, or the NAMEs); with --address, the studies submitted "
        "to that cluster (Ray Jobs), with their progress where their storage is readable here.",
    )
    status.add_argument("names", nargs="*", metavar="NAME", help="local studies (default: all)")
    status.add_argument("--storage", default="runs", help=storage_help)
    status.add_argument("--address", default=None, help=address_help)
    status.add_argument("--job", default=None, help="print this job's logs instead (see logs)")
    status.set_defaults(func=cmd_status)

    timeout_help = "seconds to wait for the driver to exit (default 120)"
    stop = sub.add_parser(
        "stop",
        help="stop a running study so that `resume` can continue it",
        description="Stop a running study: a local one (NAME) by SIGINT to its driver, which "
        "saves Tune's experiment state and ends its trials; a submitted one (a Ray Job id, "
        "with --address) through the Jobs API. The Parquet stays consistent; `resume NAME` "
        "continues the study.",
    )
    stop.add_argument("job", metavar="JOB", help="a local study's name, or a Ray Job id")
    stop.add_argument("--storage", default="runs", help=storage_help)
    stop.add_argument("--address", default=None, help=address_help + " (for a Ray Job)")
    stop.add_argument("--timeout", type=float, default=120.0, help=timeout_help)
    stop.set_defaults(func=cmd_stop)

    logs = sub.add_parser(
        "logs",
        help="follow a study's output",
        description="Print a study's output and follow it until the study ends (Ctrl-C "
        "leaves): a local study's progress.log (NAME), or a Ray Job's logs (JOB, with "
        "--address).",
    )
    logs.add_argument("job", metavar="JOB", help="a local study's name, or a Ray Job id")
    logs.add_argument("--storage", default="runs", help=storage_help)
    logs.add_argument("--address", default=None, help=address_help + " (for a Ray Job)")
    logs.add_argument("--no-follow", action="store_true", help="print what is there and exit")
    logs.set_defaults(func=cmd_logs)
    return parser


class Terminated(Exception):
    """SIGTERM before a study's own handler is in place (tuner.interrupt.Interrupts)."""


def _terminated(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    import signal

    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminated) if threading_is_main() else None
    try:
        from contract.errors import ConfigError  # light: results commands don't load torch

        try:
            return args.func(args)
        except ConfigError as err:  # bad input: one line naming the field and the fix
            print(f"error: {err}", file=sys.stderr)
            return 2
    except (KeyboardInterrupt, Terminated) as stop:  # before a study's own handlers
        print("\ninterrupted", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
