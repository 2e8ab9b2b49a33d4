"""Dense: `activation(inputs @ kernel + bias)` with one rounding to the compute dtype.

The product takes the compute-dtype inputs and kernel, accumulates in float32 (SPEC §5), and the
bias is added to that float32 accumulator before the single rounding to the compute dtype. The
bias is created with `autocast=False` so that `call` reads the float32 master itself instead of
a copy already rounded to 16 bits; the activation then runs in the compute dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp

from dtypepolicy import _numerics
from layers import activations
from layers._arguments import check_bool, check_positive_int, set_weight_arguments, weight_arguments_config
from layers._input_spec import InputSpec
from layers._layer import Layer

__all__ = ["Dense"]


def as_floating(x: jax.Array, dtype: Any) -> jax.Array:
    """Integer and bool inputs become `dtype` (autocast leaves them alone); floats pass."""
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(dtype)


@functools.partial(jax.jit, static_argnames="activation")
def _dense_forward(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, activation: Any) -> jax.Array:
    # One compiled dispatch per eager call instead of one per op (SPEC §8 eager overhead);
    # inside a caller's jit it is inlined.
    outputs = _numerics.dense_matmul(x, kernel, bias)
    return outputs if activation is None else activation(outputs)


def static_activation(activation: Callable[..., Any]) -> Any:
    """The activation as a static jit argument: None for linear, else the (hashable) function."""
    if activation is activations.linear:
        return None
    return activation if isinstance(activation, Hashable) else None


def project(layer: Layer, inputs: jax.Array, forward: Callable[..., jax.Array]) -> jax.Array:
    """Runs `forward(x, kernel, bias, activation)` for a layer with `kernel`, `bias`, `activation`.

    The activation goes inside the jitted forward when it is hashable; an unhashable one cannot
    be a static jit argument and runs after it. (Dense and EinsumDense share this; a precision
    strategy such as float8 will plug in here.)
    """
    kernel = layer.kernel.value
    bias = None if layer.bias is None else layer.bias.value
    activation = static_activation(layer.activation)
    outputs = forward(as_floating(inputs, kernel.dtype), kernel, bias, activation)
    if activation is None and layer.activation is not activations.linear:
        outputs = layer.activation(outputs)
    return outputs


class Dense(Layer):
    """A densely connected layer: `activation(inputs @ kernel + bias)`.

    The product contracts the last axis of inputs of any rank ≥ 2 with the `(input_dim, units)`
    kernel. Under a 16-bit policy it accumulates in float32, adds the float32 bias to the
    accumulator and rounds once to the compute dtype, which is more accurate than rounding the
    product and then the sum. After the first call the input's last axis is fixed: another size
    raises a ValueError naming the layer and the shapes. Masks pass through unchanged.

    Args:
      units: the size of the last output axis, a positive int.
      activation: an activation name, function or None (linear).
      use_bias: whether to add a bias.
      kernel_initializer: initializer of the kernel (a name, an `Initializer` or a dict).
      bias_initializer: initializer of the bias.
      kernel_regularizer: optional regularizer of the kernel; its value joins `losses`.
      bias_regularizer: optional regularizer of the bias.
      kernel_constraint: optional constraint applied to the kernel after optimizer updates.
      bias_constraint: optional constraint applied to the bias.
      **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`, `autocast`, ...).

    Raises:
      ValueError: `units` is not a positive int, or a name is unknown.
      TypeError: `use_bias` is not a bool, or an argument has the wrong type.

    Example:
      >>> from layers import Dense
      >>> layer = Dense(4, activation="relu", dtype="mixed_bfloat16")
      >>> y = layer(np.ones((2, 3)))
      >>> y.shape, y.dtype, layer.kernel.dtype, layer.bias.dtype
      ((2, 4), dtype(bfloat16), 'float32', 'float32')
    """

    def __init__(
        self,
        units: int,
        activation: str | Callable[..., Any] | None = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.units = check_positive_int(units, "Dense units")
        self.activation = activations.get(activation)
        self.use_bias = check_bool(use_bias, "Dense use_bias")
        set_weight_arguments(self, "kernel", kernel_initializer, kernel_regularizer, kernel_constraint)
        set_weight_arguments(self, "bias", bias_initializer, bias_regularizer, bias_constraint)
        self.supports_masking = True
        # Checked before the first build, so a rank-1 input fails with a clear message.
        self.input_spec = InputSpec(min_ndim=2)

    def build(self, input_shape: Any) -> None:
        """Creates `kernel` `(input_shape[-1], units)` and, with `use_bias`, `bias` `(units,)`."""
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ValueError(
                f"Dense layer {self.name!r} needs inputs of rank >= 2 (batch, ..., features), received "
                f"input_shape={input_shape}."
            )
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"Dense layer {self.name!r} needs the size of the last input axis to create its kernel, "
                f"received input_shape={input_shape}."
            )
        self.kernel = self.add_weight(
            shape=(input_dim, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            name="kernel",
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                autocast=False,  # added to the float32 accumulator unrounded
                name="bias",
            )
        self.input_spec = InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs: jax.Array) -> jax.Array:
        """Returns `activation(inputs @ kernel + bias)` in the compute dtype."""
        return project(self, inputs, _dense_forward)

    def get_config(self) -> dict[str, Any]:
        """The base config plus every constructor argument, serialized for JSON.

        Raises:
          ValueError: the activation is a custom function, which has no name to serialize.
        """
        return {
            **super().get_config(),
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            **weight_arguments_config(self, "kernel", "bias"),
        }
