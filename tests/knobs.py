"""Knobs for tests that run every method with one set of settings."""

from __future__ import annotations

from typing import Any

from trainables.config import unread_knobs


def read_by(method: str, /, **knobs: Any) -> dict[str, Any]:
    """`knobs` less those `method` (and the pattern it reads) does not read: a test that
    gives every method `update_interval=2` passes it to those that have a schedule only
    (the others refuse it by name)."""
    unread = set(unread_knobs({"method": method, **knobs}))
    return {name: value for name, value in knobs.items() if name not in unread}
