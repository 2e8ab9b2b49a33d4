"""Converting call arguments: NumPy to JAX, floating arrays to the layer's input dtype."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dtypepolicy import Variable
from dtypepolicy._dtypes import is_float
from layers._base._arrays import is_jax_array
from layers._base._masking import carry_mask

_NUMPY = (np.ndarray, np.generic)


def _is_variable(value: Any) -> bool:
    return isinstance(value, Variable)


def is_array_like(value: Any) -> bool:
    """Arrays of any kind that a layer may take as input."""
    return isinstance(value, (jax.Array, jax.ShapeDtypeStruct, Variable, *_NUMPY))


def convert_inputs(tree: Any, dtype: str | None) -> Any:
    """NumPy arrays and Variables become JAX arrays; floating arrays are cast to `dtype`.

    Integer and bool arrays keep their dtype and Python scalars are left alone. With
    `dtype=None` nothing is cast.
    """

    def convert(leaf: Any) -> Any:
        if isinstance(leaf, Variable):
            array = leaf.value
        elif isinstance(leaf, _NUMPY):
            array = carry_mask(leaf, jnp.asarray(leaf))
        elif is_jax_array(leaf):
            array = leaf
        else:
            return leaf
        if dtype is not None and array.dtype != dtype and is_float(array.dtype):
            return carry_mask(array, array.astype(dtype))
        return array

    return jax.tree.map(convert, tree, is_leaf=_is_variable)


def cast_floating(tree: Any, dtype: str) -> Any:
    """Casts every floating JAX array in `tree` to `dtype`."""

    def cast(leaf: Any) -> Any:
        if is_jax_array(leaf) and leaf.dtype != dtype and is_float(leaf.dtype):
            return carry_mask(leaf, leaf.astype(dtype))
        return leaf

    return jax.tree.map(cast, tree)


def all_arrays(args: tuple) -> bool:
    """Whether every positional argument is a JAX array (the common call, checked cheaply)."""
    if len(args) == 1:
        return is_jax_array(args[0])
    return all(is_jax_array(arg) for arg in args)


def convert_call_arguments(
    args: tuple, kwargs: dict, dtype: str | None, arrays_only: bool | None = None
) -> tuple[tuple, dict]:
    """`convert_inputs` for a call's arguments, with a fast path for plain JAX arrays.

    `arrays_only` is `all_arrays(args)` when the caller already knows it.
    """
    if arrays_only is None:
        arrays_only = all_arrays(args)
    if not kwargs and arrays_only:
        if dtype is None:
            return args, kwargs
        return tuple(
            carry_mask(a, a.astype(dtype)) if a.dtype != dtype and is_float(a.dtype) else a for a in args
        ), kwargs
    return convert_inputs((args, kwargs), dtype)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def convert_number_lists(args: tuple, layer_name: str) -> tuple:
    """Positional lists/tuples whose leaves are all Python numbers become NumPy arrays.

    A list holding arrays stays a list (multi-input layers take lists of arrays); only a nest
    of plain numbers is one array-like input, as Keras treats it. Its nesting must be
    rectangular.
    """
    converted = list(args)
    for index, arg in enumerate(args):
        if not isinstance(arg, (list, tuple)):
            continue
        leaves = jax.tree.leaves(arg)
        if not leaves or not all(map(_is_number, leaves)):
            continue
        try:
            converted[index] = np.asarray(arg)
        except ValueError:
            raise ValueError(
                f"Layer {layer_name!r}: positional argument {index} is a nested list of numbers with ragged "
                f"lengths, {short_repr(arg)}; a list of numbers is converted to one array, so its nesting must "
                f"be rectangular (every sublist at a depth of the same length)."
            ) from None
    return tuple(converted)


def short_repr(value: Any, limit: int = 120) -> str:
    """`repr(value)`, cut after `limit` characters, for error messages that name a received value."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def check_positional(args: tuple, layer_name: str) -> None:
    """Positional arguments must be arrays (or nests of them), numbers or None."""
    if all(is_jax_array(arg) for arg in args):
        return
    for leaf in jax.tree.leaves(args, is_leaf=_is_variable):
        if isinstance(leaf, (bool, np.bool_)) or not (is_array_like(leaf) or isinstance(leaf, (int, float))):
            raise TypeError(
                f"Only arrays (or nested lists/tuples/dicts of arrays) may be passed positionally to "
                f"layer {layer_name!r}; received {leaf!r} of type {type(leaf).__name__}. Pass it as a "
                f"keyword argument instead (e.g. training=True)."
            )


def shapes_of(tree: Any) -> Any:
    """The same structure with every array replaced by its shape tuple."""
    return jax.tree.map(lambda leaf: tuple(leaf.shape) if is_array_like(leaf) else leaf, tree, is_leaf=_is_variable)
