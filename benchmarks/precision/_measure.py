"""Measuring one model: building it under a policy, its output and gradients, and its float64 oracle."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import dtypepolicy as dp
from benchmarks.precision._policies import _quantization


def _float_weights(layer: Any) -> list[Any]:
    """The trainable float weights, in order; float8 scaling state (overwrite_with_gradient) left out."""
    return [
        v
        for v in layer.trainable_variables
        if jnp.issubdtype(np.dtype(v.dtype), jnp.floating) and not v.overwrite_with_gradient
    ]


def _relative_path(variable: Any) -> str:
    return variable.path.split("/", 1)[1] if "/" in variable.path else variable.path


def _assign(layer: Any, values: Sequence[np.ndarray], what: str) -> None:
    variables = _float_weights(layer)
    if len(variables) != len(values):
        raise ValueError(
            f"{what}: the model has {len(variables)} float trainable weights, received {len(values)} values."
        )
    for variable, value in zip(variables, values, strict=True):
        if tuple(variable.shape) != tuple(np.shape(value)):
            raise ValueError(
                f"{what}: weight {variable.path!r} has shape {tuple(variable.shape)}, received a value of shape "
                f"{tuple(np.shape(value))}."
            )
        variable.assign(np.asarray(value, np.float32))


def _built(build: Callable[[str], Any], policy: str, inputs: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    from layers import Layer

    layer = build(policy)
    if not isinstance(layer, Layer):
        raise TypeError(
            f"the model factory must return a layers.Layer for policy {policy!r}, received {layer!r} of type "
            f"{type(layer).__name__}."
        )
    if layer.dtype_policy != dp.get(policy):
        # Every row would measure the same model: errors of 0, a gate that can never fail.
        raise ValueError(
            f"the model factory ignored its policy: build({policy!r}) returned a layer whose policy is "
            f"{layer.dtype_policy.name!r}. Pass the policy on, e.g. `lambda policy: layers.Sequential([...], "
            f"dtype=policy)`."
        )
    # Abstract evaluation builds the layer (initial values are drawn on the host, so they are
    # concrete) without compiling its eager kernels: 0.06 s instead of 1.4 s for a TransformerBlock.
    # Without `training`: a training call would update state (BatchNormalization) inside the trace.
    building = {key: value for key, value in kwargs.items() if key != "training"}
    jax.eval_shape(lambda *args: layer(*args, **building), *inputs)
    return layer


def _is_float(array: Any) -> bool:
    return jnp.issubdtype(np.asarray(array).dtype, jnp.floating)


def _measure(
    build: Callable[[str], Any],
    policy: str,
    inputs: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    cotangent: np.ndarray,
    kwargs: Mapping[str, Any],
    forward_only: bool,
) -> dict[str, Any]:
    """The layer under `policy` with `weights`: its output and gradients (float64 NumPy), and how it rounds."""
    mode, source = _quantization(policy)
    if mode == "int8":  # an int8 layer is made from a float one (its constructor takes no float kernel)
        layer = _built(build, source, inputs, kwargs)
        _assign(layer, weights, policy)
        layer.quantize("int8")
    else:
        layer = _built(build, policy, inputs, kwargs)
        _assign(layer, weights, policy)
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    float_weights = {id(v) for v in _float_weights(layer)}
    weight_index = [i for i, v in enumerate(layer.trainable_variables) if id(v) in float_weights]
    input_index = [i for i, x in enumerate(inputs) if _is_float(x)]

    # Everything is an argument, nothing a constant: XLA would constant-fold an embedding's
    # scatter on constant ids, for seconds.
    def forward(values: list[Any], float_inputs: list[Any], others: list[Any]) -> Any:
        arguments = list(others)
        for i, x in zip(input_index, float_inputs, strict=True):
            arguments[i] = x
        out = layer.stateless_call(values, non_trainable, *arguments, **kwargs)[0]
        if not isinstance(out, jax.Array):
            raise TypeError(f"check needs a model that returns one array, received {type(out).__name__}.")
        return out

    def loss(values: list[Any], float_inputs: list[Any], others: list[Any], cot: Any) -> tuple[Any, Any]:
        out = forward(values, float_inputs, others)
        return jnp.sum(out.astype(jnp.float32) * cot), out

    float_inputs = [jnp.asarray(inputs[i]) for i in input_index]
    others = [None if i in input_index else jnp.asarray(x) for i, x in enumerate(inputs)]
    if forward_only:
        out = jax.jit(forward)(trainable, float_inputs, others)
        grads = None
    else:
        (_, out), (d_values, d_inputs) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
            trainable, float_inputs, others, jnp.asarray(cotangent)
        )
        grads = {"inputs": [np.asarray(g, np.float64) for g in d_inputs],
                 "weights": [np.asarray(d_values[i], np.float64) for i in weight_index]}  # fmt: skip
    return {
        "output": np.asarray(out, np.float64),
        "output_dtype": str(np.dtype(out.dtype)),
        "grads": grads,
        "weight_paths": [_relative_path(v) for v in _float_weights(layer)],
    }


def _oracle_from_float64_model(build: Callable[[str], Any], inputs: Sequence[np.ndarray], kwargs: Mapping[str, Any]):
    """The model under the float64 policy as a function (weights list, inputs) -> output; call inside enable_x64."""
    layer = _built(build, "float64", [np.asarray(x, np.float64) if _is_float(x) else x for x in inputs], kwargs)
    variables = layer.trainable_variables
    float_ids = [i for i, v in enumerate(variables) if id(v) in {id(f) for f in _float_weights(layer)}]
    values = [v.value for v in variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def oracle(weights: Sequence[Any], *arguments: Any) -> Any:
        full = list(values)
        for i, w in zip(float_ids, weights, strict=True):
            full[i] = w
        return layer.stateless_call(full, non_trainable, *arguments, **kwargs)[0]

    return oracle


def _exact_function(oracle: Callable[..., Any], inputs: Sequence[np.ndarray]) -> Callable[..., dict[str, Any]]:
    """`exact(weights, inputs, cotangent)`: the oracle's output and gradients in float64, compiled once.

    Call it inside `jax.enable_x64`; the floor's call on rounded values reuses the compilation.
    """
    input_index = [i for i, x in enumerate(inputs) if _is_float(x)]

    def loss(w: list[Any], float_inputs: list[Any], others: list[Any], cot: Any) -> tuple[Any, Any]:
        arguments = list(others)
        for i, x in zip(input_index, float_inputs, strict=True):
            arguments[i] = x
        out = oracle(w, *arguments)
        return jnp.sum(out * cot), out

    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))

    def exact(weights: Sequence[np.ndarray], values: Sequence[np.ndarray], cotangent: np.ndarray) -> dict[str, Any]:
        w64 = [jnp.asarray(np.asarray(w, np.float64)) for w in weights]
        x64 = [jnp.asarray(np.asarray(x, np.float64)) if _is_float(x) else jnp.asarray(x) for x in values]
        floats = [x64[i] for i in input_index]
        others = [None if i in input_index else x for i, x in enumerate(x64)]
        (_, out), (d_w, d_x) = compiled(w64, floats, others, jnp.asarray(np.asarray(cotangent, np.float64)))
        return {
            "output": np.asarray(out, np.float64),
            "grads": {"inputs": [np.asarray(g) for g in d_x], "weights": [np.asarray(g) for g in d_w]},
        }

    return exact


def _draw_weights(layer: Any, seed: int) -> list[np.ndarray]:
    """Seeded values for the float weights, independent of the layer's own (unseeded) initial draw.

    A weight of two or more axes gets normal draws of spread 1/sqrt(its first dimension) (the
    fan-in of an (in, out) kernel); a vector gets its initial mean rounded to 2 decimals (0 for
    biases and beta, 1 for gamma) plus 0.1 x normal draws.
    """
    rng = np.random.default_rng(seed)
    values = []
    for variable in _float_weights(layer):
        shape = tuple(variable.shape)
        if len(shape) >= 2:
            value = rng.normal(size=shape) / math.sqrt(shape[0])
        else:
            value = round(float(np.mean(np.asarray(variable.value, np.float64))), 2) + 0.1 * rng.normal(size=shape)
        values.append(value.astype(np.float32))
    return values
