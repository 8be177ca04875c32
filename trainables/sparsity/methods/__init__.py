"""The sparse-training methods, one file each; every module here registers its method.

The modules are imported by name from this folder (as timm imports its model files), so a
new method is one new file beside these. Torch-free (see base.py).
"""

from __future__ import annotations

import importlib
import pkgutil

from trainables.sparsity.methods.base import METHODS, SCHEDULE, SPARSE, Method

# The order of tables and listings: the literature's methods from simple to elaborate, then any
# other module here (a new method needs no line below).
_ORDER = ("dense", "static", "set", "rigl", "prune_regrow", "swat", "hypersparse")
_found = {m.name for m in pkgutil.iter_modules(__path__)} - {"base"}
for _module in [m for m in _ORDER if m in _found] + sorted(_found - set(_ORDER)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["METHODS", "SCHEDULE", "SPARSE", "Method"]
