"""What every benchmark shares: the machine it ran on, Markdown tables, and the section format.

A benchmark module exposes `run(args) -> Section` and a command line (`cli`): run alone it
prints its section; `run_all.py` runs each module as a subprocess with `--section-json PATH`
and assembles RESULTS.md from the sections.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Section:
    """One benchmark's part of RESULTS.md: its command, tables and what they show."""

    name: str  # the module, e.g. "orchestration"
    title: str
    command: str  # what reproduces it alone
    body: str  # Markdown: tables and interpretation
    numbers: dict[str, Any] = field(default_factory=dict)  # headline numbers, for README/summary

    def markdown(self) -> str:
        return f"## {self.title}\n\n`{self.command}`\n\n{self.body.strip()}\n"


# -- the machine -----------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def gpu_name() -> str | None:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return None


def sync(device) -> None:
    """Wait for the device's queued work, so that a timer around it measures the work."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def git_commit() -> str:
    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=5
            )
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " with uncommitted changes"
    return commit


def machine() -> dict[str, Any]:
    import optuna
    import ray
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(ram_gib(), 1),
        "gpu": gpu_name() or "none",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "optuna": optuna.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
    }


def machine_short() -> str:
    """One line naming the hardware, for a table's caption."""
    m = machine()
    return f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']:.0f} GiB, GPU: {m['gpu']}"


# -- formatting ------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(ratio: float) -> str:
    """A ratio - 1 as a signed percentage: 1.034 -> '+3.4%'."""
    return f"{100 * (ratio - 1):+.1f}%"


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# -- the command line ------------------------------------------------------------------------


def command_of(script: str, argv: Sequence[str]) -> str:
    """The command that reproduces a run: `./uvrun python benchmarks/x.py ARGS`."""
    args = [a for a in argv if a]
    return " ".join(["./uvrun", "python", f"benchmarks/{script}", *map(shlex.quote, args)])


def cli(
    doc: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], Section],
) -> None:
    """Parse, run, print the section's Markdown; with --section-json also write it as JSON."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--section-json", default=None, help=argparse.SUPPRESS
    )  # run_all.py's channel
    add_arguments(parser)
    args = parser.parse_args()
    section = run(args)
    print(section.markdown(), flush=True)
    if args.section_json:
        Path(args.section_json).write_text(json.dumps(asdict(section), default=str))


def passed_args(argv: Sequence[str] | None = None) -> list[str]:
    """This process's arguments minus run_all's private ones (for the `command` line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--section-json":
            skip = True
            continue
        if arg.startswith("--section-json="):
            continue
        out.append(arg)
    return out
