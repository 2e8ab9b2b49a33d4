"""Where the default policy lives: a process-wide value and a context-local override.

The global default is a plain module attribute so every thread sees `set_dtype_policy`;
scopes use a ContextVar so they stay in the thread or task that opened them. `None` in
either place means "not set"; `_policy.current_default()` turns that into float32.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from dtypepolicy._context import scoped

_global_default: Any = None
_scoped_default: ContextVar[Any] = ContextVar("dtypepolicy_scoped_default", default=None)


def current() -> Any:
    """The policy in force here: the innermost scope, else the global default, else None."""
    scoped_policy = _scoped_default.get()
    return _global_default if scoped_policy is None else scoped_policy


def set_global(policy: Any) -> None:
    global _global_default
    _global_default = policy


def scope(policy: Any):
    """Context manager that makes `policy` the default in this context only."""
    return scoped(_scoped_default, policy)
