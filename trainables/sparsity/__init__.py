"""Sparse training: masks, how density is spread over layers, and the methods that update masks."""

from __future__ import annotations

from trainables.sparsity.distributions import DISTRIBUTIONS, layer_densities
from trainables.sparsity.masks import (
    PRUNABLE_LAYERS,
    prunable_layers,
    prunable_weights,
    random_masks,
    update_mask,
)
from trainables.sparsity.methods import (
    METHODS,
    SparseMethod,
    SparseTraining,
    create_sparse_training,
)

__all__ = [
    "DISTRIBUTIONS",
    "METHODS",
    "PRUNABLE_LAYERS",
    "SparseMethod",
    "SparseTraining",
    "create_sparse_training",
    "layer_densities",
    "prunable_layers",
    "prunable_weights",
    "random_masks",
    "update_mask",
]
