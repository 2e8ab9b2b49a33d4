"""Constructor-argument checks and weight-argument plumbing shared by the built-in layers.

Checks take the value and `what`, the argument as the message should name it (`"Dense units"`,
`"BatchNormalization: momentum"`), and return the value as a plain Python `int`, `float` or
`bool`, so that configs stay JSON-serializable. A rejected value raises with `what`, the
expectation and the value received.

A weight `<prefix>` (`"kernel"`, `"gamma"`, ...) has three arguments, `<prefix>_initializer`,
`<prefix>_regularizer` and `<prefix>_constraint`: `set_weight_arguments` resolves them into
attributes of the layer of the same names and `weight_arguments_config` serializes them back.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from layers import constraints, initializers, regularizers
from layers._base._layer import Layer

__all__ = [
    "check_bool",
    "check_int",
    "check_positive_int",
    "check_real",
    "set_weight_arguments",
    "weight_arguments_config",
]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _type_name(value: Any) -> str:
    return type(value).__name__


def check_int(value: Any, what: str) -> int:
    """Returns `value` as an int.

    Raises:
      TypeError: `value` is not a Python or NumPy integer (bools are not integers here).
    """
    if not _is_int(value):
        raise TypeError(f"{what} must be an int, received {value!r} of type {_type_name(value)}.")
    return int(value)


def check_positive_int(value: Any, what: str) -> int:
    """Returns `value` as an int.

    Raises:
      ValueError: `value` is not an integer >= 1 (bools and floats such as `2.0` included).
    """
    if not _is_int(value) or value < 1:
        raise ValueError(f"{what} must be a positive int, received {value!r}.")
    return int(value)


def check_real(value: Any, what: str, low: float, high: float = math.inf) -> float:
    """Returns `value` as a float.

    Args:
      value: the argument to check.
      what: the argument as the error message names it.
      low: the smallest value accepted.
      high: the largest value accepted; without it, any finite value >= `low`.

    Raises:
      TypeError: `value` is not an int or a float (bools are not numbers here).
      ValueError: `value` is not finite or lies outside `[low, high]`.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a real number, received {value!r} of type {_type_name(value)}.")
    if not (math.isfinite(value) and low <= value <= high):
        bounds = f"in [{low}, {high}]" if math.isfinite(high) else f"finite and >= {low}"
        raise ValueError(f"{what} must be {bounds}, received {value!r}.")
    return float(value)


def check_bool(value: Any, what: str) -> bool:
    """Returns `value` as a bool.

    Raises:
      TypeError: `value` is neither a Python bool nor a NumPy bool (`0` and `1` included).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be a bool, received {value!r} of type {_type_name(value)}.")
    return bool(value)


def set_weight_arguments(layer: Layer, prefix: str, initializer: Any, regularizer: Any, constraint: Any) -> None:
    """Resolves and stores `layer.<prefix>_initializer`, `_regularizer` and `_constraint`.

    Args:
      layer: the layer being constructed.
      prefix: the weight's name in the argument names, such as `"kernel"`.
      initializer: a name, an `Initializer` or a config dict.
      regularizer: None, a name, a `Regularizer` or a config dict.
      constraint: None, a name, a `Constraint` or a config dict.

    Raises:
      ValueError: a name is unknown.
      TypeError: an argument has the wrong type.
    """
    setattr(layer, f"{prefix}_initializer", initializers.get(initializer))
    setattr(layer, f"{prefix}_regularizer", regularizers.get(regularizer))
    setattr(layer, f"{prefix}_constraint", constraints.get(constraint))


def weight_arguments_config(layer: Layer, *prefixes: str) -> dict[str, Any]:
    """The weight arguments of `layer` for `prefixes`, serialized for JSON.

    Keys come as in Keras configs: every initializer, then every regularizer, then every
    constraint, each group in the order of `prefixes`. An unset regularizer or constraint is None.

    Example:
      >>> from layers import Dense
      >>> from layers._builtin._arguments import weight_arguments_config
      >>> config = weight_arguments_config(Dense(2, kernel_regularizer="l2"), "kernel")
      >>> config["kernel_initializer"]["class_name"], config["kernel_constraint"]
      ('GlorotUniform', None)
    """
    config: dict[str, Any] = {}
    for prefix in prefixes:
        config[f"{prefix}_initializer"] = initializers.serialize(getattr(layer, f"{prefix}_initializer"))
    for kind, serialize in (("regularizer", regularizers.serialize), ("constraint", constraints.serialize)):
        for prefix in prefixes:
            value = getattr(layer, f"{prefix}_{kind}")
            config[f"{prefix}_{kind}"] = None if value is None else serialize(value)
    return config
