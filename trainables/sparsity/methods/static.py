"""`static`: a random mask at initialization, never changed (exact per-layer counts)."""

from __future__ import annotations

from trainables.sparsity.methods.base import METHODS, SPARSE, Method


@METHODS.register("static")
class Static(Method):
    """Random mask at initialization, never changed."""

    knobs = dict(SPARSE)
