"""The loss contract: the `Loss` base class, its reductions, and the checks the built-in losses share.

A loss instance is a callable `loss(y_true, y_pred, sample_weight=None)`. It computes per-sample
values with `call` in float32 (float64 predictions stay float64), weights them, and reduces them
as its `reduction` says. The result is float32 whatever the predictions' dtype: a bfloat16
log-softmax or mean would round the loss, and the loss is what the gradients start from.

Example:
  >>> class AbsoluteSum(Loss):
  ...     def call(self, y_true, y_pred):
  ...         return jnp.sum(jnp.abs(y_true - y_pred), axis=-1)
  >>> AbsoluteSum(reduction="sum")(jnp.zeros((2, 3)), jnp.ones((2, 3), "bfloat16"))
  Array(6., dtype=float32)
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from layers._base._masking import get_mask
from layers._registry import Configurable
from layers.ops import _read

__all__ = [
    "REDUCTIONS",
    "Loss",
    "align_ranks",
    "check_axis",
    "check_bool",
    "check_label_smoothing",
    "check_reduction",
    "normalize_axis",
    "numeric_array",
    "predictions",
    "reduce_weighted",
    "targets",
]

# Keras 3's reduction names; "mean" is a synonym of "sum_over_batch_size", and None of "none".
REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)


# --- argument checks ---------------------------------------------------------------------------


def check_reduction(reduction: Any, where: str) -> str | None:
    """Returns `reduction` if it is one of `REDUCTIONS`; a ValueError naming it otherwise."""
    if not isinstance(reduction, (str, type(None))) or reduction not in REDUCTIONS:
        raise ValueError(
            f"{where}: reduction must be one of {', '.join(map(repr, REDUCTIONS))}, received {reduction!r}."
        )
    return reduction


def check_bool(value: Any, where: str, name: str) -> bool:
    """Returns `value` as a bool; a TypeError naming it if it is not one."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be a bool, received {value!r} of type {type(value).__name__}.")
    return bool(value)


def check_axis(axis: Any, where: str) -> int:
    """Returns `axis` as an int; its range is checked against the predictions' rank at call time."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{where}: axis must be an int, received {axis!r} of type {type(axis).__name__}.")
    return int(axis)


def check_label_smoothing(value: Any, where: str) -> float:
    """Returns `value` as a float in `[0, 1]`; a TypeError or ValueError naming it otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"{where}: label_smoothing must be a number in [0, 1], received {value!r} of type {type(value).__name__}."
        )
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"{where}: label_smoothing must be in [0, 1], received {value!r}.")
    return float(value)


def _check_name(name: Any, default: str) -> str:
    if name is None:
        return default
    if not isinstance(name, str) or not name:
        raise TypeError(f"A loss name must be a non-empty string or None, received {name!r}.")
    return name


def _snake_case(name: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


# --- inputs ------------------------------------------------------------------------------------


def numeric_array(x: Any, where: str, name: str) -> jax.Array:
    """`x` (a Variable is read) as a real array; a TypeError naming `name` and the value otherwise."""
    value = _read(x)
    try:
        array = jnp.asarray(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"{where}: {name} must be an array or a Variable, received {x!r} of type {type(x).__name__}."
        ) from None
    if not (jnp.issubdtype(array.dtype, jnp.number) or jnp.issubdtype(array.dtype, jnp.bool_)):
        raise TypeError(f"{where}: {name} must hold numbers, received dtype {array.dtype}.")
    if jnp.issubdtype(array.dtype, jnp.complexfloating):
        raise TypeError(f"{where}: {name} must be real, received dtype {array.dtype}.")
    return array


def predictions(y_pred: Any, where: str) -> jax.Array:
    """`y_pred` in the dtype losses compute in: float32 for 8/16/32-bit and integer inputs, float64 kept."""
    array = numeric_array(y_pred, where, "y_pred")
    if jnp.issubdtype(array.dtype, jnp.floating) and array.dtype.itemsize >= 8:
        return array
    return array.astype(jnp.float32)


def targets(y_true: Any, dtype: Any, where: str) -> jax.Array:
    """`y_true` cast to the predictions' compute dtype (Keras casts labels to the loss dtype)."""
    return numeric_array(y_true, where, "y_true").astype(dtype)


def align_ranks(y_true: jax.Array, y_pred: jax.Array, where: str) -> tuple[jax.Array, jax.Array]:
    """Matches Keras' rank fix-up, then requires equal shapes.

    When the ranks differ by one and the longer shape ends in 1, that axis is dropped, except that
    a rank-1 partner gains one instead: `(batch,)` against `(batch, 1)` compares as `(batch, 1)`.
    Other shapes must be equal; broadcasting a `(batch,)` target against `(batch, n)` predictions
    would silently compute a different loss.
    """
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        y_pred, y_true = (y_pred[..., None], y_true) if y_pred.ndim == 1 else (y_pred, jnp.squeeze(y_true, -1))
    elif y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        y_true, y_pred = (y_true[..., None], y_pred) if y_true.ndim == 1 else (y_true, jnp.squeeze(y_pred, -1))
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"{where}: y_true and y_pred must have the same shape (up to a trailing axis of size 1), received "
            f"y_true.shape={y_true.shape} and y_pred.shape={y_pred.shape}."
        )
    return y_true, y_pred


