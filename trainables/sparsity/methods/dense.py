"""`dense`: dense training (every weight active; 3 f_D per sample). Reads no sparse knob."""

from __future__ import annotations

from trainables.sparsity.methods.base import METHODS, Method


@METHODS.register("dense")
class Dense(Method):
    """Dense training (3 f_D per sample)."""

    sparse = False
