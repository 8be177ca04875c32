"""YAML as a study spec needs it: duplicate keys are errors, `1e3` is a number.

PyYAML (YAML 1.1) lets the last of two equal keys win silently, and reads `1e3` or `1e-3` as
text (its floats need a dot and a signed exponent). `SpecLoader` refuses duplicate keys,
naming the key and both lines, and reads exponent forms as numbers: a whole number when
written without a dot and integral (`1e3` -> 1000, so `epochs: 1e3` is a valid epoch count),
a float otherwise (`1e-3`, `2.5e4`).
"""

from __future__ import annotations

import re

import yaml

EXPONENT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key, line: int, first_line: int):
        self.key, self.line, self.first_line = key, line, first_line
        super().__init__(f"duplicate key {key!r} at line {line} (first at line {first_line})")


class SpecLoader(yaml.SafeLoader):
    """yaml.SafeLoader with duplicate keys refused and exponent-form numbers."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader reports it
                    continue
                if first is not None:
                    raise DuplicateKeyError(key, key_node.start_mark.line + 1, first)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _exponent_number(loader: SpecLoader, node) -> int | float:
    text = loader.construct_scalar(node).replace("_", "")
    value = float(text)
    if "." not in text and value.is_integer() and abs(value) < 1e18:
        return int(value)
    return value


SpecLoader.add_implicit_resolver("tag:sparsetune:exponent", EXPONENT, list("-+0123456789."))
SpecLoader.add_constructor("tag:sparsetune:exponent", _exponent_number)


def load(text: str):
    """Parse one YAML document (a spec, or a `--set` value) with `SpecLoader`."""
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader
