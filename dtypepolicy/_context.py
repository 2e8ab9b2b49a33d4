"""One helper for every context-local setting: set a ContextVar, always reset it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def scoped(var: ContextVar[T], value: T) -> Iterator[T]:
    """Sets `var` to `value` for the duration of the block, restoring it even on error."""
    token = var.set(value)
    try:
        yield value
    finally:
        var.reset(token)


# The innermost StatelessScope (see _stateless.py). It lives here so that _variable.py can
# consult it without importing the scope class, which itself needs Variable.
stateless_scope_var: ContextVar = ContextVar("dtypepolicy_stateless_scope", default=None)
