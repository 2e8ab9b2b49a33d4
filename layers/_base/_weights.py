"""Checks behind `Layer.add_weight` and `Layer.set_weights`, kept out of the Layer class."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dtypepolicy import Variable
from layers._base._inputs import short_repr


def shape_first(add_weight: Callable) -> Callable:
    """Gives `add_weight("kernel", shape=...)` (the tf.keras order) a clear `TypeError`.

    Keras 3 takes the shape first; a string there would otherwise end as Python's "got
    multiple values for argument 'shape'" or as a shape made of characters.
    """

    @functools.wraps(add_weight)
    def checked(layer: Any, *args: Any, **kwargs: Any) -> Any:
        shape = args[0] if args else kwargs.get("shape")
        if isinstance(shape, str):
            raise TypeError(
                f"add_weight() takes the shape first, as in Keras 3: add_weight(shape=None, initializer=None, ..., "
                f"name=None); layer {layer.name!r} received the string {shape!r} as the shape. Pass the name by "
                f"keyword: add_weight(name={shape!r}, shape=...)."
            )
        return add_weight(layer, *args, **kwargs)

    return checked


def _convert(layer_name: str, index: int, variable: Any, value: Any) -> jax.Array:
    where = f"Layer {layer_name!r}: the value at index {index} of set_weights (for weight {variable.path!r})"
    if isinstance(value, Variable):
        array = value._read_storage()
    elif isinstance(value, jax.Array):
        array = value
    else:
        try:
            host = np.asarray(value)
        except (TypeError, ValueError) as error:
            if isinstance(value, (list, tuple)):
                raise ValueError(
                    f"{where} is a ragged nested list, {short_repr(value)}: its sublists differ in length. "
                    f"Expected a rectangular array of shape {variable.shape}."
                ) from None
            raise ValueError(f"{where} cannot be converted to an array ({error}).") from None
        try:
            array = jnp.asarray(host)
        except TypeError:
            raise TypeError(
                f"{where} holds {host.dtype.type.__name__} values (dtype {host.dtype}), "
                f"{short_repr(value)}; expected numeric values (numbers, bools or a numeric array)."
            ) from None
    if tuple(array.shape) != variable.shape:
        raise ValueError(
            f"Layer {layer_name!r}: weight {variable.path!r} has shape {variable.shape}, but the value given "
            f"for it has shape {tuple(array.shape)}."
        )
    return array.astype(variable.dtype)


def check_set_weights(layer: Any, variables: list, weights: Any) -> list[jax.Array]:
    """Every value of `set_weights` converted to its variable's storage dtype, or an error.

    Everything is checked before anything is assigned, so a bad entry changes nothing.
    """
    if not isinstance(weights, (list, tuple)):
        raise TypeError(f"set_weights expects a list of arrays, received {type(weights).__name__}.")
    if len(weights) != len(variables):
        if not layer.built:
            raise ValueError(
                f"Layer {layer.name!r} is not built yet, so its weights do not exist (it has {len(variables)}, "
                f"received {len(weights)} arrays). Build it with layer.build(input_shape) or call it on example "
                f"data first, then call set_weights."
            )
        raise ValueError(
            f"Layer {layer.name!r} expects {len(variables)} weight arrays, received {len(weights)}. "
            f"Expected shapes: {[v.shape for v in variables]}."
        )
    return [
        _convert(layer.name, index, v, value) for index, (v, value) in enumerate(zip(variables, weights, strict=True))
    ]
