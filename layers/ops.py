"""`jax.numpy` for layer code: every function, with Variables accepted as arrays.

JAX no longer converts foreign objects inside `jnp` functions, so `jnp.matmul(x, variable)`
fails; `ops.matmul(x, variable)` reads the variable (through autocast) first. Everything else
is exactly `jax.numpy`.

Example:
  >>> from layers import ops
  >>> kernel = dp.Variable(jnp.ones((2, 3)))
  >>> ops.matmul(ops.ones((1, 2)), kernel).tolist()
  [[2.0, 2.0, 2.0]]
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp

from dtypepolicy import Variable


def _read(value: Any) -> Any:
    if isinstance(value, Variable):
        return value.value
    if isinstance(value, (list, tuple)) and any(isinstance(item, Variable) for item in value):
        return type(value)(_read(item) for item in value)
    return value


@functools.cache
def _wrap(name: str) -> Any:
    function = getattr(jnp, name)
    if not callable(function) or isinstance(function, type):
        return function

    @functools.wraps(function)
    def reading_variables(*args: Any, **kwargs: Any) -> Any:
        return function(*map(_read, args), **{key: _read(value) for key, value in kwargs.items()})

    return reading_variables


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        return _wrap(name)
    except AttributeError:
        raise AttributeError(f"layers.ops has no function {name!r} (it mirrors jax.numpy).") from None


def __dir__() -> list[str]:
    return dir(jnp)
