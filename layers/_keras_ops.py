"""The `keras.ops` names that `jax.numpy` lacks, re-exported by `layers.ops`.

Same names, argument names and defaults as Keras 3 (`softmax(x, axis=-1)`, `one_hot(x,
num_classes, axis=-1, dtype=None)`, `gelu(x, approximate=True)`, ...). Every function accepts
a `Variable` wherever it takes an array and reads it through autocast, as `.value` does.
Elementwise functions keep the input's floating dtype; `softmax`, `log_softmax`, `logsumexp`
and `moments` are reductions and compute in float32 (float64 stays float64), then cast back
once, as the layers do. Integer inputs to float functions are treated as float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

from layers import activations
from layers.ops import _read

__all__ = [
    "cast",
    "convert_to_numpy",
    "convert_to_tensor",
    "dtype",
    "elu",
    "erf",
    "erfinv",
    "gelu",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "is_tensor",
    "leaky_relu",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "moments",
    "multi_hot",
    "one_hot",
    "relu",
    "relu6",
    "rsqrt",
    "selu",
    "shape",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "softsign",
    "stop_gradient",
    "swish",
    "top_k",
]


def _array(x: Any, name: str) -> jax.Array:
    """`x` (a Variable read through autocast) as an array; a TypeError naming the value otherwise."""
    value = _read(x)
    try:
        return jnp.asarray(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"ops.{name} expects an array or a Variable, received {x!r} of type {type(x).__name__}."
        ) from None


def _floating(x: Any, name: str) -> jax.Array:
    array = _array(x, name)
    return array if jnp.issubdtype(array.dtype, jnp.floating) else array.astype(jnp.float32)


def _wide(x: jax.Array) -> jax.Array:
    # float32 for 8/16/32-bit floats; float64 inputs must not lose precision.
    return x if x.dtype.itemsize >= 4 else x.astype(jnp.float32)


def _dtype(dtype: Any, name: str) -> np.dtype:
    try:
        return jnp.dtype(dtype)
    except TypeError:
        raise TypeError(
            f"ops.{name}: {dtype!r} is not a dtype; expected a name such as 'bfloat16' or a dtype."
        ) from None


# --- core --------------------------------------------------------------------------------------


def cast(x: Any, dtype: Any) -> jax.Array:
    """`x` as `dtype`.

    Example:
      >>> from layers import ops
      >>> ops.cast(jnp.array([1.7, -2.2]), "int32")
      Array([ 1, -2], dtype=int32)
    """
    return _array(x, "cast").astype(_dtype(dtype, "cast"))


def convert_to_tensor(x: Any, dtype: Any = None, sparse: bool | None = None, ragged: bool | None = None) -> jax.Array:
    """`x` (a list, NumPy array, number or Variable) as a JAX array, of `dtype` when given.

    `sparse=True` and `ragged=True` raise: JAX arrays are dense.

    Example:
      >>> from layers import ops
      >>> ops.convert_to_tensor([1, 2], dtype="float32")
      Array([1., 2.], dtype=float32)
    """
    if sparse or ragged:
        raise ValueError(f"ops.convert_to_tensor: sparse={sparse!r}, ragged={ragged!r}; only dense arrays exist here.")
    array = _array(x, "convert_to_tensor")
    return array if dtype is None else array.astype(_dtype(dtype, "convert_to_tensor"))


def convert_to_numpy(x: Any) -> np.ndarray:
    """`x` as a NumPy array (a Variable is read through autocast).

    Example:
      >>> from layers import ops
      >>> ops.convert_to_numpy(jnp.array([1.0, 2.0]))
      array([1., 2.], dtype=float32)
    """
    return np.asarray(_array(x, "convert_to_numpy"))


def is_tensor(x: Any) -> bool:
    """Whether `x` is a JAX array (a Variable is not: read it with `.value`).

    Example:
      >>> from layers import ops
      >>> ops.is_tensor(jnp.ones(2)), ops.is_tensor(np.ones(2))
      (True, False)
    """
    return isinstance(x, jax.Array)


def dtype(x: Any) -> str:
    """The dtype name of an array, as a string; a Variable reports the dtype it is read as.

    Unlike `jnp.dtype` (NumPy's dtype constructor), this takes an array, as `keras.ops.dtype`
    does. Inside `dp.autocast_scope("bfloat16")` a float32 Variable reports `"bfloat16"`.

    Example:
      >>> from layers import ops
      >>> ops.dtype(jnp.ones(2, jnp.bfloat16))
      'bfloat16'
    """
    value = _read(x)
    if isinstance(value, (str, type, np.dtype)):
        raise TypeError(
            f"ops.dtype expects an array or a Variable, received {x!r}; for a dtype object use jnp.dtype({x!r})."
        )
    found = getattr(value, "dtype", None)
    return jnp.dtype(found).name if found is not None else _array(x, "dtype").dtype.name


def shape(x: Any) -> tuple[int, ...]:
    """The shape of an array, Variable or `jax.ShapeDtypeStruct`, as a tuple of ints.

    Example:
      >>> from layers import ops
      >>> ops.shape(dp.Variable(jnp.zeros((2, 3))))
      (2, 3)
    """
    value = _read(x)
    found = getattr(value, "shape", None)
    return tuple(found) if found is not None else tuple(_array(x, "shape").shape)


def stop_gradient(variable: Any) -> jax.Array:
    """`variable` with no gradient flowing back through it.

    Example:
      >>> from layers import ops
      >>> jax.grad(lambda x: ops.stop_gradient(x) * x)(3.0)
      Array(3., dtype=float32, weak_type=True)
    """
    return jax.lax.stop_gradient(_array(variable, "stop_gradient"))


# --- activations -----------------------------------------------------------------------------
# The elementwise ones reuse `layers.activations`: one compiled dispatch per eager call.


def relu(x: Any) -> jax.Array:
    """`max(x, 0)`.

    Example:
      >>> from layers import ops
      >>> ops.relu(jnp.array([-1.0, 2.0]))
      Array([0., 2.], dtype=float32)
    """
    return activations.relu(_array(x, "relu"))


def relu6(x: Any) -> jax.Array:
    """`min(max(x, 0), 6)`.

    Example:
      >>> from layers import ops
      >>> ops.relu6(jnp.array([-1.0, 8.0]))
      Array([0., 6.], dtype=float32)
    """
    return activations.relu6(_array(x, "relu6"))


def sigmoid(x: Any) -> jax.Array:
    """`1 / (1 + exp(-x))`.

    Example:
      >>> from layers import ops
      >>> ops.sigmoid(jnp.array([0.0]))
      Array([0.5], dtype=float32)
    """
    return activations.sigmoid(_array(x, "sigmoid"))


def log_sigmoid(x: Any) -> jax.Array:
    """`log(sigmoid(x))`, without overflow for large negative `x`.

    Example:
      >>> from layers import ops
      >>> ops.log_sigmoid(jnp.array([-100.0]))
      Array([-100.], dtype=float32)
    """
    return jax.nn.log_sigmoid(_floating(x, "log_sigmoid"))


def softplus(x: Any) -> jax.Array:
    """`log(1 + exp(x))`, without overflow for large `x`.

    Example:
      >>> from layers import ops
      >>> ops.softplus(jnp.array([0.0]))
      Array([0.6931472], dtype=float32)
    """
    return activations.softplus(_array(x, "softplus"))


def softsign(x: Any) -> jax.Array:
    """`x / (1 + |x|)`.

    Example:
      >>> from layers import ops
      >>> ops.softsign(jnp.array([1.0]))
      Array([0.5], dtype=float32)
    """
    return activations.softsign(_array(x, "softsign"))


def silu(x: Any) -> jax.Array:
    """`x * sigmoid(x)` (also `ops.swish`).

    Example:
      >>> from layers import ops
      >>> ops.silu(jnp.array([0.0]))
      Array([0.], dtype=float32)
    """
    return activations.silu(_array(x, "silu"))


swish = silu


def hard_sigmoid(x: Any) -> jax.Array:
    """`clip(x / 6 + 0.5, 0, 1)`.

    Example:
      >>> from layers import ops
      >>> ops.hard_sigmoid(jnp.array([-4.0, 0.0, 4.0]))
      Array([0. , 0.5, 1. ], dtype=float32)
    """
    return activations.hard_sigmoid(_array(x, "hard_sigmoid"))


def hard_silu(x: Any) -> jax.Array:
    """`x * hard_sigmoid(x)` (also `ops.hard_swish`).

    Example:
      >>> from layers import ops
      >>> ops.hard_silu(jnp.array([-4.0, 0.0, 4.0]))
      Array([-0.,  0.,  4.], dtype=float32)
    """
    return jax.nn.hard_silu(_floating(x, "hard_silu"))


hard_swish = hard_silu


def leaky_relu(x: Any, negative_slope: float = 0.2) -> jax.Array:
    """`x` for `x >= 0`, else `negative_slope * x`.

    Example:
      >>> from layers import ops
      >>> ops.leaky_relu(jnp.array([-1.0, 2.0]))
      Array([-0.2,  2. ], dtype=float32)
    """
    return activations.leaky_relu(_array(x, "leaky_relu"), negative_slope)


def elu(x: Any, alpha: float = 1.0) -> jax.Array:
    """`x` for `x > 0`, else `alpha * (exp(x) - 1)`.

    Example:
      >>> from layers import ops
      >>> ops.elu(jnp.array([2.0, 0.0]))
      Array([2., 0.], dtype=float32)
    """
    return activations.elu(_array(x, "elu"), alpha)


def selu(x: Any) -> jax.Array:
    """Scaled ELU with the self-normalizing constants.

    Example:
      >>> from layers import ops
      >>> ops.selu(jnp.array([0.0]))
      Array([0.], dtype=float32)
    """
    return activations.selu(_array(x, "selu"))


def gelu(x: Any, approximate: bool = True) -> jax.Array:
    """Gaussian error linear unit; the tanh approximation by default, as `keras.ops.gelu`.

    (`layers.activations.gelu` and the `"gelu"` activation default to the exact erf form, as
    `keras.activations.gelu` does.)

    Example:
      >>> from layers import ops
      >>> ops.gelu(jnp.array([0.0, 10.0]))
      Array([ 0., 10.], dtype=float32)
    """
    return activations.gelu(_array(x, "gelu"), approximate=approximate)


def softmax(x: Any, axis: int | tuple[int, ...] = -1) -> jax.Array:
    """`exp(x) / sum(exp(x))` along `axis`, computed in float32 and cast back to the input dtype.

    Example:
      >>> from layers import ops
      >>> ops.softmax(jnp.array([0.0, 0.0], jnp.bfloat16))
      Array([0.5, 0.5], dtype=bfloat16)
    """
    return activations.softmax(_array(x, "softmax"), axis=axis)


def log_softmax(x: Any, axis: int | tuple[int, ...] = -1) -> jax.Array:
    """`x - logsumexp(x)` along `axis`, computed in float32 and cast back to the input dtype.

    Example:
      >>> from layers import ops
      >>> ops.log_softmax(jnp.array([0.0, 0.0]))
      Array([-0.6931472, -0.6931472], dtype=float32)
    """
    return activations.log_softmax(_array(x, "log_softmax"), axis=axis)


# --- math -------------------------------------------------------------------------------------


def logsumexp(x: Any, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> jax.Array:
    """`log(sum(exp(x)))` over `axis` (all axes by default), in float32, cast back to the input dtype.

    Example:
      >>> from layers import ops
      >>> ops.logsumexp(jnp.array([0.0, 0.0]))
      Array(0.6931472, dtype=float32)
    """
    array = _floating(x, "logsumexp")
    return jax.scipy.special.logsumexp(_wide(array), axis=axis, keepdims=keepdims).astype(array.dtype)


def erf(x: Any) -> jax.Array:
    """The error function, elementwise.

    Example:
      >>> from layers import ops
      >>> ops.erf(jnp.array([0.0]))
      Array([0.], dtype=float32)
    """
    return jax.scipy.special.erf(_floating(x, "erf"))


def erfinv(x: Any) -> jax.Array:
    """The inverse error function, elementwise (`erfinv(erf(x)) == x`).

    Example:
      >>> from layers import ops
      >>> ops.erfinv(jnp.array([0.0]))
      Array([0.], dtype=float32)
    """
    return jax.scipy.special.erfinv(_floating(x, "erfinv"))


def rsqrt(x: Any) -> jax.Array:
    """`1 / sqrt(x)`, elementwise.

    Example:
      >>> from layers import ops
      >>> ops.rsqrt(jnp.array([4.0]))
      Array([0.5], dtype=float32)
    """
    return jax.lax.rsqrt(_floating(x, "rsqrt"))


def moments(
    x: Any, axes: int | tuple[int, ...] | list[int], keepdims: bool = False, synchronized: bool = False
) -> tuple[jax.Array, jax.Array]:
    """Mean and (biased) variance over `axes`, in float32, cast back to the input dtype.

    `synchronized` (a cross-replica mean in Keras) must stay False: there is no distribution
    strategy here, use `jax.lax.pmean` inside your `shard_map`/`pmap` instead.

    Example:
      >>> from layers import ops
      >>> ops.moments(jnp.array([1.0, 3.0]), axes=0)
      (Array(2., dtype=float32), Array(1., dtype=float32))
    """
    if synchronized:
        raise ValueError("ops.moments: synchronized=True is not supported; reduce across devices with jax.lax.pmean.")
    array = _floating(x, "moments")
    axes = tuple(axes) if isinstance(axes, list) else axes
    wide = _wide(array)
    mean = jnp.mean(wide, axis=axes, keepdims=True)
    variance = jnp.mean(jnp.square(wide - mean), axis=axes, keepdims=keepdims)
    mean = mean if keepdims else jnp.squeeze(mean, axis=axes)
    return mean.astype(array.dtype), variance.astype(array.dtype)


def top_k(x: Any, k: int, sorted: bool = True) -> tuple[jax.Array, jax.Array]:
    """The `k` largest entries along the last axis and their indices, largest first.

    `sorted=False` is accepted for Keras compatibility; the result is always sorted.

    Example:
      >>> from layers import ops
      >>> values, indices = ops.top_k(jnp.array([1.0, 5.0, 3.0]), 2)
      >>> values.tolist(), indices.tolist()
      ([5.0, 3.0], [1, 2])
    """
    return jax.lax.top_k(_array(x, "top_k"), _positive_int(k, "top_k", "k"))


# --- encodings --------------------------------------------------------------------------------


def _positive_int(value: Any, function: str, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"ops.{function}: {name} must be a positive int, received {value!r}.")
    return int(value)


def one_hot(x: Any, num_classes: int, axis: int = -1, dtype: Any = None, sparse: bool = False) -> jax.Array:
    """One-hot encodings of the integer `x` along a new `axis`; `dtype` defaults to float32.

    An index outside `[0, num_classes)` (a negative one too) encodes as all zeros.

    Example:
      >>> from layers import ops
      >>> ops.one_hot(jnp.array([0, 2]), 3)
      Array([[1., 0., 0.],
             [0., 0., 1.]], dtype=float32)
    """
    if sparse:
        raise ValueError("ops.one_hot: sparse=True is not supported; JAX arrays are dense.")
    num_classes = _positive_int(num_classes, "one_hot", "num_classes")
    dtype = jnp.float32 if dtype is None else _dtype(dtype, "one_hot")
    return jax.nn.one_hot(_array(x, "one_hot"), num_classes, dtype=dtype, axis=axis)


def multi_hot(inputs: Any, num_classes: int, axis: int = -1, dtype: Any = None, sparse: bool = False) -> jax.Array:
    """Multi-hot encodings: 1 at every class present in each row of the integer `inputs`.

    Example:
      >>> from layers import ops
      >>> ops.multi_hot(jnp.array([[0, 2], [1, 1]]), 3)
      Array([[1., 0., 1.],
             [0., 1., 0.]], dtype=float32)
    """
    encoded = one_hot(inputs, num_classes, axis=axis, dtype=dtype, sparse=sparse)
    # Keras reduces over the axis that held the indices of one example: 1 for batched input, else 0.
    return jnp.max(encoded, axis=1 if encoded.ndim > 2 else 0)
