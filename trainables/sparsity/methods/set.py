"""`set` (Mocanu et al. 2018): drop the smallest |w|, grow at random.

As rigl's SparseSETOptimizer: the optimizer step runs, then the masks are rewired from the
updated weights. With `set_sign_split`, the authors' rewireMask
(dcmocanu/sparse-evolutionary-artificial-neural-networks): over the layer's sorted weights,
keep the negatives below values[int((1 - zeta) * n_negative)] and the positives above
values[int(min(n - 1, n_nonpositive + zeta * n_positive))]; everything else, active exact
zeros included, is removed; then grow at random back to the layer's count (checked by
tests/test_reference_set.py). Differences: zeta is the cosine-decayed `drop_fraction` (the
reference keeps it constant); the random growth is one shared uniform score, not the
reference's rejection-sampling loop (the same distribution: uniform over the free positions,
just-removed ones included). Without the split it is rigl's SET (magnitude of |w|).
"""

from __future__ import annotations

from trainables.registry import Knob
from trainables.sparsity.methods.base import METHODS, SCHEDULE, SPARSE, Method, refuse


def uniform_scores(weight, generator):
    """A uniform random score per position, drawn on the generator's device (a CPU
    generator cannot draw on CUDA), then moved to the weight's."""
    import torch

    device = generator.device if generator is not None else weight.device
    return torch.rand(weight.shape, generator=generator, device=device).to(weight.device)


@METHODS.register("set")
class SET(Method):
    """Step, then drop smallest |w| (or rewireMask's sign split), grow at random."""

    knobs = {
        **SPARSE,
        **SCHEDULE,
        "set_sign_split": Knob(
            False, bool, "drop positive and negative weights separately (Mocanu et al.'s "
            "rewireMask; unstructured pattern only)",
        ),
    }  # fmt: skip
    dynamic = True
    rewire_after_step = True

    @classmethod
    def check(cls, config, where=""):
        if config.get("set_sign_split") and config.get("pattern") != "unstructured":
            refuse(
                where,
                f"set_sign_split=true is for pattern unstructured, got pattern="
                f"{config.get('pattern')!r}: set pattern: unstructured or set_sign_split: false",
            )

    def drop_score(self, name, weight, training):
        return weight.detach().abs()

    def grow_score(self, name, weight, training):
        return uniform_scores(weight, training.generator)

    def layer_update(self, training, name, weight, step, fraction):
        if not self.values["set_sign_split"]:
            return training.layer_update(name, weight, step, fraction)
        mask = training.masks[name]
        if bool(mask.all()):
            return None  # a dense layer has nowhere to grow
        return self.sign_split_update(training, name, weight, mask, fraction)

    def sign_split_update(self, training, name, weight, mask, fraction):
        """rewireMask (the reference's positive threshold is itself removed: floor(zeta *
        n_positive) + 1 positives go, as in its code)."""
        import torch

        from trainables.sparsity.masks import update_mask

        values = weight.detach().masked_fill(~mask, 0.0)
        flat = values.flatten()
        n = flat.numel()
        n_negative = int((flat < 0).sum())
        n_positive = int((flat > 0).sum())
        n_nonpositive = n - n_positive  # rewireMask's lastZeroPos (index of the first positive)
        keep_negative = int((1 - fraction) * n_negative)
        positive_index = int(min(n - 1, n_nonpositive + fraction * n_positive))
        keep_positive = n - 1 - positive_index
        order = flat.argsort(stable=True)
        keep = torch.zeros(n, dtype=torch.bool, device=flat.device)
        keep[order[:keep_negative]] = True
        if keep_positive > 0:
            keep[order[n - keep_positive :]] = True
        keep = keep.view(mask.shape)
        n_active = int(mask.sum())
        n_grow = n_active - int(keep.sum())
        if n_grow == 0 and bool((keep == mask).all()):
            return None
        grow = self.grow_score(name, weight, training)
        return update_mask(keep, weight.detach().abs(), grow, 0, n_grow=n_grow)
