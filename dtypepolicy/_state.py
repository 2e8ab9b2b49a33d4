"""Where the default policy lives: a process-wide value and a context-local override.

The global default is a plain module attribute so every thread sees `set_dtype_policy`;
scopes use a ContextVar so they stay in the thread or task that opened them. `None` in
either place means "not set"; `_policy.current_default()` turns that into float32.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import Any

from dtypepolicy._context import scoped

_global_default: Any = None
_scoped_default: ContextVar[Any] = ContextVar("dtypepolicy_scoped_default", default=None)


def current() -> Any:
    """The policy in force here: the innermost scope, else the global default, else None."""
    scoped_policy = _scoped_default.get()
    return _global_default if scoped_policy is None else scoped_policy


# This thread's (or task's) own writes of the global default, newest last, each
# `(number, previous, new)`: what lets a failed layer call undo the writes it made without
# touching another thread's. Bounded: a call that made more writes than this is not undone.
_own_writes: ContextVar[tuple[tuple[int, Any, Any], ...]] = ContextVar("dtypepolicy_own_default_writes", default=())
_KEPT_WRITES = 16
_write_count = 0


_lock = threading.Lock()


def set_global(policy: Any) -> None:
    with _lock:
        _write(policy)


def _write(policy: Any) -> None:
    global _global_default, _write_count
    _write_count += 1
    _own_writes.set((*_own_writes.get()[-_KEPT_WRITES + 1 :], (_write_count, _global_default, policy)))
    _global_default = policy


def write_mark() -> int:
    """A mark for `undo_own_writes_since`: the number of global-default writes so far."""
    return _write_count


def undo_own_writes_since(mark: int) -> None:
    """Undoes this context's writes of the global default made since `mark`.

    The default goes back to what it was just before this context's first write since the
    mark, provided no other thread or task wrote it after that: a failed call undoes its own
    change, never someone else's.
    """
    with _lock:
        own = [write for write in _own_writes.get() if write[0] > mark]
        # Write numbers are unique and increasing: ours are all the writes since our first one
        # exactly when we hold that many.
        if own and len(own) == _write_count - own[0][0] + 1:
            _write(own[0][1])


def scope(policy: Any):
    """Context manager that makes `policy` the default in this context only."""
    return scoped(_scoped_default, policy)
