"""BatchNormalization: batch statistics in training, float32 moving statistics otherwise."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dtypepolicy import _numerics
from layers import initializers
from layers._axes import check_axes_fit
from layers._base._input_spec import InputSpec
from layers._base._layer import Layer
from layers._builtin._arguments import check_bool, check_int, check_real, set_weight_arguments, weight_arguments_config
from layers._builtin._normalization import add_parameter, widen
from layers._builtin._training_flag import check_training

__all__ = ["BatchNormalization"]


def _batch_moments(x: jax.Array, mask: Any, axis: int) -> tuple[jax.Array, jax.Array]:
    """Per-feature mean and biased variance over every axis but `axis`, over unmasked positions only."""
    reduction = tuple(i for i in range(x.ndim) if i != axis)
    if mask is None:
        return _numerics.moments(x, reduction)
    if mask.ndim == x.ndim - 1:
        mask = jnp.expand_dims(mask, axis)
    weights = mask.astype(x.dtype)
    present = weights != 0
    count = jnp.sum(jnp.broadcast_to(weights, x.shape), axis=reduction, keepdims=True)
    # A feature with no unmasked position gets mean 0 and variance 0 rather than NaN.
    count = jnp.where(count > 0, count, 1)
    # `where`, not a product with the weights, so that NaN or inf padding cannot leak in.
    mean = jnp.sum(weights * jnp.where(present, x, 0), axis=reduction, keepdims=True) / count
    centered = jnp.where(present, x - mean, 0)
    variance = jnp.sum(weights * jnp.square(centered), axis=reduction, keepdims=True) / count
    return jnp.reshape(mean, (-1,)), jnp.reshape(variance, (-1,))


# An eager call dispatches this one compiled program instead of a dozen small ones; under an
# outer `jax.jit` it is inlined.
@functools.partial(jax.jit, static_argnames=("axis", "epsilon", "momentum", "training", "dtype"))
def _batch_normalize(
    x: jax.Array,
    gamma: Any,
    beta: Any,
    moving_mean: jax.Array,
    moving_variance: jax.Array,
    mask: Any,
    *,
    axis: int,
    epsilon: float,
    momentum: float,
    training: bool,
    dtype: str,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Returns the normalized `x` in `dtype` and the moving statistics after this call."""
    wide = widen(x, dtype)
    moving_mean, moving_variance = moving_mean.astype(wide.dtype), moving_variance.astype(wide.dtype)
    if training:
        mean, variance = _batch_moments(wide, mask, axis)
        moving_mean = moving_mean * momentum + mean * (1.0 - momentum)
        moving_variance = moving_variance * momentum + variance * (1.0 - momentum)
    else:
        mean, variance = moving_mean, moving_variance
    # Per-feature work stays on the small vectors; only the subtraction and one multiply-add touch
    # the full input. Subtracting the mean first avoids x * inv - mean * inv, which cancels
    # catastrophically when |mean| >> std.
    inverse = jax.lax.rsqrt(variance + epsilon)
    if gamma is not None:
        inverse = inverse * gamma.astype(wide.dtype)
    shape = [1] * wide.ndim
    shape[axis] = -1
    y = (wide - mean.reshape(shape)) * inverse.reshape(shape)
    if beta is not None:
        y = y + beta.astype(wide.dtype).reshape(shape)
    return y.astype(dtype), moving_mean, moving_variance


