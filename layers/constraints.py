"""Weight constraints: callables `array -> array` that optimizers apply after each update.

The result keeps the weight's dtype, but norms are computed in at least float32: squaring a
float16 weight overflows past 256, and a bfloat16 sum of squares drops the small entries.

Example:
  >>> from layers import constraints
  >>> constraints.get("non_neg")(jnp.array([-1.0, 2.0], jnp.bfloat16))
  Array([0, 2], dtype=bfloat16)
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from layers._registry import Configurable, Registry

__all__ = ["Constraint", "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "get", "serialize"]

# Keeps a zero column at zero instead of dividing 0 by 0; the value Keras uses.
_EPSILON = 1e-7


def _as_array(w: Any, owner: str) -> jax.Array:
    try:
        return jnp.asarray(w)
    except TypeError:
        raise TypeError(f"{owner} expects an array, received {w!r} of type {type(w).__name__}.") from None


def _wide(w: jax.Array) -> jax.Array:
    """`w` in float32, or float64 when it already is."""
    if jnp.issubdtype(w.dtype, jnp.floating) and w.dtype.itemsize >= 8:
        return w
    return w.astype(jnp.float32)


def _check_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a number, received {value!r} of type {type(value).__name__}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, received {value!r}.")
    return float(value)


def _check_axis(axis: Any, owner: str) -> int | tuple[int, ...]:
    def is_int(a: Any) -> bool:
        return isinstance(a, (int, np.integer)) and not isinstance(a, bool)

    if is_int(axis):
        return int(axis)
    if isinstance(axis, (tuple, list)) and axis and all(is_int(a) for a in axis):
        if len(set(axis)) != len(axis):
            raise ValueError(f"{owner}(axis) must not repeat an axis, received {axis!r}.")
        return tuple(int(a) for a in axis)
    raise TypeError(f"{owner}(axis) must be an int or a non-empty list of ints, received {axis!r}.")


def _resolve_axes(w: jax.Array, axis: int | tuple[int, ...], owner: str) -> tuple[int, ...]:
    """The axes as sorted non-negative ints, so equivalent spellings share one compilation."""
    axes = (axis,) if isinstance(axis, int) else axis
    if any(not -w.ndim <= a < w.ndim for a in axes):
        raise ValueError(f"{owner}(axis={axis!r}) does not fit a weight of shape {w.shape} ({w.ndim} dims).")
    resolved = sorted(a % w.ndim for a in axes)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"{owner}(axis={axis!r}) names the same axis twice for a weight with {w.ndim} dims.")
    return tuple(resolved)


def _norms(w: jax.Array, axis: tuple[int, ...]) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(w), axis=axis, keepdims=True))


# Jitted so an eager call is one dispatch, not one per op; bounds are traced and only the axis
# is static, so every instance with the same axis shares a compilation.


@jax.jit
def _non_neg(w: jax.Array) -> jax.Array:
    return jnp.where(w < 0, jnp.zeros((), w.dtype), w)


@functools.partial(jax.jit, static_argnames="axis")
def _rescale(w: jax.Array, min_value: float, max_value: float, rate: float, axis: tuple[int, ...]) -> jax.Array:
    """Moves each norm a fraction `rate` of the way into `[min_value, max_value]`."""
    wide = _wide(w)
    norms = _norms(wide, axis)
    desired = rate * jnp.clip(norms, min_value, max_value) + (1.0 - rate) * norms
    return (wide * (desired / (_EPSILON + norms))).astype(w.dtype)


@functools.partial(jax.jit, static_argnames="axis")
def _unit_norm(w: jax.Array, axis: tuple[int, ...]) -> jax.Array:
    wide = _wide(w)
    return (wide / (_EPSILON + _norms(wide, axis))).astype(w.dtype)


class Constraint(Configurable):
    """Base class: a callable `array -> array` of the same shape and dtype, with a config.

    Subclasses implement `__call__` and `get_config`; `from_config` passes the config to the
    constructor.

    Example:
      >>> class Clip(Constraint):
      ...     def __call__(self, w):
      ...         return jnp.clip(w, -1, 1)
      >>> Clip()(jnp.array([-3.0, 0.5]))
      Array([-1. ,  0.5], dtype=float32)
    """

    def __call__(self, w: Any) -> jax.Array:
        """Returns the constrained `w`, same shape and dtype."""
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(w).")


def _axis_config(axis: int | tuple[int, ...]) -> int | list[int]:
    return axis if isinstance(axis, int) else list(axis)


class NonNeg(Constraint):
    """Sets negative entries to zero (NaN stays NaN, so a diverged weight is not hidden).

    Example:
      >>> NonNeg()(jnp.array([-1.0, 0.0, 3.0]))
      Array([0., 0., 3.], dtype=float32)
    """

    def __call__(self, w: Any) -> jax.Array:
        """Returns `w` with negative entries set to zero."""
        return _non_neg(_as_array(w, "NonNeg"))


class MaxNorm(Constraint):
    """Rescales each slice along `axis` whose L2 norm exceeds `max_value` down to `max_value`.

    Args:
      max_value: the largest allowed norm, at least 0.
      axis: the axis or axes the norm runs over. For a Dense kernel `(in, out)`, `axis=0`
        bounds each unit's incoming weights; for a conv kernel `(h, w, in, out)` use `[0, 1, 2]`.

    Example:
      >>> MaxNorm(max_value=1.0)(jnp.array([[3.0], [4.0]]))
      Array([[0.6],
             [0.8]], dtype=float32)
    """

    def __init__(self, max_value: float = 2.0, axis: int | list[int] = 0) -> None:
        self.max_value = _check_number(max_value, "MaxNorm(max_value)")
        self.axis = _check_axis(axis, "MaxNorm")

    def __call__(self, w: Any) -> jax.Array:
        """Returns `w` with every norm along `axis` at most `max_value`."""
        w = _as_array(w, "MaxNorm")
        # MaxNorm is MinMaxNorm with no lower bound, moved all the way.
        return _rescale(w, 0.0, self.max_value, 1.0, axis=_resolve_axes(w, self.axis, "MaxNorm"))

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"max_value": self.max_value, "axis": _axis_config(self.axis)}


class UnitNorm(Constraint):
    """Scales each slice along `axis` to L2 norm 1.

    Args:
      axis: the axis or axes the norm runs over.

    Example:
      >>> UnitNorm(axis=1)(jnp.array([[3.0, 4.0]]))
      Array([[0.6, 0.8]], dtype=float32)
    """

    def __init__(self, axis: int | list[int] = 0) -> None:
        self.axis = _check_axis(axis, "UnitNorm")

    def __call__(self, w: Any) -> jax.Array:
        """Returns `w` with every norm along `axis` equal to 1."""
        w = _as_array(w, "UnitNorm")
        return _unit_norm(w, axis=_resolve_axes(w, self.axis, "UnitNorm"))

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"axis": _axis_config(self.axis)}


class MinMaxNorm(Constraint):
    """Moves each slice's L2 norm into `[min_value, max_value]`, by a fraction `rate` per call.

    The new norm is `rate * clip(norm, min_value, max_value) + (1 - rate) * norm`.

    Args:
      min_value: the smallest allowed norm, at least 0.
      max_value: the largest allowed norm, at least `min_value`.
      rate: in `[0, 1]`; 1 enforces the bounds at once, smaller values move part of the way.
      axis: the axis or axes the norm runs over.

    Example:
      >>> w = MinMaxNorm(min_value=0.0, max_value=1.0, rate=0.5)(jnp.array([[3.0], [4.0]]))
      >>> round(float(jnp.linalg.norm(w)), 4)  # halfway from 5 to 1
      3.0
    """

    def __init__(
        self, min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0, axis: int | list[int] = 0
    ) -> None:
        self.min_value = _check_number(min_value, "MinMaxNorm(min_value)")
        self.max_value = _check_number(max_value, "MinMaxNorm(max_value)")
        if self.min_value > self.max_value:
            raise ValueError(
                f"MinMaxNorm needs min_value <= max_value, received min_value={min_value!r}, max_value={max_value!r}."
            )
        self.rate = _check_number(rate, "MinMaxNorm(rate)")
        if self.rate > 1:
            raise ValueError(f"MinMaxNorm(rate) must be in [0, 1], received {rate!r}.")
        self.axis = _check_axis(axis, "MinMaxNorm")

    def __call__(self, w: Any) -> jax.Array:
        """Returns `w` with its norms moved towards `[min_value, max_value]`."""
        w = _as_array(w, "MinMaxNorm")
        axes = _resolve_axes(w, self.axis, "MinMaxNorm")
        return _rescale(w, self.min_value, self.max_value, self.rate, axis=axes)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {
            "min_value": self.min_value,
            "max_value": self.max_value,
            "rate": self.rate,
            "axis": _axis_config(self.axis),
        }


# --- lookup ------------------------------------------------------------------------------------

_REGISTRY = Registry(
    "constraint",
    Constraint,
    {"non_neg": NonNeg, "max_norm": MaxNorm, "unit_norm": UnitNorm, "min_max_norm": MinMaxNorm},
    example="max_norm",
)


def serialize(constraint: Constraint) -> dict[str, Any]:
    """Returns `{"class_name": ..., "config": ...}` for a constraint, ready for JSON.

    Example:
      >>> from layers import constraints
      >>> constraints.serialize(UnitNorm(axis=[0, 1]))
      {'class_name': 'UnitNorm', 'config': {'axis': [0, 1]}}
    """
    return _REGISTRY.serialize(constraint)


def get(identifier: Any) -> Any:
    """Returns the constraint an identifier stands for.

    Args:
      identifier: None (returned as None), a name (`"max_norm"`, `"MaxNorm"`), a `Constraint`
        (returned as is), a dict from `serialize`, a `Constraint` subclass (instantiated with
        its defaults), or any other callable (returned as is).

    Raises:
      ValueError: an unknown name or a malformed config dict.
      TypeError: anything else.

    Example:
      >>> from layers import constraints
      >>> constraints.get({"class_name": "MaxNorm", "config": {"max_value": 3.0, "axis": 0}})
      MaxNorm(max_value=3.0, axis=0)
    """
    return _REGISTRY.get(identifier)
