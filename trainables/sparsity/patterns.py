"""Mask patterns as components: `pattern` = unstructured | block | n:m, each with its knobs.

A sparse method reads `pattern` (the slot) and the chosen pattern reads its own knobs
(`block_size`, or `nm_n` and `nm_m`). `shape()` gives the `masks.Pattern` that the mask code
works with. Torch-free: a spec is checked against these declarations before torch loads.
"""

from __future__ import annotations

from typing import Any

from trainables.registry import Component, Knob, Registry


class MaskPattern(Component):
    """The shape a mask takes (see `trainables.sparsity.masks.Pattern` for what each does)."""

    def shape(self) -> Any:
        from trainables.sparsity.masks import Pattern

        return Pattern(self.name)


PATTERNS = Registry("pattern", "the shape of a mask (its knobs: below)", base=MaskPattern)


@PATTERNS.register("unstructured")
class Unstructured(MaskPattern):
    """Any set of positions."""


@PATTERNS.register("block")
class Block(MaskPattern):
    """Whole block_size x block_size tiles (torch.ao's WeightNormSparsifier scores)."""

    knobs = {"block_size": Knob(4, int, "side b of a block pattern's b x b tiles", low=1)}

    def shape(self) -> Any:
        from trainables.sparsity.masks import Pattern

        return Pattern("block", block_size=self.values["block_size"])


@PATTERNS.register("n:m")
class NM(MaskPattern):
    """nm_n of every nm_m consecutive inputs (apex ASP's m4n2_1d); density is nm_n/nm_m."""

    knobs = {
        "nm_n": Knob(2, int, "n of an n:m pattern (kept per group; 2:4 is nm_n=2, nm_m=4)", low=1),
        "nm_m": Knob(4, int, "m of an n:m pattern (group size; must exceed nm_n)", low=2),
    }

    def shape(self) -> Any:
        from trainables.sparsity.masks import Pattern

        return Pattern("n:m", n=self.values["nm_n"], m=self.values["nm_m"])