class BatchNormalization(Layer):
    """Normalizes each feature (channel) with batch statistics in training, moving ones otherwise.

    With `training=True` the layer returns
    `gamma * (x - mean(x)) / sqrt(var(x) + epsilon) + beta`, the (biased) mean and variance
    taken over every axis except `axis`, and updates the moving statistics:
    `moving = moving * momentum + batch * (1 - momentum)`. Otherwise (`training` False or
    None) it normalizes with `moving_mean` and `moving_variance` and changes nothing. As in
    Keras, a layer with `trainable=False` is frozen: it always runs in inference mode.

    Numerics: inputs are not autocast. Whatever dtype arrives is widened to float32 (float64
    stays float64); statistics, the moving-average update and the normalization run there,
    and only the output is cast to the compute dtype. `gamma`, `beta`, `moving_mean` and
    `moving_variance` are float32 with `autocast=False` under every policy, mixed or pure
    16-bit: moving statistics stored in bfloat16 could not absorb a `1 - momentum = 0.01`
    update at all.

    Masks: a mask (`(batch, ...)` without the feature axis, or broadcastable to the input)
    restricts the batch statistics to the unmasked positions, whatever values the masked
    positions hold. Masks pass through to the output unchanged.

    Under `stateless_call(..., training=True)` the updated statistics come back as the new
    non-trainable values and the layer itself is left untouched. With a negative `axis` (the
    default) a built layer accepts inputs of any rank, so it also runs under `jax.vmap`; a
    non-negative `axis` fixes the rank, as in Keras.

    Args:
      axis: the feature axis (an int; negative counts from the end).
      momentum: the moving-average momentum, in [0, 1].
      epsilon: added to the variance before the square root; a finite number >= 0.
      center: whether to add `beta`.
      scale: whether to multiply by `gamma`.
      beta_initializer: the initializer (or its name) of `beta`.
      gamma_initializer: the initializer (or its name) of `gamma`.
      moving_mean_initializer: the initializer of the moving mean.
      moving_variance_initializer: the initializer of the moving variance.
      beta_regularizer: an optional regularizer of `beta`.
      gamma_regularizer: an optional regularizer of `gamma`.
      beta_constraint: an optional constraint on `beta`.
      gamma_constraint: an optional constraint on `gamma`.
      **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`, ...).

    Call arguments: `inputs`, `training=None` (a Python bool, `np.bool_` or None; anything else,
    a traced value included, is a `TypeError`: pass it as a static argument under `jax.jit`),
    `mask=None`.

    Example:
      >>> from layers import BatchNormalization
      >>> layer = BatchNormalization(momentum=0.5, dtype="mixed_bfloat16")
      >>> y = layer(jnp.array([[1.0], [3.0]], jnp.bfloat16), training=True)
      >>> y.dtype, layer.moving_mean.dtype
      (dtype(bfloat16), 'float32')
      >>> layer.moving_mean.numpy().tolist(), layer.moving_variance.numpy().tolist()
      ([1.0], [1.0])
    """

    _autocast_inputs = False

    def __init__(
        self,
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        moving_mean_initializer: Any = "zeros",
        moving_variance_initializer: Any = "ones",
        beta_regularizer: Any = None,
        gamma_regularizer: Any = None,
        beta_constraint: Any = None,
        gamma_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.axis = check_int(axis, f"{owner}: axis")
        self.momentum = check_real(momentum, f"{owner}: momentum", 0.0, 1.0)
        self.epsilon = check_real(epsilon, f"{owner}: epsilon", 0.0)
        self.center = check_bool(center, f"{owner}: center")
        self.scale = check_bool(scale, f"{owner}: scale")
        set_weight_arguments(self, "beta", beta_initializer, beta_regularizer, beta_constraint)
        set_weight_arguments(self, "gamma", gamma_initializer, gamma_regularizer, gamma_constraint)
        # The moving statistics are not trained: they take an initializer only.
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.gamma = None
        self.beta = None
        self.supports_masking = True

    def build(self, input_shape: Any) -> None:
        """Creates the four float32 `autocast=False` variables of shape `(input_shape[axis],)`."""
        input_shape = tuple(input_shape)
        (size,) = check_axes_fit(type(self).__name__, (self.axis,), input_shape)
        # An axis counted from the end finds the features at any rank (so the layer also runs under
        # `jax.vmap`, which hides the batch axis); one counted from the front pins the rank, as in Keras.
        if self.axis < 0:
            self.input_spec = InputSpec(min_ndim=-self.axis, axes={self.axis: size})
        else:
            self.input_spec = InputSpec(ndim=len(input_shape), axes={self.axis: size})

        if self.scale:
            self.gamma = add_parameter(self, "gamma", (size,))
        if self.center:
            self.beta = add_parameter(self, "beta", (size,))
        self.moving_mean = add_parameter(self, "moving_mean", (size,), trainable=False)
        self.moving_variance = add_parameter(self, "moving_variance", (size,), trainable=False)

    def call(self, inputs: jax.Array, training: bool | None = None, mask: Any = None) -> jax.Array:
        """Normalizes `inputs` in float32; in training also updates the moving statistics."""
        training = bool(check_training(training, f"BatchNormalization {self.name!r}")) and self.trainable
        axis = self.axis % inputs.ndim
        if mask is not None:
            self._check_mask(mask, inputs.shape, axis)
        y, mean, variance = _batch_normalize(
            inputs,
            None if self.gamma is None else self.gamma.value,
            None if self.beta is None else self.beta.value,
            self.moving_mean.value,
            self.moving_variance.value,
            jnp.asarray(mask) if training and mask is not None else None,
            axis=axis,
            epsilon=self.epsilon,
            momentum=self.momentum,
            training=training,
            dtype=self.compute_dtype,
        )
        if training:
            self.moving_mean.assign(mean)
            self.moving_variance.assign(variance)
        return y

    def _check_mask(self, mask: Any, shape: tuple[int, ...], axis: int) -> None:
        """Raises unless `mask` is the input shape without the feature axis, or broadcasts to it."""
        received = tuple(np.shape(mask))
        expanded = received
        if len(received) == len(shape) - 1:
            expanded = (*received[:axis], 1, *received[axis:])
        if len(expanded) != len(shape) or any(m not in (1, s) for m, s in zip(expanded, shape, strict=True)):
            raise ValueError(
                f"BatchNormalization {self.name!r}: the mask must have the input's shape without the feature "
                f"axis {self.axis}, or a shape that broadcasts to the input; received mask shape "
                f"{received} for input shape {tuple(shape)}."
            )

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, with initializers, regularizers and constraints serialized."""
        return {
            **super().get_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            **weight_arguments_config(self, "beta", "gamma"),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
        }
