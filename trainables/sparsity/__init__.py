"""Sparse training: masks, how density is spread over layers, and the methods that update masks."""

from __future__ import annotations

from trainables.sparsity.distributions import DISTRIBUTIONS, layer_densities
from trainables.sparsity.masks import (
    PATTERNS,
    PRUNABLE_LAYERS,
    Pattern,
    pattern_masks,
    prunable_layers,
    prunable_weights,
    random_masks,
    topk_mask,
    update_mask,
    update_pattern_mask,
)
from trainables.sparsity.methods import (
    COUNT_ROUNDINGS,
    DROP_CRITERIA,
    GROW_CRITERIA,
    METHODS,
    REDISTRIBUTIONS,
    REGULARIZERS,
    UPDATE_UNITS,
    SparseMethod,
    SparseTraining,
    create_sparse_training,
)

__all__ = [
    "COUNT_ROUNDINGS",
    "DISTRIBUTIONS",
    "DROP_CRITERIA",
    "GROW_CRITERIA",
    "METHODS",
    "PATTERNS",
    "PRUNABLE_LAYERS",
    "REDISTRIBUTIONS",
    "REGULARIZERS",
    "UPDATE_UNITS",
    "Pattern",
    "pattern_masks",
    "topk_mask",
    "update_pattern_mask",
    "SparseMethod",
    "SparseTraining",
    "create_sparse_training",
    "layer_densities",
    "prunable_layers",
    "prunable_weights",
    "random_masks",
    "update_mask",
]
