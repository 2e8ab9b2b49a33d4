"""`get`, `serialize` and `deserialize` for losses: Keras' names for the functions and the classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from layers._registry import Registry, did_you_mean
from layers.losses._base import Loss
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

__all__ = ["deserialize", "get", "serialize"]

# As in Keras: a function's name gives the per-sample function, a class name an instance.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "mean_squared_error": mean_squared_error,
    "mean_absolute_error": mean_absolute_error,
    "huber": huber,
    "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    # Keras' short aliases.
    "mse": mean_squared_error,
    "MSE": mean_squared_error,
    "mae": mean_absolute_error,
    "MAE": mean_absolute_error,
    "bce": binary_crossentropy,
    "BCE": binary_crossentropy,
}

_CLASSES = {
    "mean_squared_error": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}

_REGISTRY = Registry("loss", Loss, _CLASSES, example="mse")
_CLASS_NAMES = {cls.__name__: cls for cls in _CLASSES.values()}


def serialize(loss: Loss | Callable[..., Any]) -> dict[str, Any] | str:
    """Returns `{"class_name": ..., "config": ...}` for a `Loss`, or the name of a built-in loss function.

    Example:
      >>> from layers import losses
      >>> losses.serialize(losses.Huber(delta=2.0))["config"]
      {'name': 'huber_loss', 'reduction': 'sum_over_batch_size', 'delta': 2.0}
      >>> losses.serialize(losses.mse)
      'mean_squared_error'
    """
    if isinstance(loss, Loss):
        return _REGISTRY.serialize(loss)
    # Identity, not equality: the first name wins, so `mse` serializes as "mean_squared_error".
    name = next((name for name, fn in FUNCTIONS.items() if fn is loss), None)
    if name is None:
        raise TypeError(
            f"serialize expects a Loss or a built-in loss function ({', '.join(_CLASSES)}), received {loss!r} of "
            f"type {type(loss).__name__}."
        )
    return name


def deserialize(config: dict[str, Any] | str) -> Loss | Callable[..., Any]:
    """Rebuilds a loss from the output of `serialize`.

    Example:
      >>> from layers import losses
      >>> losses.deserialize({"class_name": "MeanSquaredError", "config": {"reduction": "sum"}}).reduction
      'sum'
    """
    if isinstance(config, str):
        return get(config)
    if not isinstance(config, dict):
        raise TypeError(f"deserialize expects a dict from serialize or a name, received {config!r}.")
    return _REGISTRY.deserialize(config)


def get(identifier: Any) -> Any:
    """Returns the loss an identifier stands for.

    Args:
      identifier: None (returned as None); a function name (`"mse"`, `"mean_squared_error"`,
        `"binary_crossentropy"`, ...), which gives the per-sample function as in Keras; a class
        name (`"MeanSquaredError"`), which gives an instance with the defaults; a `Loss` (returned
        as is); a dict from `serialize`; a `Loss` subclass (instantiated with its defaults); or any
        other callable (returned as is).

    Raises:
      ValueError: an unknown name or a malformed config dict.
      TypeError: anything else.

    Example:
      >>> from layers import losses
      >>> losses.get("mse") is losses.mean_squared_error
      True
      >>> losses.get("SparseCategoricalCrossentropy").from_logits
      False
    """
    if isinstance(identifier, str):
        if identifier in FUNCTIONS:
            return FUNCTIONS[identifier]
        if identifier in _CLASS_NAMES:
            return _CLASS_NAMES[identifier]()
        known = [*FUNCTIONS, *_CLASS_NAMES]
        raise ValueError(
            f"Unknown loss {identifier!r}. Expected a function name ({', '.join(FUNCTIONS)}) or a class name "
            f"({', '.join(_CLASS_NAMES)}).{did_you_mean(identifier, known)}"
        )
    return _REGISTRY.get(identifier)
