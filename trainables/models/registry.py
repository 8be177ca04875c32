"""The model registry: `create_model(name, input_shape, num_classes, **knobs)`, as timm's factory.

A model family registers a constructor with its typed knobs (`register_model(name, knobs)`);
`create_model` passes it only the knobs it declares, so one flat hyperparameter dict (depth,
width, dropout, ...) serves every family.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from trainables.registry import Knob, Registry, RegistryError

MODELS = Registry("model", "registered model family")


def register_model(name: str, knobs: dict[str, Knob] | None = None):
    """Register a model family's constructor with the knobs it reads (typed, with docs).

    The constructor's keyword parameters must be exactly those knobs, with the same defaults:
    checked here, at import."""

    def decorate(fn: Callable[..., nn.Module]):
        declared = dict(knobs or {})
        params = {
            p.name: p.default
            for p in inspect.signature(fn).parameters.values()
            if p.name not in ("input_shape", "num_classes")
        }
        if set(params) != set(declared):
            raise RegistryError(
                f"model {name!r}: its constructor takes {sorted(params)} but declares knobs "
                f"{sorted(declared)}; declare every keyword as a Knob"
            )
        for knob_name, default in params.items():
            if default != declared[knob_name].default:
                raise RegistryError(
                    f"model {name!r}: {knob_name} defaults to {default!r} in the constructor "
                    f"and {declared[knob_name].default!r} in its Knob; make them agree"
                )
        MODELS.add(name, fn, declared)
        return fn

    return decorate


def model_knobs(name: str) -> tuple[str, ...]:
    """The hyperparameters a model family takes besides input_shape and num_classes."""
    return tuple(MODELS.knobs_of(name))


def create_model(name: str, input_shape: tuple[int, ...], num_classes: int, **knobs) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"model={name!r} is unknown; allowed: {', '.join(MODELS)}")
    accepted = model_knobs(name)
    return MODELS.components[name](
        input_shape, num_classes, **{k: v for k, v in knobs.items() if k in accepted}
    )
