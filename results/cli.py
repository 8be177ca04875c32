"""The results commands of run_study.py (query, pareto, report): print, write, exit code.

Each function takes the parsed arguments as plain values and returns the exit code: 0, or
2 after one ``error:`` line on stderr for a problem the user can fix (a missing study, a bad
query, objectives that disagree, an unknown output format).
"""

from __future__ import annotations

import sys

from contract.errors import ResultsError

EXIT_USAGE = 2


def _fail(error: Exception) -> int:
    print(f"error: {error}", file=sys.stderr)
    return EXIT_USAGE


def query_command(name: str, sql: str, storage: str = "runs", out: str | None = None) -> int:
    """Run SQL over a study's views (trials, history, pareto); print it or write ``out``."""
    from results.query import query, write_result
    from results.study import find_study
    from results.tables import format_table

    try:
        result = query(find_study(name, storage), sql)
        if out:
            path = write_result(result, out)
            print(f"{len(result)} rows x {len(result.columns)} columns written to {path}")
        else:
            print(format_table(result, list(result.columns)) or "(no columns)")
            print(f"({len(result)} rows)")
    except ResultsError as error:
        return _fail(error)
    return 0


def pareto_command(
    names: list[str],
    storage: str = "runs",
    objectives: list[str] | None = None,
    out: str | None = None,
) -> int:
    """Non-dominated layers over the completed trials of one or more studies together."""
    from results.integrity import check_file
    from results.pareto import LAYER_COLUMN, with_layers
    from results.parquet import TRIALS, read_trials
    from results.query import write_result
    from results.report import table_columns
    from results.study import common_objectives, completed, find_study, parse_objectives
    from results.tables import format_table

    try:
        study_dirs = [find_study(name, storage) for name in names]
        for study_dir in study_dirs:
            check_file(study_dir, TRIALS)
        chosen = parse_objectives(objectives) if objectives else common_objectives(study_dirs)
        trials = completed(read_trials(study_dirs))
        try:
            ranked = with_layers(trials, chosen)
        except ValueError as error:  # unknown objective column, bad mode
            raise ResultsError(error) from error
        ranked = ranked[ranked[LAYER_COLUMN] > 0]
        layer1 = ranked[ranked[LAYER_COLUMN] == 1]
        studies = ", ".join(p.name for p in study_dirs)
        print(
            f"layer 1 (non-dominated over {', '.join(chosen)}) of {len(ranked)} completed trials"
            f" in {studies}: {len(layer1)} trials"
        )
        lead = ["study"] if len(study_dirs) > 1 else []
        print(format_table(layer1, table_columns(layer1, chosen, lead)))
        sizes = ranked[LAYER_COLUMN].value_counts().sort_index()
        print("\ntrials per layer: " + ", ".join(f"{k}: {v}" for k, v in sizes.items()))
        if out:
            path = write_result(ranked, out)
            print(f"{len(ranked)} ranked trials with their layer written to {path}")
    except ResultsError as error:
        return _fail(error)
    return 0


def report_command(name: str, storage: str = "runs", objectives: list[str] | None = None) -> int:
    """Write <storage>/<name>/report.md with its plots; print the files."""
    from results.integrity import check_study
    from results.report import write_report
    from results.study import find_study, parse_objectives

    try:
        study_dir = find_study(name, storage)
        check_study(study_dir)
        chosen = parse_objectives(objectives) if objectives else None
        try:
            report = write_report(study_dir, chosen)
        except ValueError as error:  # unknown objective column, bad mode
            raise ResultsError(error) from error
    except ResultsError as error:
        return _fail(error)
    if report.hypervolume is not None:
        print(f"hypervolume of the completed trials: {report.hypervolume:.6g}")
    print(f"layer 1: {len(report.layer1)} trials")
    print(f"report: {report.path}")
    if report.html is not None:
        print(f"interactive: {report.html}")
    for plot in report.plots:
        print(f"  {plot}")
    return 0
