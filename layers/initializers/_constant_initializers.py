"""Initializers that fill with a fixed value, in any dtype: `Zeros`, `Ones` and `Constant`.

The fill happens on the host with NumPy and moves to the device with `jax.device_put`: `jnp.zeros`
and friends compile a kernel per shape, which made building a model slow.

Example:
  >>> Constant([1, 2])((2, 2), "int32")
  Array([[1, 2],
         [1, 2]], dtype=int32)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from layers.initializers._base import Initializer, check_dtype, check_finite_real, check_shape

__all__ = ["Constant", "Ones", "Zeros"]


def _filled(shape: tuple[int, ...], dtype: str, value: int) -> jax.Array:
    return jax.device_put(np.full(shape, value, jnp.dtype(dtype)))


class Zeros(Initializer):
    """Fills with 0 in any dtype.

    Example:
      >>> Zeros()((2,), "int32")
      Array([0, 0], dtype=int32)
    """

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> jax.Array:
        """Returns zeros of `shape` in `dtype` (None means float32)."""
        return _filled(check_shape(shape), check_dtype(dtype, "Zeros", floating=False), 0)


class Ones(Initializer):
    """Fills with 1 in any dtype.

    Example:
      >>> Ones()((2,), "bfloat16")
      Array([1, 1], dtype=bfloat16)
    """

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> jax.Array:
        """Returns ones of `shape` in `dtype` (None means float32)."""
        return _filled(check_shape(shape), check_dtype(dtype, "Ones", floating=False), 1)


class Constant(Initializer):
    """Fills with `value`, a number or an array that broadcasts to the requested shape.

    Args:
      value: a real number, or an array-like of real numbers.

    Example:
      >>> Constant(0.5)((3,))
      Array([0.5, 0.5, 0.5], dtype=float32)
    """

    def __init__(self, value: Any = 0.0) -> None:
        if isinstance(value, (bool, int, float, np.integer, np.floating)):
            self.value = check_finite_real(value, "Constant(value)")
            return
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):
            array = None
        if array is None or array.dtype == object or not np.issubdtype(array.dtype, np.number):
            raise TypeError(
                f"Constant(value) must be a real number or an array-like of numbers, "
                f"received {value!r} of type {type(value).__name__}."
            )
        self.value = array.tolist()

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> jax.Array:
        """Returns `value` broadcast to `shape`, in `dtype` (None means float32)."""
        shape = check_shape(shape)
        dtype = check_dtype(dtype, "Constant", floating=False)
        value = np.asarray(self.value)
        try:
            np.broadcast_shapes(value.shape, shape)
        except ValueError:
            raise ValueError(
                f"Constant value of shape {value.shape} cannot be broadcast to the requested shape {shape}."
            ) from None
        return jax.device_put(np.broadcast_to(value.astype(jnp.dtype(dtype)), shape).copy())

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"value": self.value}
