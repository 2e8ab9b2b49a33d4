"""The autocast scope: the dtype floating variables are read as, context-locally."""

from __future__ import annotations

import contextlib
from contextvars import ContextVar, Token
from typing import Any

from dtypepolicy._context import scoped
from dtypepolicy._dtypes import is_float, standardize_dtype

_autocast_dtype: ContextVar[str | None] = ContextVar("dtypepolicy_autocast_dtype", default=None)


def current_autocast_dtype() -> str | None:
    """The dtype autocast variables are read as here, or None when reads are not cast."""
    return _autocast_dtype.get()


def autocast_scope(dtype: Any) -> contextlib.AbstractContextManager[str | None]:
    """Reads floating `autocast=True` variables as `dtype` inside a `with` block.

    Args:
      dtype: a floating dtype-like, or None to turn variable autocast off in the block.

    Example:
      >>> v = Variable(jnp.ones(2))
      >>> with autocast_scope("bfloat16"):
      ...     v.value.dtype, v.dtype
      (dtype(bfloat16), 'float32')
    """
    if dtype is not None:
        name = standardize_dtype(dtype)
        if not is_float(name):
            raise ValueError(f"autocast_scope needs a floating dtype or None, received {dtype!r} ({name}).")
        dtype = name
    return scoped(_autocast_dtype, dtype)


def enter_autocast(dtype: str | None) -> Token | None:
    """Sets the autocast dtype (a canonical floating name or None); None if it already was that.

    For the layers' call pipeline, which sets it on every call: pair with `leave_autocast` in a
    `finally`. Users want `autocast_scope`.
    """
    return None if _autocast_dtype.get() == dtype else _autocast_dtype.set(dtype)


def leave_autocast(token: Token | None) -> None:
    """Restores the autocast dtype that `enter_autocast` replaced."""
    if token is not None:
        _autocast_dtype.reset(token)
