"""Output shapes and signatures, found by tracing the call with `jax.eval_shape`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dtypepolicy._dtypes import is_float

# Two different stand-ins for unknown dimensions: an output dimension that differs between
# the two traces depends on an unknown input dimension and is reported as None.
_STAND_INS = (2, 3)


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(d is None or (isinstance(d, int) and d >= 0) for d in value)


def _map_shapes(function: Any, structure: Any) -> Any:
    if _is_shape(structure):
        return function(tuple(structure))
    if isinstance(structure, dict):
        return {key: _map_shapes(function, value) for key, value in structure.items()}
    if isinstance(structure, (list, tuple)):
        return type(structure)(_map_shapes(function, value) for value in structure)
    raise ValueError(f"Expected a shape tuple (ints or None) or a list/dict of them, received {structure!r}.")


def _signature_for(input_shape: Any, dtype: str, stand_in: int) -> Any:
    return _map_shapes(
        lambda shape: jax.ShapeDtypeStruct(tuple(stand_in if d is None else d for d in shape), jnp.dtype(dtype)),
        input_shape,
    )


def _current_values(layer: Any) -> tuple[list, list]:
    return (
        [v._read_storage() for v in layer.trainable_variables],
        [v._read_storage() for v in layer.non_trainable_variables],
    )


def compute_output_signature(layer: Any, input_signature: Any) -> Any:
    """Output ShapeDtypeStructs for input ShapeDtypeStructs, without changing the layer."""
    leaves = jax.tree.leaves(input_signature)
    bad = [leaf for leaf in leaves if not isinstance(leaf, jax.ShapeDtypeStruct)]
    if not leaves or bad:
        raise TypeError(
            f"compute_output_signature expects jax.ShapeDtypeStruct inputs (or nests of them), "
            f"received {bad[0] if bad else input_signature!r}."
        )
    if not layer.built:
        from layers import _call_pipeline

        _call_pipeline.build_from_arguments(layer, (input_signature,), {})
    trainable, non_trainable = _current_values(layer)
    return jax.eval_shape(lambda x: layer.stateless_call(trainable, non_trainable, x)[0], input_signature)


def compute_output_shape(layer: Any, input_shape: Any) -> Any:
    """Output shape(s) for input shape(s); None marks dimensions that follow unknown inputs."""
    _map_shapes(lambda shape: shape, input_shape)  # validates before anything is built
    dtype = layer.input_dtype if is_float(layer.input_dtype) else "float32"
    if not layer.built:
        layer.build(_map_shapes(lambda shape: shape, input_shape))
    first, second = (
        compute_output_signature(layer, _signature_for(input_shape, dtype, stand_in)) for stand_in in _STAND_INS
    )
    return jax.tree.map(
        lambda a, b: tuple(x if x == y else None for x, y in zip(a.shape, b.shape, strict=True)), first, second
    )
