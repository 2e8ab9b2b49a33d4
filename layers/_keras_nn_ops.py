"""More `keras.ops.nn` names for `layers.ops`: activations, normalizations and attention.

Same names, argument names and defaults as Keras 3. Every array argument may be a `Variable`,
read through autocast as `.value` does. Elementwise activations keep the input's floating dtype;
normalization statistics and the attention softmax compute in float32 (float64 stays float64)
and cast back once to the input's dtype; attention products accumulate in float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dtypepolicy import _numerics
from layers import activations
from layers._axes import check_axes_fit
from layers._keras_ops import _array, _floating, _wide

__all__ = [
    "batch_normalization",
    "celu",
    "dot_product_attention",
    "glu",
    "hard_shrink",
    "hard_tanh",
    "layer_normalization",
    "mish",
    "normalize",
    "rms_normalization",
    "soft_shrink",
    "sparse_plus",
    "sparse_sigmoid",
    "squareplus",
    "tanh_shrink",
    "threshold",
]

# Keras' backend.epsilon(), the default lower bound of normalize and the normalizations.
EPSILON = 1e-7


def _real(value: Any, function: str, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"ops.{function}: {name} must be a real number, received {value!r}.")
    return float(value)


def _epsilon(value: Any, function: str) -> float:
    epsilon = EPSILON if value is None else _real(value, function, "epsilon")
    if not epsilon >= 0:
        raise ValueError(f"ops.{function}: epsilon must be >= 0, received {value!r}.")
    return epsilon


def _axes(axis: Any, ndim: int, shape: tuple, function: str) -> tuple[int, ...]:
    """`axis` (an int or a sequence of ints) as sorted non-negative axes of an array of rank `ndim`."""
    axes = (axis,) if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) else axis
    if (
        not isinstance(axes, (tuple, list))
        or not axes
        or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes)
    ):
        raise TypeError(f"ops.{function}: axis must be an int or a non-empty list of ints, received {axis!r}.")
    check_axes_fit(f"ops.{function}", tuple(int(a) for a in axes), shape)
    return tuple(sorted(int(a) % ndim for a in axes))


# --- activations -------------------------------------------------------------------------------


def celu(x: Any, alpha: float = 1.0) -> jax.Array:
    """`x` for `x >= 0`, else `alpha * (exp(x / alpha) - 1)`.

    Example:
      >>> from layers import ops
      >>> ops.celu(jnp.array([-1.0, 0.0, 1.0]))
      Array([-0.63212055,  0.        ,  1.        ], dtype=float32)
    """
    alpha = _real(alpha, "celu", "alpha")
    if alpha == 0:
        raise ValueError("ops.celu: alpha must be non-zero (it divides x), received 0.")
    return jax.nn.celu(_floating(x, "celu"), alpha=alpha)


def glu(x: Any, axis: int = -1) -> jax.Array:
    """Gated linear unit: `x` split in halves `a, b` along `axis`, `a * sigmoid(b)`.

    Example:
      >>> from layers import ops
      >>> ops.glu(jnp.array([-1.0, 0.0, 1.0, 1.0]))
      Array([-0.7310586,  0.       ], dtype=float32)
    """
    array = _floating(x, "glu")
    (positive,) = _axes(axis, array.ndim, array.shape, "glu")
    if array.shape[positive] % 2:
        raise ValueError(
            f"ops.glu: the size of axis {axis} must be even to split it in two halves, received shape {array.shape}."
        )
    return jax.nn.glu(array, axis=positive)


def mish(x: Any) -> jax.Array:
    """`x * tanh(softplus(x))`.

    Example:
      >>> from layers import ops
      >>> ops.mish(jnp.array([0.0]))
      Array([0.], dtype=float32)
    """
    return activations.mish(_array(x, "mish"))


def hard_tanh(x: Any) -> jax.Array:
    """`clip(x, -1, 1)`.

    Example:
      >>> from layers import ops
      >>> ops.hard_tanh(jnp.array([-2.0, 0.5, 2.0]))
      Array([-1. ,  0.5,  1. ], dtype=float32)
    """
    return jax.nn.hard_tanh(_floating(x, "hard_tanh"))


def sparse_plus(x: Any) -> jax.Array:
    """`0` for `x <= -1`, `(x + 1)**2 / 4` for `-1 < x < 1`, `x` for `x >= 1`.

    Example:
      >>> from layers import ops
      >>> ops.sparse_plus(jnp.array([-1.0, 0.0, 1.0]))
      Array([0.  , 0.25, 1.  ], dtype=float32)
    """
    return jax.nn.sparse_plus(_floating(x, "sparse_plus"))


def sparse_sigmoid(x: Any) -> jax.Array:
    """`0` for `x <= -1`, `(x + 1) / 2` for `-1 < x < 1`, `1` for `x >= 1`.

    Example:
      >>> from layers import ops
      >>> ops.sparse_sigmoid(jnp.array([-6.0, 0.0, 6.0]))
      Array([0. , 0.5, 1. ], dtype=float32)
    """
    return jax.nn.sparse_sigmoid(_floating(x, "sparse_sigmoid"))


def squareplus(x: Any, b: float = 4) -> jax.Array:
    """`(x + sqrt(x**2 + b)) / 2`, a smooth relu; `b >= 0`.

    Example:
      >>> from layers import ops
      >>> ops.squareplus(jnp.array([0.0]))
      Array([1.], dtype=float32)
    """
    b = _real(b, "squareplus", "b")
    if b < 0:
        raise ValueError(f"ops.squareplus: b must be >= 0 (it is under a square root), received {b!r}.")
    return jax.nn.squareplus(_floating(x, "squareplus"), b)


def soft_shrink(x: Any, threshold: float = 0.5) -> jax.Array:
    """`x - threshold` above `threshold`, `x + threshold` below `-threshold`, else 0.

    Example:
      >>> from layers import ops
      >>> ops.soft_shrink(jnp.array([-1.0, 0.0, 1.0]))
      Array([-0.5,  0. ,  0.5], dtype=float32)
    """
    array = _floating(x, "soft_shrink")
    t = _real(threshold, "soft_shrink", "threshold")
    return jnp.where(array > t, array - t, jnp.where(array < -t, array + t, jnp.zeros_like(array)))


def hard_shrink(x: Any, threshold: float = 0.5) -> jax.Array:
    """`x` where `|x| > threshold`, else 0.

    Example:
      >>> from layers import ops
      >>> ops.hard_shrink(jnp.array([-0.5, 0.0, 1.0]))
      Array([0., 0., 1.], dtype=float32)
    """
    array = _floating(x, "hard_shrink")
    t = _real(threshold, "hard_shrink", "threshold")
    return jnp.where(jnp.abs(array) > t, array, jnp.zeros_like(array))


def tanh_shrink(x: Any) -> jax.Array:
    """`x - tanh(x)`.

    Example:
      >>> from layers import ops
      >>> ops.tanh_shrink(jnp.array([0.0]))
      Array([0.], dtype=float32)
    """
    array = _floating(x, "tanh_shrink")
    return array - jnp.tanh(array)


def threshold(x: Any, threshold: float, default_value: float) -> jax.Array:
    """`x` where `x > threshold`, else `default_value` (in `x`'s dtype).

    Example:
      >>> from layers import ops
      >>> ops.threshold(jnp.array([-1.0, 1.0, 2.0]), 1, 0)
      Array([0., 0., 2.], dtype=float32)
    """
    array = _array(x, "threshold")
    t = _real(threshold, "threshold", "threshold")
    default = jnp.asarray(_real(default_value, "threshold", "default_value")).astype(array.dtype)
    return jnp.where(array > t, array, default)


# --- normalization -----------------------------------------------------------------------------


def normalize(x: Any, axis: int | tuple[int, ...] = -1, order: int = 2, epsilon: float | None = None) -> jax.Array:
    """`x / max(norm(x), epsilon)`, the `order`-norm taken over `axis`, in float32 and cast back.

    `epsilon` defaults to 1e-7. Several axes take the vector norm over all of them.

    Example:
      >>> from layers import ops
      >>> ops.normalize(jnp.array([3.0, 4.0]))
      Array([0.6, 0.8], dtype=float32)
    """
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise ValueError(f"ops.normalize: order must be an int >= 1, received {order!r}.")
    epsilon = _epsilon(epsilon, "normalize")
    array = _floating(x, "normalize")
    if array.ndim == 0:
        array = array[None]  # as Keras: a scalar is a vector of one
    axes = _axes(axis, array.ndim, array.shape, "normalize")
    wide = _wide(array)
    if order == 2:
        # rsqrt of the clamped squared norm: a zero vector gets a finite gradient.
        squares = jnp.sum(jnp.square(wide), axis=axes, keepdims=True)
        out = wide * jax.lax.rsqrt(jnp.maximum(squares, epsilon * epsilon))
    else:
        norm = jnp.sum(jnp.abs(wide) ** order, axis=axes, keepdims=True) ** (1.0 / order)
        out = wide / jnp.maximum(norm, epsilon)
    return out.astype(array.dtype)


def _parameter(value: Any, name: str, function: str, wide: jax.Array, axes: tuple[int, ...]) -> jax.Array | None:
    """A scale or offset in `wide`'s dtype, shaped to broadcast over `wide` as Keras does."""
    if value is None:
        return None
    parameter = _array(value, function).astype(wide.dtype)
    sizes = tuple(wide.shape[a] for a in axes)
    if parameter.ndim != wide.ndim and parameter.shape == sizes:
        # Sized like the normalized axes: place them on those axes.
        parameter = parameter.reshape(tuple(wide.shape[a] if a in axes else 1 for a in range(wide.ndim)))
    try:
        jnp.broadcast_shapes(parameter.shape, wide.shape)
    except ValueError:
        raise ValueError(
            f"ops.{function}: {name} of shape {parameter.shape} does not fit inputs of shape {wide.shape} "
            f"normalized over axes {list(axes)}; expected shape {sizes} or one that broadcasts to the inputs."
        ) from None
    return parameter


def rms_normalization(
    x: Any, scale: Any = None, axis: int | tuple[int, ...] = -1, epsilon: float | None = None
) -> jax.Array:
    """`x * rsqrt(mean(square(x)) + epsilon) * scale` over `axis`, in float32, cast back to `x`'s dtype.

    `epsilon` defaults to 1e-7, as in Keras.

    Example:
      >>> from layers import ops
      >>> ops.rms_normalization(jnp.array([3.0, 4.0]), epsilon=0.0) * jnp.sqrt(12.5)
      Array([3., 4.], dtype=float32)
    """
    epsilon = _epsilon(epsilon, "rms_normalization")
    array = _floating(x, "rms_normalization")
    if array.ndim == 0:
        array = array[None]
    axes = _axes(axis, array.ndim, array.shape, "rms_normalization")
    wide = _wide(array)
    out = wide * jax.lax.rsqrt(jnp.mean(jnp.square(wide), axis=axes, keepdims=True) + epsilon)
    gamma = _parameter(scale, "scale", "rms_normalization", wide, axes)
    if gamma is not None:
        out = out * gamma
    return out.astype(array.dtype)


def layer_normalization(
    x: Any,
    gamma: Any = None,
    beta: Any = None,
    axis: int | tuple[int, ...] = -1,
    epsilon: float | None = None,
    **kwargs: Any,
) -> jax.Array:
    """`(x - mean) * rsqrt(variance + epsilon) * gamma + beta` over `axis`, in float32, cast back.

    `epsilon` defaults to 1e-7, as in Keras. Keras' deprecated `rms_scaling=True` (which scales
    by the variance) is refused: use `ops.rms_normalization`.

    Example:
      >>> from layers import ops
      >>> ops.layer_normalization(jnp.array([1.0, 3.0]), epsilon=0.0)
      Array([-1.,  1.], dtype=float32)
    """
    if kwargs.get("rms_scaling") is False:
        del kwargs["rms_scaling"]  # Keras' default, accepted as a no-op
    if kwargs:
        name = next(iter(kwargs))
        hint = " (deprecated in Keras; use ops.rms_normalization)" if name == "rms_scaling" else ""
        raise TypeError(f"ops.layer_normalization got an unexpected argument {name}={kwargs[name]!r}{hint}.")
    epsilon = _epsilon(epsilon, "layer_normalization")
    array = _floating(x, "layer_normalization")
    axes = _axes(axis, array.ndim, array.shape, "layer_normalization")
    wide = _wide(array)
    mean, variance = _numerics.moments(wide, axes, keepdims=True)
    # Subtract first: x * inv - mean * inv cancels catastrophically when |mean| >> std.
    out = (wide - mean) * jax.lax.rsqrt(variance + epsilon)
    scale = _parameter(gamma, "gamma", "layer_normalization", wide, axes)
    offset = _parameter(beta, "beta", "layer_normalization", wide, axes)
    if scale is not None:
        out = out * scale
    if offset is not None:
        out = out + offset
    return out.astype(array.dtype)


def batch_normalization(
    x: Any, mean: Any, variance: Any, axis: int, offset: Any = None, scale: Any = None, epsilon: float = 1e-3
) -> jax.Array:
    """`(x - mean) * rsqrt(variance + epsilon) * scale + offset`, the statistics given along `axis`.

    `mean`, `variance`, `offset` and `scale` are 1-D, of the size of `x` along `axis`. Computed
    in float32 and cast back to `x`'s dtype.

    Example:
      >>> from layers import ops
      >>> ops.batch_normalization(jnp.array([[1.0, 3.0]]), jnp.array([1.0, 1.0]), jnp.array([4.0, 4.0]), axis=1,
      ...                         epsilon=0.0)
      Array([[0., 1.]], dtype=float32)
    """
    epsilon = _real(epsilon, "batch_normalization", "epsilon")
    array = _floating(x, "batch_normalization")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"ops.batch_normalization: axis must be an int, received {axis!r}.")
    (positive,) = _axes(axis, array.ndim, array.shape, "batch_normalization")
    wide = _wide(array)
    size = array.shape[positive]
    shape = tuple(size if a == positive else 1 for a in range(array.ndim))

    def statistic(value: Any, name: str) -> jax.Array:
        stat = _array(value, "batch_normalization")
        if stat.shape != (size,):
            raise ValueError(
                f"ops.batch_normalization: {name} must have shape ({size},) (the size of x along axis {axis}), "
                f"received shape {stat.shape}."
            )
        return stat.astype(wide.dtype).reshape(shape)

    out = (wide - statistic(mean, "mean")) * jax.lax.rsqrt(statistic(variance, "variance") + epsilon)
    if scale is not None:
        out = out * statistic(scale, "scale")
    if offset is not None:
        out = out + statistic(offset, "offset")
    return out.astype(array.dtype)


