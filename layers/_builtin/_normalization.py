"""LayerNormalization and RMSNormalization: per-example statistics computed in float32.

The normalization rules of SPEC §5 live here and in `_batch_normalization.py`: inputs are not
autocast (a bfloat16 activation reaches `call` as bfloat16 and is widened once, so statistics
never see a second rounding), mean and variance are taken in float32 (float64 stays float64),
and only the result is rounded, once, to the layer's compute dtype. Parameters are float32
variables with `autocast=False` under every policy, pure `"bfloat16"` included: a gamma stored
in bfloat16 would quantize every learned scale to 8 bits of mantissa.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dtypepolicy import _numerics
from dtypepolicy._dtypes import is_float
from layers._axes import check_axes_fit
from layers._base._input_spec import InputSpec
from layers._base._layer import Layer
from layers._builtin._arguments import check_bool, check_int, check_real, set_weight_arguments, weight_arguments_config

__all__ = ["LayerNormalization", "RMSNormalization"]

# The storage dtype of every normalization parameter and moving statistic, whatever the policy.
PARAMETER_DTYPE = "float32"


def widen(x: jax.Array, compute_dtype: str) -> jax.Array:
    """`x` in the dtype normalization computes in: float32, or float64 for float64 inputs or layers.

    Integer inputs (never autocast here) are treated as float32 values.
    """
    wide = _numerics.upcast(x) if is_float(x.dtype) else x.astype(PARAMETER_DTYPE)
    if compute_dtype == "float64" and wide.dtype != np.float64:
        wide = wide.astype("float64")
    return wide


def add_parameter(layer: Layer, name: str, shape: tuple, trainable: bool = True, initializer: Any = None) -> Any:
    """A float32 `autocast=False` normalization variable named `name`.

    Its initializer, regularizer and constraint are the layer's `<name>_initializer`,
    `<name>_regularizer` and `<name>_constraint` attributes (the last two when present),
    unless `initializer` is given.
    """
    return layer.add_weight(
        shape=shape,
        initializer=getattr(layer, f"{name}_initializer") if initializer is None else initializer,
        dtype=PARAMETER_DTYPE,
        trainable=trainable,
        autocast=False,
        regularizer=getattr(layer, f"{name}_regularizer", None),
        constraint=getattr(layer, f"{name}_constraint", None),
        name=name,
    )


def _axis_config(axis: int | list[int]) -> int | list[int]:
    return list(axis) if isinstance(axis, list) else axis  # a plain list, not the tracked copy


def _arranged(parameter: jax.Array, axes: tuple[int, ...], ndim: int, dtype: Any) -> jax.Array:
    """A parameter spanning `axes` (in that order), transposed and reshaped to broadcast over rank `ndim`."""
    positive = [axis % ndim for axis in axes]
    order = sorted(range(len(axes)), key=positive.__getitem__)
    parameter = parameter.astype(dtype)
    if order != list(range(len(axes))):
        parameter = jnp.transpose(parameter, order)
    ascending = sorted(positive)
    if ascending == list(range(ndim - len(axes), ndim)):
        return parameter  # trailing axes in order: plain broadcasting lines them up
    sizes = dict(zip(ascending, parameter.shape, strict=True))
    return jnp.reshape(parameter, tuple(sizes.get(axis, 1) for axis in range(ndim)))


# One jitted kernel per layer kind: an eager call dispatches one compiled program instead of a
# dozen small ones, and under an outer `jax.jit` the kernel is simply inlined.
@functools.partial(jax.jit, static_argnames=("axes", "epsilon", "rms", "dtype"))
def _normalize(
    x: jax.Array, gamma: Any, beta: Any, *, axes: tuple[int, ...], epsilon: float, rms: bool, dtype: str
) -> jax.Array:
    """Layer or RMS normalization of `x` over `axes`, in float32 (float64), rounded once to `dtype`."""
    wide = widen(x, dtype)
    ndim = wide.ndim
    reduce = tuple(sorted(axis % ndim for axis in axes))
    if rms:
        y = wide * jax.lax.rsqrt(jnp.mean(jnp.square(wide), axis=reduce, keepdims=True) + epsilon)
    else:
        mean, variance = _numerics.moments(wide, reduce, keepdims=True)
        # Subtract first: x * inv - mean * inv cancels catastrophically when |mean| >> std.
        y = (wide - mean) * jax.lax.rsqrt(variance + epsilon)
    if gamma is not None:
        y = y * _arranged(gamma, axes, ndim, wide.dtype)
    if beta is not None:
        y = y + _arranged(beta, axes, ndim, wide.dtype)
    return y.astype(dtype)


class _AxesNormalization(Layer):
    """Shared machinery: axis handling, input spec, mask pass-through, no input autocast."""

    _autocast_inputs = False

    def __init__(self, axis: int | list[int], epsilon: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        if isinstance(axis, (list, tuple)):
            if not axis:
                raise ValueError(f"{owner}: axis must name at least one axis, received {axis!r}.")
            self.axis = [check_int(a, f"{owner}: every entry of axis") for a in axis]
        elif isinstance(axis, (int, np.integer)) and not isinstance(axis, (bool, np.bool_)):
            self.axis = int(axis)
        else:
            raise TypeError(
                f"{owner}: axis must be an int or a list/tuple of ints, received {axis!r} of type "
                f"{type(axis).__name__}."
            )
        self._axes = tuple(self.axis) if isinstance(self.axis, list) else (self.axis,)
        self.epsilon = check_real(epsilon, f"{owner}: epsilon", 0.0)
        self.supports_masking = True

    def _build_axes(self, input_shape: Any) -> tuple[int, ...]:
        """Validates the axes against `input_shape`, sets the input spec; returns the parameter shape."""
        input_shape = tuple(input_shape)
        sizes = check_axes_fit(type(self).__name__, self._axes, input_shape)
        axes = dict(zip(self._axes, sizes, strict=True))
        # Axes counted from the end find their dimensions at any rank (so the layer also runs under
        # `jax.vmap`, which hides the batch axis); an axis counted from the front pins the rank.
        if all(axis < 0 for axis in self._axes):
            self.input_spec = InputSpec(min_ndim=max(-axis for axis in self._axes), axes=axes)
        else:
            self.input_spec = InputSpec(ndim=len(input_shape), axes=axes)
        return sizes

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        """The input mask, unchanged: normalization keeps every position."""
        return mask


class LayerNormalization(_AxesNormalization):
    """Normalizes each example over `axis`, then scales by `gamma` and shifts by `beta`.

    `y = (x - mean) / sqrt(variance + epsilon) * gamma + beta`, with the (biased) mean and
    variance taken over `axis` for each example separately. Inputs are not autocast: a
    float16 or bfloat16 input is widened to float32 (float64 stays float64), the statistics
    and the normalization run there, and the result is cast once to the compute dtype.
    `gamma` and `beta` are float32 with `autocast=False` under every policy, mixed or pure
    16-bit alike, and span the input dimensions at `axis` (in the order `axis` lists them).
    Masks pass through unchanged. When every axis counts from the end (the default `-1`), a
    built layer accepts inputs of any rank (and runs under `jax.vmap`); an axis counted from
    the front fixes the rank to the one the layer was built with.

    Args:
      axis: the axis, or list of axes, to normalize over (negative counts from the end).
      epsilon: added to the variance before the square root; a finite number >= 0.
      center: whether to add `beta`.
      scale: whether to multiply by `gamma`.
      rms_scaling: if True, `center` and `scale` are ignored and
        `y = x * rsqrt(mean(x**2) + epsilon) * gamma`, the root-mean-square scaling the name
        promises (no mean is subtracted, there is no `beta`). Keras 3 divides by the variance
        here instead and has deprecated the argument for that reason; this layer computes what
        the Keras documentation describes, the same result as `RMSNormalization`.
      beta_initializer: the initializer (or its name) of `beta`.
      gamma_initializer: the initializer (or its name) of `gamma`.
      beta_regularizer: an optional regularizer of `beta`.
      gamma_regularizer: an optional regularizer of `gamma`.
      beta_constraint: an optional constraint on `beta`.
      gamma_constraint: an optional constraint on `gamma`.
      **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`, ...).

    Example:
      >>> from layers import LayerNormalization
      >>> layer = LayerNormalization(dtype="mixed_bfloat16")
      >>> y = layer(jnp.array([[1.0, 2.0, 3.0]], jnp.bfloat16))
      >>> y.dtype, layer.gamma.dtype
      (dtype(bfloat16), 'float32')
      >>> np.asarray(y, np.float64).round(2).tolist()
      [[-1.23, 0.0, 1.23]]
    """

    def __init__(
        self,
        axis: int | list[int] = -1,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        rms_scaling: bool = False,
        beta_initializer: Any = "zeros",
        gamma_initializer: Any = "ones",
        beta_regularizer: Any = None,
        gamma_regularizer: Any = None,
        beta_constraint: Any = None,
        gamma_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(axis, epsilon, **kwargs)
        owner = type(self).__name__
        self.center = check_bool(center, f"{owner}: center")
        self.scale = check_bool(scale, f"{owner}: scale")
        self.rms_scaling = check_bool(rms_scaling, f"{owner}: rms_scaling")
        set_weight_arguments(self, "beta", beta_initializer, beta_regularizer, beta_constraint)
        set_weight_arguments(self, "gamma", gamma_initializer, gamma_regularizer, gamma_constraint)
        self.gamma = None
        self.beta = None

    def build(self, input_shape: Any) -> None:
        """Creates `gamma` and `beta` (float32, `autocast=False`) over the input dims at `axis`."""
        shape = self._build_axes(input_shape)
        if self.scale or self.rms_scaling:
            self.gamma = add_parameter(self, "gamma", shape)
        if self.center and not self.rms_scaling:
            self.beta = add_parameter(self, "beta", shape)

    def call(self, inputs: jax.Array) -> jax.Array:
        """Normalizes `inputs` in float32 and returns the result in the compute dtype."""
        return _normalize(
            inputs,
            None if self.gamma is None else self.gamma.value,
            None if self.beta is None else self.beta.value,
            axes=self._axes,
            epsilon=self.epsilon,
            rms=self.rms_scaling,
            dtype=self.compute_dtype,
        )

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, with initializers, regularizers and constraints serialized."""
        return {
            **super().get_config(),
            "axis": _axis_config(self.axis),
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "rms_scaling": self.rms_scaling,
            **weight_arguments_config(self, "beta", "gamma"),
        }


class RMSNormalization(_AxesNormalization):
    """Root-mean-square normalization: `y = x * rsqrt(mean(x**2, axis) + epsilon) * scale`.

    As in Keras 3.9+, with a trainable `scale` initialized to ones that spans the input
    dimensions at `axis` (in ascending axis order when `axis` is a list). The mean of squares
    is taken in float32 from whatever dtype arrives (inputs are not autocast; float64 stays
    float64), so float16 inputs whose squares overflow float16 still normalize correctly, and
    the result is cast once to the compute dtype. `scale` is float32 with `autocast=False`
    under every policy, pure `"bfloat16"` included. Masks pass through unchanged.

    Args:
      axis: the axis, or list of axes, to normalize over (negative counts from the end).
      epsilon: added to the mean of squares before the square root; a finite number >= 0.
      **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`, ...).

    Example:
      >>> from layers import RMSNormalization
      >>> layer = RMSNormalization(dtype="float16")
      >>> y = layer(jnp.array([[300.0, -400.0]], jnp.float16))  # 400**2 overflows float16
      >>> y.dtype, layer.scale.dtype
      (dtype('float16'), 'float32')
      >>> np.asarray(y, np.float64).round(3).tolist()
      [[0.849, -1.132]]
    """

    def __init__(self, axis: int | list[int] = -1, epsilon: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(axis, epsilon, **kwargs)

    def build(self, input_shape: Any) -> None:
        """Creates `scale` (float32, `autocast=False`, ones) over the input dims at `axis`."""
        input_shape = tuple(input_shape)
        check_axes_fit(type(self).__name__, self._axes, input_shape)
        # Keras orders a multi-axis `scale` by input position; sorting here keeps its shape.
        self._axes = tuple(sorted(self._axes, key=lambda axis: axis % len(input_shape)))
        shape = self._build_axes(input_shape)
        self.scale = add_parameter(self, "scale", shape, initializer="ones")

    def call(self, inputs: jax.Array) -> jax.Array:
        """Scales `inputs` by their inverse root mean square, in float32, into the compute dtype."""
        return _normalize(
            inputs, self.scale.value, None, axes=self._axes, epsilon=self.epsilon, rms=True, dtype=self.compute_dtype
        )

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {**super().get_config(), "axis": _axis_config(self.axis), "epsilon": self.epsilon}
