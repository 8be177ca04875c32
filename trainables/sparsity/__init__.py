"""Sparse training: masks and patterns, how density is spread over layers, the methods (one
component each, trainables/sparsity/methods/) and the engine that runs them.

The registries (`METHODS`, `PATTERNS`, `DISTRIBUTIONS`) are torch-free, so a spec is checked
before torch loads; the names below that need torch (the engine, the masks) are loaded on first
use (PEP 562), so importing the registries does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from trainables.sparsity.distributions import DISTRIBUTIONS, layer_densities
from trainables.sparsity.methods import METHODS, Method
from trainables.sparsity.patterns import PATTERNS

_LAZY = {
    "SparseTraining": "trainables.sparsity.engine",
    "create_sparse_training": "trainables.sparsity.engine",
    "build_sparse_training": "trainables.sparsity.engine",
    "rescale_sparse_init": "trainables.sparsity.engine",
    "PRUNABLE_LAYERS": "trainables.sparsity.masks",
    "Pattern": "trainables.sparsity.masks",
    "pattern_masks": "trainables.sparsity.masks",
    "prunable_layers": "trainables.sparsity.masks",
    "prunable_weights": "trainables.sparsity.masks",
    "random_masks": "trainables.sparsity.masks",
    "topk_mask": "trainables.sparsity.masks",
    "update_mask": "trainables.sparsity.masks",
    "update_pattern_mask": "trainables.sparsity.masks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DISTRIBUTIONS", "METHODS", "PATTERNS", "Method", "layer_densities", *_LAZY]