# --- attention ---------------------------------------------------------------------------------


def _attention_dtype(*arrays: jax.Array) -> Any:
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) == 1:
        return dtypes.pop()
    # Keras promotes mixed inputs; done explicitly so strict promotion elsewhere is not tripped.
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(*arrays)


def dot_product_attention(
    query: Any,
    key: Any,
    value: Any,
    bias: Any = None,
    mask: Any = None,
    scale: float | None = None,
    is_causal: bool = False,
    flash_attention: bool | None = None,
    attn_logits_soft_cap: float | None = None,
) -> jax.Array:
    """`softmax(query · key * scale + bias) · value` per head, for `(B, T, N, H)` inputs.

    `key` and `value` are `(B, S, K, H)` (`value` may have its own last size); `N` must be a
    multiple of `K` (grouped-query attention; `K == 1` is multi-query). `bias` and `mask`
    broadcast to `(B, N, T, S)`; a mask of any dtype means "non-zero attends". `is_causal`
    lets query `t` attend keys `s <= t`. `scale` defaults to `1 / sqrt(H)`. Logits accumulate
    in float32, the softmax runs in float32 with a dtype-safe fill for masked logits, and a row
    with every key masked gets zero output (Keras averages the values there). The result has
    the inputs' dtype. Both products take the default algorithm of that dtype (float32 inputs: full
    float32, never TF32). `flash_attention=True` and `attn_logits_soft_cap` are not available.

    Example:
      >>> from layers import ops
      >>> q = jnp.ones((1, 2, 1, 4), jnp.bfloat16)
      >>> v = jnp.arange(8.0, dtype=jnp.bfloat16).reshape(1, 2, 1, 4)
      >>> out = ops.dot_product_attention(q, q, v, is_causal=True)
      >>> out.dtype, out[0, :, 0].tolist()
      (dtype(bfloat16), [[0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 5.0]])
    """
    if flash_attention:
        raise ValueError(
            f"ops.dot_product_attention: flash_attention={flash_attention!r} is not available here; "
            "pass None or False (XLA fuses the reference computation)."
        )
    if attn_logits_soft_cap is not None:
        raise ValueError(
            f"ops.dot_product_attention: attn_logits_soft_cap={attn_logits_soft_cap!r} is not supported "
            "(Keras supports it only on TPU); pass None."
        )
    if not isinstance(is_causal, (bool, np.bool_)):
        raise TypeError(f"ops.dot_product_attention: is_causal must be a bool, received {is_causal!r}.")
    q = _floating(query, "dot_product_attention")
    k = _floating(key, "dot_product_attention")
    v = _floating(value, "dot_product_attention")
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            "ops.dot_product_attention expects 4-D (batch, length, heads, depth) inputs, received "
            f"query.shape={q.shape}, key.shape={k.shape}, value.shape={v.shape}."
        )
    batch, t_len, heads, depth = q.shape
    _, s_len, kv_heads, _ = k.shape
    if k.shape[0] != batch or k.shape[3] != depth or v.shape[:3] != k.shape[:3] or heads % kv_heads:
        raise ValueError(
            "ops.dot_product_attention: expected query (B, T, N, H), key (B, S, K, H) and value (B, S, K, H_v) "
            f"with N a multiple of K, received query.shape={q.shape}, key.shape={k.shape}, value.shape={v.shape}."
        )
    dtype = _attention_dtype(q, k, v)
    q, k, v = q.astype(dtype), k.astype(dtype), v.astype(dtype)
    groups = heads // kv_heads
    accumulate = _numerics.accumulation_dtype(dtype)
    full = (batch, heads, t_len, s_len)

    def grouped(array: Any, name: str, as_bool: bool) -> jax.Array | None:
        if array is None:
            return None
        array = _array(array, "dot_product_attention")
        array = array != 0 if as_bool and array.dtype != jnp.bool_ else array
        try:
            array = jnp.broadcast_to(array, full)
        except ValueError:
            raise ValueError(
                f"ops.dot_product_attention: {name} of shape {array.shape} does not broadcast to (B, N, T, S) = {full}."
            ) from None
        return array.reshape(batch, kv_heads, groups, t_len, s_len)

    if scale is None:
        scale = 1.0 / float(np.sqrt(depth))
    scale = _real(scale, "dot_product_attention", "scale")
    # Both products run in the default algorithm of the inputs' dtype, as a policy of that dtype
    # would: float32 inputs get full float32 products (never TF32), 16-bit ones accumulate in float32.
    logits = _numerics.product_accumulated("btkgh,bskh->bkgts", q.reshape(batch, t_len, kv_heads, groups, depth), k)
    logits = logits * jnp.asarray(scale, accumulate)
    bias_grouped = grouped(bias, "bias", as_bool=False)
    if bias_grouped is not None:
        logits = logits + bias_grouped.astype(accumulate)
    attend = grouped(mask, "mask", as_bool=True)
    if is_causal:
        causal = jnp.tril(jnp.ones((t_len, s_len), jnp.bool_))
        attend = causal if attend is None else attend & causal
    probabilities = _numerics.softmax(logits, axis=-1, mask=attend).astype(dtype)
    out = _numerics.product_accumulated("bkgts,bskh->btkgh", probabilities, v)
    return out.reshape(batch, t_len, heads, v.shape[-1]).astype(dtype)
