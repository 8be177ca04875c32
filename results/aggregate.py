"""Config identity and aggregation over seeds.

``config_id`` names a training configuration independently of the run that trained it: a
hash of the row's ``config/`` columns except the seed and where/how it ran
(``RUN_SPECIFIC``). Trials of one config with different seeds, in one study or several,
get the same id, so ``aggregate_over_seeds`` can average them.

The hash is stable across processes, machines and column order: it is the SHA-256 of a
canonical JSON text of the (name, value) pairs sorted by name, where

- a missing or null value (None, NaN, NA) is left out, so a hyperparameter that is
  inactive (null) equals one that is absent from the table;
- numbers are written with 12 significant digits, so 64, 64.0 and numpy's int64(64) agree
  and float noise below 1e-12 (relative) does not split a config;
- booleans, strings and anything else are tagged by kind, so True, 1 and "1" differ.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from numbers import Integral, Real

import numpy as np
import pandas as pd

from contract.columns import CONFIG_PREFIX

CONFIG_ID = "config_id"
COUNT = "count"
# run-specific hyperparameters: not part of what a config *is*
RUN_SPECIFIC = ("seed", "data_dir", "device")
ID_LENGTH = 16  # hex characters (64 bits)
SIGNIFICANT_DIGITS = 12


def _is_missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _canonical(value: object) -> list:
    """A JSON-able, type-tagged form of one value (see the module docstring)."""
    if isinstance(value, bool | np.bool_):
        return ["bool", bool(value)]
    if isinstance(value, Integral | Real):
        number = float(value)
        if math.isinf(number):
            return ["num", "inf" if number > 0 else "-inf"]
        if isinstance(value, Integral) and abs(int(value)) < 10**SIGNIFICANT_DIGITS:
            return ["num", str(int(value))]
        text = f"{number:.{SIGNIFICANT_DIGITS}g}"
        return ["num", text]
    if isinstance(value, str):
        return ["str", value]
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return ["json", json.dumps(value, sort_keys=True, default=str)]


def config_columns(df: pd.DataFrame, exclude: Iterable[str] = RUN_SPECIFIC) -> list[str]:
    """The ``config/`` columns of ``df`` that identify a config (``exclude``: names without
    the prefix)."""
    excluded = {name.removeprefix(CONFIG_PREFIX) for name in exclude}
    return [
        c
        for c in df.columns
        if isinstance(c, str)
        and c.startswith(CONFIG_PREFIX)
        and c.removeprefix(CONFIG_PREFIX) not in excluded
    ]


def config_hash(config: dict[str, object]) -> str:
    """The id of one config given as {name: value} (names with or without ``config/``)."""
    items = sorted(
        (name.removeprefix(CONFIG_PREFIX), _canonical(value))
        for name, value in config.items()
        if not _is_missing(value)
    )
    text = json.dumps(items, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:ID_LENGTH]


def config_id(df: pd.DataFrame, exclude: Iterable[str] = RUN_SPECIFIC) -> pd.Series:
    """A stable id (16 hex characters) of every row's config, aligned with ``df.index``.

    Built from the ``config/`` columns except ``exclude`` (default: seed, data_dir, device;
    pass e.g. ``RUN_SPECIFIC + ("sparsity",)`` to identify a config across sparsities).
    """
    columns = sorted(config_columns(df, exclude))
    names = [c.removeprefix(CONFIG_PREFIX) for c in columns]
    ids = [
        config_hash(dict(zip(names, row, strict=True)))
        for row in df[columns].astype(object).itertuples(index=False, name=None)
    ]
    return pd.Series(ids, index=df.index, name=CONFIG_ID, dtype=object)


def with_config_id(df: pd.DataFrame, exclude: Iterable[str] = RUN_SPECIFIC) -> pd.DataFrame:
    """Copy of ``df`` with a ``config_id`` column (replacing any existing one)."""
    return df.assign(**{CONFIG_ID: config_id(df, exclude)})


def aggregate_over_seeds(
    df: pd.DataFrame,
    metrics: Iterable[str],
    by: str | Iterable[str] | None = None,
) -> pd.DataFrame:
    """Mean, std and count of ``metrics`` per config: one row per group, in first-seen order.

    ``by`` are the grouping columns; None groups by ``config_id`` (computed when ``df`` has
    none). The result has the ``by`` columns, every ``config/`` column that is constant
    within each group (the config's hyperparameters; per-seed ones such as ``config/seed``
    drop out), ``<metric>_mean`` and ``<metric>_std`` (sample std, ddof=1: NaN for a single
    row; NaN metric values are skipped) for each metric, and ``count`` (rows in the group,
    e.g. seeds). Filter by status first if failed trials should not count.
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    missing = [m for m in metrics if m not in df.columns]
    if missing:
        raise ValueError(f"unknown metric column(s) {missing}; columns: {', '.join(df.columns)}")
    if by is None:
        if CONFIG_ID not in df.columns:
            df = with_config_id(df)
        keys = [CONFIG_ID]
    else:
        keys = [by] if isinstance(by, str) else list(by)
        unknown = [k for k in keys if k not in df.columns]
        if unknown:
            raise ValueError(f"unknown grouping column(s) {unknown}")
    grouped = df.groupby(keys, sort=False, dropna=False)
    result = grouped.size().rename(COUNT).to_frame()
    for metric in metrics:
        values = pd.to_numeric(df[metric], errors="coerce").astype(float)
        stats = values.groupby([df[k] for k in keys], sort=False, dropna=False).agg(["mean", "std"])
        result[f"{metric}_mean"] = stats["mean"]
        result[f"{metric}_std"] = stats["std"]
    constant = [
        c
        for c in df.columns
        if isinstance(c, str)
        and c.startswith(CONFIG_PREFIX)
        and c not in keys
        and (grouped[c].nunique(dropna=False) <= 1).all()
    ]
    if constant:
        result = grouped[constant].first().join(result)
    result = result.reset_index()
    ordered = keys + constant + [c for c in result.columns if c not in keys and c not in constant]
    return result[ordered]
