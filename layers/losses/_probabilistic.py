"""Cross-entropy losses: binary, categorical and sparse categorical, as functions and classes.

The formulas are those of `layers.ops.binary_crossentropy` and friends (one place for each), run
on the predictions widened to float32 and kept there: a log-softmax over bfloat16 logits rounds
`log(1 + e**-8)` to 0, so a batch of confident right answers would have no loss and no gradient.
Probabilities are clipped to `[1e-7, 1 - 1e-7]` before the log, as Keras does.

Example:
  >>> logits = jnp.array([[8.0, 0.0]], "bfloat16")
  >>> sparse_categorical_crossentropy(jnp.array([0]), logits, from_logits=True)
  Array([0.0003354], dtype=float32)
  >>> -jax.nn.log_softmax(logits)[0, 0]  # the same in bfloat16
  Array(-0, dtype=bfloat16)
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from layers._keras_loss_ops import (
    binary_crossentropy_formula,
    categorical_crossentropy_formula,
    sparse_categorical_crossentropy_formula,
)
from layers.losses._base import (
    Loss,
    align_ranks,
    check_axis,
    check_bool,
    check_label_smoothing,
    normalize_axis,
    numeric_array,
    predictions,
    targets,
)

__all__ = [
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy",
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
]


def _classed_predictions(y_pred: Any, axis: int, where: str) -> tuple[jax.Array, int]:
    y_pred = predictions(y_pred, where)
    if y_pred.ndim < 1:
        raise ValueError(f"{where}: y_pred must have rank >= 1, received shape ().")
    return y_pred, normalize_axis(axis, y_pred.ndim, y_pred.shape, where)


def _bce(y_true: Any, y_pred: Any, from_logits: bool, label_smoothing: float, axis: int, where: str) -> jax.Array:
    y_pred = predictions(y_pred, where)
    # `axis` counts in the shapes after the rank fix-up, as in Keras (whose class wrapper does it first).
    y_true, y_pred = align_ranks(targets(y_true, y_pred.dtype, where), y_pred, where)
    y_pred, axis = _classed_predictions(y_pred, axis, where)
    if label_smoothing:
        # Squeezes the labels towards 0.5.
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return jnp.mean(binary_crossentropy_formula(y_true, y_pred, from_logits), axis=axis)


def _cce(y_true: Any, y_pred: Any, from_logits: bool, label_smoothing: float, axis: int, where: str) -> jax.Array:
    y_pred, axis = _classed_predictions(y_pred, axis, where)
    y_true = targets(y_true, y_pred.dtype, where)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"{where}: y_true (one-hot or soft labels) must have y_pred's shape, received "
            f"y_true.shape={y_true.shape} and y_pred.shape={y_pred.shape}."
        )
    classes = y_pred.shape[axis]
    if classes == 1:
        warnings.warn(
            f"{where}: y_pred has a single class along axis {axis} (shape {y_pred.shape}), so the loss is always "
            f"about 0; use binary_crossentropy for two classes in one column.",
            UserWarning,
            stacklevel=3,
        )
    if label_smoothing:
        # Moves `label_smoothing` of the mass to a uniform distribution over the classes.
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / classes
    return categorical_crossentropy_formula(y_true, y_pred, from_logits, axis)


def _class_ids(y_true: Any, y_pred: jax.Array, axis: int, where: str) -> jax.Array:
    labels = numeric_array(y_true, where, "y_true")
    # Keras accepts float labels holding integers and casts them, as here.
    labels = labels.astype(jnp.int32)
    if labels.ndim == y_pred.ndim and labels.ndim and labels.shape[axis] == 1:
        labels = jnp.squeeze(labels, axis)
    elif labels.ndim == y_pred.ndim and labels.ndim and labels.shape[-1] == 1:
        labels = jnp.squeeze(labels, -1)
    expected = y_pred.shape[:axis] + y_pred.shape[axis + 1 :]
    if labels.shape != expected:
        raise ValueError(
            f"{where}: y_true (integer class ids) of shape {labels.shape} does not match y_pred of shape "
            f"{y_pred.shape} without its class axis {axis}; expected shape {expected}."
        )
    return labels


def _scce(
    y_true: Any, y_pred: Any, from_logits: bool, ignore_class: int | None, axis: int, where: str
) -> tuple[jax.Array, jax.Array | None]:
    y_pred, axis = _classed_predictions(y_pred, axis, where)
    labels = _class_ids(y_true, y_pred, axis, where)
    if ignore_class is None:
        return sparse_categorical_crossentropy_formula(labels, y_pred, from_logits, axis), None
    keep = labels != ignore_class
    # The ignored entries' values are replaced, not multiplied by 0, so a NaN there stays out.
    values = sparse_categorical_crossentropy_formula(jnp.where(keep, labels, 0), y_pred, from_logits, axis)
    return jnp.where(keep, values, jnp.zeros_like(values)), keep


def _check_ignore_class(ignore_class: Any, where: str) -> int | None:
    if ignore_class is None:
        return None
    if isinstance(ignore_class, (bool, np.bool_)) or not isinstance(ignore_class, (int, np.integer)):
        raise TypeError(
            f"{where}: ignore_class must be an int or None, received {ignore_class!r} of type "
            f"{type(ignore_class).__name__}."
        )
    return int(ignore_class)


def binary_crossentropy(
    y_true: Any, y_pred: Any, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1
) -> jax.Array:
    """The binary cross-entropy averaged over `axis`, one value per sample, in float32.

    Args:
      y_true: labels in `[0, 1]`, of `y_pred`'s shape (a trailing axis of size 1 on one side is matched).
      y_pred: probabilities, or logits if `from_logits`.
      from_logits: whether `y_pred` holds logits.
      label_smoothing: in `[0, 1]`; labels become `y * (1 - label_smoothing) + 0.5 * label_smoothing`.
      axis: the axis averaged over.

    Example:
      >>> binary_crossentropy(jnp.array([[0.0, 1.0], [0.0, 0.0]]), jnp.array([[0.6, 0.4], [0.4, 0.6]]))
      Array([0.91629076, 0.7135582 ], dtype=float32)
    """
    where = "losses.binary_crossentropy"
    from_logits = check_bool(from_logits, where, "from_logits")
    label_smoothing = check_label_smoothing(label_smoothing, where)
    return _bce(y_true, y_pred, from_logits, label_smoothing, check_axis(axis, where), where)


def categorical_crossentropy(
    y_true: Any, y_pred: Any, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1
) -> jax.Array:
    """`-sum(y_true * log p)` along `axis`, one value per sample, in float32.

    Args:
      y_true: one-hot (or soft) labels of `y_pred`'s shape.
      y_pred: probabilities (renormalized to sum to 1 along `axis`), or logits if `from_logits`.
      from_logits: whether `y_pred` holds logits.
      label_smoothing: in `[0, 1]`; labels become `y * (1 - label_smoothing) + label_smoothing / num_classes`.
      axis: the class axis.

    Example:
      >>> categorical_crossentropy(jnp.array([[0.0, 1.0, 0.0]]), jnp.array([[0.05, 0.95, 0.0]]))
      Array([0.05129331], dtype=float32)
    """
    where = "losses.categorical_crossentropy"
    from_logits = check_bool(from_logits, where, "from_logits")
    label_smoothing = check_label_smoothing(label_smoothing, where)
    return _cce(y_true, y_pred, from_logits, label_smoothing, check_axis(axis, where), where)


def sparse_categorical_crossentropy(
    y_true: Any, y_pred: Any, from_logits: bool = False, ignore_class: int | None = None, axis: int = -1
) -> jax.Array:
    """`-log p[y_true]` along `axis`, one value per sample, in float32.

    Args:
      y_true: integer class ids of `y_pred`'s shape without `axis` (a size-1 axis in its place, or
        trailing, is dropped). Floats are cast to int32, as in Keras. An id outside
        `[0, num_classes)` gives 0.
      y_pred: probabilities (renormalized along `axis`), or logits if `from_logits`.
      from_logits: whether `y_pred` holds logits.
      ignore_class: a class id whose entries give 0 (the class losses also leave them out of the mean).
      axis: the class axis.

    Example:
      >>> sparse_categorical_crossentropy(jnp.array([1, 2]), jnp.array([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]]))
      Array([0.05129331, 2.3025851 ], dtype=float32)
    """
    where = "losses.sparse_categorical_crossentropy"
    from_logits = check_bool(from_logits, where, "from_logits")
    ignore_class = _check_ignore_class(ignore_class, where)
    return _scce(y_true, y_pred, from_logits, ignore_class, check_axis(axis, where), where)[0]


class _SmoothedCrossentropy(Loss):
    """The arguments, checks and config that the binary and categorical cross-entropies share.

    A subclass names its per-sample formula (`_formula`: `_bce` or `_cce`).
    """

    _formula: Any

    def __init__(
        self, from_logits: bool, label_smoothing: float, axis: int, reduction: str | None, name: str | None
    ) -> None:
        super().__init__(name=name, reduction=reduction)
        where = type(self).__name__
        self.from_logits = check_bool(from_logits, where, "from_logits")
        self.label_smoothing = check_label_smoothing(label_smoothing, where)
        self.axis = check_axis(axis, where)

    def call(self, y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
        """Returns the per-sample cross-entropy of this loss's kind, with its arguments."""
        return type(self)._formula(
            y_true, y_pred, self.from_logits, self.label_smoothing, self.axis, type(self).__name__
        )

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        config = {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing, "axis": self.axis}
        return {**super().get_config(), **config}


