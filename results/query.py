"""SQL over a study's Parquet with DuckDB.

``connect`` opens an in-memory DuckDB with one view per table of the study that exists:
``trials``, ``history``, ``pareto`` (each a file, or a folder of part files). Column names
with a slash need double quotes in SQL: ``SELECT "config/method", val_error FROM trials``.

A query reads: the connection reaches only the study's own folder (DuckDB's
``allowed_directories`` with ``enable_external_access`` off, then ``lock_configuration``), and
only SELECT-like statements run, so SQL can neither overwrite a study (COPY ... TO) nor read
other files; ``--out`` is how to write a result. A damaged table gets no view and is named in
the error only when the SQL uses it, so a damaged history.parquet doesn't block trials.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from contract.errors import ResultsError
from results.parquet import STUDY_FILES

OUTPUT_FORMATS = (".parquet", ".csv")
READING_STATEMENTS = ("SELECT", "EXPLAIN")  # DESCRIBE, SHOW, WITH ... parse as SELECT


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

    from results.integrity import damaged_tables

    study_dir = Path(study_dir).resolve()
    damaged = damaged_tables(study_dir)
    connection = duckdb.connect(":memory:")
    for view, filename in STUDY_FILES.items():
        path = study_dir / filename
        if path.exists() and view not in damaged:
            connection.execute(f"CREATE VIEW {view} AS SELECT * FROM {_parquet_source(path)}")
    # from here on: the study's folder only, and nothing can turn that off again
    connection.execute(f"SET allowed_directories = [{_sql_string(str(study_dir) + '/')}]")
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    return connection


def check_reading(sql: str) -> None:
    """ResultsError unless every statement of ``sql`` only reads (SELECT, EXPLAIN)."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        first_line = (str(error).strip().splitlines() or [repr(error)])[0]
        raise ResultsError(f"query failed: {first_line}") from None
    for statement in statements:
        kind = statement.type.name
        if kind not in READING_STATEMENTS:
            raise ResultsError(
                f"query: {kind} is not allowed; a query only reads the study (SELECT ...). "
                "To write a result, use --out FILE (.parquet or .csv)"
            )


def _check_tables_used(study_dir: Path, sql: str) -> None:
    """A damaged table the SQL names: its one-line error (the others stay queryable)."""
    from results.integrity import damaged_tables

    for view, message in damaged_tables(study_dir).items():
        if re.search(rf"\b{view}\b", sql, flags=re.IGNORECASE):
            raise ResultsError(message)


def query(study_dir: str | Path, sql: str) -> pd.DataFrame:
    """Run ``sql`` over the study's views; the result as pandas. ResultsError on a bad query."""
    import duckdb

    check_reading(sql)
    _check_tables_used(Path(study_dir), sql)
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
