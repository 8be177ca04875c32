"""Per-trial overhead of a study: Ray Tune with reused actors against a new actor per trial.

Runs the default study shrunk to N trials of 1 epoch twice in one Ray session, after a
2-trial warm-up, so the only difference is `reuse_actors`. Prints wall times and the ratio.

    ./uvrun python benchmarks/study_overhead.py --trials 12
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
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


def timed_study(storage: str, name: str, trials: int, reuse_actors: bool) -> float:
    from tuner.spec import load_spec
    from tuner.study import run_study

    spec = load_spec(
        ROOT / "studies" / "default.yaml",
        [f"storage={storage}", f"name={name}", f"trials={trials}", "fixed.epochs=1"],
    )
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        result = run_study(spec, reuse_actors=reuse_actors, dashboard=False)
    elapsed = time.perf_counter() - start
    assert (result.trials["status"] == "completed").sum() == trials
    return elapsed


def run(args) -> Section:
    import ray

    from tuner.ray_session import init_ray

    trials = 4 if args.quick else args.trials
    init_ray(dashboard=False)
    with tempfile.TemporaryDirectory() as storage:
        timed_study(storage, "warmup", 2, True)  # imports, object store, first workers
        reused = timed_study(storage, "reused", trials, True)
        progress(f"reuse_actors=True: {reused:.1f} s")
        fresh = timed_study(storage, "fresh", trials, False)
        progress(f"reuse_actors=False: {fresh:.1f} s")
    ray.shutdown()
    body = "\n".join([
        f"{machine_short()}. The default study's space, {trials} trials of 1 epoch each, 2 at "
        "a time, after a 2-trial warm-up in the same Ray session.",
        "",
        table(
            ["reuse_actors=True", "reuse_actors=False", "speed-up"],
            [[f"{reused:.1f} s ({reused / trials:.2f} s/trial)",
              f"{fresh:.1f} s ({fresh / trials:.2f} s/trial)", f"**{fresh / reused:.1f}x**"]],
        ),  # fmt: skip
        "",
        "A new actor per trial pays a process start and the imports of torch and the project "
        f"every time (about {2 * (fresh - reused) / trials:.1f} s per trial here, 2 at a time); "
        "reused actors pay it once per worker per study. sparsetune always reuses actors.",
    ])  # fmt: skip
    return Section(
        name="study_overhead",
        title="Study overhead: reused actors against a new actor per trial",
        command=command_of("study_overhead.py", passed_args()),
        body=body,
        numbers={
            "reused_s": round(reused, 1),
            "fresh_s": round(fresh, 1),
            "speedup": round(fresh / reused, 2),
            "trials": trials,
        },  # fmt: skip
    )


def add_arguments(parser) -> None:
    parser.add_argument("--trials", type=int, default=12, help="trials per study (default 12)")


if __name__ == "__main__":
    cli(__doc__, add_arguments, run)
