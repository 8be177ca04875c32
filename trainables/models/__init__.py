"""Model families, registered by their files (mlp.py, convnets.py) in `MODELS` (registry.py):
`create_model(name, input_shape, num_classes, **knobs)`, as timm's factory."""

from __future__ import annotations

from trainables.models import convnets, mlp  # noqa: F401  (registers)
from trainables.models.registry import MODELS, create_model, model_knobs, register_model

__all__ = ["MODELS", "create_model", "model_knobs", "register_model"]
