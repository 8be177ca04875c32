"""Masks over the prunable weights, and the one mask update every dynamic method shares."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.sparsity.patterns import PATTERNS

# Only the weights of these layers are masked; biases and norm parameters stay dense, as in rigl.
PRUNABLE_LAYERS = (nn.Linear, nn.Conv2d)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Weight name (as in `named_parameters()`) -> its nn.Linear / nn.Conv2d, in module order."""
    return {
        f"{name}.weight" if name else "weight": module
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_LAYERS)
    }


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weight name -> weight of every nn.Linear and nn.Conv2d, in module order."""
    return {name: module.weight for name, module in prunable_layers(model).items()}


def kth_largest(values: Tensor, k: int) -> Tensor:
    """The k-th largest of `values` (1-based) as a 0-dim tensor on their device.

    On a CPU numpy's introselect (np.partition) finds it about 10x faster than torch.kthvalue
    (0.3 ms against 4 ms for 266k float32), which is what makes a per-step exact top-K of
    every layer affordable; elsewhere torch.kthvalue."""
    flat = values.detach().reshape(-1)
    n = flat.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        return torch.tensor(np.partition(flat.numpy(), n - k)[n - k], dtype=flat.dtype)
    return flat.kthvalue(n - k + 1).values


def random_masks(
    weights: dict[str, Tensor],
    densities: dict[str, float],
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Bool masks with exactly round(density * numel) (at least 1) active positions per layer.

    The positions are uniformly random. Exact counts (rather than Bernoulli draws) make the
    per-layer density, and hence the FLOP count, a function of the configuration alone.
    """
    masks = {}
    for name, weight in weights.items():
        if name not in densities:
            raise ValueError(f"densities has no entry for weight {name!r}")
        density = densities[name]
        if not 0.0 <= density <= 1.0:
            raise ValueError(f"densities[{name!r}] must be in [0, 1], got {density}")
        n_active = max(1, round(density * weight.numel()))
        # Draw on the generator's device (a CPU generator cannot draw on CUDA), then move.
        device = generator.device if generator is not None else weight.device
        positions = torch.randperm(weight.numel(), generator=generator, device=device)[:n_active]
        mask = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
        mask[positions.to(weight.device)] = True
        masks[name] = mask.view(weight.shape)
    return masks


def update_mask(
    mask: Tensor,
    drop_score: Tensor,
    grow_score: Tensor,
    n_update: int,
    *,
    n_grow: int | None = None,
    drop_candidates: Tensor | None = None,
) -> Tensor:
    """Drop the `n_update` active positions with the lowest `drop_score`, then grow the `n_update`
    (or `n_grow`) inactive positions (after the drop) with the highest `grow_score`.

    Just-dropped positions may regrow, as in rigl. With n_grow None the number of active
    positions is preserved exactly. `drop_candidates` (bool, mask's shape) limits the drop to
    those active positions (SET's positive / negative split). Returns a new bool mask; `mask`
    is not modified.
    """
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got dtype {mask.dtype}")
    if drop_score.shape != mask.shape or grow_score.shape != mask.shape:
        raise ValueError(
            f"drop_score {tuple(drop_score.shape)} and grow_score {tuple(grow_score.shape)} "
            f"must have the mask's shape {tuple(mask.shape)}"
        )
    flat = mask.flatten()
    candidates = flat if drop_candidates is None else flat & drop_candidates.flatten()
    active = candidates.nonzero().squeeze(1)
    if not 0 <= n_update <= active.numel():
        raise ValueError(
            f"n_update must be in [0, {active.numel()}] (active count), got {n_update}"
        )
    n_grow = n_update if n_grow is None else n_grow
    new = flat.clone()
    # Select among the candidate indices only, so scores of +-inf or ties with masked-out
    # positions can never pick a position from the wrong set.
    lowest = drop_score.flatten()[active].topk(n_update, largest=False).indices
    new[active[lowest]] = False
    inactive = (~new).nonzero().squeeze(1)
    if not 0 <= n_grow <= inactive.numel():
        raise ValueError(f"n_grow must be in [0, {inactive.numel()}], got {n_grow}")
    highest = grow_score.flatten()[inactive].topk(n_grow).indices
    new[inactive[highest]] = True
    return new.view(mask.shape)


