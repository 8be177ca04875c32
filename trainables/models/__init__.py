"""Model registry: `create_model(name, input_shape, num_classes, **knobs)`, as timm's factory.

A model family registers a constructor; `create_model` passes it only the knobs its signature
names, so one flat hyperparameter dict (depth, width, dropout, ...) serves every family.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def decorate(fn: Callable[..., nn.Module]):
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = fn
        return fn

    return decorate


def model_knobs(name: str) -> tuple[str, ...]:
    """The hyperparameters a model family takes besides input_shape and num_classes."""
    params = inspect.signature(MODELS[name]).parameters
    return tuple(p for p in params if p not in ("input_shape", "num_classes"))


def create_model(name: str, input_shape: tuple[int, ...], num_classes: int, **knobs) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"model={name!r} is unknown; allowed: {', '.join(MODELS)}")
    accepted = model_knobs(name)
    return MODELS[name](
        input_shape, num_classes, **{k: v for k, v in knobs.items() if k in accepted}
    )


from trainables.models import convnets, mlp  # noqa: E402,F401  (registers)

__all__ = ["MODELS", "create_model", "model_knobs", "register_model"]
