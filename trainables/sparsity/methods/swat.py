"""`swat` (Raihan & Aamodt 2020): top-K weights forward, top-K activations backward, each layer
at its own density. The engine and its differences from the authors' code:
trainables/sparsity/swat.py (checked by tests/test_reference_swat.py)."""

from __future__ import annotations

from trainables.registry import Knob
from trainables.sparsity.methods.base import METHODS, SPARSE, Method


@METHODS.register("swat")
class SWAT(Method):
    """Top-K weights forward, top-K activations backward (SWAT-U, or SWAT-ERK by distribution)."""

    knobs = {
        "distribution": SPARSE["distribution"],
        "pattern": SPARSE["pattern"],
        "dense_first_last": SPARSE["dense_first_last"],
        "topk_period": Knob(
            1, int, "steps between exact top-K of convolutions (thresholds reused between)", low=1
        ),
    }

    def make_engine(self, setup):
        from trainables.sparsity.swat import SwatTraining

        return SwatTraining(
            self, setup.model, setup.weights, setup.densities,
            topk_period=self.values["topk_period"], **setup.common,
        )  # fmt: skip