# --- patterns: the shape of a mask ----------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """The shape a mask takes.

    - `unstructured`: any set of positions.
    - `block`: whole `block_size` x `block_size` tiles of the weight viewed as the matrix
      C_out x (C_in * kh * kw) (a conv weight as its im2col matrix, as block-sparse kernels do;
      edge tiles are cut short). A tile is scored by the mean of its squared scores over the
      positions it really has, as `torch.ao.pruning.WeightNormSparsifier` does (avg_pool2d of
      w^2, ceil_mode): a cut-short edge tile competes on equal terms with a full one.
    - `n:m`: every group of `m` consecutive input channels of one output keeps exactly `n`; a
      conv weight is grouped along C_in at each kernel position (as apex ASP's m4n2_1d and
      `torch.sparse.to_sparse_semi_structured` on a channels-last conv need). A layer whose
      input channel count is not a multiple of `m` cannot be n:m and stays dense (as ASP skips
      it).
    """

    kind: str = "unstructured"
    block_size: int = 4
    n: int = 2
    m: int = 4

    def __post_init__(self) -> None:
        if self.kind not in PATTERNS:
            raise ValueError(f"pattern must be one of {tuple(PATTERNS)}, got {self.kind!r}")
        if self.kind == "block" and (not isinstance(self.block_size, int) or self.block_size < 1):
            raise ValueError(f"block_size must be an int >= 1, got {self.block_size!r}")
        if self.kind == "n:m" and not (
            isinstance(self.n, int) and isinstance(self.m, int) and 1 <= self.n < self.m
        ):
            raise ValueError(
                f"nm_n={self.n!r}, nm_m={self.m!r}: an n:m pattern needs ints 1 <= nm_n < nm_m "
                "(2:4 is nm_n=2, nm_m=4)"
            )

    def supports(self, shape: tuple[int, ...]) -> bool:
        """False for a layer this pattern cannot shape (n:m with input channels not a multiple
        of m)."""
        return self.kind != "n:m" or shape[1] % self.m == 0

    # unit views: a block's or a group's scores, and back to element masks
    def unit_scores(self, score: Tensor) -> Tensor:
        """Scores per unit: per element (flat), per block (mean of squares), or (groups, m) for
        n:m (groups along the input channels)."""
        if self.kind == "unstructured":
            return score.flatten()
        if self.kind == "n:m":
            if score.dim() > 2:  # (C_out, C_in, kh, kw) -> channels last: groups along C_in
                score = score.permute(0, *range(2, score.dim()), 1)
            return score.reshape(-1, self.m)
        b = self.block_size
        matrix = score.reshape(score.shape[0], -1).float()
        tiles = F.avg_pool2d(matrix.pow(2)[None, None], b, b, ceil_mode=True)
        return tiles.flatten()

    def unit_mask(self, mask: Tensor) -> Tensor:
        """A pattern-shaped element mask as a mask over units (flat, per block, or (groups, m))."""
        if self.kind == "block":
            return self.unit_scores(mask.float()) > 0
        return self.unit_scores(mask)

    def expand(self, units: Tensor, shape: tuple[int, ...]) -> Tensor:
        """Element mask of `shape` from a unit mask."""
        if self.kind == "n:m":
            if len(shape) > 2:  # back from channels last
                last = (shape[0], *shape[2:], shape[1])
                return units.reshape(last).permute(0, -1, *range(1, len(shape) - 1)).contiguous()
            return units.reshape(shape)
        if self.kind != "block":
            return units.reshape(shape)
        b = self.block_size
        rows, cols = shape[0], math.prod(shape[1:])
        tiles = units.reshape(-(-rows // b), -(-cols // b))
        full = tiles.repeat_interleave(b, dim=0).repeat_interleave(b, dim=1)
        return full[:rows, :cols].reshape(shape).contiguous()

    def n_units(self, shape: tuple[int, ...]) -> int:
        rows, cols = shape[0], math.prod(shape[1:])
        if self.kind == "block":
            return -(-rows // self.block_size) * -(-cols // self.block_size)
        return rows * cols


UNSTRUCTURED = Pattern()


def pattern_masks(
    weights: dict[str, Tensor],
    densities: dict[str, float],
    pattern: Pattern,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Random masks of a pattern: unstructured as `random_masks`; block: round(density x
    blocks) (at least 1) whole blocks at random; n:m: n random positions of every group of m
    (the density is n/m wherever the layer is not dense)."""
    if pattern.kind == "unstructured":
        return random_masks(weights, densities, generator)
    masks = {}
    for name, weight in weights.items():
        density = densities[name]
        shape = tuple(weight.shape)
        if density >= 1.0:
            masks[name] = torch.ones_like(weight, dtype=torch.bool)
            continue
        device = generator.device if generator is not None else weight.device
        if pattern.kind == "block":
            n_units = pattern.n_units(shape)
            n_active = max(1, round(density * n_units))
            chosen = torch.randperm(n_units, generator=generator, device=device)[:n_active]
            units = torch.zeros(n_units, dtype=torch.bool, device=device)
            units[chosen] = True
        else:
            groups = weight.numel() // pattern.m
            keep = torch.rand(groups, pattern.m, generator=generator, device=device)
            units = torch.zeros(groups, pattern.m, dtype=torch.bool, device=device)
            units.scatter_(1, keep.topk(pattern.n, dim=1).indices, True)
        masks[name] = pattern.expand(units.to(weight.device), shape)
    return masks


