"""Regression losses: mean squared error, mean absolute error and Huber, as functions and classes.

The functions return one value per sample (the mean over the last axis), in float32 (float64
predictions stay float64); the classes reduce those values.

Example:
  >>> mean_squared_error(jnp.array([[0.0, 1.0]]), jnp.array([[1.0, 1.0]], "bfloat16"))
  Array([0.5], dtype=float32)
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from layers.losses._base import Loss, align_ranks, predictions, targets

__all__ = [
    "Huber",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "huber",
    "mean_absolute_error",
    "mean_squared_error",
]


def _pair(y_true: Any, y_pred: Any, where: str) -> tuple[jax.Array, jax.Array]:
    y_pred = predictions(y_pred, where)
    y_true, y_pred = align_ranks(targets(y_true, y_pred.dtype, where), y_pred, where)
    if y_pred.ndim < 1:
        raise ValueError(f"{where}: y_pred must have rank >= 1 (the last axis is averaged), received shape ().")
    return y_true, y_pred


def _check_delta(delta: Any, where: str) -> float:
    if isinstance(delta, (bool, np.bool_)) or not isinstance(delta, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: delta must be a positive number, received {delta!r} of type {type(delta).__name__}.")
    if not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"{where}: delta must be a finite number > 0, received {delta!r}.")
    return float(delta)


def _mse(y_true: Any, y_pred: Any, where: str) -> jax.Array:
    y_true, y_pred = _pair(y_true, y_pred, where)
    return jnp.mean(jnp.square(y_true - y_pred), axis=-1)


def _mae(y_true: Any, y_pred: Any, where: str) -> jax.Array:
    y_true, y_pred = _pair(y_true, y_pred, where)
    return jnp.mean(jnp.abs(y_true - y_pred), axis=-1)


def _huber(y_true: Any, y_pred: Any, delta: float, where: str) -> jax.Array:
    y_true, y_pred = _pair(y_true, y_pred, where)
    error = y_pred - y_true
    magnitude = jnp.abs(error)
    elementwise = jnp.where(magnitude <= delta, 0.5 * jnp.square(error), delta * magnitude - 0.5 * delta**2)
    return jnp.mean(elementwise, axis=-1)


def mean_squared_error(y_true: Any, y_pred: Any) -> jax.Array:
    """`mean((y_true - y_pred)**2, axis=-1)`, one value per sample, in float32.

    Also available as `mse`. A trailing axis of size 1 on one side only is matched as in Keras.

    Example:
      >>> mean_squared_error(jnp.array([[1.0, 0.0]]), jnp.array([[0.5, 0.5]]))
      Array([0.25], dtype=float32)
    """
    return _mse(y_true, y_pred, "losses.mean_squared_error")


def mean_absolute_error(y_true: Any, y_pred: Any) -> jax.Array:
    """`mean(|y_true - y_pred|, axis=-1)`, one value per sample, in float32.

    Also available as `mae`.

    Example:
      >>> mean_absolute_error(jnp.array([[1.0, 0.0]]), jnp.array([[0.5, 0.5]], "float16"))
      Array([0.5], dtype=float32)
    """
    return _mae(y_true, y_pred, "losses.mean_absolute_error")


def huber(y_true: Any, y_pred: Any, delta: float = 1.0) -> jax.Array:
    """The Huber loss averaged over the last axis, one value per sample, in float32.

    Elementwise `0.5 * e**2` where `|e| <= delta` and `delta * |e| - 0.5 * delta**2` beyond, for
    `e = y_pred - y_true`.

    Example:
      >>> huber(jnp.array([[0.0, 0.0]]), jnp.array([[0.5, 3.0]]))
      Array([1.3125], dtype=float32)
    """
    where = "losses.huber"
    return _huber(y_true, y_pred, _check_delta(delta, where), where)


class MeanSquaredError(Loss):
    """The mean of squared errors, reduced over the batch.

    Args:
      reduction: see `Loss`; defaults to `"sum_over_batch_size"`.
      name: defaults to `"mean_squared_error"`.

    Example:
      >>> MeanSquaredError()(jnp.array([1.0, 0.0, 1.0]), jnp.array([0.9, 0.1, 0.8]))
      Array(0.02, dtype=float32)
    """

    def __init__(self, reduction: str | None = "sum_over_batch_size", name: str | None = "mean_squared_error") -> None:
        super().__init__(name=name, reduction=reduction)

    def call(self, y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
        """Returns `mean_squared_error(y_true, y_pred)`."""
        return _mse(y_true, y_pred, type(self).__name__)


class MeanAbsoluteError(Loss):
    """The mean of absolute errors, reduced over the batch.

    Args:
      reduction: see `Loss`; defaults to `"sum_over_batch_size"`.
      name: defaults to `"mean_absolute_error"`.

    Example:
      >>> MeanAbsoluteError(reduction="sum")(jnp.array([[1.0, 0.0]]), jnp.array([[2.0, 2.0]]))
      Array(1.5, dtype=float32)
    """

    def __init__(self, reduction: str | None = "sum_over_batch_size", name: str | None = "mean_absolute_error") -> None:
        super().__init__(name=name, reduction=reduction)

    def call(self, y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
        """Returns `mean_absolute_error(y_true, y_pred)`."""
        return _mae(y_true, y_pred, type(self).__name__)


class Huber(Loss):
    """The Huber loss: quadratic for errors up to `delta`, linear beyond.

    Args:
      delta: the error size where the loss turns linear; a finite number > 0.
      reduction: see `Loss`; defaults to `"sum_over_batch_size"`.
      name: defaults to `"huber_loss"`.

    Example:
      >>> Huber(delta=1.0)(jnp.array([[0.0, 0.0]]), jnp.array([[0.5, 3.0]]))
      Array(1.3125, dtype=float32)
    """

    def __init__(
        self, delta: float = 1.0, reduction: str | None = "sum_over_batch_size", name: str | None = "huber_loss"
    ) -> None:
        super().__init__(name=name, reduction=reduction)
        self.delta = _check_delta(delta, "Huber")

    def call(self, y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
        """Returns `huber(y_true, y_pred, delta)`."""
        return _huber(y_true, y_pred, self.delta, type(self).__name__)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {**super().get_config(), "delta": self.delta}
