"""Several MLP trials on one GPU: 1, 2, 4, 8 at a time with fractional GPU resources.

For each packing k: a study of 4k fixed-work trials (the dense MLP of
benchmarks/orchestration.py on digits, data on the GPU, only `lr` and `weight_decay`
sampled) through `run_study` with `resources.gpu = 1/k` and `max_concurrent = k`, after a
warm-up study; aggregate training samples/s over the study's wall time, against k = 1, and
the GPU's utilization and memory sampled with nvidia-smi while it runs. Without CUDA the
section says so and measures nothing (`--cpu-smoke` runs the same plumbing on the CPU with
packings 1 and 2, to check the script, not to measure).

    ./uvrun python benchmarks/gpu_packing.py [--packings 1 2 4 8] [--epochs 20]
"""

from __future__ import annotations

import contextlib
import io
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

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

SPACE = ROOT / "benchmarks" / "fixed_work.yaml"
FIXED = {"method": "dense", "depth": 3, "width": 512, "batch_size": 64}
TITLE = "Several MLP trials on one GPU (fractional GPU resources)"


class GpuSampler(threading.Thread):
    """nvidia-smi's utilization (%) and memory used (MiB) of GPU 0, every `interval` s."""

    def __init__(self, interval: float = 0.25):
        super().__init__(daemon=True)
        self.interval = interval
        self.util: list[float] = []
        self.memory: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                 "--format=csv,noheader,nounits", "-i", "0"]  # fmt: skip
        while not self.stop.is_set():
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
                util, memory = (float(v) for v in out.strip().split(","))
                self.util.append(util)
                self.memory.append(memory)
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self.stop.wait(self.interval)


def packed_study(storage, name: str, k: int, trials: int, epochs: int, device: str, gpu: bool):
    from tuner.spec import load_spec
    from tuner.study import run_study

    fixed = ", ".join(f"{a}: {b}" for a, b in {**FIXED, "epochs": epochs, "device": device}.items())
    spec = load_spec(
        ROOT / "studies" / "default.yaml",
        [f"storage={storage}", f"name={name}", f"trials={trials}", f"space={SPACE}",
         f"fixed={{{fixed}}}", f"max_concurrent={k}", "resources.cpu=1",
         f"resources.gpu={1 / k if gpu else 0}", f"search.population_size={max(8, 2 * k)}"],
    )  # fmt: skip
    sampler = GpuSampler() if gpu else None
    if sampler:
        sampler.start()
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        result = run_study(spec, dashboard=False)
        wall = time.perf_counter() - start
    if sampler:
        sampler.stop.set()
        sampler.join()
    done = result.trials
    complete = int(((done["status"] == "completed") & (done["epoch"] == epochs)).sum())
    return {
        "wall": wall,
        "complete": complete,
        "util": statistics.mean(sampler.util) if sampler and sampler.util else float("nan"),
        "memory": max(sampler.memory) if sampler and sampler.memory else float("nan"),
    }


def run(args) -> Section:
    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_smoke:
        return Section(
            name="gpu_packing", title=TITLE,
            command=command_of("gpu_packing.py", passed_args()),
            body=f"Not measured: no GPU on this machine ({machine_short()}). On a CUDA machine "
            "the same command measures 1, 2, 4 and 8 concurrent MLP trials on one GPU "
            "(`resources.gpu` = 1/k): aggregate samples/s against k = 1, GPU utilization and "
            "memory from nvidia-smi. Until it has run there, GPU studies keep the spec's "
            "`resources` (no packing default is claimed).",
            numbers={"measured": False},
        )  # fmt: skip
    import ray

    from trainables.datasets import load_dataset
    from tuner.ray_session import init_ray

    packings = [1, 2] if args.cpu_smoke else args.packings
    epochs = 2 if args.quick or args.cpu_smoke else args.epochs
    device = "cuda" if cuda and not args.cpu_smoke else "cpu"
    gpu = device == "cuda"
    n_train = len(load_dataset("digits", "data").y_train)
    init_ray(dashboard=False)
    storage = tempfile.mkdtemp(prefix="sparsetune-gpu-packing-")
    packed_study(storage, "warmup", 1, 2, epochs, device, gpu)  # warm-up: imports, CUDA context
    rows, numbers = [], {"measured": gpu, "samples_per_s": {}}
    base = None
    for k in packings:
        trials = args.trials_per_slot * k
        r = packed_study(storage, f"pack-{k}", k, trials, epochs, device, gpu)
        rate = trials * epochs * n_train / r["wall"]
        base = base or rate
        numbers["samples_per_s"][k] = round(rate)
        progress(f"{k} at a time: {r['wall']:.1f} s, {rate:,.0f} samples/s")
        rows.append([
            k, f"{1 / k:.3g}" if gpu else "0 (CPU smoke run)", trials, f"{r['wall']:.1f} s",
            f"{rate:,.0f}", f"{rate / base:.2f}x", f"{r['util']:.0f}%", f"{r['memory']:.0f} MiB",
            f"{r['complete']}/{trials}",
        ])  # fmt: skip
    ray.shutdown()
    best = max(numbers["samples_per_s"], key=numbers["samples_per_s"].get)
    numbers["best_packing"] = best
    name = torch.cuda.get_device_name(0) if gpu else "CPU (smoke run, not a measurement)"
    body = "\n".join([
        f"{machine_short()}; {name}. Per packing k: {args.trials_per_slot}k trials of the dense "
        f"MLP 64-512-512-512-10 on digits (batch 64, {epochs} epochs, data on the device), "
        f"`resources.gpu` = 1/k, `max_concurrent` = k, 1 CPU per trial, after a warm-up study. "
        "Samples/s: training samples of all trials over the study's wall time (its start-up "
        "included).",
        "",
        table(["k at a time", "GPU per trial", "trials", "wall", "samples/s", "against k = 1",
               "GPU utilization (mean)", "GPU memory (peak)", "completed"], rows),  # fmt: skip
        "",
        f"The best packing here: {best} trials at a time "
        f"({numbers['samples_per_s'][best] / base:.2f}x the aggregate throughput of one). "
        "CUDA graphs and torch.compile for the small-model step were not tried.",
    ])  # fmt: skip
    return Section(
        name="gpu_packing",
        title=TITLE,
        command=command_of("gpu_packing.py", passed_args()),
        body=body,
        numbers=numbers,
    )


def add_arguments(parser) -> None:
    parser.add_argument("--packings", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--trials-per-slot", type=int, default=4)
    parser.add_argument("--cpu-smoke", action="store_true", help="the plumbing on the CPU")


if __name__ == "__main__":
    cli(__doc__, add_arguments, run)