class BinaryCrossentropy(_SmoothedCrossentropy):
    """Binary cross-entropy for 0/1 (or soft) labels, reduced over the batch.

    Args:
      from_logits: whether `y_pred` holds logits (recommended: more accurate) or probabilities.
      label_smoothing: in `[0, 1]`; squeezes the labels towards 0.5.
      axis: the axis averaged over per sample.
      reduction: see `Loss`; defaults to `"sum_over_batch_size"`.
      name: defaults to `"binary_crossentropy"`.

    Example:
      >>> bce = BinaryCrossentropy(from_logits=True)
      >>> bce(jnp.array([[0.0, 1.0], [0.0, 0.0]]), jnp.array([[-18.6, 0.51], [2.94, -12.8]]))
      Array(0.865458, dtype=float32)
    """

    _formula = staticmethod(_bce)

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = "binary_crossentropy",
    ) -> None:
        super().__init__(from_logits, label_smoothing, axis, reduction, name)


class CategoricalCrossentropy(_SmoothedCrossentropy):
    """Cross-entropy for one-hot (or soft) labels, reduced over the batch.

    Args:
      from_logits: whether `y_pred` holds logits (recommended) or probabilities.
      label_smoothing: in `[0, 1]`; moves that share of each label's mass to a uniform distribution.
      axis: the class axis.
      reduction: see `Loss`; defaults to `"sum_over_batch_size"`.
      name: defaults to `"categorical_crossentropy"`.

    Example:
      >>> cce = CategoricalCrossentropy()
      >>> y_true = jnp.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
      >>> cce(y_true, jnp.array([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]]), sample_weight=jnp.array([0.3, 0.7]))
      Array(0.8135988, dtype=float32)
    """

    _formula = staticmethod(_cce)

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = "categorical_crossentropy",
    ) -> None:
        super().__init__(from_logits, label_smoothing, axis, reduction, name)


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy for integer class ids, reduced over the batch.

    Args:
      from_logits: whether `y_pred` holds logits (recommended) or probabilities.
      ignore_class: a class id (such as a padding id) whose entries count neither in the sum nor in
        the number of entries `"sum_over_batch_size"` divides by, as in Keras.
      reduction: see `Loss`; defaults to `"sum_over_batch_size"`.
      axis: the class axis.
      name: defaults to `"sparse_categorical_crossentropy"`.

    Example:
      >>> scce = SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
      >>> logits = jnp.array([[[2.0, 0.0], [0.0, 0.0]]])  # one sequence of two steps
      >>> scce(jnp.array([[0, -1]]), logits)  # the padded step is left out of the mean
      Array(0.12692805, dtype=float32)
    """

    _cast_targets = False

    def __init__(
        self,
        from_logits: bool = False,
        ignore_class: int | None = None,
        reduction: str | None = "sum_over_batch_size",
        axis: int = -1,
        name: str | None = "sparse_categorical_crossentropy",
    ) -> None:
        super().__init__(name=name, reduction=reduction)
        self.from_logits = check_bool(from_logits, "SparseCategoricalCrossentropy", "from_logits")
        self.ignore_class = _check_ignore_class(ignore_class, "SparseCategoricalCrossentropy")
        self.axis = check_axis(axis, "SparseCategoricalCrossentropy")

    def _values(self, y_true: jax.Array, y_pred: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        return _scce(y_true, y_pred, self.from_logits, self.ignore_class, self.axis, type(self).__name__)

    def call(self, y_true: jax.Array, y_pred: jax.Array) -> jax.Array:
        """Returns `sparse_categorical_crossentropy(y_true, y_pred, ...)` with this loss's arguments."""
        return self._values(y_true, y_pred)[0]

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        config = {"from_logits": self.from_logits, "ignore_class": self.ignore_class, "axis": self.axis}
        return {**super().get_config(), **config}
