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

    Exits must mirror entries (last in, first out) within a thread or task. An exit out of that
    order raises `RuntimeError`, after closing the scopes entered after this one too, so that
    every variable they set is back to its value from before this scope; their own exits then
    raise too. Resetting only this scope's token instead would leave the variable at this
    scope's value for good once the inner scope exits (its token restores what it saw).
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
        if entries and entries[-1][0] is self:  # the usual case, kept cheap: exits mirror entries
            try:
                self._var.reset(entries[-1][1])
            except ValueError:  # a token of another Context: nothing has changed yet
                raise RuntimeError(self._other_context_message()) from None
            _open_scopes.set(entries[:-1])
            return
        index = len(entries) - 1
        while index >= 0 and entries[index][0] is not self:
            index -= 1
        if index < 0:
            raise RuntimeError(
                f"This scope ({self._describe()}) was exited without being entered in this thread or task (or "
                f"after a scope entered before it was exited out of order, which closes the scopes inside it); "
                f"use it as `with scope: ...`."
            )
        _reset_from(entries, index, self)
        _open_scopes.set(entries[:index])
        if index < len(entries) - 1:
            inner = entries[index + 1 :]
            names = ", ".join(sorted({scope._var.name for scope, _ in entries[index:]}))
            raise RuntimeError(
                f"This scope ({self._describe()}) was exited out of order: scopes must be exited in the reverse "
                f"order of entry, and this one was exited while {len(inner)} scope(s) entered after it in this "
                f"thread or task were still open ({', '.join(scope._describe() for scope, _ in inner)}). Those "
                f"were closed too, which puts {names} back to the value from before this scope; their own exits "
                f"will raise. Nest `with` blocks, and close a generator that holds a scope across `yield` before "
                f"the scopes opened after it exit."
            )

    def _describe(self) -> str:
        return f"setting {self._var.name} to {self._value!r}"

    def _other_context_message(self) -> str:
        return (
            f"This scope ({self._describe()}) was entered in another context (thread, asyncio task or "
            f"contextvars.Context.run) than the one exiting it; exit it where it was entered."
        )


def _reset_from(entries: tuple, index: int, exiting: scoped) -> None:
    """Resets the tokens of `entries[index:]`, innermost first; if one fails, changes nothing and raises."""
    done = 0
    try:
        for _, token in reversed(entries[index:]):
            token.var.reset(token)
            done += 1
    except ValueError:  # a token of another Context: entered in a parent thread, task or Context.run
        # Set again what was already reset, with fresh tokens, so the failed exit changes nothing.
        kept = len(entries) - done
        _open_scopes.set(entries[:kept] + tuple((scope, scope._var.set(scope._value)) for scope, _ in entries[kept:]))
        raise RuntimeError(exiting._other_context_message()) from None


def open_scopes() -> tuple:
    """A mark for `close_scopes_since`: the scopes open here now."""
    return _open_scopes.get()


def close_scopes_since(mark: tuple, what: str) -> None:
    """Closes, innermost first, any scope opened after `mark` and left open; then raises.

    For code that runs a user's function between its own bare-token sets and resets (the layer
    call pipeline): a scope the function entered and never exited would otherwise outlive it,
    and the caller's resets would put its variables back to the wrong values. Does nothing (and
    costs one ContextVar read) when the function closed what it opened.
    """
    entries = _open_scopes.get()
    if entries is mark:
        return
    keep = len(mark)
    if entries[:keep] != mark:  # pragma: no cover - a scope outside the function exited inside it
        keep = 0
    leaked = entries[keep:]
    if not leaked:
        _open_scopes.set(mark)
        return
    _reset_from(entries, keep, leaked[0][0])
    _open_scopes.set(entries[:keep])
    raise RuntimeError(
        f"{what} left {len(leaked)} scope(s) open ({', '.join(scope._describe() for scope, _ in leaked)}): "
        f"they were closed when it returned, which put their settings back. Use `with` blocks inside it."
    )


# The innermost StatelessScope (see _stateless.py). It lives here so that _variable.py can
# consult it without importing the scope class, which itself needs Variable.
stateless_scope_var: ContextVar = ContextVar("dtypepolicy_stateless_scope", default=None)
