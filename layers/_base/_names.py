"""Default layer names: the class name in snake_case, made unique per process."""

from __future__ import annotations

import collections
import re
import threading

_counts: collections.Counter[str] = collections.Counter()
_lock = threading.Lock()


def snake_case(name: str) -> str:
    """`"MultiHeadAttention"` -> `"multi_head_attention"`."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def unique_name(base: str) -> str:
    """`base` the first time, then `base_1`, `base_2`, ..."""
    with _lock:
        count = _counts[base]
        _counts[base] += 1
    return base if count == 0 else f"{base}_{count}"


def check_name(name: object) -> str:
    """Validates a user-given layer name."""
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"A layer name must be a non-empty string without '/', received {name!r}.")
    return name
