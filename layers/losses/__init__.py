"""Losses with Keras 3 names and semantics, computed in float32.

Each loss is a class, whose instance is a callable `loss(y_true, y_pred, sample_weight=None)`
returning the reduced loss, and a function returning one value per sample. Both compute in
float32 from 8/16/32-bit predictions (float64 stays float64) and return float32: a bfloat16
log-softmax rounds small losses to 0, and a bfloat16 mean over a batch loses the small terms.

Example:
  >>> from layers import losses
  >>> loss = losses.SparseCategoricalCrossentropy(from_logits=True)
  >>> loss(jnp.array([0, 1]), jnp.array([[8.0, 0.0], [0.0, 8.0]], "bfloat16"))
  Array(0.0003354, dtype=float32)
  >>> losses.get("mse")(jnp.zeros((2, 3)), jnp.ones((2, 3)))
  Array([1., 1.], dtype=float32)
"""

from layers.losses._base import REDUCTIONS, Loss
from layers.losses._lookup import deserialize, get, serialize
from layers.losses._probabilistic import (
    BinaryCrossentropy,
    CategoricalCrossentropy,
    SparseCategoricalCrossentropy,
    binary_crossentropy,
    categorical_crossentropy,
    sparse_categorical_crossentropy,
)
from layers.losses._regression import (
    Huber,
    MeanAbsoluteError,
    MeanSquaredError,
    huber,
    mean_absolute_error,
    mean_squared_error,
)

# Keras' short names for the functions.
mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
bce = BCE = binary_crossentropy

__all__ = [
    "BCE",
    "MAE",
    "MSE",
    "REDUCTIONS",
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "Huber",
    "Loss",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "SparseCategoricalCrossentropy",
    "bce",
    "binary_crossentropy",
    "categorical_crossentropy",
    "deserialize",
    "get",
    "huber",
    "mae",
    "mean_absolute_error",
    "mean_squared_error",
    "mse",
    "serialize",
    "sparse_categorical_crossentropy",
]
