"""Run every benchmark and rewrite benchmarks/RESULTS.md.

Each benchmark is a module of its own (`benchmarks/<name>.py`, runnable alone); this script
runs each as a subprocess, one after another (never two Ray sessions at once), and assembles
their sections under a header naming the machine, the versions, the date and the commit.

    ./uvrun python benchmarks/run_all.py                 # everything (about 30 min on 2 cores)
    ./uvrun python benchmarks/run_all.py --quick         # a smoke run, into a temp file
    ./uvrun python benchmarks/run_all.py --only orchestration,method_throughput

With --only, the named sections of the existing RESULTS.md are replaced and the others kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, Section, machine  # noqa: E402

# In the order they run and appear; each runs with its own defaults unless named here.
BENCHMARKS = {
    "cli_startup": [],
    "orchestration": [],
    "study_overhead": [],
    "default_study": [],
    "method_throughput": [],
    "data_pipeline": [],
    "methods_digits": [],
    "optimizers_digits": [],
    "gpu_packing": [],
    "journal_cost": [],
    "mo_early_stopping": [],
}
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
MARK = "<!-- benchmark: {} -->"


def header(m: dict, names: list[str], quick: bool) -> str:
    return "\n".join([
        "# Benchmark results",
        "",
        "Written by `./uvrun python benchmarks/run_all.py`"
        + (" --quick (a smoke run: tiny sizes, not results)" if quick else "")
        + ". Every number is measured in the run that wrote it, against a baseline measured in "
        "the same run, on the machine below; each section names the command that reproduces "
        "it alone. Benchmarks never assert times; the tests assert behaviour.",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']:.0f} GiB RAM, "
        f"GPU: {m['gpu']}; {m['os']}",
        f"- versions: Python {m['python']}, torch {m['torch']}, Ray {m['ray']}, "
        f"Optuna {m['optuna']}",
        f"- date: {m['date']}; commit {m['commit']}",
        f"- sections: {', '.join(names)}",
    ])  # fmt: skip


def run_one(name: str, extra: list[str], quick: bool, log_dir: Path) -> tuple[Section, float]:
    out = log_dir / f"{name}.json"
    log = log_dir / f"{name}.log"
    cmd = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *extra]
    if quick:
        cmd.append("--quick")
    start = time.perf_counter()
    with log.open("w") as stdout:
        # progress lines (stderr) pass through; the section's Markdown and Ray's chatter go
        # to the log
        proc = subprocess.run([*cmd, "--section-json", str(out)], cwd=ROOT, stdout=stdout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or not out.exists():
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"benchmark {name} failed (exit {proc.returncode}):\n{tail}")
    return Section(**json.loads(out.read_text())), seconds


HAND = "<!-- section: "  # a hand-written section (a measurement made by hand) follows


def existing_sections(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """From an existing RESULTS.md: name -> its benchmark's Markdown (between the markers),
    and name -> the hand-written sections that follow it (kept when the benchmark reruns)."""
    sections: dict[str, str] = {}
    hand: dict[str, str] = {}
    parts = text.split("<!-- benchmark: ")
    for part in parts[1:]:
        name, _, rest = part.partition(" -->")
        body, marker, written_by_hand = rest.partition(HAND)
        sections[name] = body.strip() + "\n"
        if marker:
            hand[name] = marker + written_by_hand.strip() + "\n"
    return sections, hand


def render_sections(order: list[str], sections: dict[str, str], hand: dict[str, str]) -> str:
    """The benchmark sections in `order`, each followed by its hand-written sections."""
    return "\n".join(
        f"{MARK.format(n)}\n{sections[n]}" + (f"\n{hand[n]}" if n in hand else "") for n in order
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--out", default=None, help="default: benchmarks/RESULTS.md (--quick: a temp file)"
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    out = Path(args.out) if args.out else None
    if out is None:
        out = Path(tempfile.mkdtemp()) / "RESULTS.quick.md" if args.quick else RESULTS
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, GPU {m['gpu']}; commit {m['commit']}")
    sections: dict[str, str] = {}
    hand: dict[str, str] = {}
    if out.exists():
        kept, hand = existing_sections(out.read_text())
        if args.only:
            sections = kept
    total = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sparsetune-bench-") as logs:
        for i, name in enumerate(names, 1):
            print(f"[{i}/{len(names)}] {name} ...", flush=True)
            section, seconds = run_one(name, BENCHMARKS[name], args.quick, Path(logs))
            sections[name] = section.markdown() + (
                f"\n_Measured {m['date']}, commit {m['commit']}; this benchmark ran "
                f"{seconds:.0f} s._\n"
            )
            print(f"[{i}/{len(names)}] {name} done in {seconds:.0f} s", flush=True)
    order = [n for n in BENCHMARKS if n in sections]
    text = header(m, order, args.quick) + "\n\n"
    text += render_sections(order, sections, hand)
    out.write_text(text)
    print(f"wrote {out} in {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
