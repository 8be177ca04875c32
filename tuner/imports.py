"""Importing a user's custom trainable by its spec path, without importing torch or Ray.

The spec validator imports a custom trainable to check it exists; this module stays light so
that check costs only what the user's own module imports.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any


def import_function(path: str) -> Callable[[dict[str, Any]], Any]:
    """'package.module:function' or '/path/to/file.py:function' -> the function."""
    target, _, name = path.rpartition(":")
    if target.endswith(".py"):
        module_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, name)
