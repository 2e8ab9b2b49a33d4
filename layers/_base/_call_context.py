"""The call context: what a layer call passes down to the calls nested inside it.

Each `Layer.__call__` opens a new context for the duration of its `call` and restores the
previous one when it returns, so a value set by a nested call (say `training=False`) never
reaches a later sibling.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any, NamedTuple

from dtypepolicy._context import scoped


class CallContext(NamedTuple):  # a tuple: made on every layer call, so cheap to build
    """What nested calls inherit.

    Attributes:
      training: the training flag in force (None: not set anywhere above).
      entry_layer: the outermost layer of the current call stack.
    """

    training: Any
    entry_layer: Any


_current: ContextVar[CallContext | None] = ContextVar("layers_call_context", default=None)


def current_call_context() -> CallContext | None:
    """The context of the innermost layer call running here, or None outside any call."""
    return _current.get()


def call_context(training: Any, entry_layer: Any):
    """Context manager making `CallContext(training, entry_layer)` current for nested calls."""
    return scoped(_current, CallContext(training, entry_layer))


def enter(training: Any, entry_layer: Any) -> Token:
    """Makes `CallContext(training, entry_layer)` current; pair with `leave` in a `finally`.

    The call pipeline's form of `call_context`: a bare ContextVar set, without the bookkeeping
    that lets a context-manager object be re-entered (a microsecond on every layer call).
    """
    return _current.set(CallContext(training, entry_layer))


def leave(token: Token) -> None:
    """Restores the context that `enter` replaced."""
    _current.reset(token)
