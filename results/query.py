"""SQL over a study's Parquet with DuckDB.

``connect`` opens an in-memory DuckDB with one view per table of the study that exists:
``trials``, ``history``, ``pareto`` (each a file, or a folder of part files). Column names
with a slash need double quotes in SQL: ``SELECT "config/method", val_error FROM trials``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from contract.errors import ResultsError
from results.parquet import STUDY_FILES

OUTPUT_FORMATS = (".parquet", ".csv")


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _parquet_source(path: Path) -> str:
    """read_parquet(...) over a file or a folder of (non-hidden) part files."""
    if path.is_dir():
        pattern = str(path / "**" / "*.parquet")
        return f"read_parquet({_sql_string(pattern)}, union_by_name = true)"
    return f"read_parquet({_sql_string(str(path))})"


def connect(study_dir: str | Path):
    """An in-memory DuckDB connection with views trials/history/pareto over the study's files."""
    import duckdb

    study_dir = Path(study_dir)
    connection = duckdb.connect(":memory:")
    for view, filename in STUDY_FILES.items():
        path = study_dir / filename
        if path.exists():
            connection.execute(f"CREATE VIEW {view} AS SELECT * FROM {_parquet_source(path)}")
    return connection


def query(study_dir: str | Path, sql: str) -> pd.DataFrame:
    """Run ``sql`` over the study's views; the result as pandas. ResultsError on a bad query."""
    import duckdb

    connection = connect(study_dir)
    try:
        return connection.execute(sql).fetchdf()
    except duckdb.Error as error:
        views = [v for v, f in STUDY_FILES.items() if (Path(study_dir) / f).exists()]
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ResultsError(f"query failed: {first_line} (tables: {', '.join(views)})") from error
    finally:
        connection.close()


def write_result(df: pd.DataFrame, out: str | Path) -> Path:
    """Write a query result by the extension of ``out``: .parquet (atomic) or .csv."""
    from results.parquet import write_table_atomic

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ResultsError(
            f"--out {out}: unknown extension {suffix or '(none)'!r}; allowed: "
            + ", ".join(OUTPUT_FORMATS)
        )
    if suffix == ".parquet":
        write_table_atomic(df, out)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
    return out
