"""YAML in and out through libyaml's C parser and emitter when PyYAML has them.

The pure-Python ones took 1.9 s to read a 1000-node stack file and 2.5 ms per node to write its
user data; the C ones read and write the same documents (same resolver, same representer: the
text written is byte for byte the same, tests/program/test_preview_output.py checks it) in a
fraction. Without libyaml, the pure-Python classes do the same work.
"""

from __future__ import annotations

from typing import Any

import yaml

# The C classes share the pure-Python constructor, representer and resolver (not their bases).
SafeLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SafeDumper: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
YAMLError = yaml.YAMLError


def safe_load(text: str) -> Any:
    """`yaml.safe_load`, through libyaml."""
    return yaml.load(text, Loader=SafeLoader)  # noqa: S506 - a safe loader (C or Python)


def safe_dump(data: Any, **options: Any) -> str:
    """`yaml.safe_dump` to a string, through libyaml."""
    return str(yaml.dump(data, Dumper=SafeDumper, **options))
