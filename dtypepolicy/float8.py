"""Float8 delayed-scaling math: pure functions on JAX arrays.

A scale `s` is the dequantization multiplier: `q = saturate(x / s)` in float8 and
`x_hat = q * s`. Inputs and kernels use E4M3 (max 448), output gradients E5M2 (max 57344).
Each scale is computed from a window of past amax values (`update_amax_history`), so the
scale used at step t comes from data seen up to step t-1.

Example:
  >>> history = update_amax_history(jnp.array([3.0, -5.0]), jnp.zeros(3))
  >>> history.tolist()
  [5.0, 0.0, 0.0]
  >>> float(compute_scale(history.max(), 1.0, E4M3_MAX)) == float(jnp.float32(5.0) / 448)
  True
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from dtypepolicy._dtypes import is_float, standardize_dtype

E4M3_MAX = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)  # 448.0
E5M2_MAX = float(ml_dtypes.finfo(ml_dtypes.float8_e5m2).max)  # 57344.0

__all__ = ["E4M3_MAX", "E5M2_MAX", "compute_scale", "quantize_dequantize", "update_amax_history"]


_MARGIN_RANGE = (-126, 127)  # powers of two that float32 represents as normal numbers
_FLOAT32 = np.finfo(np.float32)
_SIGNED_FLOAT8 = tuple(
    name
    for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3", "float8_e3m4", "float8_e4m3fnuz", "float8_e5m2fnuz")
    if hasattr(ml_dtypes, name)
)


def _check_margin(margin: Any) -> int:
    if isinstance(margin, (bool, np.bool_)) or not isinstance(margin, (int, np.integer)):
        raise TypeError(f"margin must be an int, received {margin!r}.")
    if not _MARGIN_RANGE[0] <= margin <= _MARGIN_RANGE[1]:
        raise ValueError(f"margin must lie in {list(_MARGIN_RANGE)}, received {margin}.")
    return int(margin)


def _check_dtype_max(dtype_max: Any) -> float:
    number = (int, float, np.integer, np.floating)
    if isinstance(dtype_max, (bool, np.bool_)) or not isinstance(dtype_max, number) or not 0 < dtype_max < np.inf:
        raise ValueError(f"dtype_max must be a positive number such as E4M3_MAX (finite), received {dtype_max!r}.")
    return float(dtype_max)


def compute_scale(amax: Any, scale: Any, dtype_max: float, margin: int = 0) -> jnp.ndarray:
    """Returns the new dequantization scale `amax * 2**margin / dtype_max`.

    When `amax` is 0, inf or NaN the old `scale` is returned unchanged, so one bad step
    cannot poison the scale. A new scale is clamped into the float32 normal range
    `[2**-126, 3.4e38]`, so an extreme `margin` or amax never gives inf or 0.

    Args:
      amax: the largest magnitude to represent, usually `max(amax_history)`.
      scale: the current scale, kept when `amax` is unusable.
      dtype_max: the largest finite value of the float8 format (`E4M3_MAX`, `E5M2_MAX`).
      margin: extra power-of-two headroom.

    Example:
      >>> float(compute_scale(0.0, 0.5, E4M3_MAX))
      0.5
    """
    factor = 2.0 ** _check_margin(margin)
    dtype_max = _check_dtype_max(dtype_max)
    amax = jnp.asarray(amax, jnp.float32)
    scale = jnp.asarray(scale, jnp.float32)
    usable = jnp.isfinite(amax) & (amax > 0)
    # The reciprocal of dtype_max / amax, as Keras 3 computes it, so float32 results match it bit
    # for bit. The select between the two divisions keeps XLA from folding them into
    # amax * (1 / dtype_max), which rounds differently under jax.jit.
    inverse = jnp.where(usable, dtype_max / amax / factor, 1.0)
    # Past 2**126 the reciprocal is taken of a subnormal (flushed to zero on some backends) and
    # overflows: that far end is computed directly. Then the scale is clamped into the float32
    # normal range, so no margin or amax can make it inf or 0 (which would turn q/dq into NaN).
    huge = inverse < _FLOAT32.tiny
    new_scale = jnp.where(huge, amax / dtype_max * factor, 1.0 / inverse)
    return jnp.where(usable, jnp.clip(new_scale, _FLOAT32.tiny, _FLOAT32.max), scale)


def _numeric_array(value: Any, what: str) -> jnp.ndarray:
    try:
        array = jnp.asarray(value)
    except (TypeError, ValueError):
        array = None
    if array is None or not jnp.issubdtype(array.dtype, jnp.number):
        raise TypeError(f"{what} must be a numeric array, received {value!r} of type {type(value).__name__}.")
    return array


def update_amax_history(x: Any, history: Any) -> jnp.ndarray:
    """Shifts the window one step and puts `max|x|` first.

    `h' = roll(h, -1)` then `h'[0] = max|x|`, so with length 3:
    `[5, 0, 0] -> [7, 0, 5] -> [9, 5, 7]`.

    Example:
      >>> update_amax_history(jnp.array([7.0]), jnp.array([5.0, 0.0, 0.0])).tolist()
      [7.0, 0.0, 5.0]
    """
    history = _numeric_array(history, "history")
    if history.ndim != 1 or history.shape[0] < 1:
        raise ValueError(f"history must be a non-empty 1-D array, received shape {history.shape}.")
    if not is_float(history.dtype):
        raise ValueError(f"history must be floating (amaxes are not integers), received dtype {history.dtype}.")
    x = _numeric_array(x, "x")
    if x.size == 0:
        raise ValueError(
            f"x must hold at least one value to take its amax, received an empty array of shape {x.shape}."
        )
    amax = jnp.max(jnp.abs(x)).astype(history.dtype)
    return jnp.roll(history, -1).at[0].set(amax)


def quantize_dequantize(x: Any, scale: Any, dtype: Any, compute_dtype: Any) -> jnp.ndarray:
    """Rounds `x` through a float8 format with saturation and returns it in `compute_dtype`.

    `x` and `scale` are first rounded to `compute_dtype`; the quotient `x / scale` is formed in
    float32 and rounded once to float8; the result is `q * scale` in `compute_dtype`. Values
    beyond the format's range are clipped to +-max instead of becoming NaN. Under float16 a scale
    below float16's normal range is raised to 2**-14 (rounded to float16 it would lose its bits or
    become 0, and 0 * inf is NaN).

    Args:
      x: the values to round.
      scale: the dequantization scale `s`.
      dtype: the float8 format, `"float8_e4m3fn"` or `"float8_e5m2"`.
      compute_dtype: the dtype of the result and of the division/multiplication.

    Example:
      >>> quantize_dequantize(jnp.array([1e6, 1.0]), 1.0, "float8_e4m3fn", "float32").tolist()
      [448.0, 1.0]
    """
    fp8 = standardize_dtype(dtype)
    if fp8 not in _SIGNED_FLOAT8:
        raise ValueError(f"dtype must be a signed float8 format, one of {_SIGNED_FLOAT8}; received {dtype!r}.")
    compute = standardize_dtype(compute_dtype)
    if not is_float(compute):
        raise ValueError(f"compute_dtype must be floating, received {compute_dtype!r}.")
    limit = float(ml_dtypes.finfo(jnp.dtype(fp8)).max)
    # x / s is rounded once, in float32 (float64 for float64 inputs): a 16-bit quotient would be
    # rounded twice. Dividing by a full-shape scale keeps XLA from rewriting the division as a
    # multiplication by a rounded reciprocal 1 / s (it still may when s is a jit-time constant).
    wide = "float64" if compute == "float64" else "float32"
    scale = jnp.asarray(scale)
    if compute == "float16":
        scale = _float16_scale(scale)
    scale = scale.astype(compute)  # the one scale value both directions use
    x = jnp.asarray(x).astype(compute).astype(wide)
    scaled = jnp.clip(x / jnp.broadcast_to(scale.astype(wide), x.shape), -limit, limit)
    return scaled.astype(fp8).astype(compute) * scale


_FLOAT16 = np.finfo(np.float16)


def _float16_scale(scale: jnp.ndarray) -> jnp.ndarray:
    """A scale float16 holds as a normal number: small ones raised to 2**-14.

    Small amaxes give scales below float16's normal range (an E5M2 scale is subnormal for amax
    < 3.5 and rounds to 0 for amax < 1.7e-3), and x / 0 and q * 0 zero the tensor or make it
    NaN. With 2**-14 instead, every float16 input still fits the format's range (|x| <= amax
    < 448 * 2**-14, or 57344 * 2**-14), and only float16 subnormals, already coarse, can lose a
    bit. The product stays a float16 multiply, the form the float8 GEMM rewrite matches.
    """
    return jnp.clip(scale.astype(jnp.float32), float(_FLOAT16.tiny), float(_FLOAT16.max))
