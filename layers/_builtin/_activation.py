"""Activation: a layer applying an activation function from `layers.activations`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from layers import activations
from layers._base._layer import Layer

__all__ = ["Activation"]


def floating_inputs(layer: Layer, inputs: Any) -> jax.Array:
    """`inputs` as an array; integer, bool and Python-number inputs become the layer's compute dtype.

    Autocast only casts floating inputs, so integers would otherwise reach a float function
    and come back float32, wider than a 16-bit policy allows.

    Raises:
      TypeError: `inputs` is None or anything else that is not a numeric or bool array.
    """
    try:
        array = None if inputs is None else jnp.asarray(inputs)
    except (TypeError, ValueError):
        array = None
    if array is None or not (jnp.issubdtype(array.dtype, jnp.number) or jnp.issubdtype(array.dtype, jnp.bool_)):
        raise TypeError(
            f"{type(layer).__name__} {layer.name!r} expects an array (or a number) as input, received {inputs!r} of "
            f"type {type(inputs).__name__}."
        )
    # A Python number has no dtype of its own: like an integer, it takes the compute dtype.
    untyped = not hasattr(inputs, "dtype")
    inputs = array
    if jnp.issubdtype(inputs.dtype, jnp.floating) and not untyped:
        return inputs
    compute = layer.compute_dtype
    return inputs.astype(compute if jnp.issubdtype(compute, jnp.floating) else jnp.float32)


class Activation(Layer):
    """Applies an activation function to its input.

    The function comes from `layers.activations.get`, so names (`"gelu"`), built-in functions
    and other callables all work. Floating inputs arrive in the compute dtype and the built-in
    activations keep that dtype (`"softmax"` computes in float32 inside and casts back).
    Integer inputs are cast to the compute dtype first. Masks pass through unchanged.

    Args:
      activation: a name such as `"relu"`, a built-in activation function, or a callable
        `x -> array`. Only named built-ins can be serialized by `get_config`.
      **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`, ...).

    Raises:
      ValueError: an unknown activation name (the message lists the known ones).
      TypeError: something that is neither a name nor a callable.

    Example:
      >>> layer = Activation("relu", dtype="mixed_bfloat16")
      >>> layer(np.array([-1.0, 2.0]))
      Array([0, 2], dtype=bfloat16)
      >>> layer.get_config()["activation"]
      'relu'
    """

    def __init__(self, activation: str | Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.activation = activations.get(activation)
        self.supports_masking = True
        self.build(None)  # no weights: built now, so stateless_call works before a call

    def call(self, inputs: jax.Array) -> jax.Array:
        """Returns `activation(inputs)`."""
        return self.activation(floating_inputs(self, inputs))

    def get_config(self) -> dict[str, Any]:
        """The base config plus the activation's name.

        Raises:
          ValueError: the activation is a custom callable, which has no name to serialize.
        """
        return {**super().get_config(), "activation": activations.serialize(self.activation)}
