"""Output shapes and signatures: from an overridden `compute_output_shape`, else by tracing the call."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dtypepolicy._dtypes import is_float

# Two different stand-ins for unknown dimensions: an output dimension that differs between
# the two traces depends on an unknown input dimension and is reported as None.
_STAND_INS = (2, 3)


def is_shape(value: Any) -> bool:
    """Whether `value` is one shape: a tuple or list of non-negative ints and Nones."""
    return isinstance(value, (tuple, list)) and all(
        d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in value
    )


def _map_shapes(function: Any, structure: Any) -> Any:
    if is_shape(structure):
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


def _is_struct_nest(value: Any) -> bool:
    leaves = jax.tree.leaves(value)
    return bool(leaves) and all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)


def _check_signature(args: tuple, kwargs: dict) -> None:
    """Positional inputs are nests of ShapeDtypeStructs; keywords are those or plain Python values."""
    for value in args:
        if not _is_struct_nest(value):
            bad = [leaf for leaf in jax.tree.leaves(value) if not isinstance(leaf, jax.ShapeDtypeStruct)]
            raise TypeError(
                f"compute_output_signature expects jax.ShapeDtypeStruct inputs (or nests of them), "
                f"received {bad[0] if bad else value!r}."
            )
    for name, value in kwargs.items():
        if not (value is None or isinstance(value, (bool, int, float, str)) or _is_struct_nest(value)):
            raise TypeError(
                f"compute_output_signature: keyword argument {name}= must be jax.ShapeDtypeStructs (or nests of "
                f"them) or a plain Python value, received {value!r}."
            )


def overrides_compute_output_shape(layer: Any) -> bool:
    """Whether the layer's class defines its own `compute_output_shape`."""
    from layers._base._layer import Layer

    return type(layer).compute_output_shape is not Layer.compute_output_shape


def _shape_arguments(layer: Any, args: tuple, kwargs: dict) -> tuple | None:
    """Shapes for `compute_output_shape`, matched to its parameters as `build`'s are; None if it cannot see them.

    Plain (non-tensor) keyword arguments such as `return_attention_scores=True` may change the
    outputs in ways a shape function cannot see: then the call is traced instead.
    """
    if any(not _is_struct_nest(value) for value in kwargs.values()):
        return None
    from layers._base import _call_pipeline

    return _call_pipeline.parameter_shapes(layer, type(layer).compute_output_shape, args, kwargs)


def _from_output_shape(layer: Any, shape_arguments: tuple) -> Any:
    """ShapeDtypeStructs from `layer.compute_output_shape`, in the dtype the policy outputs; None if unknown dims."""
    policy = layer.dtype_policy
    dtype = jnp.dtype(policy.output_dtype or policy.compute_dtype)
    output_shape = layer.compute_output_shape(*shape_arguments)
    known = jax.tree.leaves(_map_shapes(lambda shape: all(d is not None for d in shape), output_shape))
    if not all(known):
        return None  # ShapeDtypeStructs need every dimension: let the trace find them
    return _map_shapes(lambda shape: jax.ShapeDtypeStruct(shape, dtype), output_shape)


def _traced(layer: Any, args: tuple, kwargs: dict) -> Any:
    """Builds the layer if needed and traces `stateless_call` with `jax.eval_shape`."""
    if not layer.built:
        from layers._base import _call_pipeline

        _call_pipeline.build_from_arguments(layer, args, kwargs)
    trainable, non_trainable = _current_values(layer)
    structs = {name: value for name, value in kwargs.items() if _is_struct_nest(value)}
    static = {name: value for name, value in kwargs.items() if name not in structs}
    return jax.eval_shape(
        lambda a, k: layer.stateless_call(trainable, non_trainable, *a, **k, **static)[0], args, structs
    )


def compute_output_signature(layer: Any, args: tuple, kwargs: dict) -> Any:
    """Output ShapeDtypeStructs for the call arguments' ShapeDtypeStructs, without changing the layer's values.

    A layer whose class overrides `compute_output_shape` is answered from it, without tracing
    or building; others are built if needed and traced.
    """
    args = tuple(args)
    if not args:
        raise TypeError("compute_output_signature expects at least one input (a jax.ShapeDtypeStruct or a nest).")
    _check_signature(args, kwargs)
    if overrides_compute_output_shape(layer):
        shape_arguments = _shape_arguments(layer, args, kwargs)
        if shape_arguments is not None:
            signature = _from_output_shape(layer, shape_arguments)
            if signature is not None:
                return signature
    return _traced(layer, args, kwargs)


def compute_output_shape(layer: Any, input_shape: Any) -> Any:
    """Output shape(s) for input shape(s), by tracing; None marks dimensions that follow unknown inputs."""
    _map_shapes(lambda shape: shape, input_shape)  # validates before anything is built
    dtype = layer.input_dtype if is_float(layer.input_dtype) else "float32"
    if not layer.built:
        layer.build(_map_shapes(lambda shape: shape, input_shape))
    # Traced directly, not through compute_output_signature: a subclass's compute_output_shape
    # calling super() must not be called back.
    first, second = (_traced(layer, (_signature_for(input_shape, dtype, stand_in),), {}) for stand_in in _STAND_INS)
    return jax.tree.map(
        lambda a, b: tuple(x if x == y else None for x, y in zip(a.shape, b.shape, strict=True)), first, second
    )
