"""The default study as the README runs it: wall time, study time, peak memory.

Runs `run_study.py run studies/default.yaml` (the README's command, storage in a temporary
folder) as a subprocess and samples /proc every `--interval` seconds: the resident set (RSS)
and the proportional set (PSS: shared pages split between the processes that map them, so
the sum counts each page once) of the driver and every process under it (Ray's GCS, raylet,
dashboard, agents and the trial workers). Reports the peaks of the sums, the driver's own
peak RSS (VmHWM), the study time the command prints, and how much of the 2 slots' time the
trials spent in their training loops (their `train_seconds` over slots x study time).

    ./uvrun python benchmarks/default_study.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid = int(stat.parent.name)
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(pid)
    return tree


def descendants(root: int) -> list[int]:
    tree, out, todo = children_of(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(tree.get(pid, []))
    return out


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Peaks of the summed RSS and PSS of a process tree, sampled every `interval` s."""

    def __init__(self, root: int, interval: float):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.stop = threading.Event()
        self.peak_rss = self.peak_pss = self.driver_hwm = 0
        self.peak_processes = 0

    def run(self) -> None:
        while not self.stop.is_set():
            pids = descendants(self.root)
            rss = sum(status_kib(p, "VmRSS") for p in pids)
            pss = sum(pss_kib(p) for p in pids)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self.driver_hwm = max(self.driver_hwm, status_kib(self.root, "VmHWM"))
            self.peak_processes = max(self.peak_processes, len(pids))
            self.stop.wait(self.interval)


def run(args) -> Section:
    import pandas as pd

    overrides = ["--set", "trials=8", "--set", "fixed.epochs=2"] if args.quick else []
    with tempfile.TemporaryDirectory(prefix="sparsetune-default-") as storage:
        cmd = [sys.executable, "run_study.py", "run", "studies/default.yaml",
               "--set", f"storage={storage}", *overrides]  # fmt: skip
        progress("running: " + " ".join(cmd[1:]))
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        sampler = MemorySampler(proc.pid, args.interval)
        sampler.start()
        output = proc.communicate()[0]
        wall = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
        if proc.returncode != 0:
            raise RuntimeError(f"the default study failed:\n{output[-3000:]}")
        match = re.search(r"study 'default' finished in (\d+)s: (.*)", output)
        study_s = float(match.group(1)) if match else float("nan")
        outcome = match.group(2) if match else "?"
        trials = pd.read_parquet(Path(storage) / "default" / "trials.parquet")
    slots = 2
    train_s = float(trials["train_seconds"].sum())
    busy = train_s / (slots * study_s)
    gib = 2**20
    numbers = {
        "wall_s": round(wall, 1), "study_s": study_s, "trials": len(trials),
        "peak_rss_sum_gib": round(sampler.peak_rss / gib, 2),
        "peak_pss_sum_gib": round(sampler.peak_pss / gib, 2),
        "driver_peak_rss_gib": round(sampler.driver_hwm / gib, 2),
        "train_share": round(busy, 3),
    }  # fmt: skip
    rows = [
        ["wall time, Ray start-up included", f"{wall:.1f} s"],
        ["study time (the command's own line)", f"{study_s:.0f} s ({len(trials)} trials: "
         f"{outcome})"],
        ["training loops, summed over trials (`train_seconds`)", f"{train_s:.1f} s"],
        [f"share of {slots} slots x study time spent in training loops", f"{busy:.0%}"],
        ["peak of summed RSS (driver + Ray + workers)", f"{sampler.peak_rss / gib:.2f} GiB"],
        ["peak of summed PSS (shared pages counted once)", f"{sampler.peak_pss / gib:.2f} GiB"],
        ["driver's own peak RSS (VmHWM)", f"{sampler.driver_hwm / gib:.2f} GiB"],
        ["processes in the tree at most", str(sampler.peak_processes)],
    ]  # fmt: skip
    shrunk = ", " + " ".join(overrides) if overrides else ""
    body = "\n".join([
        f"{machine_short()}. `run_study.py run studies/default.yaml` as the README runs it "
        f"(dashboard on), storage in a temporary folder{shrunk}; "
        f"memory sampled from /proc every {args.interval:g} s over the driver and every "
        "process under it.",
        "",
        table(["what", "measured"], rows),
        "",
        f"The rest of the study time ({1 - busy:.0%} of the slots) is evaluation after every "
        "epoch (validation, test, an inference timing pass), Ray and Tune's scheduling and "
        "reporting, checkpoints, the driver's Parquet writes and NSGA-II, and the two "
        "workers' start (torch import). RSS sums count the pages every process shares "
        "(libtorch, Ray's object store) once per process; PSS is the closer total.",
    ])  # fmt: skip
    return Section(
        name="default_study",
        title="The default study: wall time and peak memory",
        command=command_of("default_study.py", passed_args()),
        body=body,
        numbers=numbers,
    )


def add_arguments(parser) -> None:
    parser.add_argument("--interval", type=float, default=0.25, help="sampling period (s)")


if __name__ == "__main__":
    cli(__doc__, add_arguments, run)
