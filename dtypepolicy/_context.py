"""One helper for every context-local setting: set a ContextVar, always reset it."""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# The tokens of the scopes open in this thread or task, innermost last. Kept in a ContextVar
# rather than on the scope object, so one scope object entered in two threads (or tasks) at once
# resets, in each, the value that thread set.
_open_scopes: ContextVar[tuple[tuple[Any, Token], ...]] = ContextVar("dtypepolicy_open_scopes", default=())


class scoped(Generic[T]):  # lower case: used like the function it replaced
    """Sets `var` to `value` inside a `with` block, restoring it even on error.

    The object can be entered any number of times, one after another or nested (re-entered
    while open), like `contextlib.nullcontext` and unlike a `@contextmanager` generator.
    """

    __slots__ = ("_value", "_var")

    def __init__(self, var: ContextVar[T], value: T) -> None:
        self._var = var
        self._value = value

    def __enter__(self) -> T:
        _open_scopes.set((*_open_scopes.get(), (self, self._var.set(self._value))))
        return self._value

    def __exit__(self, *exc_info: object) -> None:
        entries = _open_scopes.get()
        if entries and entries[-1][0] is self:  # the usual case: exits mirror entries
            index = len(entries) - 1
        else:
            index = next((i for i in range(len(entries) - 1, -1, -1) if entries[i][0] is self), -1)
            if index < 0:
                raise RuntimeError(
                    f"This scope (setting {self._var.name} to {self._value!r}) was exited without being "
                    f"entered in this thread or task; use it as `with scope: ...`."
                )
        _open_scopes.set(entries[:index] + entries[index + 1 :])
        self._var.reset(entries[index][1])


# The innermost StatelessScope (see _stateless.py). It lives here so that _variable.py can
# consult it without importing the scope class, which itself needs Variable.
stateless_scope_var: ContextVar = ContextVar("dtypepolicy_stateless_scope", default=None)
