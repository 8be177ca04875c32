"""Damaged or missing Parquet: found before anything reads (or Ray starts), told in one line.

Reading a Parquet file's footer (its schema and row groups) is enough to tell a complete file
from a truncated, empty or garbage one, and costs a few kilobytes.
"""

from __future__ import annotations

from pathlib import Path

from contract.errors import ResultsError
from results.parquet import STUDY_FILES, TRIALS, read_footer


class DamagedFileError(ResultsError):
    """A study's Parquet file that cannot be read."""


def _parts(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    return sorted(
        p for p in path.rglob("*.parquet") if not p.name.startswith((".", "_")) and p.is_file()
    )


def damage(path: str | Path) -> str | None:
    """Why the Parquet file (or folder of part files) at `path` cannot be read, or None."""
    import pyarrow as pa

    for part in _parts(Path(path)):
        try:
            if part.stat().st_size == 0:
                return f"{part} is empty (0 bytes)"
            read_footer(part)  # reads and checks the footer
        except (pa.ArrowException, OSError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            return f"{part} is damaged ({first})"
    return None


def what_to_do(study_dir: Path, filename: str) -> str:
    name = study_dir.name
    if filename == TRIALS:
        return (
            f"restore it from a backup, or rerun the study (run_study.py run "
            f"{study_dir / 'spec.yaml'} --overwrite --set storage={study_dir.parent})"
        )
    return (
        f"restore it from a backup, or delete it (queries on the other tables still work; "
        f"`run_study.py resume {name}` rewrites it only for the trials still to run)"
    )


def check_file(study_dir: str | Path, filename: str) -> None:
    """DamagedFileError naming the file and what to do, if it exists and cannot be read."""
    study_dir = Path(study_dir)
    reason = damage(study_dir / filename)
    if reason:
        raise DamagedFileError(f"{reason}; {what_to_do(study_dir, filename)}")


def damaged_tables(study_dir: str | Path) -> dict[str, str]:
    """{view name: one-line error} for the study's tables that exist and are damaged."""
    study_dir = Path(study_dir)
    found = {}
    for view, filename in STUDY_FILES.items():
        if (study_dir / filename).exists():
            try:
                check_file(study_dir, filename)
            except DamagedFileError as err:
                found[view] = str(err)
    return found


def check_study(study_dir: str | Path, required: tuple[str, ...] = (TRIALS,)) -> None:
    """Every table of the study readable, and those in `required` present."""
    study_dir = Path(study_dir)
    for filename in required:
        if not (study_dir / filename).exists():
            raise DamagedFileError(
                f"{study_dir / filename} is missing; {what_to_do(study_dir, filename)}"
            )
    for filename in STUDY_FILES.values():
        if (study_dir / filename).exists():
            check_file(study_dir, filename)
