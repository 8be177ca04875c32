"""query, pareto and report: the functions, the commands of run_study.py, and the real study."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pytest

from results.cli import pareto_command, query_command, report_command
from results.pareto import with_layers
from results.parquet import HISTORY, PARETO, TRIALS, read_metadata, write_table_atomic
from results.query import query
from results.report import (
    ACCURACY_PLOT,
    HYPERVOLUME_PLOT,
    PARETO_PLOT,
    REPORT,
    accuracy_by_sparsity,
    is_reevaluation,
    plot_accuracy_vs_sparsity,
    write_report,
)
from results.study import StudyNotFoundError, find_study

ROOT = Path(__file__).parents[1]
DEFAULT_STUDY = ROOT / "runs" / "default"
OBJECTIVES = {"val_error": "min", "train_flops": "min", "inference_flops": "min"}
CONTRACT_COLUMNS = ["study", "kind", "trial_id", "status", "search_seed", "seed"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_study(storage: Path, name: str, trials: pd.DataFrame, objectives: dict) -> Path:
    """A study folder as the tuner writes it: trials (with metadata), history, pareto."""
    study_dir = storage / name
    metadata = {
        "sparsetune.spec": f"name: {name}\nobjectives: {json.dumps(objectives)}\n",
        "sparsetune.objectives": json.dumps(objectives),
    }
    write_table_atomic(trials, study_dir / TRIALS, metadata)
    history = trials[["trial_id"]].merge(pd.DataFrame({"epoch": [1, 2]}), how="cross")
    write_table_atomic(history.assign(val_error=0.5), study_dir / HISTORY)
    done = trials[trials["status"] == "completed"]
    write_table_atomic(with_layers(done, objectives), study_dir / PARETO)
    return study_dir


def optimize_trials(name: str = "synth", n: int = 24, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sparsity = rng.uniform(0.0, 0.95, n)
    error = 0.05 + 0.3 * sparsity**3 + rng.uniform(0, 0.05, n)
    flops = (1 - sparsity) * 1e8 * rng.uniform(0.8, 1.2, n)
    status = ["completed"] * n
    status[3] = "failed"
    return pd.DataFrame(
        {
            "study": name,
            "kind": "optimize",
            "trial_id": [f"{name[:2]}{i:03d}" for i in range(n)],
            "status": status,
            "search_seed": 1,
            "seed": None,
            "config/method": rng.choice(["dense", "set", "rigl"], n),
            "config/sparsity": sparsity,
            "config/width": rng.integers(16, 128, n),
            "val_accuracy": 1 - error,
            "val_error": np.where(np.array(status) == "completed", error, np.nan),
            "train_flops": flops.round(),
            "inference_flops": (flops / 1e4).round(),
            "finished_at": pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(np.arange(n), "s"),
        }
    )


def reevaluation_trials() -> pd.DataFrame:
    """configs x sparsities x seeds, as the re-evaluation study writes them."""
    rows = []
    for method in ("dense", "set", "rigl"):
        for sparsity in [0.0] if method == "dense" else [0.5, 0.8, 0.9, 0.95]:
            for seed in (1, 2, 3):
                accuracy = 0.97 - (0.2 if method == "set" else 0.1) * sparsity**4 + 0.003 * seed
                rows.append(
                    {
                        "study": "reeval",
                        "kind": "reevaluate",
                        "trial_id": f"{method}-{sparsity}-{seed}",
                        "status": "completed",
                        "seed": seed,
                        "config/method": method,
                        "config/sparsity": sparsity,
                        "config/seed": seed,
                        "config/width": 64,
                        "test_accuracy": accuracy,
                        "val_error": 1 - accuracy,
                        "train_flops": (1 - sparsity) * 1e8,
                        "inference_flops": (1 - sparsity) * 1e4,
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    write_study(tmp_path, "synth", optimize_trials(), OBJECTIVES)
    write_study(tmp_path, "other", optimize_trials("other", n=10, seed=5), OBJECTIVES)
    return tmp_path


# --- query -------------------------------------------------------------------------------


def test_query_prints_a_table_over_the_three_views(storage: Path, capsys) -> None:
    sql = (
        'SELECT t."config/method" AS method, count(DISTINCT t.trial_id) AS n, '
        "max(p.layer) AS layers, "
        "count(DISTINCT h.trial_id) AS with_history FROM trials t "
        "LEFT JOIN pareto p USING (trial_id) LEFT JOIN history h USING (trial_id) "
        "GROUP BY method ORDER BY method"
    )
    assert query_command("synth", sql, storage=str(storage)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["method", "n", "layers", "with_history"]
    expected = optimize_trials()["config/method"].value_counts().sort_index()
    assert [line.split()[:2] for line in lines[2:-1]] == [[m, str(n)] for m, n in expected.items()]
    assert lines[-1] == f"({len(expected)} rows)"


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_query_out_writes_by_extension(storage: Path, tmp_path: Path, suffix: str, capsys) -> None:
    out = tmp_path / "out" / f"result{suffix}"
    sql = "SELECT trial_id, val_error FROM trials WHERE status = 'completed' ORDER BY trial_id"
    assert query_command("synth", sql, str(storage), str(out)) == 0
    assert "23 rows x 2 columns written to" in capsys.readouterr().out
    back = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert back.columns.tolist() == ["trial_id", "val_error"] and len(back) == 23


def test_query_errors_are_one_line(storage: Path, capsys) -> None:
    assert query_command("synth", "SELECT nope FROM trials", str(storage)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: query failed:") and "tables: trials, history, pareto" in err
    assert query_command("synth", "SELECT 1", str(storage), "x.json") == 2
    assert "unknown extension '.json'" in capsys.readouterr().err
    assert query_command("missing", "SELECT 1", str(storage)) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: no study 'missing': {storage / 'missing' / TRIALS} does not exist "
        "(studies in " + str(storage) + ": other, synth)\n"
    )


def test_find_study_accepts_a_folder_path(storage: Path) -> None:
    assert find_study(str(storage / "synth"), "elsewhere") == storage / "synth"
    with pytest.raises(StudyNotFoundError, match="no studies in"):
        find_study("synth", storage / "empty")


# --- pareto ------------------------------------------------------------------------------


def test_pareto_over_two_studies_together(storage: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "layers.parquet"
    assert pareto_command(["synth", "other"], str(storage), out=str(out)) == 0
    text = capsys.readouterr().out
    both = pd.concat([optimize_trials(), optimize_trials("other", n=10, seed=5)])
    expected = with_layers(both[both["status"] == "completed"], OBJECTIVES)
    layer1 = expected[expected["layer"] == 1]
    assert f"of 32 completed trials in synth, other: {len(layer1)} trials" in text
    header = text.splitlines()[1].split()
    assert header[:2] == ["study", "trial_id"] and header[-3:] == list(OBJECTIVES)
    for trial_id in layer1["trial_id"]:
        assert trial_id in text
    written = pd.read_parquet(out)
    assert sorted(written["trial_id"]) == sorted(expected["trial_id"])
    assert dict(zip(written["trial_id"], written["layer"], strict=True)) == dict(
        zip(expected["trial_id"], expected["layer"], strict=True)
    )


def test_pareto_writes_nothing_without_out(storage: Path, capsys) -> None:
    before = sorted(p.name for p in storage.rglob("*"))
    assert pareto_command(["synth"], str(storage)) == 0
    assert sorted(p.name for p in storage.rglob("*")) == before
    assert "trials per layer: 1:" in capsys.readouterr().out


def test_pareto_objectives_must_agree_or_be_given(storage: Path, capsys) -> None:
    write_study(storage, "accuracy", optimize_trials("accuracy"), {"val_accuracy": "max"})
    assert pareto_command(["synth", "accuracy"], str(storage)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the studies have different objectives") and "--objectives" in err
    given = ["val_accuracy=max", "train_flops:min"]
    assert pareto_command(["synth", "accuracy"], str(storage), given) == 0
    assert "non-dominated over val_accuracy, train_flops" in capsys.readouterr().out
    assert pareto_command(["synth"], str(storage), ["nope=min"]) == 2
    assert "unknown objective column 'nope'" in capsys.readouterr().err
    assert pareto_command(["synth"], str(storage), ["val_error=low"]) == 2
    assert "allowed: min, max" in capsys.readouterr().err


# --- report ------------------------------------------------------------------------------


def test_report_of_an_optimize_study(storage: Path, capsys) -> None:
    assert report_command("synth", str(storage)) == 0
    printed = capsys.readouterr().out
    study_dir = storage / "synth"
    text = (study_dir / REPORT).read_text()
    assert text.startswith("# Study `synth`")
    assert "- trials: 24 (23 completed, 1 failed)" in text
    trials = optimize_trials()
    done = trials[trials["status"] == "completed"]
    layer1 = with_layers(done, OBJECTIVES).query("layer == 1")
    assert f"## Layer 1: {len(layer1)} non-dominated of 23 ranked trials" in text
    for trial_id in layer1["trial_id"]:
        assert f"| {trial_id} |" in text
    assert "Reference point (worst completed value + 10% of the range)" in text
    assert f"![hypervolume history]({HYPERVOLUME_PLOT})" in text
    assert f"![Pareto front]({PARETO_PLOT})" in text
    assert ACCURACY_PLOT not in text  # not a re-evaluation
    for plot in (PARETO_PLOT, HYPERVOLUME_PLOT):
        assert (study_dir / plot).read_bytes()[:8] == PNG_MAGIC
        assert str(study_dir / plot) in printed
    assert f"report: {study_dir / REPORT}" in printed


def test_report_of_a_reevaluation_plots_accuracy_against_sparsity(tmp_path: Path) -> None:
    trials = reevaluation_trials()
    assert is_reevaluation(trials)
    assert not is_reevaluation(trials.drop(columns="kind").query("seed == 1"))
    assert is_reevaluation(trials.drop(columns="kind"))  # several seeds per config
    table = accuracy_by_sparsity(trials, "test_accuracy")
    assert table["count"].tolist() == [3] * 9
    rigl_09 = table.query("`config/method` == 'rigl' and `config/sparsity` == 0.9").iloc[0]
    expected = [0.97 - 0.1 * 0.9**4 + 0.003 * s for s in (1, 2, 3)]
    assert rigl_09["test_accuracy_mean"] == pytest.approx(np.mean(expected))
    assert rigl_09["test_accuracy_std"] == pytest.approx(np.std(expected, ddof=1))

    study_dir = write_study(
        tmp_path, "reeval", trials, {"test_accuracy": "max", "train_flops": "min"}
    )
    report = write_report(study_dir)
    text = report.path.read_text()
    assert "## test_accuracy against sparsity" in text
    assert f"![test_accuracy against sparsity]({ACCURACY_PLOT})" in text
    assert "| rigl | 0.9000 | 3 |" in text
    assert (study_dir / ACCURACY_PLOT).read_bytes()[:8] == PNG_MAGIC
    # the plot function alone, and without a dense baseline
    path = plot_accuracy_vs_sparsity(trials.query("`config/method` != 'dense'"), tmp_path / "a.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_report_without_completed_trials(tmp_path: Path) -> None:
    trials = optimize_trials(n=4).assign(status="failed")
    study_dir = write_study(tmp_path, "broken", trials, OBJECTIVES)
    text = write_report(study_dir).path.read_text()
    assert "No completed trials to measure." in text


# --- the real default study (read only: copied before the report is written) -------------

needs_default_study = pytest.mark.skipif(
    not (DEFAULT_STUDY / TRIALS).exists(), reason="runs/default not on disk (run the default study)"
)


@needs_default_study
def test_default_study_parquet_opens_in_duckdb_and_polars_with_its_spec() -> None:
    for name in (TRIALS, PARETO):
        path = str(DEFAULT_STUDY / name)
        columns = [row[0] for row in duckdb.sql(f"DESCRIBE SELECT * FROM '{path}'").fetchall()]
        assert set(CONTRACT_COLUMNS + list(OBJECTIVES)) <= set(columns)
        assert any(c.startswith("config/") for c in columns)
        frame = pl.read_parquet(path)
        assert frame.columns == columns and frame.height > 0
    metadata = read_metadata(DEFAULT_STUDY / TRIALS)
    assert "name: default" in metadata["sparsetune.spec"]
    assert json.loads(metadata["sparsetune.objectives"]) == OBJECTIVES
    history = duckdb.sql(f"SELECT count(*), min(epoch) FROM '{DEFAULT_STUDY / HISTORY}'")
    assert history.fetchall()[0][1] == 1


@needs_default_study
def test_report_of_the_default_study(tmp_path: Path) -> None:
    copy = tmp_path / "default"
    copy.mkdir()
    for name in (TRIALS, HISTORY, PARETO):
        shutil.copy2(DEFAULT_STUDY / name, copy / name)
    report = write_report(copy)
    text = report.path.read_text()
    stored = pd.read_parquet(DEFAULT_STUDY / PARETO)
    assert len(report.layer1) == int((stored["layer"] == 1).sum())
    assert sorted(report.layer1["trial_id"]) == sorted(stored.query("layer == 1")["trial_id"])
    assert report.hypervolume and report.hypervolume > 0
    assert [p.name for p in report.plots] == [HYPERVOLUME_PLOT, PARETO_PLOT]
    assert "## Hypervolume" in text and "commit:" in text
    sql = "SELECT count(*) AS n FROM trials WHERE status = 'completed'"
    assert query(copy, sql)["n"].iloc[0] == len(stored)


# --- the command line --------------------------------------------------------------------


@pytest.mark.parametrize("command", ["query", "pareto", "report"])
def test_every_command_has_help(command: str, capsys) -> None:
    import run_study

    with pytest.raises(SystemExit) as exit_info:
        run_study.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--storage" in capsys.readouterr().out


def run_command(argv: list[str]) -> int:
    """Parse and dispatch as run_study.main does, without main's imports of the tuner (torch):
    the results commands handle their own errors."""
    import run_study

    args = run_study.build_parser().parse_args(argv)
    return args.func(args)


def test_run_study_commands_in_process(storage: Path, tmp_path: Path, capsys) -> None:
    sql = "SELECT count(*) AS n FROM trials"
    assert run_command(["query", "synth", sql, "--storage", str(storage)]) == 0
    assert capsys.readouterr().out.splitlines()[2].strip() == "24"
    out = tmp_path / "n.csv"
    assert run_command(["query", "synth", sql, "--storage", str(storage), "--out", str(out)]) == 0
    assert out.read_text() == "n\n24\n"
    argv = ["pareto", "synth", "other", "--storage", str(storage), "--objectives", "val_error=min"]
    assert run_command([*argv, "train_flops=min"]) == 0
    assert "in synth, other:" in capsys.readouterr().out
    assert run_command(["report", "synth", "--storage", str(storage)]) == 0
    assert (storage / "synth" / REPORT).exists()
    assert run_command(["report", "nope", "--storage", str(storage)]) == 2
    assert capsys.readouterr().err.startswith("error: no study 'nope':")


def test_missing_study_exits_2_with_one_error_line(tmp_path: Path) -> None:
    # run_study.py's parser and command functions, as `python run_study.py query ...` runs
    # them, minus main()'s import of the tuner (torch, ~15 s), which these commands never use
    dispatch = (
        "import sys, run_study\n"
        "args = run_study.build_parser().parse_args(sys.argv[1:])\n"
        "sys.exit(args.func(args))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", dispatch, "query", "nope", "SELECT 1", "--storage", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 2
    assert completed.stderr == (
        f"error: no study 'nope': {tmp_path / 'nope' / TRIALS} does not exist "
        f"(no studies in {tmp_path})\n"
    )
