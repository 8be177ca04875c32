"""How fast the command line answers: this tree against a baseline commit, in the same run.

Each command runs as a fresh process (the venv's Python, no `./uvrun`, so uv's own start-up
is not counted), --repeats times; the table gives the median wall time. The baseline is a
git worktree of --baseline (default da5a683: before the contract names moved out of the
torch modules), run with the same interpreter, so the only difference is the code.

    ./uvrun python benchmarks/cli_startup.py [--baseline da5a683] [--repeats 5]
"""

from __future__ import annotations

import statistics
import subprocess
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

TYPO_SPEC = "name: typo\ntrials: 4\nobjectives: {val_error: min}\ntrails: 8\n"


def commands(scratch: Path) -> dict[str, list[str]]:
    return {
        "import the spec module": ["-c", "import tuner.spec"],
        "`run` of a spec with an unknown key (exit 2)": [
            "run_study.py", "run", str(scratch / "typo.yaml"),
        ],
        "`run_study.py --help`": ["run_study.py", "--help"],
        "`query` (count the trials)": [
            "run_study.py", "query", "synth", "SELECT count(*) FROM trials",
            "--storage", str(scratch),
        ],
        "`pareto`": ["run_study.py", "pareto", "synth", "--storage", str(scratch)],
    }  # fmt: skip


def median_seconds(tree: Path, argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, *argv], cwd=tree, capture_output=True, timeout=300)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(args) -> Section:
    from tests.test_query_report import OBJECTIVES, optimize_trials, write_study

    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as temp:
        scratch = Path(temp)
        (scratch / "typo.yaml").write_text(TYPO_SPEC)
        write_study(scratch, "synth", optimize_trials(), OBJECTIVES)
        baseline = scratch / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(baseline), args.baseline],
            cwd=ROOT, check=True,
        )  # fmt: skip
        try:
            rows = []
            for label, argv in commands(scratch).items():
                before = median_seconds(baseline, argv, repeats)
                after = median_seconds(ROOT, argv, repeats)
                progress(f"{label}: {before:.2f} s -> {after:.2f} s")
                rows.append([label, f"{before:.2f} s", f"{after:.2f} s", f"{before / after:.1f}x"])
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=False
            )
    body = "\n".join([
        f"{machine_short()}. Median of {repeats} fresh processes each; the baseline is commit "
        f"`{args.baseline}` in a worktree, run by the same Python in the same run.",
        "",
        table(["command", f"before ({args.baseline})", "now", "faster"], rows),
        "",
        "Before, `import tuner.spec` imported torch (for the metric names) and the registries "
        "(for the allowed method, model and dataset names), and `run` imported Ray before "
        "reading the spec. Now the contract names live in `contract/` and the registries' names "
        "in `trainables/catalog.py` (checked against the registries by a test), none of which "
        "imports torch or Ray; `tests/test_first_contact.py` asserts it through `sys.modules`.",
    ])  # fmt: skip
    return Section(
        name="cli_startup",
        title="Command-line start-up: answers without torch or Ray",
        command=command_of("cli_startup.py", passed_args()),
        body=body,
        numbers={row[0]: {"before": row[1], "now": row[2]} for row in rows},
    )


def add_arguments(parser) -> None:
    parser.add_argument("--baseline", default="da5a683", help="commit to compare against")
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (median)")


if __name__ == "__main__":
    cli(__doc__, add_arguments, run)
