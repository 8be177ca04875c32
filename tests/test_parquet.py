"""Parquet files of a study (atomic writes, upserts, reads by other engines), plots and tables."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from results import parquet
from results.pareto import with_layers
from results.parquet import (
    HISTORY,
    PARETO,
    TRIALS,
    read_footer,
    read_metadata,
    read_study,
    read_table,
    read_trials,
    upsert_rows,
    write_table_atomic,
)
from results.plots import plot_pareto_front
from results.tables import format_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def trials_frame(n: int = 4, study: str = "digits-nsga2") -> pd.DataFrame:
    rng = np.random.default_rng(n)
    return pd.DataFrame(
        {
            "study": study,
            "kind": "optimize",
            "trial_id": [f"t{i:04d}" for i in range(n)],
            "status": ["completed"] * (n - 1) + ["diverged"],
            "search_seed": np.ones(n, dtype=np.int64),
            "config/method": (["rigl", "set", "dense", "static"] * n)[:n],
            "config/sparsity": rng.uniform(0.5, 0.99, n),
            "config/epochs": np.full(n, 10, dtype=np.int64),
            "val_error": rng.uniform(0, 1, n),
            "train_flops": (10 ** rng.uniform(8, 12, n)).astype(np.int64),
        }
    )


def leftover_temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_written_table_reads_back_in_pandas_duckdb_and_polars(tmp_path: Path) -> None:
    df = trials_frame()
    path = tmp_path / TRIALS
    write_table_atomic(df, path)

    back = read_table(path)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back["search_seed"].dtype == np.int64
    assert back["train_flops"].dtype == np.int64

    rows = duckdb.sql(
        f"""select trial_id, "config/method", "config/epochs" from '{path}' order by trial_id"""
    ).fetchall()
    assert rows == list(
        zip(df["trial_id"], df["config/method"], df["config/epochs"].tolist(), strict=True)
    )
    types = dict(duckdb.sql(f"describe select * from '{path}'").fetchall()[i][:2] for i in range(3))
    assert types == {"study": "VARCHAR", "kind": "VARCHAR", "trial_id": "VARCHAR"}

    frame = pl.read_parquet(path)
    assert frame.columns == list(df.columns)  # no index column, contract names intact
    assert frame["config/method"].to_list() == df["config/method"].tolist()
    assert frame.schema["config/epochs"] == pl.Int64


def test_custom_metadata_round_trips_next_to_pandas_own(tmp_path: Path) -> None:
    path = tmp_path / TRIALS
    spec = "name: digits-nsga2\nobjectives: {val_error: min}\nnote: ünïcode\n"
    write_table_atomic(trials_frame(), path, metadata={"sparsetune.spec": spec, "v": "1"})
    assert read_metadata(path) == {"sparsetune.spec": spec, "v": "1"}
    assert b"pandas" in pq.read_schema(path).metadata  # pandas' own key is still there
    write_table_atomic(trials_frame(), tmp_path / "plain.parquet")
    assert read_metadata(tmp_path / "plain.parquet") == {}


def test_metadata_values_must_be_strings(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="str"):
        write_table_atomic(trials_frame(), tmp_path / TRIALS, metadata={"v": 1})  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []


def test_upsert_keeps_the_last_row_per_key_and_tolerates_new_columns(tmp_path: Path) -> None:
    path = tmp_path / TRIALS
    first = trials_frame(3)
    upsert_rows(path, first, key="trial_id", metadata={"sparsetune.spec": "a"})

    # t0001 is re-reported twice in one batch (the later wins), t0003 is new, and the batch
    # brings a column the file lacks while lacking one the file has
    update = pd.DataFrame(
        {
            "trial_id": ["t0001", "t0003", "t0001"],
            "status": ["failed", "completed", "completed"],
            "val_error": [0.9, 0.2, 0.1],
            "peak_memory_bytes": np.array([10, 20, 30], dtype=np.int64),
        }
    )
    result = upsert_rows(path, update, key="trial_id")
    back = read_table(path)
    pd.testing.assert_frame_equal(back, result)

    assert back["trial_id"].tolist() == ["t0000", "t0001", "t0002", "t0003"]  # stable order
    assert back["trial_id"].is_unique
    row = back.set_index("trial_id").loc["t0001"]
    assert (row["status"], row["val_error"], row["peak_memory_bytes"]) == ("completed", 0.1, 30)
    assert pd.isna(row["config/method"])  # the last row had no config: null, not stale data
    assert back["config/method"].tolist()[::2] == first["config/method"].tolist()[::2]
    # ints stay ints: nullable where rows lack them, plain where every row has them
    assert back["peak_memory_bytes"].isna().tolist() == [True, False, True, False]
    assert pd.api.types.is_integer_dtype(back["peak_memory_bytes"].dtype)
    assert pd.api.types.is_integer_dtype(back["search_seed"].dtype)
    assert read_metadata(path) == {"sparsetune.spec": "a"}  # kept across upserts
    assert duckdb.sql(f"select count(*) from '{path}'").fetchall() == [(4,)]
    types = dict(row[:2] for row in duckdb.sql(f"describe select * from '{path}'").fetchall())
    assert types["peak_memory_bytes"] == "BIGINT" and types["status"] == "VARCHAR"


def test_upsert_keeps_int_and_bool_columns_when_a_row_has_none(tmp_path: Path) -> None:
    path = tmp_path / TRIALS
    upsert_rows(path, pd.DataFrame([{"trial_id": "a", "epoch": 3, "diverged": False}]), "trial_id")
    rows = pd.DataFrame([{"trial_id": "b", "epoch": None, "diverged": None}])
    back = upsert_rows(path, rows, "trial_id")
    assert back["epoch"].dtype == "Int64" and back["epoch"].tolist() == [3, pd.NA]
    assert back["diverged"].dtype == "boolean" and back["diverged"].tolist() == [False, pd.NA]


def test_upsert_with_a_composite_key(tmp_path: Path) -> None:
    path = tmp_path / HISTORY
    history = pd.DataFrame({"trial_id": ["a", "a", "b"], "epoch": [1, 2, 1], "val_error": 0.5})
    upsert_rows(path, history, key=["trial_id", "epoch"])
    again = pd.DataFrame({"trial_id": ["a", "b"], "epoch": [2, 2], "val_error": [0.1, 0.2]})
    back = upsert_rows(path, again, key=["trial_id", "epoch"])
    assert list(zip(back["trial_id"], back["epoch"], back["val_error"], strict=True)) == [
        ("a", 1, 0.5),
        ("a", 2, 0.1),
        ("b", 1, 0.5),
        ("b", 2, 0.2),
    ]
    assert back["epoch"].dtype == np.int64


def test_upsert_rejects_a_missing_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trial_id"):
        upsert_rows(tmp_path / TRIALS, pd.DataFrame({"x": [1]}), key="trial_id")


def test_unserializable_column_leaves_the_previous_file_and_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / TRIALS
    good = trials_frame()
    write_table_atomic(good, path)
    before = path.read_bytes()

    bad = good.assign(model=[object() for _ in range(len(good))])
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's error type is its own business
        write_table_atomic(bad, path)
    with pytest.raises(Exception):  # noqa: B017
        upsert_rows(path, bad, key="trial_id")

    assert path.read_bytes() == before
    assert leftover_temp_files(tmp_path) == []


def test_written_file_gets_ordinary_permissions(tmp_path: Path) -> None:
    # readable by whoever could read any file made here (not a private 0600 temp file)
    write_table_atomic(trials_frame(), tmp_path / TRIALS)
    (tmp_path / "plain").write_bytes(b"")
    mode = (tmp_path / TRIALS).stat().st_mode & 0o777
    assert mode == (tmp_path / "plain").stat().st_mode & 0o777


def test_crash_mid_write_leaves_the_previous_file_and_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / TRIALS
    write_table_atomic(trials_frame(), path)
    before = path.read_bytes()

    def half_write(table: object, handle: object) -> None:
        handle.write(b"PAR1 half a file")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(parquet.pq, "write_table", half_write)
    with pytest.raises(OSError, match="disk full"):
        write_table_atomic(trials_frame(8), path)
    assert path.read_bytes() == before
    assert leftover_temp_files(tmp_path) == []


def test_reads_while_a_study_renames_new_versions_into_place_never_fail(tmp_path: Path) -> None:
    """A reader of a live study (query, status, the progress line) races the writer's rename.

    Read by path, pyarrow took the size from one file and the bytes from the next: about one
    read in twenty failed with "Page was smaller than expected" (a CI run died of it).
    """
    path = tmp_path / TRIALS
    write_table_atomic(trials_frame(2), path, metadata={"k": "v"})
    stop = threading.Event()

    def rewrite_with_changing_sizes() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            write_table_atomic(
                trials_frame(2 + n % 40 * 25), path, metadata={"k": "v" * (1 + n % 9)}
            )

    writer = threading.Thread(target=rewrite_with_changing_sizes)
    writer.start()
    failures: list[str] = []
    try:
        for _ in range(600):
            try:
                assert len(read_table(path)) >= 2
                assert read_metadata(path)["k"].startswith("v")
                assert read_footer(path).num_rows >= 2
            except OSError as err:
                failures.append(str(err))
    finally:
        stop.set()
        writer.join()
    assert failures == []


def test_read_study_and_read_trials(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_table_atomic(trials_frame(3, "first"), first / TRIALS)
    write_table_atomic(trials_frame(2, "second").drop(columns="study"), second / TRIALS)
    history = pd.DataFrame({"trial_id": ["t0000"], "epoch": [1], "val_error": [0.3]})
    write_table_atomic(history, first / HISTORY)

    study = read_study(first)
    assert set(study) == {"trials", "history"}  # no pareto file yet
    assert study["history"]["epoch"].tolist() == [1]

    both = read_trials([first, second])
    assert both["study"].tolist() == ["first"] * 3 + ["second"] * 2  # folder name fills in
    assert both["search_seed"].dtype == np.int64
    with pytest.raises(FileNotFoundError, match="missing"):
        read_trials([first, tmp_path / "missing"])


def test_read_table_reads_a_folder_of_part_files(tmp_path: Path) -> None:
    folder = tmp_path / TRIALS
    write_table_atomic(trials_frame(3), folder / "part-0.parquet", metadata={"k": "v"})
    write_table_atomic(trials_frame(2), folder / "part-1.parquet", metadata={"k": "v"})
    assert len(read_table(folder)) == 5
    assert read_metadata(folder) == {"k": "v"}


@pytest.mark.parametrize(
    "objectives",
    [
        {"val_error": "min", "train_flops": "min"},
        {"val_error": "min", "train_flops": "min", "config/sparsity": "max"},
    ],
)
def test_plot_pareto_front_writes_a_png(tmp_path: Path, objectives: dict[str, str]) -> None:
    df = with_layers(trials_frame(40), objectives)
    df.loc[df.index[0], "val_error"] = np.nan  # unranked rows are skipped, not fatal
    out = plot_pareto_front(df, objectives, tmp_path / "plots" / "pareto.png", title="front")
    assert out == tmp_path / "plots" / "pareto.png"
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 5_000


def test_plot_pareto_front_rejects_a_single_objective(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        plot_pareto_front(trials_frame(), {"val_error": "min"}, tmp_path / "p.png")


def test_format_table_contains_the_values_in_aligned_columns() -> None:
    df = trials_frame(3)
    df.loc[1, "val_error"] = np.nan
    columns = ["trial_id", "config/method", "val_error", "train_flops", "not_there"]
    text = format_table(df, columns)
    lines = text.splitlines()

    assert lines[0].split() == ["trial_id", "method", "val_error", "train_flops"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert len(lines) == 2 + len(df)
    assert len({len(line) for line in lines}) == 1  # every line the same width
    for line, (_, row) in zip(lines[2:], df.iterrows(), strict=True):
        assert row["trial_id"] in line and row["config/method"] in line
        assert f"{row['train_flops']:.2e}" in line  # FLOPs in exponent form
    assert f"{df.loc[0, 'val_error']:.4f}" in lines[2]
    error_end = lines[0].index("val_error") + len("val_error")
    assert lines[3][error_end - 2 : error_end] == " -"  # NaN shows as "-", right-aligned
    # columns line up: each cell ends (numbers) or starts (text) under its header
    header = lines[0]
    flops_end = header.index("train_flops") + len("train_flops")
    method_start = header.index("method")
    for line in lines[2:]:
        assert line[flops_end - 1] != " " and line[flops_end : flops_end + 1] in ("", " ")
        assert line[method_start - 1] == " " and line[method_start] != " "


def test_format_table_prints_whole_floats_as_ints_and_keeps_clashing_prefixes() -> None:
    df = pd.DataFrame({"seed": [1, 2], "config/seed": [3.0, np.nan], "lr": [0.1, 3e-5]})
    lines = format_table(df, ["seed", "config/seed", "lr"]).splitlines()
    assert lines[0].split() == ["seed", "config/seed", "lr"]
    assert lines[2].split() == ["1", "3", "0.1000"]
    assert lines[3].split() == ["2", "-", "3.00e-05"]
    assert format_table(df, ["nothing"]) == ""


def test_results_imports_without_ray_or_torch() -> None:
    code = (
        "import sys, results, results.plots\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'torch'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_pareto_constant_names_the_contract_file() -> None:
    assert (TRIALS, HISTORY, PARETO) == ("trials.parquet", "history.parquet", "pareto.parquet")
