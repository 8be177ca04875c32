"""The benchmarks still run on the current code.

A benchmark is run by hand, rarely, while validation grows stricter (issue 14 refuses a
setting the chosen component does not read): two benchmarks broke that way unnoticed. The
in-process ones run here at their `--quick` size; the Ray-study one has its specs checked.
The measurements themselves live in `benchmarks/run_all.py` and RESULTS.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.mo_early_stopping import ARMS, TASKS, arm_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("arm", list(ARMS))
def test_every_arm_of_the_early_stopping_benchmark_is_a_valid_spec(arm, task, tmp_path):
    _, algorithm, scheduler = ARMS[arm]
    spec = arm_spec(task, arm, seed=2, trials=10, max_t=9, out=tmp_path, data_dir=tmp_path)
    assert (spec.search.algorithm, spec.scheduler.algorithm) == (algorithm, scheduler)
    assert spec.seeds == [2] and spec.trials == 10 and spec.fixed["epochs"] == 9
    assert spec.dataset == ("digits" if task == "digits" else "fashion_mnist")
    if algorithm == "nsga2":
        assert spec.search.population_size == 4


@pytest.mark.parametrize(
    "name", ["methods_digits", "optimizers_digits", "journal_cost", "gpu_packing"]
)
def test_in_process_benchmark_runs_at_its_quick_size(name):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    assert "\n## " in "\n" + done.stdout  # printed its RESULTS.md section


def test_rerunning_a_benchmark_keeps_the_hand_written_sections_after_it():
    """RESULTS.md holds measurements made by hand (`<!-- section: ... -->`) after a
    benchmark's section; `run_all.py` rewrites the benchmark's part and keeps them."""
    from benchmarks.run_all import existing_sections, render_sections

    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    sections, hand = existing_sections(text)
    assert hand and set(hand) <= set(sections)
    sections = {name: f"## {name}: rerun\n" for name in sections}  # every benchmark rerun
    rendered = render_sections(list(sections), sections, hand)
    for name, written_by_hand in hand.items():
        assert written_by_hand.startswith("<!-- section: ")
        assert f"## {name}: rerun\n\n{written_by_hand}" in rendered
    assert rendered.count("<!-- section: ") == text.count("<!-- section: ")