def normalize_axis(axis: int, ndim: int, shape: tuple[int, ...], where: str) -> int:
    """`axis` in `[0, ndim)`; a ValueError naming it and the shape otherwise."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"{where}: axis {axis} is out of range for y_pred of shape {shape}.")
    return axis % ndim


# --- reduction ---------------------------------------------------------------------------------


def _fit(array: Any, shape: tuple[int, ...], dtype: Any, where: str, what: str) -> jax.Array:
    # A weight (or mask) of lower rank lines up with the leading (batch) axes, so per-sample weights
    # apply to every time step of a (batch, time) loss. Keras lines them up with the trailing axes,
    # which fails or, when batch == time, weights the wrong entries.
    weight = numeric_array(array, where, what).astype(dtype)
    if weight.ndim == len(shape) + 1 and weight.shape[-1] == 1:
        weight = jnp.squeeze(weight, -1)
    fits = weight.ndim <= len(shape) and all(w in (1, s) for w, s in zip(weight.shape, shape, strict=False))
    if not fits:
        raise ValueError(
            f"{where}: {what} of shape {weight.shape} does not fit the per-sample losses of shape {shape}; "
            f"expected a scalar or a shape that matches their leading axes, such as {shape[:1]} or {shape}."
        )
    return weight.reshape(weight.shape + (1,) * (len(shape) - weight.ndim))


def _divide_no_nan(total: jax.Array, divisor: Any) -> jax.Array:
    divisor = jnp.asarray(divisor, total.dtype)
    safe = jnp.where(divisor == 0, jnp.ones_like(divisor), divisor)
    return jnp.where(divisor == 0, jnp.zeros_like(total), total / safe)


def reduce_weighted(
    values: jax.Array,
    sample_weight: Any = None,
    mask: jax.Array | None = None,
    reduction: str | None = "sum_over_batch_size",
    where: str = "Loss",
) -> jax.Array:
    """Weights per-sample loss values and reduces them as Keras 3 does, in `values`' dtype.

    `"sum"` is the weighted sum, `"sum_over_batch_size"` (and `"mean"`) that sum over the number
    of entries (of unmasked entries when a mask is given), `"mean_with_sample_weight"` that sum over
    the sum of the weights (broadcast to the values' shape), and `"none"`/None the weighted values.
    A zero divisor gives 0, not NaN.
    """
    weight = None if sample_weight is None else _fit(sample_weight, values.shape, values.dtype, where, "sample_weight")
    if mask is not None:
        mask = _fit(mask, values.shape, values.dtype, where, "the mask")
        weight = mask if weight is None else weight * mask
    weighted = values if weight is None else values * weight
    if reduction is None or reduction == "none":
        return jnp.broadcast_to(weighted, values.shape)
    total = jnp.sum(weighted)
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight" and weight is not None:
        return _divide_no_nan(total, jnp.sum(jnp.broadcast_to(weight, values.shape)))
    if mask is not None:
        return _divide_no_nan(total, jnp.sum(jnp.broadcast_to(mask, values.shape)))
    return _divide_no_nan(total, values.size)


# --- the base class ----------------------------------------------------------------------------


class Loss(Configurable):
    """Base class of losses: a callable `loss(y_true, y_pred, sample_weight=None) -> float32`.

    Subclasses implement `call(y_true, y_pred)`, returning per-sample values (one per sample, or
    per sample and time step); `__call__` hands it `y_pred` in float32 (float64 stays float64) and
    `y_true` cast to the same dtype, then weights and reduces the values in that dtype. A mask
    attached to `y_pred` (from `Embedding(mask_zero=True)` upstream) leaves the masked entries out
    of the sum and of the count `"sum_over_batch_size"` divides by, as in Keras.

    Args:
      name: a name for the loss; defaults to the class name in snake_case.
      reduction: `"sum_over_batch_size"` (the default; the mean over all entries), `"mean"` (the
        same), `"sum"`, `"mean_with_sample_weight"` (the weighted sum over the sum of the
        weights), or `"none"`/None (the weighted per-sample values).

    Example:
      >>> class Squares(Loss):
      ...     def call(self, y_true, y_pred):
      ...         return jnp.square(y_true - y_pred)
      >>> Squares()(jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0]), sample_weight=jnp.array([1.0, 0.5]))
      Array(1., dtype=float32)
    """

    # SparseCategoricalCrossentropy keeps its integer class ids instead.
    _cast_targets: ClassVar[bool] = True

    def __init__(self, name: str | None = None, reduction: str | None = "sum_over_batch_size") -> None:
        self.name = _check_name(name, _snake_case(type(self).__name__))
        self.reduction = check_reduction(reduction, type(self).__name__)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> jax.Array:
        """Returns the reduced loss in float32 (float64 for float64 predictions).

        Args:
          y_true: the targets.
          y_pred: the predictions, of any floating dtype.
          sample_weight: None, a scalar, or weights whose shape matches the leading axes of the
            per-sample values (`(batch,)` or the values' own shape); a trailing axis of size 1 is
            dropped.
        """
        where = type(self).__name__
        # As in Keras, a mask attached to the predictions (by Embedding(mask_zero=True) upstream)
        # leaves the masked entries out, like ignore_class does.
        attached = get_mask(y_pred)
        y_pred = predictions(y_pred, where)
        y_true = targets(y_true, y_pred.dtype, where) if self._cast_targets else numeric_array(y_true, where, "y_true")
        values, mask = self._values(y_true, y_pred)
        values = values.astype(y_pred.dtype)
        if attached is not None:
            attached = _fit(attached, values.shape, jnp.bool_, where, "the mask attached to y_pred")
            mask = attached if mask is None else _fit(mask, values.shape, jnp.bool_, where, "the mask") & attached
        return reduce_weighted(values, sample_weight, mask, self.reduction, where)

    def _values(self, y_true: jax.Array, y_pred: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        # The per-sample values and the mask of entries that count (None: all of them).
        return jnp.asarray(self.call(y_true, y_pred)), None

    def call(self, y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
        """Returns the per-sample loss values; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement call(y_true, y_pred).")

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"name": self.name, "reduction": self.reduction}
