"""Orchestration overhead: the same trials in-process with plain Optuna, and through sparsetune.

Fixed work: a real sparsetune training trial whose cost does not depend on the sampled config
(a dense MLP of fixed depth and width on digits, batch 64; only `lr` and `weight_decay` are
sampled, from benchmarks/fixed_work.yaml), its epochs calibrated so that one trial takes
about `--trial-seconds` with one torch thread.

(a) in-process: `optuna.create_study(directions=[...], sampler=NSGAIISampler(...))` and
    `study.optimize`, calling `trainables.train.Trainer` one trial after another, with one
    torch thread (what a 1-CPU Ray trial gets); also with two threads, for information.
(b) sparsetune: `tuner.study.run_study` on a local Ray (`init_ray(dashboard=False)`), 2
    trials at a time, 1 CPU each, after a 2-trial warm-up study (Ray's start-up and the
    workers' first imports are reported apart).

Per-trial overhead = wall(b) * 2 / N - mean in-process trial time: what each of the 2 slots
spends per trial beyond the training itself. Speed-up = wall(a) / wall(b).

Then the ablation: the same N trials through sparsetune with one Ray Tune setting changed
at a time, in the same Ray session: each Tune default sparsetune overrides put back, and
each setting sparsetune could still change.

    ./uvrun python benchmarks/orchestration.py [--trials 24] [--trial-seconds 2]
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from ray.tune import Callback  # noqa: E402

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
DEFAULT_SPEC = ROOT / "studies" / "default.yaml"
FIXED = {"method": "dense", "depth": 3, "width": 512, "batch_size": 64}
POPULATION = 8
CONCURRENT = 2


def objectives() -> dict[str, str]:
    from tuner.spec import load_spec

    return load_spec(DEFAULT_SPEC).objectives


# -- (a) in-process ----------------------------------------------------------------------------


def calibrate_epochs(data, seconds: float) -> tuple[int, float]:
    """Epochs for one trial of about `seconds` with one torch thread, and one epoch's time."""
    from trainables.train import Trainer

    torch.set_num_threads(1)
    trainer = Trainer({"dataset": "digits", **FIXED, "epochs": 1000}, data)
    trainer.run_epoch()  # warm-up
    start = time.perf_counter()
    for _ in range(5):
        trainer.run_epoch()
    epoch_s = (time.perf_counter() - start) / 5
    return max(3, round(seconds / epoch_s)), epoch_s


