"""Per-trial overhead of a study: Ray Tune with reused actors against a new actor per trial.

Runs the default study shrunk to N trials of 1 epoch twice in one Ray session, so the only
difference is `reuse_actors`. Prints wall times and the ratio; the numbers go in RESULTS.md.

    ./uvrun python benchmarks/study_overhead.py --trials 12
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tuner.spec import load_spec
from tuner.study import init_ray, run_study

ROOT = Path(__file__).resolve().parents[1]


def timed_study(storage: str, name: str, trials: int, reuse_actors: bool) -> float:
    spec = load_spec(
        ROOT / "studies" / "default.yaml",
        [f"storage={storage}", f"name={name}", f"trials={trials}", "fixed.epochs=1"],
    )
    start = time.perf_counter()
    result = run_study(spec, reuse_actors=reuse_actors)
    elapsed = time.perf_counter() - start
    assert (result.trials["status"] == "completed").sum() == trials
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=12, help="trials per study (default 12)")
    args = parser.parse_args()
    init_ray(dashboard=False)
    with tempfile.TemporaryDirectory() as storage:
        timed_study(storage, "warmup", 2, True)  # imports, object store, first workers
        reused = timed_study(storage, "reused", args.trials, True)
        fresh = timed_study(storage, "fresh", args.trials, False)
    print(f"\n{args.trials} trials, 1 epoch each, default study space")
    print(f"reuse_actors=True : {reused:6.1f} s  ({reused / args.trials:.2f} s/trial)")
    print(f"reuse_actors=False: {fresh:6.1f} s  ({fresh / args.trials:.2f} s/trial)")
    print(f"speed-up from reusing actors: {fresh / reused:.1f}x")


if __name__ == "__main__":
    main()
