"""`hypersparse` (Glandorf et al. 2023): ART (dense training with a rising regularization, a
buffered pruned-accuracy check, rewind, restarted fine-tuning) with the HyperSparse (or l1,
l2) regularizer. The engine and its differences from the authors' code:
trainables/sparsity/hypersparse.py (checked by tests/test_reference_hypersparse.py)."""

from __future__ import annotations

from trainables.registry import Knob
from trainables.sparsity.methods.base import METHODS, SPARSE, UPDATE_END, Method


@METHODS.register("hypersparse")
class HyperSparse(Method):
    """ART with HyperSparse (or l1 / l2) regularization, pruned once to the global sparsity."""

    knobs = {
        "pattern": SPARSE["pattern"],
        "dense_first_last": SPARSE["dense_first_last"],
        "update_end": UPDATE_END,
        "warmup_epochs": Knob(
            60, int, "dense epochs before regularization (reference 60)", low=0
        ),
        "lambda_init": Knob(
            5e-6, float, "initial regularization weight (reference 5e-6; short runs: ~1e-4)",
            low=0.0, low_open=True,
        ),
        "eta": Knob(
            1.05, float, "regularization growth per epoch, >= 1 (reference 1.05; short runs: ~2)",
            low=1.0,
        ),
        "art_buffer": Knob(
            1, int, "ART averages 2 * art_buffer + 1 epochs' pruned accuracy", low=0
        ),
        "art_restart": Knob(
            True, bool, "fine-tune with a fresh optimizer state and a restarted lr schedule"
        ),
        "regularizer": Knob(
            "hypersparse", str, "regularizer: hypersparse | l1 | l2",
            choices=("hypersparse", "l1", "l2"),
        ),
    }  # fmt: skip

    def make_engine(self, setup):
        from trainables.sparsity.hypersparse import HyperSparseTraining

        v = self.values
        steps_per = setup.steps_per_epoch or setup.total_steps
        return HyperSparseTraining(
            self, setup.weights, target_density=1.0 - setup.config["sparsity"],
            dense_layers=setup.dense_layers, warmup_epochs=v["warmup_epochs"],
            lambda_init=v["lambda_init"], eta=v["eta"], regularizer=v["regularizer"],
            total_epochs=max(1, round(setup.total_steps / steps_per)),
            art_buffer=v["art_buffer"], art_restart=v["art_restart"], **setup.common,
        )  # fmt: skip
