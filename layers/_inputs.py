"""Converting call arguments: NumPy to JAX, floating arrays to the layer's input dtype."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dtypepolicy import Variable
from dtypepolicy._dtypes import is_float

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
            leaf = leaf.value
        elif isinstance(leaf, _NUMPY):
            leaf = jnp.asarray(leaf)
        elif not isinstance(leaf, jax.Array):
            return leaf
        if dtype is not None and leaf.dtype != dtype and is_float(leaf.dtype):
            return leaf.astype(dtype)
        return leaf

    return jax.tree.map(convert, tree, is_leaf=_is_variable)


def cast_floating(tree: Any, dtype: str) -> Any:
    """Casts every floating JAX array in `tree` to `dtype`."""

    def cast(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and leaf.dtype != dtype and is_float(leaf.dtype):
            return leaf.astype(dtype)
        return leaf

    return jax.tree.map(cast, tree)


def convert_call_arguments(args: tuple, kwargs: dict, dtype: str | None) -> tuple[tuple, dict]:
    """`convert_inputs` for a call's arguments, with a fast path for plain JAX arrays."""
    if not kwargs and all(isinstance(arg, jax.Array) for arg in args):
        if dtype is None:
            return args, kwargs
        return tuple(a.astype(dtype) if a.dtype != dtype and is_float(a.dtype) else a for a in args), kwargs
    return convert_inputs((args, kwargs), dtype)


def check_positional(args: tuple, layer_name: str) -> None:
    """Positional arguments must be arrays (or nests of them), numbers or None."""
    if all(isinstance(arg, jax.Array) for arg in args):
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
