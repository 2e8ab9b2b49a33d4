"""The op-level numerics rules, in one place: layers call these instead of re-deriving them.

- Matrix products take inputs in the compute dtype, accumulate in float32 (float64 for
  float64), add the bias to the accumulator and round once to the compute dtype.
- Softmax and reductions for statistics, losses and metrics run in float32 and cast back.
- Masked logits are filled with a large negative value that the dtype can hold.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dtypepolicy._dot_algorithms import default_algorithm
from dtypepolicy._dot_formulation import DotFormulation, dot_formulation, product
from dtypepolicy._dtypes import is_float, standardize_dtype


def accumulation_dtype(dtype: Any) -> str:
    """The dtype products and sums of `dtype` values accumulate in: float32, or float64 for float64.

    Example:
      >>> accumulation_dtype("bfloat16"), accumulation_dtype("float64")
      ('float32', 'float64')
    """
    name = standardize_dtype(dtype)
    if not is_float(name):
        return "int32" if jnp.dtype(name).itemsize <= 4 else name
    return "float64" if name == "float64" else "float32"


def upcast(x: Any) -> jax.Array:
    """`x` in its accumulation dtype (16-bit floats become float32)."""
    x = jnp.asarray(x)
    return x.astype(accumulation_dtype(x.dtype))


def _finish(result: jax.Array, bias: Any, out_dtype: str) -> jax.Array:
    if bias is not None:
        result = result + jnp.asarray(bias).astype(result.dtype)
    return result.astype(out_dtype)


def _formulation(algorithm: str | DotFormulation | None, operand_dtype: Any) -> DotFormulation | None:
    """The formulation for `algorithm`, or for `operand_dtype`'s default algorithm; None for integers."""
    if isinstance(algorithm, DotFormulation):
        return algorithm
    name = algorithm or default_algorithm(standardize_dtype(operand_dtype))
    return None if name is None else dot_formulation(name)


def dense_matmul(x: Any, kernel: Any, bias: Any = None, dtype: Any = None, algorithm: Any = None) -> jax.Array:
    """`x @ kernel + bias` over the last axis of `x`, accumulated wide and rounded once.

    Args:
      x: inputs `(..., in)`.
      kernel: `(in, out)`.
      bias: `(out,)` or None; added to the float32 accumulator.
      dtype: the result dtype; defaults to `x`'s dtype.
      algorithm: a `jax.lax.DotAlgorithmPreset` name (a policy's `dot_algorithm`) or a
        `DotFormulation`; None: the default of `x`'s dtype (16-bit operands accumulated in
        float32, full float32 for float32).

    Example:
      >>> x = jnp.ones((2, 3), jnp.bfloat16)
      >>> dense_matmul(x, jnp.ones((3, 4), jnp.bfloat16), jnp.ones(4)).dtype
      dtype(bfloat16)
    """
    return einsum("...i,io->...o", x, kernel, bias, dtype, algorithm)


def product_accumulated(equation: str, x: Any, y: Any, algorithm: Any = None) -> jax.Array:
    """`einsum(equation, x, y)` in the algorithm's accumulation dtype, not rounded (attention scores).

    Example:
      >>> product_accumulated("ij,jk->ik", jnp.ones((2, 3), jnp.bfloat16), jnp.ones((3, 2), jnp.bfloat16)).dtype
      dtype('float32')
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    formulation = _formulation(algorithm, x.dtype)
    if formulation is None:
        return jnp.einsum(equation, x, y, preferred_element_type=accumulation_dtype(x.dtype))
    return product(equation, x, y.astype(x.dtype), formulation)


def einsum(
    equation: str, x: Any, kernel: Any, bias: Any = None, dtype: Any = None, algorithm: str | None = None
) -> jax.Array:
    """`einsum(equation, x, kernel) + bias`, accumulated wide and rounded once.

    `algorithm` as in `dense_matmul`; the gradients are JAX's transposes of the same products,
    which keep the formulation's precision.

    Example:
      >>> einsum("bi,io->bo", jnp.ones((2, 3), jnp.float16), jnp.ones((3, 4), jnp.float16)).dtype
      dtype('float16')
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    out_dtype = standardize_dtype(dtype or x.dtype)
    kernel = kernel.astype(x.dtype)
    formulation = _formulation(algorithm, x.dtype)
    if formulation is None:
        result = jnp.einsum(equation, x, kernel, preferred_element_type=accumulation_dtype(x.dtype))
    else:
        result = product(equation, x, kernel, formulation)
    return _finish(result, bias, out_dtype)


def mask_fill_value(dtype: Any) -> float:
    """A large negative number `dtype` can hold and subtract from without overflowing.

    Half of the most negative finite value: masked logits stay finite, and subtracting a
    positive row maximum from them still fits.

    Example:
      >>> mask_fill_value("float16")
      -32752.0
    """
    name = standardize_dtype(dtype)
    if not is_float(name):
        raise ValueError(f"mask_fill_value needs a floating dtype, received {dtype!r}.")
    return float(jnp.finfo(name).min) / 2


def softmax(x: Any, axis: int | tuple[int, ...] = -1, mask: Any = None) -> jax.Array:
    """Softmax computed in float32 (float64 stays float64) and cast back to `x`'s dtype.

    Args:
      x: logits.
      axis: the axis (or axes) to normalize over.
      mask: optional bool array broadcastable to `x`; False entries get probability 0.

    Example:
      >>> p = softmax(jnp.zeros((4,), jnp.bfloat16), mask=jnp.array([True, True, False, False]))
      >>> p.dtype, p.tolist()
      (dtype(bfloat16), [0.5, 0.5, 0.0, 0.0])
    """
    x = jnp.asarray(x)
    wide = upcast(x)
    if mask is not None:
        wide = jnp.where(jnp.asarray(mask, bool), wide, mask_fill_value(wide.dtype))
    probabilities = jax.nn.softmax(wide, axis=axis)
    if mask is not None:
        probabilities = jnp.where(jnp.asarray(mask, bool), probabilities, 0.0)
    return probabilities.astype(x.dtype)


def moments(x: Any, axes: int | tuple[int, ...], keepdims: bool = False) -> tuple[jax.Array, jax.Array]:
    """Mean and (biased) variance over `axes`, computed in float32 from any input dtype.

    Example:
      >>> mean, variance = moments(jnp.array([1.0, 3.0], jnp.bfloat16), axes=0)
      >>> mean.dtype, float(mean), float(variance)
      (dtype('float32'), 2.0, 1.0)
    """
    wide = upcast(x)
    mean = jnp.mean(wide, axis=axes, keepdims=True)
    variance = jnp.mean(jnp.square(wide - mean), axis=axes, keepdims=keepdims)
    return (mean if keepdims else jnp.squeeze(mean, axis=axes)), variance


def reduce_sum(x: Any, axis: Any = None) -> jax.Array:
    """A sum in float32 (for losses and metrics), whatever the input dtype."""
    return jnp.sum(upcast(x), axis=axis)


def reduce_mean(x: Any, axis: Any = None) -> jax.Array:
    """A mean in float32 (for losses and metrics), whatever the input dtype."""
    return jnp.mean(upcast(x), axis=axis)
