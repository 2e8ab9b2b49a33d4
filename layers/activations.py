"""Activation functions: plain functions that keep the input's floating dtype.

Elementwise activations compute in the input dtype, as any op in a mixed-precision layer does.
`softmax` and `log_softmax` are reductions, so they compute in float32 (float64 stays float64)
and cast the result back once. Integer inputs are first cast to float32.

Example:
  >>> from layers import activations
  >>> activations.get("relu")(jnp.array([-1.0, 2.0], jnp.bfloat16))
  Array([0, 2], dtype=bfloat16)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from layers._registry import did_you_mean

__all__ = [
    "elu",
    "exponential",
    "gelu",
    "get",
    "hard_sigmoid",
    "leaky_relu",
    "linear",
    "log_softmax",
    "mish",
    "relu",
    "relu6",
    "selu",
    "serialize",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "softsign",
    "swish",
    "tanh",
]


def _floating(x: ArrayLike, name: str) -> jax.Array:
    """`x` as an array with a floating dtype; non-floating inputs become float32."""
    try:
        array = jnp.asarray(x)
    except TypeError:
        raise TypeError(f"{name} expects an array, received {x!r} of type {type(x).__name__}.") from None
    return array if jnp.issubdtype(array.dtype, jnp.floating) else array.astype(jnp.float32)


def _reduction_dtype(x: jax.Array) -> Any:
    # float32 for 8/16/32-bit inputs; float64 inputs must not lose precision.
    return x.dtype if x.dtype.itemsize >= 8 else jnp.float32


def _static_axis(axis: Any) -> int | tuple[int, ...]:
    # jit needs a hashable static argument; a list axis becomes a tuple.
    return tuple(axis) if isinstance(axis, list) else axis


# --- jitted kernels ----------------------------------------------------------------------------
# Called eagerly, each activation is one compiled dispatch instead of one per jnp op (gelu takes
# six); inside a caller's jit they inline.

_relu = jax.jit(jax.nn.relu)
_relu6 = jax.jit(jax.nn.relu6)
_sigmoid = jax.jit(jax.nn.sigmoid)
_tanh = jax.jit(jnp.tanh)
_gelu = jax.jit(jax.nn.gelu, static_argnames="approximate")
_silu = jax.jit(jax.nn.silu)
_elu = jax.jit(jax.nn.elu)
_selu = jax.jit(jax.nn.selu)
_softplus = jax.jit(jax.nn.softplus)
_softsign = jax.jit(jax.nn.soft_sign)
_leaky_relu = jax.jit(jax.nn.leaky_relu)
_hard_sigmoid = jax.jit(jax.nn.hard_sigmoid)
_exponential = jax.jit(jnp.exp)


@jax.jit
def _mish(x: jax.Array) -> jax.Array:
    return x * jnp.tanh(jax.nn.softplus(x))


@functools.partial(jax.jit, static_argnames="axis")
def _softmax(x: jax.Array, axis: int | tuple[int, ...]) -> jax.Array:
    return jax.nn.softmax(x.astype(_reduction_dtype(x)), axis=axis).astype(x.dtype)


@functools.partial(jax.jit, static_argnames="axis")
def _log_softmax(x: jax.Array, axis: int | tuple[int, ...]) -> jax.Array:
    return jax.nn.log_softmax(x.astype(_reduction_dtype(x)), axis=axis).astype(x.dtype)


# --- public functions --------------------------------------------------------------------------


def linear(x: ArrayLike) -> ArrayLike:
    """Returns `x` unchanged.

    Example:
      >>> linear(jnp.array([-1.0, 2.0]))
      Array([-1.,  2.], dtype=float32)
    """
    return x


def relu(x: ArrayLike) -> jax.Array:
    """`max(x, 0)`.

    Example:
      >>> relu(jnp.array([-1.0, 2.0]))
      Array([0., 2.], dtype=float32)
    """
    return _relu(_floating(x, "relu"))


def relu6(x: ArrayLike) -> jax.Array:
    """`min(max(x, 0), 6)`.

    Example:
      >>> relu6(jnp.array([-1.0, 2.0, 8.0]))
      Array([0., 2., 6.], dtype=float32)
    """
    return _relu6(_floating(x, "relu6"))


def sigmoid(x: ArrayLike) -> jax.Array:
    """`1 / (1 + exp(-x))`.

    Example:
      >>> sigmoid(jnp.array([0.0]))
      Array([0.5], dtype=float32)
    """
    return _sigmoid(_floating(x, "sigmoid"))


def tanh(x: ArrayLike) -> jax.Array:
    """Hyperbolic tangent.

    Example:
      >>> tanh(jnp.array([0.0]))
      Array([0.], dtype=float32)
    """
    return _tanh(_floating(x, "tanh"))


def softmax(x: ArrayLike, axis: int | tuple[int, ...] = -1) -> jax.Array:
    """`exp(x) / sum(exp(x))` along `axis`, computed in float32 and cast back to the input dtype.

    Args:
      x: the logits.
      axis: the axis or axes that sum to 1.

    Example:
      >>> softmax(jnp.array([0.0, 0.0], jnp.bfloat16))
      Array([0.5, 0.5], dtype=bfloat16)
    """
    return _softmax(_floating(x, "softmax"), axis=_static_axis(axis))


def log_softmax(x: ArrayLike, axis: int | tuple[int, ...] = -1) -> jax.Array:
    """`x - log(sum(exp(x)))` along `axis`, computed in float32 and cast back to the input dtype.

    Args:
      x: the logits.
      axis: the axis or axes the normalization runs over.

    Example:
      >>> log_softmax(jnp.array([0.0, 0.0]))
      Array([-0.6931472, -0.6931472], dtype=float32)
    """
    return _log_softmax(_floating(x, "log_softmax"), axis=_static_axis(axis))


def gelu(x: ArrayLike, approximate: bool = False) -> jax.Array:
    """Gaussian error linear unit, `x * Φ(x)`.

    Args:
      x: the input.
      approximate: use the tanh approximation instead of the exact erf form (Keras' default
        is exact, JAX's is approximate; this follows Keras).

    Example:
      >>> gelu(jnp.array([0.0, 10.0]))
      Array([ 0., 10.], dtype=float32)
    """
    return _gelu(_floating(x, "gelu"), approximate=bool(approximate))


def silu(x: ArrayLike) -> jax.Array:
    """`x * sigmoid(x)`, also called swish.

    Example:
      >>> silu(jnp.array([0.0]))
      Array([0.], dtype=float32)
    """
    return _silu(_floating(x, "silu"))


swish = silu


def elu(x: ArrayLike, alpha: float = 1.0) -> jax.Array:
    """`x` for `x > 0`, else `alpha * (exp(x) - 1)`.

    Example:
      >>> elu(jnp.array([2.0, 0.0]))
      Array([2., 0.], dtype=float32)
    """
    return _elu(_floating(x, "elu"), alpha)


def selu(x: ArrayLike) -> jax.Array:
    """Scaled ELU with the self-normalizing constants (scale ≈ 1.0507, alpha ≈ 1.6733).

    Example:
      >>> selu(jnp.array([0.0]))
      Array([0.], dtype=float32)
    """
    return _selu(_floating(x, "selu"))


def softplus(x: ArrayLike) -> jax.Array:
    """`log(1 + exp(x))`, without overflow for large `x`.

    Example:
      >>> softplus(jnp.array([100.0]))
      Array([100.], dtype=float32)
    """
    return _softplus(_floating(x, "softplus"))


def softsign(x: ArrayLike) -> jax.Array:
    """`x / (1 + |x|)`.

    Example:
      >>> softsign(jnp.array([1.0, -3.0]))
      Array([ 0.5 , -0.75], dtype=float32)
    """
    return _softsign(_floating(x, "softsign"))


def leaky_relu(x: ArrayLike, negative_slope: float = 0.2) -> jax.Array:
    """`x` for `x >= 0`, else `negative_slope * x` (Keras' default slope 0.2).

    Example:
      >>> leaky_relu(jnp.array([-1.0, 2.0]))
      Array([-0.2,  2. ], dtype=float32)
    """
    return _leaky_relu(_floating(x, "leaky_relu"), negative_slope)


def hard_sigmoid(x: ArrayLike) -> jax.Array:
    """Piecewise-linear sigmoid `clip(x / 6 + 0.5, 0, 1)` (the Keras 3 definition).

    Example:
      >>> hard_sigmoid(jnp.array([-4.0, 0.0, 4.0]))
      Array([0. , 0.5, 1. ], dtype=float32)
    """
    return _hard_sigmoid(_floating(x, "hard_sigmoid"))


def exponential(x: ArrayLike) -> jax.Array:
    """`exp(x)`.

    Example:
      >>> exponential(jnp.array([0.0]))
      Array([1.], dtype=float32)
    """
    return _exponential(_floating(x, "exponential"))


def mish(x: ArrayLike) -> jax.Array:
    """`x * tanh(softplus(x))`.

    Example:
      >>> mish(jnp.array([0.0]))
      Array([0.], dtype=float32)
    """
    return _mish(_floating(x, "mish"))


# --- lookup ------------------------------------------------------------------------------------

_BY_NAME: dict[str, Callable[..., Any]] = {
    "linear": linear,
    "relu": relu,
    "relu6": relu6,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "softmax": softmax,
    "log_softmax": log_softmax,
    "gelu": gelu,
    "silu": silu,
    "swish": swish,
    "elu": elu,
    "selu": selu,
    "softplus": softplus,
    "softsign": softsign,
    "leaky_relu": leaky_relu,
    "hard_sigmoid": hard_sigmoid,
    "exponential": exponential,
    "mish": mish,
}


def serialize(activation: Callable[..., Any]) -> str:
    """Returns the name of a built-in activation.

    Example:
      >>> from layers import activations
      >>> activations.serialize(activations.swish)
      'silu'
    """
    if not callable(activation):
        raise TypeError(
            f"serialize expects an activation function, received {activation!r} of type {type(activation).__name__}."
        )
    # Identity, not equality or hashing: callables may be unhashable. The first name wins, so
    # `swish` serializes as "silu".
    name = next((name for name, fn in _BY_NAME.items() if fn is activation), None)
    if name is None:
        raise ValueError(
            f"Cannot serialize {activation!r}: only the built-in activations have names ({', '.join(_BY_NAME)})."
        )
    return name


def get(identifier: Any) -> Callable[..., Any]:
    """Returns the activation function an identifier stands for.

    Args:
      identifier: None (meaning `linear`), a name such as `"gelu"`, or a callable (returned as is).

    Raises:
      ValueError: an unknown name.
      TypeError: anything else.

    Example:
      >>> from layers import activations
      >>> activations.get("swish") is activations.silu
      True
    """
    if identifier is None:
        return linear
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(
                f"Unknown activation {identifier!r}. Expected one of {', '.join(_BY_NAME)}."
                f"{did_you_mean(identifier, _BY_NAME)}"
            )
        return _BY_NAME[identifier]
    if callable(identifier):
        return identifier
    raise TypeError(
        f"Cannot interpret {identifier!r} of type {type(identifier).__name__} as an activation. "
        f"Expected None, a name such as 'relu', or a callable."
    )
