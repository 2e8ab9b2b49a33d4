"""More `keras.ops` names for `layers.ops`: cross-entropies, `in_top_k`, `psnr` and `sparsemax`.

Same names, argument names and defaults as Keras 3; every array argument may be a `Variable`,
read through autocast. These are reductions, so they compute in float32 (float64 stays float64)
and cast the result back once to the predictions' floating dtype.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from layers._keras_nn_ops import EPSILON
from layers._keras_ops import _array, _floating, _wide

__all__ = [
    "binary_crossentropy",
    "categorical_crossentropy",
    "in_top_k",
    "psnr",
    "sparse_categorical_crossentropy",
    "sparsemax",
]

# Keras' backend.epsilon() (one constant for all ops): probabilities are clipped to
# [EPSILON, 1 - EPSILON] before the log.


def _bool(value: Any, function: str, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"ops.{function}: {name} must be a bool, received {value!r}.")
    return bool(value)


def _axis(axis: Any, ndim: int, shape: tuple, function: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"ops.{function}: axis {axis!r} is out of range for inputs of shape {shape}.")
    return int(axis) % ndim


def _log_probabilities(output: jax.Array, from_logits: bool, axis: int) -> jax.Array:
    if from_logits:
        return jax.nn.log_softmax(output, axis=axis)
    # Keras renormalizes the probabilities and clips them away from 0 and 1 before the log.
    output = output / jnp.sum(output, axis=axis, keepdims=True)
    return jnp.log(jnp.clip(output, EPSILON, 1.0 - EPSILON))


# The formulas, on checked arrays, in the dtype of `output` (the ops pass it widened to float32 and
# cast the result back; `layers.losses` keeps the float32 result).


def binary_crossentropy_formula(target: jax.Array, output: jax.Array, from_logits: bool) -> jax.Array:
    """Elementwise binary cross-entropy of `output` (probabilities or logits), in `output`'s dtype."""
    target = target.astype(output.dtype)
    if from_logits:
        return -target * jax.nn.log_sigmoid(output) - (1 - target) * jax.nn.log_sigmoid(-output)
    p = jnp.clip(output, EPSILON, 1.0 - EPSILON)
    return -(target * jnp.log(p) + (1 - target) * jnp.log1p(-p))


def categorical_crossentropy_formula(target: jax.Array, output: jax.Array, from_logits: bool, axis: int) -> jax.Array:
    """`-sum(target * log p)` along a non-negative `axis`, in `output`'s dtype."""
    log_p = _log_probabilities(output, from_logits, axis)
    return -jnp.sum(target.astype(output.dtype) * log_p, axis=axis)


def sparse_categorical_crossentropy_formula(
    target: jax.Array, output: jax.Array, from_logits: bool, axis: int
) -> jax.Array:
    """`-log p[target]` along a non-negative `axis`, in `output`'s dtype.

    `target` holds integer class ids, of `output`'s shape without `axis`; one outside `[0, num_classes)` gives 0.
    """
    log_p = _log_probabilities(output, from_logits, axis)
    one_hot = jax.nn.one_hot(target, output.shape[axis], dtype=output.dtype, axis=axis)
    return -jnp.sum(one_hot * log_p, axis=axis)


def _same_shapes(target: jax.Array, output: jax.Array, function: str) -> None:
    if target.shape != output.shape:
        raise ValueError(
            f"ops.{function}: target and output must have the same shape, received target.shape={target.shape}, "
            f"output.shape={output.shape}."
        )


def binary_crossentropy(target: Any, output: Any, from_logits: bool = False) -> jax.Array:
    """Elementwise `-(t log p + (1 - t) log(1 - p))`, `p` clipped to `[1e-7, 1 - 1e-7]` (or from logits).

    Example:
      >>> from layers import ops
      >>> ops.binary_crossentropy(jnp.array([1.0, 0.0]), jnp.array([0.0, 0.0]), from_logits=True)
      Array([0.6931472, 0.6931472], dtype=float32)
    """
    from_logits = _bool(from_logits, "binary_crossentropy", "from_logits")
    predictions = _floating(output, "binary_crossentropy")
    labels = _array(target, "binary_crossentropy")
    _same_shapes(labels, predictions, "binary_crossentropy")
    return binary_crossentropy_formula(labels, _wide(predictions), from_logits).astype(predictions.dtype)


def categorical_crossentropy(target: Any, output: Any, from_logits: bool = False, axis: int = -1) -> jax.Array:
    """`-sum(target * log(p))` along `axis`, for one-hot (or soft) targets of `output`'s shape.

    Without `from_logits`, `output` is renormalized to sum to 1 and clipped to `[1e-7, 1 - 1e-7]`.

    Example:
      >>> from layers import ops
      >>> ops.categorical_crossentropy(jnp.array([[0.0, 1.0]]), jnp.array([[0.5, 0.5]]))
      Array([0.6931472], dtype=float32)
    """
    from_logits = _bool(from_logits, "categorical_crossentropy", "from_logits")
    predictions = _floating(output, "categorical_crossentropy")
    labels = _array(target, "categorical_crossentropy")
    _same_shapes(labels, predictions, "categorical_crossentropy")
    if predictions.ndim < 1:
        raise ValueError(
            f"ops.categorical_crossentropy: output must have rank >= 1, received shape {predictions.shape}."
        )
    axis = _axis(axis, predictions.ndim, predictions.shape, "categorical_crossentropy")
    return categorical_crossentropy_formula(labels, _wide(predictions), from_logits, axis).astype(predictions.dtype)