def topk_mask(score: Tensor, n_keep: int, pattern: Pattern = UNSTRUCTURED) -> Tensor:
    """Keep the `n_keep` highest-scoring units (elements or blocks; ignored for n:m, which keeps
    the top n of every group of m) and return the element mask."""
    shape = tuple(score.shape)
    units = pattern.unit_scores(score.detach())
    if pattern.kind == "n:m":
        keep = torch.zeros_like(units, dtype=torch.bool)
        keep.scatter_(1, units.topk(pattern.n, dim=1).indices, True)
        return pattern.expand(keep, shape)
    keep = torch.zeros(units.numel(), dtype=torch.bool, device=score.device)
    keep[units.topk(n_keep).indices] = True
    return pattern.expand(keep, shape)


def update_pattern_mask(
    mask: Tensor,
    drop_score: Tensor,
    grow_score: Tensor,
    pattern: Pattern,
    n_update: int,
    n_grow: int | None = None,
) -> Tensor:
    """The shared drop/grow update on a pattern's units (`n_update`, `n_grow` count units:
    positions, or blocks).

    unstructured / block: drop the `n_update` active units with the lowest (block-norm) drop
    score and grow `n_grow` (default `n_update`; fewer: prune_regrow shrinking) inactive units
    with the highest grow score, via `update_mask`. n:m: in the `n_update` groups (at most all)
    whose weakest active position has the lowest drop score, that position is swapped for the
    group's strongest inactive one by grow score, so every group keeps exactly n of m.
    """
    shape = tuple(mask.shape)
    if pattern.kind == "n:m":
        if n_grow is not None and n_grow != n_update:
            raise ValueError("an n:m pattern keeps its count: n_grow must equal n_update")
        units = pattern.unit_mask(mask).clone()
        n_swaps = min(units.shape[0], n_update)
        if n_swaps == 0:
            return mask.clone()
        drop = pattern.unit_scores(drop_score).float()
        grow = pattern.unit_scores(grow_score).float()
        weakest = torch.where(units, drop, torch.inf).min(dim=1)
        chosen = weakest.values.topk(n_swaps, largest=False).indices
        rows = units[chosen]
        index = torch.arange(n_swaps, device=rows.device)
        rows[index, weakest.indices[chosen]] = False
        rows[index, torch.where(rows, -torch.inf, grow[chosen]).argmax(dim=1)] = True
        units[chosen] = rows
        return pattern.expand(units, shape)
    new = update_mask(
        pattern.unit_mask(mask),
        pattern.unit_scores(drop_score),
        pattern.unit_scores(grow_score),
        n_update,
        n_grow=n_grow,
    )
    return pattern.expand(new, shape)


def csr_bytes(mask: Tensor, value_bytes: int = 4, index_bytes: int = 4) -> int:
    """Bytes of a weight stored as CSR of its C_out x (C_in*kh*kw) matrix: nnz values
    (`value_bytes`, float32) + nnz column indices and rows + 1 row pointers (`index_bytes`,
    int32)."""
    nnz = int(mask.sum())
    return nnz * (value_bytes + index_bytes) + (mask.shape[0] + 1) * index_bytes
