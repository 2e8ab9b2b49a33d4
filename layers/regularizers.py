"""Weight regularizers: callables `array -> float32 scalar` penalties added to the loss.

Penalties are loss terms, so they are reduced in float32 whatever the weight's dtype: a float16
sum of squares overflows at 65504 and a bfloat16 one loses the small terms.

Example:
  >>> from layers import regularizers
  >>> round(float(regularizers.get("l2")(jnp.ones((10,), "bfloat16"))), 6)
  0.1
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from layers._registry import Configurable, Registry

__all__ = ["L1", "L1L2", "L2", "Regularizer", "get", "serialize"]


def _check_factor(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a non-negative number, received {value!r} of type {type(value).__name__}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, received {value!r}.")
    return float(value)


def _as_array(x: Any) -> jax.Array:
    try:
        return jnp.asarray(x)
    except TypeError:
        raise TypeError(f"A regularizer expects an array, received {x!r} of type {type(x).__name__}.") from None


# Jitted so an eager call is one dispatch, not one per op; the factors are traced, so every
# instance shares a compilation. The float32 cast is the first thing each one does.


@jax.jit
def _l1(x: jax.Array, l1: float) -> jax.Array:
    return l1 * jnp.sum(jnp.abs(x.astype(jnp.float32)))


@jax.jit
def _l2(x: jax.Array, l2: float) -> jax.Array:
    return l2 * jnp.sum(jnp.square(x.astype(jnp.float32)))


@jax.jit
def _l1_l2(x: jax.Array, l1: float, l2: float) -> jax.Array:
    x = x.astype(jnp.float32)
    return l1 * jnp.sum(jnp.abs(x)) + l2 * jnp.sum(jnp.square(x))


class Regularizer(Configurable):
    """Base class: a callable `array -> float32 scalar` with a JSON-ready config.

    Subclasses implement `__call__` and `get_config`; `from_config` passes the config to the
    constructor.

    Example:
      >>> class Count(Regularizer):
      ...     def __call__(self, x):
      ...         return jnp.asarray(x.size, jnp.float32)
      >>> Count()(jnp.zeros((2, 3)))
      Array(6., dtype=float32)
    """

    def __call__(self, x: Any) -> jax.Array:
        """Returns the penalty for `x` as a float32 scalar."""
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(x).")


class L1L2(Regularizer):
    """Penalty `l1 * sum(|x|) + l2 * sum(x**2)`, computed in float32.

    Args:
      l1: the L1 factor, at least 0.
      l2: the L2 factor, at least 0.

    Example:
      >>> L1L2(l1=0.5, l2=0.25)(jnp.array([1.0, -2.0]))
      Array(2.75, dtype=float32)
    """

    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        self.l1 = _check_factor(l1, f"{type(self).__name__}(l1)")
        self.l2 = _check_factor(l2, f"{type(self).__name__}(l2)")

    def __call__(self, x: Any) -> jax.Array:
        """Returns the penalty for `x` as a float32 scalar."""
        return _l1_l2(_as_array(x), self.l1, self.l2)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"l1": self.l1, "l2": self.l2}


class L1(Regularizer):
    """Penalty `l1 * sum(|x|)`, computed in float32.

    Args:
      l1: the factor, at least 0.

    Example:
      >>> L1(0.5)(jnp.array([1.0, -2.0], jnp.float16))
      Array(1.5, dtype=float32)
    """

    def __init__(self, l1: float = 0.01) -> None:
        self.l1 = _check_factor(l1, "L1(l1)")

    def __call__(self, x: Any) -> jax.Array:
        """Returns the penalty for `x` as a float32 scalar."""
        return _l1(_as_array(x), self.l1)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"l1": self.l1}


class L2(Regularizer):
    """Penalty `l2 * sum(x**2)`, computed in float32.

    Args:
      l2: the factor, at least 0.

    Example:
      >>> L2(0.5)(jnp.array([1.0, -2.0], jnp.bfloat16))
      Array(2.5, dtype=float32)
    """

    def __init__(self, l2: float = 0.01) -> None:
        self.l2 = _check_factor(l2, "L2(l2)")

    def __call__(self, x: Any) -> jax.Array:
        """Returns the penalty for `x` as a float32 scalar."""
        return _l2(_as_array(x), self.l2)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"l2": self.l2}


# --- lookup ------------------------------------------------------------------------------------

_REGISTRY = Registry("regularizer", Regularizer, {"l1": L1, "l2": L2, "l1_l2": L1L2}, example="l2")


def serialize(regularizer: Regularizer) -> dict[str, Any]:
    """Returns `{"class_name": ..., "config": ...}` for a regularizer, ready for JSON.

    Example:
      >>> from layers import regularizers
      >>> regularizers.serialize(L2(0.5))
      {'class_name': 'L2', 'config': {'l2': 0.5}}
    """
    return _REGISTRY.serialize(regularizer)


def get(identifier: Any) -> Any:
    """Returns the regularizer an identifier stands for.

    Args:
      identifier: None (returned as None), a name (`"l1"`, `"l2"`, `"l1_l2"` or a class name;
        the defaults are 0.01 for `L1`/`L2` and 0 for `L1L2`), a `Regularizer` (returned as is),
        a dict from `serialize`, a `Regularizer` subclass (instantiated with its defaults), or
        any other callable (returned as is).

    Raises:
      ValueError: an unknown name or a malformed config dict.
      TypeError: anything else.

    Example:
      >>> from layers import regularizers
      >>> regularizers.get("l1")
      L1(l1=0.01)
      >>> regularizers.get({"class_name": "L1L2", "config": {"l1": 0.1, "l2": 0.2}})
      L1L2(l1=0.1, l2=0.2)
    """
    return _REGISTRY.get(identifier)