def sparse_categorical_crossentropy(target: Any, output: Any, from_logits: bool = False, axis: int = -1) -> jax.Array:
    """`-log(p[target])` along `axis`, for integer class targets (a trailing size-1 axis is dropped).

    A target outside `[0, num_classes)` contributes 0, as in Keras' JAX backend.

    Example:
      >>> from layers import ops
      >>> ops.sparse_categorical_crossentropy(jnp.array([1]), jnp.array([[0.5, 0.5]]))
      Array([0.6931472], dtype=float32)
    """
    from_logits = _bool(from_logits, "sparse_categorical_crossentropy", "from_logits")
    predictions = _floating(output, "sparse_categorical_crossentropy")
    labels = _array(target, "sparse_categorical_crossentropy")
    if predictions.ndim < 1:
        raise ValueError(
            f"ops.sparse_categorical_crossentropy: output must have rank >= 1, received shape {predictions.shape}."
        )
    axis = _axis(axis, predictions.ndim, predictions.shape, "sparse_categorical_crossentropy")
    if not (jnp.issubdtype(labels.dtype, jnp.integer) or jnp.issubdtype(labels.dtype, jnp.bool_)):
        raise TypeError(
            f"ops.sparse_categorical_crossentropy: target must hold integer class ids, received dtype {labels.dtype}."
        )
    if labels.ndim == predictions.ndim and labels.shape[-1] == 1:
        labels = jnp.squeeze(labels, axis=-1)
    expected = predictions.shape[:axis] + predictions.shape[axis + 1 :]
    if labels.shape != expected:
        raise ValueError(
            f"ops.sparse_categorical_crossentropy: target of shape {labels.shape} does not match output of shape "
            f"{predictions.shape} without its class axis {axis}; expected {expected}."
        )
    return sparse_categorical_crossentropy_formula(labels, _wide(predictions), from_logits, axis).astype(
        predictions.dtype
    )


def in_top_k(targets: Any, predictions: Any, k: int) -> jax.Array:
    """Whether each `targets[i]` is among the `k` largest of `predictions[i]`.

    Ties with the target's score count as in; a NaN score ranks below every number.

    Example:
      >>> from layers import ops
      >>> ops.in_top_k(jnp.array([0, 2]), jnp.array([[0.1, 0.9, 0.0], [0.2, 0.3, 0.5]]), 1)
      Array([False,  True], dtype=bool)
    """
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"ops.in_top_k: k must be a positive int, received {k!r}.")
    scores = _array(predictions, "in_top_k")
    labels = _array(targets, "in_top_k")
    if not jnp.issubdtype(labels.dtype, jnp.integer) or scores.ndim < 1 or labels.shape != scores.shape[:-1]:
        raise ValueError(
            f"ops.in_top_k: expected integer targets of shape predictions.shape[:-1], received targets of shape "
            f"{labels.shape} and dtype {labels.dtype} for predictions of shape {scores.shape}."
        )
    at_label = jnp.take_along_axis(scores, labels[..., None], axis=-1)
    at_label = jnp.where(jnp.isnan(at_label), -jnp.inf, at_label)  # a NaN score ranks last
    rank = 1 + jnp.sum(scores > at_label, axis=-1)
    return rank <= k


def psnr(x1: Any, x2: Any, max_val: Any) -> jax.Array:
    """Peak signal-to-noise ratio `20 log10(max_val) - 10 log10(mean((x1 - x2)**2))`, in float32.

    Example:
      >>> from layers import ops
      >>> ops.psnr(jnp.zeros(4), jnp.full(4, 0.1), 1.0)
      Array(20., dtype=float32)
    """
    a, b = _floating(x1, "psnr"), _floating(x2, "psnr")
    if a.shape != b.shape:
        raise ValueError(f"ops.psnr: x1 and x2 must have the same shape, received {a.shape} and {b.shape}.")
    wide_a, wide_b = _wide(a), _wide(b).astype(_wide(a).dtype)
    peak = _array(max_val, "psnr").astype(wide_a.dtype)
    mse = jnp.mean(jnp.square(wide_a - wide_b))
    return (20 * jnp.log10(peak) - 10 * jnp.log10(mse)).astype(a.dtype)


def sparsemax(x: Any, axis: int = -1) -> jax.Array:
    """The Euclidean projection of `x` onto the probability simplex along `axis` (sparse softmax).

    Computed in float32 and cast back to the input dtype.

    Example:
      >>> from layers import ops
      >>> ops.sparsemax(jnp.array([1.0, 0.0, -3.0]))
      Array([1., 0., 0.], dtype=float32)
    """
    array = _floating(x, "sparsemax")
    if array.ndim < 1:
        raise ValueError(f"ops.sparsemax needs an array of rank >= 1, received shape {array.shape}.")
    axis = _axis(axis, array.ndim, array.shape, "sparsemax")
    wide = jnp.moveaxis(_wide(array), axis, -1)
    ordered = -jnp.sort(-wide, axis=-1)
    ranks = jnp.arange(1, wide.shape[-1] + 1, dtype=wide.dtype)
    cumulative = jnp.cumsum(ordered, axis=-1)
    # The support is the largest k with 1 + k * z_(k) > sum_{j <= k} z_(j).
    support = 1 + ranks * ordered > cumulative
    size = jnp.sum(support, axis=-1, keepdims=True)
    tau = (jnp.take_along_axis(cumulative, size - 1, axis=-1) - 1) / size.astype(wide.dtype)
    out = jnp.maximum(wide - tau, 0)
    return jnp.moveaxis(out, -1, axis).astype(array.dtype)
