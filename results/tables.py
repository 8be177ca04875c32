"""Plain aligned text tables for a terminal."""

from __future__ import annotations

import math
from numbers import Integral, Real

import pandas as pd

from contract.columns import CONFIG_PREFIX

COLUMN_GAP = "  "
MISSING = "-"
# Numbers at least this large (FLOPs, parameter counts, bytes) print in exponent form.
LARGE_NUMBER = 1e6


def header_names(columns: list[str]) -> list[str]:
    """Column names without "config/", unless that would make two headers the same."""
    stripped = [c.removeprefix(CONFIG_PREFIX) for c in columns]
    return [s if stripped.count(s) == 1 else c for s, c in zip(stripped, columns, strict=True)]


def _exponent_form(value: float, float_digits: int) -> str:
    return f"{value:.{max(float_digits - 2, 1)}e}"


def format_number(value: object, float_digits: int = 4, integral_column: bool = False) -> str:
    """One cell: ints as ints, floats to ``float_digits`` decimals, big or tiny as 1.23e+09."""
    if value is None or value is pd.NA or value is pd.NaT:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Integral):
        return (
            _exponent_form(float(value), float_digits) if abs(value) >= LARGE_NUMBER else str(value)
        )
    if isinstance(value, Real):
        value = float(value)
        if math.isnan(value):
            return MISSING
        if math.isinf(value):
            return str(value)
        magnitude = abs(value)
        if magnitude >= LARGE_NUMBER or 0 < magnitude < 10 ** -(float_digits - 1):
            return _exponent_form(value, float_digits)
        return f"{value:.0f}" if integral_column else f"{value:.{float_digits}f}"
    return str(value)


def _is_integral_float_column(values: pd.Series) -> bool:
    """True for float columns that only hold whole numbers (e.g. ints that picked up NaN)."""
    if not pd.api.types.is_float_dtype(values.dtype):
        return False
    present = values.dropna().to_numpy(dtype=float)
    present = present[abs(present) < LARGE_NUMBER]
    return bool(len(present)) and bool((present == present.round()).all())


def format_table(df: pd.DataFrame, columns: list[str], float_digits: int = 4) -> str:
    """An aligned text table (header, rule, rows) of ``columns`` of ``df``; missing columns skipped.

    Numbers are right-aligned, text left-aligned; every line has the same width.
    """
    present = [c for c in columns if c in df.columns]
    if not present:
        return ""
    cells: list[list[str]] = []
    right_aligned: list[bool] = []
    for column in present:
        values = df[column]
        integral = _is_integral_float_column(values)
        cells.append([format_number(v, float_digits, integral) for v in values.tolist()])
        is_numeric = pd.api.types.is_numeric_dtype(values.dtype)
        right_aligned.append(is_numeric and not pd.api.types.is_bool_dtype(values.dtype))
    headers = header_names(present)
    widths = [max([len(h), *map(len, col)]) for h, col in zip(headers, cells, strict=True)]

    def line(texts: list[str]) -> str:
        return COLUMN_GAP.join(
            text.rjust(width) if right else text.ljust(width)
            for text, width, right in zip(texts, widths, right_aligned, strict=True)
        )

    rule = COLUMN_GAP.join("-" * width for width in widths)
    body = [line([col[row] for col in cells]) for row in range(len(df))]
    return "\n".join([line(headers), rule, *body])


def format_markdown_table(df: pd.DataFrame, columns: list[str], float_digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table of ``columns`` of ``df`` (missing columns skipped).

    Cells are formatted as in ``format_table``; numeric columns are right-aligned; "|" in
    text is escaped.
    """
    present = [c for c in columns if c in df.columns]
    if not present:
        return ""
    cells, aligns = [], []
    for column in present:
        values = df[column]
        integral = _is_integral_float_column(values)
        texts = [format_number(v, float_digits, integral) for v in values.tolist()]
        cells.append([t.replace("|", "\\|") for t in texts])
        numeric = pd.api.types.is_numeric_dtype(values.dtype)
        aligns.append("---:" if numeric and not pd.api.types.is_bool_dtype(values.dtype) else "---")
    header = "| " + " | ".join(header_names(present)) + " |"
    rule = "|" + "|".join(aligns) + "|"
    rows = ["| " + " | ".join(col[r] for col in cells) + " |" for r in range(len(df))]
    return "\n".join([header, rule, *rows])
