"""The names in each registry, known without importing torch.

A study spec is validated before torch loads (a typo should cost milliseconds, not the
seconds torch's import takes), so the validator needs the registries' names without their
modules. These tuples are those names; `tests/test_first_contact.py` checks each one equals its
registry's keys, so they cannot drift. Once a registry's module is imported (in a worker, or
when a test registers a component of its own) the live registry is used instead.
"""

from __future__ import annotations

import sys

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "svhn", "higgs", "electricity")
MODELS = ("lenet5", "cnn3", "resnet", "resnet18", "wrn", "mlp")

# hyperparameter -> (the module that owns the registry, its attribute, the names above)
REGISTRIES = {
    "dataset": ("trainables.datasets", "DATASETS", DATASETS),
    "model": ("trainables.models", "MODELS", MODELS),
}


def registered_names(field: str) -> tuple[str, ...] | None:
    """The allowed values of a registry-valued hyperparameter (None: not one)."""
    if field not in REGISTRIES:
        return None
    module, attribute, names = REGISTRIES[field]
    live = getattr(sys.modules.get(module), attribute, None)
    return tuple(live) if live is not None else names