def in_process(data, trials: int, epochs: int, threads: int, seed: int = 1) -> dict:
    """N trials one after another with plain Optuna NSGA-II; wall time and per-trial times."""
    import optuna

    from trainables.train import Trainer

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(threads)
    goals = objectives()
    directions = ["minimize" if mode == "min" else "maximize" for mode in goals.values()]
    sampler = optuna.samplers.NSGAIISampler(population_size=POPULATION, seed=seed)
    study = optuna.create_study(directions=directions, sampler=sampler)
    seconds: list[float] = []
    epochs_done: list[int] = []

    def objective(trial):
        config = {
            "dataset": "digits", **FIXED, "epochs": epochs,
            "lr": trial.suggest_float("lr", 1e-3, 0.1, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
        }  # fmt: skip
        start = time.perf_counter()
        trainer = Trainer(config, data)
        metrics = {}
        while not trainer.finished:
            metrics = trainer.run_epoch()
        seconds.append(time.perf_counter() - start)
        epochs_done.append(metrics["epoch"])
        return tuple(metrics[m] for m in goals)

    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    wall = time.perf_counter() - start
    return {"wall": wall, "trial_mean": statistics.mean(seconds), "epochs": epochs_done}


# -- (b) through sparsetune ------------------------------------------------------------------


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """Set environment variables for one study (Tune reads them when a Tuner runs), then put
    back what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ray_study(
    storage: str, name: str, trials: int, epochs: int, env=None, concurrent=None, **kwargs
) -> dict:
    """One study of N fixed-work trials through run_study; wall time and the trials."""
    from tuner.spec import load_spec
    from tuner.study import run_study

    fixed = ", ".join(f"{k}: {v}" for k, v in {**FIXED, "epochs": epochs}.items())
    spec = load_spec(
        DEFAULT_SPEC,
        [f"storage={storage}", f"name={name}", f"trials={trials}", f"space={SPACE}",
         f"fixed={{{fixed}}}", f"max_concurrent={concurrent or CONCURRENT}", "resources.cpu=1",
         f"search.population_size={POPULATION}"],
    )  # fmt: skip
    timeline = Timeline()
    with environment(env or {}), contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        result = run_study(spec, dashboard=False, callbacks=[timeline], **kwargs)
        end = time.perf_counter()
    table_ = result.trials
    done = int(((table_["status"] == "completed") & (table_["epoch"] == epochs)).sum())
    return {"wall": end - start, "complete": done, "requested": trials,
            "timeline": timeline.profile(start, end, concurrent or CONCURRENT)}  # fmt: skip


class Timeline(Callback):
    """A Tune callback: when (in the driver) each trial starts, reports and ends, with the
    worker's own time for each iteration (`time_this_iter_s`: its epoch, the report, and
    in the first one the Trainer's construction)."""

    def __init__(self):
        self.events: list[tuple[str, str, float, float]] = []

    def on_trial_start(self, iteration, trials, trial, **info):
        self.events.append(("start", trial.trial_id, time.perf_counter(), 0.0))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.events.append(
            ("result", trial.trial_id, time.perf_counter(), result.get("time_this_iter_s", 0.0))
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.events.append(("end", trial.trial_id, time.perf_counter(), 0.0))

    def profile(self, fit_start: float, fit_end: float, workers: int) -> dict:
        """Per trial: the worker's own time (sum of its iterations), the driver round trips
        (arrival gaps beyond the worker's time), the end (last result to complete), and the
        gap until its slot's next trial starts; the first trial on each new worker apart."""
        trials: dict[str, dict] = {}
        for kind, trial_id, at, took in self.events:
            t = trials.setdefault(trial_id, {"results": []})
            if kind == "result":
                t["results"].append((at, took))
            else:
                t[kind] = at
        done = sorted(
            (t for t in trials.values() if "start" in t and "end" in t and t["results"]),
            key=lambda t: t["start"],
        )
        if not done:
            return {}
        ends = sorted(t["end"] for t in done)
        for t in done:
            t["worker"] = sum(took for _, took in t["results"])
            t["round_trips"] = t["results"][-1][0] - t["start"] - t["worker"]
            t["tail"] = t["end"] - t["results"][-1][0]
            before = [e for e in ends if e <= t["start"]]
            t["gap"] = t["start"] - before[-1] if before else None
        first, rest = done[:workers], done[workers:] or done

        def mean(key, group):
            values = [t[key] for t in group if t[key] is not None]
            return statistics.mean(values) if values else float("nan")

        return {
            "to_first_start": done[0]["start"] - fit_start,
            "first_worker": mean("worker", first),
            "worker": mean("worker", rest),
            "round_trips": mean("round_trips", rest),
            "tail": mean("tail", rest),
            "gap": mean("gap", rest),
            "after_last": fit_end - ends[-1],
            "epochs": statistics.mean(len(t["results"]) for t in rest),
        }


@dataclass
class Variant:
    label: str
    env: dict[str, str] = field(default_factory=dict)
    kwargs: dict = field(default_factory=dict)
    note: str = ""


def variants() -> list[Variant]:
    """One setting changed at a time against sparsetune as configured (TUNE_ENV and
    CHECKPOINT_EVERY_S)."""
    from tuner.study import TUNE_ENV
    from tuner.trainable import CHECKPOINT_EVERY_S

    every = CHECKPOINT_EVERY_S
    loggers_off = TUNE_ENV.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS") == "1"
    buffering = int(TUNE_ENV.get("TUNE_RESULT_BUFFER_LENGTH", "1")) > 1
    return [
        Variant("reuse_actors=False (Tune's default)", kwargs={"reuse_actors": False},
                note="a new worker process per trial (process start, imports)"),
        Variant("trial checkpoint every epoch (sparsetune before issue 8)" if every
                else "trial checkpoint at most every 5 s",
                kwargs={"checkpoint_every_s": 0.0 if every else 5.0},
                note="per checkpoint: torch.save, a copy to storage, and (num_to_keep=1) a "
                "forced snapshot of Tune's experiment state, searcher included"),
        Variant("no trial checkpoints at all", kwargs={"checkpoint_every_s": float("inf")},
                note="the bound for checkpoints: nothing to resume a dead worker from"),
        Variant("Tune's CSV and TensorBoard loggers on (its default)" if loggers_off
                else "Tune's CSV and TensorBoard loggers off",
                env={"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0" if loggers_off else "1"},
                note="per result a CSV row and a TensorBoard event; the JSON logger stays "
                "either way (run_study adds it: resume and the tests read result.json)"),
        Variant("no result buffering (Tune's default)" if buffering
                else "result buffering (2 s, at most 4 results)",
                env={"TUNE_RESULT_BUFFER_LENGTH": "1"} if buffering else
                {"TUNE_RESULT_BUFFER_LENGTH": "2", "TUNE_RESULT_BUFFER_MIN_TIME_S": "4",
                 "TUNE_RESULT_BUFFER_MAX_TIME_S": "4"},
                note="unbuffered, a worker waits for the driver after every report. Ray 2.60 "
                "passes the two values to train_buffered swapped (LENGTH=2 means 2 s, "
                "MIN_TIME_S=4 at most 4 results), and with buffering it sometimes logs "
                "'Should not have reached here' from train_buffered when a trial's function "
                "returns: not adopted"),
        Variant("experiment state every >= 10 s (Tune's `auto`)",
                env={"TUNE_GLOBAL_CHECKPOINT_S": "auto"},
                note=f"sparsetune saves it every {TUNE_ENV['TUNE_GLOBAL_CHECKPOINT_S']} s: a "
                "killed driver's resume reruns the trials that finished since its last save "
                "(tests/test_kinds_e2e.py allows 2)"),
        Variant("experiment state every 1 s (sparsetune before issue 8)",
                env={"TUNE_GLOBAL_CHECKPOINT_S": "1"},
                note="enough while every epoch's checkpoint forced a save too; without those, "
                "more short trials finish between two saves"),
    ]  # fmt: skip


TWO_PROCESSES = """
import sys
sys.path.insert(0, ROOT)
from benchmarks.orchestration import in_process
from trainables.datasets import load_dataset
from benchmarks.orchestration import calibrate_epochs
data = load_dataset("digits", "data")
calibrate_epochs(data, 1.0)  # warm, as the benchmark's own process is: imports, first epochs
print(in_process(data, TRIALS, EPOCHS, threads=1, seed=SEED)["wall"])
"""


def two_processes(trials: int, epochs: int) -> float:
    """(c) The hardware's own 2-way scaling: two plain processes, each running half the
    trials in-process (1 thread, its own Optuna study), at once, each warmed up first as the
    benchmark's own process is; the wall is the slower process's time for its trials."""
    import subprocess

    procs = []
    for seed, n in ((1, trials - trials // 2), (2, trials // 2)):
        code = (TWO_PROCESSES.replace("ROOT", repr(str(ROOT))).replace("TRIALS", str(n))
                .replace("EPOCHS", str(epochs)).replace("SEED", str(seed)))  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, text=True,
                                      stdout=subprocess.PIPE))  # fmt: skip
    walls = [float(p.communicate()[0].split()[-1]) for p in procs]
    return max(walls)


WORKER_START = """
import time
start = time.perf_counter()
import ray, ray.tune, torch
torch.set_num_threads(1)
import tuner.trainable
from trainables.datasets import load_dataset
from trainables.train import Trainer
imported = time.perf_counter()
data = load_dataset("digits", "data")
trainer = Trainer({"dataset": "digits", **FIXED, "epochs": 2}, data)
trainer.run_epoch()
print(imported - start, time.perf_counter() - imported)
"""


def worker_start(compiled: bool) -> tuple[float, float]:
    """What a fresh worker process pays before its first epoch is done: the imports (Ray, Tune,
    torch, the project), then a Trainer and one epoch (its first optimizer imports
    torch._dynamo). compiled=False hides the environment's bytecode (an empty
    PYTHONPYCACHEPREFIX), as where it was never compiled and PYTHONDONTWRITEBYTECODE is set."""
    import subprocess

    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    with tempfile.TemporaryDirectory() as empty:
        if not compiled:
            env["PYTHONPYCACHEPREFIX"] = empty
        code = WORKER_START.replace("FIXED", repr(FIXED))
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.split()  # fmt: skip
    return float(out[0]), float(out[1])


def run(args) -> Section:
    import ray

    from trainables.datasets import load_dataset
    from tuner.ray_session import init_ray
    from tuner.study import TUNE_ENV
    from tuner.trainable import CHECKPOINT_EVERY_S

    quick = args.quick
    trials = 4 if quick else args.trials
    small = max(2, trials // 3)
    seconds = 0.3 if quick else args.trial_seconds
    data = load_dataset("digits", "data")
    epochs, epoch_s = calibrate_epochs(data, seconds)
    progress(f"fixed work: {epochs} epochs of {epoch_s * 1e3:.0f} ms (1 thread) per trial")

    a1 = in_process(data, trials, epochs, threads=1)
    progress(f"(a) in-process, 1 thread: {a1['wall']:.1f} s")
    a2 = in_process(data, trials, epochs, threads=2)
    progress(f"(a) in-process, 2 threads: {a2['wall']:.1f} s")
    c = two_processes(trials, epochs)
    progress(f"(c) two plain processes: {c:.1f} s")
    start_compiled = worker_start(compiled=True)
    start_source = worker_start(compiled=False)
    progress(f"worker start: {sum(start_compiled):.1f} s with bytecode, "
             f"{sum(start_source):.1f} s compiling sources")  # fmt: skip

    start = time.perf_counter()
    init_ray(dashboard=False)
    ray_start = time.perf_counter() - start
    storage = tempfile.mkdtemp(prefix="sparsetune-orchestration-")
    warm = ray_study(storage, "warmup", 2, epochs)
    progress(f"Ray start-up {ray_start:.1f} s, warm-up study (2 trials) {warm['wall']:.1f} s")
    b = ray_study(storage, "sparsetune", trials, epochs)
    progress(f"(b) sparsetune, {trials} trials: {b['wall']:.1f} s")
    b_small = ray_study(storage, "sparsetune-small", small, epochs)
    progress(f"(b) sparsetune, {small} trials: {b_small['wall']:.1f} s")
    b_one = ray_study(storage, "sparsetune-one", small, epochs, concurrent=1)
    progress(f"(b) sparsetune, {small} trials one at a time: {b_one['wall']:.1f} s")
    ablation = []
    if not args.no_ablation:
        for i, variant in enumerate(variants()):
            r = ray_study(storage, f"ablation-{i}", trials, epochs, variant.env, **variant.kwargs)
            progress(f"ablation: {variant.label}: {r['wall']:.1f} s")
            ablation.append((variant, r))
    b2 = ray_study(storage, "sparsetune-again", trials, epochs)
    progress(f"(b) sparsetune again: {b2['wall']:.1f} s")
    ray.shutdown()

    t_trial = a1["trial_mean"]
    base_walls = [b["wall"], b2["wall"]]
    base = statistics.mean(base_walls)

    def overhead(wall: float) -> float:
        return wall * CONCURRENT / trials - t_trial

    # Two study sizes, same settings: wall = fixed + (N / slots) x slot time per trial.
    slot = (base - b_small["wall"]) * CONCURRENT / (trials - small)
    fixed = base - trials / CONCURRENT * slot
    marginal = slot - t_trial
    runs = [b, b_small, b_one, b2, *(r for _, r in ablation)]
    incomplete = [r for r in runs if r["complete"] != r["requested"]]
    speedup = a1["wall"] / base
    per_trial = overhead(base)
    numbers = {
        "trials": trials, "epochs": epochs, "trial_s": round(t_trial, 3),
        "in_process_1t_s": round(a1["wall"], 1), "in_process_2t_s": round(a2["wall"], 1),
        "two_processes_s": round(c, 1), "ceiling_speedup": round(a1["wall"] / c, 2),
        "sparsetune_s": round(base, 1), "overhead_s_per_trial": round(per_trial, 3),
        "marginal_overhead_s_per_trial": round(marginal, 3), "fixed_s_per_study": round(fixed, 1),
        "speedup": round(speedup, 2), "ray_start_s": round(ray_start, 1),
        "warmup_s": round(warm["wall"], 1),
        "worker_start_s": {"bytecode": round(sum(start_compiled), 2),
                           "sources": round(sum(start_source), 2)},
        "ablation": {v.label: round(r["wall"] / base, 3) for v, r in ablation},
    }  # fmt: skip

    env_now = ", ".join(f"`{k}={v}`" for k, v in TUNE_ENV.items())
    every = (
        "every epoch"
        if not CHECKPOINT_EVERY_S
        else f"at most every {CHECKPOINT_EVERY_S:g} s, never with the last epoch"
    )
    met = "met" if per_trial <= 0.3 else "missed"
    lines = [
        f"{machine_short()}. N = {trials} trials of fixed work: dense MLP 64-"
        f"{'-'.join([str(FIXED['width'])] * FIXED['depth'])}-10 on digits, batch 64, "
        f"{epochs} epochs ({epoch_s * 1e3:.0f} ms each with 1 thread, calibrated to about "
        f"{seconds:g} s per trial); only `lr` and `weight_decay` sampled (NSGA-II, population "
        f"{POPULATION}). sparsetune's settings: reuse_actors, {env_now}; trial checkpoints "
        f"{every}.",
        "",
        table(
            ["run", "wall", "per trial", "speed-up against (a), 1 thread"],
            [
                [
                    "(a) in-process, Optuna NSGA-II, 1 torch thread",
                    f"{a1['wall']:.1f} s",
                    f"{a1['wall'] / trials:.2f} s (training: {t_trial:.2f} s)",
                    "1.00x",
                ],
                [
                    "(a) in-process, 2 torch threads (information)",
                    f"{a2['wall']:.1f} s",
                    f"{a2['wall'] / trials:.2f} s",
                    f"{a1['wall'] / a2['wall']:.2f}x",
                ],
                [
                    f"(b) sparsetune, local Ray, {CONCURRENT} trials at a time, 1 CPU each",
                    f"{base:.1f} s (two runs: {base_walls[0]:.1f}, {base_walls[1]:.1f})",
                    f"{base * CONCURRENT / trials:.2f} s per slot",
                    f"**{speedup:.2f}x**",
                ],
                [
                    "(c) two plain processes at once, N/2 trials each, 1 thread, no Ray",
                    f"{c:.1f} s",
                    f"{c * CONCURRENT / trials:.2f} s per process",
                    f"{a1['wall'] / c:.2f}x",
                ],
                [
                    f"(b) with {small} trials (for the split below)",
                    f"{b_small['wall']:.1f} s",
                    f"{b_small['wall'] * CONCURRENT / small:.2f} s per slot",
                    f"{a1['wall'] / trials * small / b_small['wall']:.2f}x",
                ],
            ],
        ),
        "",
        f"- **Per-trial overhead: {per_trial:.2f} s** = {base:.1f} s x {CONCURRENT} / {trials} "
        f"- {t_trial:.2f} s (target <= 0.3 s: {met}). With {CONCURRENT} slots, wall x "
        f"{CONCURRENT} / N is the time each trial holds a slot; minus the same trial's time "
        "in-process (Trainer built, every epoch trained and evaluated) leaves what Ray, Tune "
        "and sparsetune add per trial, including the CPU that the driver and Ray's own "
        "processes take from the 2 cores.",
        f"- **Speed-up (b) over (a): {speedup:.2f}x** (target >= 1.7x on 2 cores: "
        f"{'met' if speedup >= 1.7 else 'missed'}). The ceiling on this machine is (c), two "
        f"processes with nothing between them: {a1['wall'] / c:.2f}x; against (c) sparsetune "
        f"adds {(base - c) * CONCURRENT / trials:.2f} s per trial.",
        f"- Where it goes, from the two study sizes (wall = fixed + N / {CONCURRENT} x slot "
        f"time): **{fixed:.1f} s per study** (fit's set-up, two new trial actors: a process "
        "each, the imports of Ray Tune, torch and the project, and the first Trainer, whose "
        f"optimizer imports torch._dynamo) and **{marginal:+.2f} s per trial** beyond its "
        f"in-process time (reports, checkpoints, the searcher, Parquet, CPU contention). At "
        f"N = {trials} the fixed part alone is {fixed * CONCURRENT / trials:.2f} s per trial; "
        f"it shrinks as 1/N (at N = 96, the default study's size: "
        f"{fixed * CONCURRENT / 96 + marginal:.2f} s per trial in all).",
        f"- Not in (b): Ray's start-up ({ray_start:.1f} s, once per session) and a 2-trial "
        f"warm-up study ({warm['wall']:.1f} s). A warm-up does not carry over: every "
        "`Tuner.fit()` creates its own trial actors (reuse_actors reuses them within a fit), "
        "so each study pays its fixed part.",
        f"- A fresh worker process before its first epoch is done (measured in a subprocess): "
        f"{sum(start_compiled):.1f} s with the environment's bytecode compiled (imports "
        f"{start_compiled[0]:.1f} s, Trainer and first epoch {start_compiled[1]:.1f} s) "
        f"against {sum(start_source):.1f} s compiling every module from source "
        f"({start_source[0]:.1f} s + {start_source[1]:.1f} s), which is what every worker paid "
        "on this machine (uv doesn't compile bytecode when it installs, and "
        "PYTHONDONTWRITEBYTECODE=1 is set here, so Python never cached it); `./uvrun` now "
        "compiles the environment once per uv.lock.",
    ]
    p, one = b["timeline"], b_one["timeline"]
    if p and one:
        per_epoch = (p["worker"] - t_trial + p["round_trips"]) / p["epochs"]
        slot_sum = p["worker"] + p["round_trips"] + p["tail"] + p["gap"]
        one_sum = one["worker"] + one["round_trips"] + one["tail"] + one["gap"]
        numbers["profile_one_at_a_time"] = {k: round(v, 4) for k, v in one.items()}
        numbers["profile"] = {k: round(v, 4) for k, v in p.items()}
        lines += [
            "",
            "Where a trial's slot time goes in (b), on the driver's clock (Tune callback "
            "times, mean over the trials after the first on each worker; the worker's own "
            "time is its `time_this_iter_s`):",
            "",
            table(["part", f"s per trial, {CONCURRENT} at a time", "against in-process",
                   "1 at a time", "against in-process"], [
                ["the trial in-process, (a)", f"{t_trial:.3f}", "-", f"{t_trial:.3f}", "-"],
                [f"the worker's own time: Trainer, {p['epochs']:.0f} epochs (train, evaluate), "
                 "each report in the worker", f"{p['worker']:.3f}",
                 f"{p['worker'] - t_trial:+.3f}", f"{one['worker']:.3f}",
                 f"{one['worker'] - t_trial:+.3f}"],
                ["round trips: a report to the driver and its next `train()` call back",
                 f"{p['round_trips']:.3f}", f"{p['round_trips']:+.3f}",
                 f"{one['round_trips']:.3f}", f"{one['round_trips']:+.3f}"],
                ["the trial's end: last result to complete (final result, Parquet rows)",
                 f"{p['tail']:.3f}", f"{p['tail']:+.3f}", f"{one['tail']:.3f}",
                 f"{one['tail']:+.3f}"],
                ["until the slot's next trial starts (actor reset, NSGA-II's suggestion)",
                 f"{p['gap']:.3f}", f"{p['gap']:+.3f}", f"{one['gap']:.3f}",
                 f"{one['gap']:+.3f}"],
                ["slot time per trial", f"{slot_sum:.3f}", f"**{slot_sum - t_trial:+.3f}**",
                 f"{one_sum:.3f}", f"**{one_sum - t_trial:+.3f}**"],
            ]),  # fmt: skip
            "",
            f"With one trial at a time the worker's own time is {one['worker'] - t_trial:+.2f} "
            f"s per trial beyond in-process ({1e3 * (one['worker'] - t_trial) / one['epochs']:.1f}"
            " ms per epoch: the report's hand-off between the training thread and the actor, "
            f"Tune's result bookkeeping); with {CONCURRENT} at a time it is "
            f"{p['worker'] - t_trial:+.2f} s: the other "
            f"{p['worker'] - one['worker']:+.2f} s is running {CONCURRENT} trials on "
            f"{CONCURRENT} cores next to the driver and Ray's own processes, which take CPU "
            "from the trials with every result they handle (two plain processes, (c), lose "
            f"only {(c * CONCURRENT / trials - t_trial):+.2f} s per trial to each other).",
            "",
            f"Per study: {p['to_first_start']:.1f} s from `run_study` to the first trial's "
            f"start, the first trial on each new worker {p['first_worker'] - p['worker']:+.1f} s "
            f"(its first optimizer imports torch._dynamo; first-touch allocations), and "
            f"{p['after_last']:.1f} s after the last trial (Pareto layers, plot).",
            "",
            "**What would close the gap.** Per trial, the overhead is per report: "
            f"{1e3 * per_epoch:.0f} ms per epoch at {CONCURRENT} at a time (the worker's time "
            "beyond the in-process epoch, and the round trip: with a function trainable every "
            "`tune.report` waits for the driver), and the driver's work per report competes "
            "with the trials for the cores. Tune's own lever, result buffering, is in the "
            "ablation below; "
            "the structural fix is fewer reports per trial (a trial reporting every k epochs, "
            "or once with its per-epoch history) at the cost of Tune seeing less progress, or "
            "several configs per trial (point 5). Per study, the fixed part is two new worker "
            "processes: Tune starts new trial actors in every `Tuner.fit()` and no warm-up "
            "carries over; pre-importing torch in Ray's prestarted workers "
            "(`worker_process_setup_hook`) would only help the first fit of a session, and "
            "compiled bytecode (above) already cut each worker's start by more than half. "
            f"With N = {trials} trials of {seconds:g} s the fixed part alone is "
            f"{fixed * CONCURRENT / trials:.2f} s per trial"
            + (", the whole 0.3 s budget by itself." if fixed * CONCURRENT / trials >= 0.3
               else f", {fixed * CONCURRENT / trials / 0.3:.0%} of the 0.3 s budget."),
        ]  # fmt: skip
    if ablation:
        rows = [["sparsetune as configured", f"{base:.1f} s", f"{per_trial:+.2f} s", "1.00x",
                 "-"]]  # fmt: skip
        for variant, r in ablation:
            rows.append([
                variant.label, f"{r['wall']:.1f} s", f"{overhead(r['wall']):+.2f} s",
                f"{r['wall'] / base:.2f}x", variant.note,
            ])  # fmt: skip
        lines += [
            "",
            "Ablation: one setting changed at a time, the same N trials, the same Ray session "
            f"(sparsetune as configured ran first and last: {base_walls[0]:.1f} s and "
            f"{base_walls[1]:.1f} s; their mean is the reference, their difference the noise). "
            "Ray 2.60 reads every variable here when a Tuner runs, not when `ray.tune` is "
            "imported, so `run_study` sets them (unless the user did):",
            "",
            table(
                ["setting", "wall", "overhead per trial", "wall / reference", "what it does"], rows
            ),  # fmt: skip
        ]
    if incomplete:
        lines.append(
            f"\n**Warning**: {len(incomplete)} run(s) did not complete every trial's "
            f"{epochs} epochs (diverged or failed): their work differs."
        )
    return Section(
        name="orchestration",
        title="Orchestration overhead: sparsetune on Ray against plain Optuna in-process",
        command=command_of("orchestration.py", passed_args()),
        body="\n".join(lines),
        numbers=numbers,
    )


def add_arguments(parser) -> None:
    parser.add_argument("--trials", type=int, default=24, help="N, trials per run (default 24)")
    parser.add_argument("--trial-seconds", type=float, default=2.0, help="work per trial, 1 thread")
    parser.add_argument("--no-ablation", action="store_true", help="only (a) and (b)")


if __name__ == "__main__":
    cli(__doc__, add_arguments, run)
