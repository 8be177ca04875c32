"""`rigl` (Evci et al. 2020): drop the smallest |w|, grow the largest |dense gradient|.

As google-research/rigl's SparseRigLOptimizer (checked op for op by
tests/test_reference_rigl.py); the optimizer step of an update batch is skipped
(`skip_weight_update_on_mask_update`, the reference's default). Differences: no N(0, 1e-5)
noise on the drop score (the reference's tie-breaker): ties fall to the lower index.
"""

from __future__ import annotations

from trainables.sparsity.methods.base import METHODS, SCHEDULE, SKIP_STEP, SPARSE, Method


@METHODS.register("rigl")
class RigL(Method):
    """Drop smallest |w|, grow largest |dense gradient|."""

    knobs = {**SPARSE, **SCHEDULE, "skip_weight_update_on_mask_update": SKIP_STEP}
    dynamic = True

    @property
    def dense_gradient(self) -> bool:
        return True

    def drop_score(self, name, weight, training):
        return weight.detach().abs()

    def grow_score(self, name, weight, training):
        return training.dense_gradient(weight).abs()
