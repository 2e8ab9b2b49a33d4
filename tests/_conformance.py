"""The conformance checks every built-in layer passes; adding a layer is one table row.

`check_layer(case, policy)` builds the layer under the policy and checks: variable dtypes,
output dtypes, jit == eager, `stateless_call` == `__call__`, gradients for every trainable
weight, a JSON config round trip that reproduces the outputs, and (when the case gives a
float64 reference) the error against it within the compute dtype's tolerance.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import dtypepolicy as dp
from dtypepolicy._dtypes import is_float
from tests._tolerances import assert_close, tolerance


@dataclasses.dataclass(frozen=True)
class Case:
    """One row of the conformance table.

    Attributes:
      name: the id shown by pytest.
      factory: `(**layer_kwargs) -> layer`; receives `dtype=`.
      inputs: `() -> tuple of call arguments` (NumPy, so each policy casts them itself).
      reference: optional `(args as float64 arrays, weights as float64 arrays) -> float64 output`.
      call_kwargs: keyword arguments for every call.
      float_inputs: whether the inputs are floating (integer inputs are not autocast).
      grads_nonzero: whether every trainable weight must get a nonzero gradient.
    """

    name: str
    factory: Callable[..., Any]
    inputs: Callable[[], tuple]
    reference: Callable[..., np.ndarray] | None = None
    call_kwargs: dict = dataclasses.field(default_factory=dict)
    grads_nonzero: bool = True


def _floating_leaves(tree: Any) -> list:
    return [leaf for leaf in jax.tree.leaves(tree) if isinstance(leaf, jax.Array) and is_float(leaf.dtype)]


def _expected_output_dtype(policy: dp.DTypePolicy) -> str:
    return policy.output_dtype or policy.compute_dtype


def _assert_trees_equal(actual: Any, expected: Any) -> None:
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))


def _as_seen(value: Any, dtype: str) -> np.ndarray:
    array = np.asarray(value)
    if not is_float(array.dtype):
        return array
    return np.asarray(jnp.asarray(array).astype(dtype).astype(jnp.float32), np.float64)


def check_layer(case: Case, policy_name: str) -> None:
    """Runs every conformance check for one layer under one policy."""
    policy = dp.get(policy_name)
    layer = case.factory(dtype=policy_name)
    args = case.inputs()
    outputs = layer(*args, **case.call_kwargs)
    compute = policy.compute_dtype

    # Variable and output dtypes.
    for variable in layer.weights:
        if variable.autocast and is_float(variable.dtype):
            assert variable.dtype == policy.variable_dtype, (variable.path, variable.dtype)
    for leaf in _floating_leaves(outputs):
        assert leaf.dtype == jnp.dtype(_expected_output_dtype(policy)), (leaf.dtype, policy_name)

    # stateless_call == __call__, eagerly; jitted stateless_call == eager within tolerance.
    trainable = [v._read_storage() for v in layer.trainable_variables]
    non_trainable = [v._read_storage() for v in layer.non_trainable_variables]
    again = layer(*args, **case.call_kwargs)
    stateless, _ = layer.stateless_call(trainable, non_trainable, *args, **case.call_kwargs)
    _assert_trees_equal(stateless, again)
    jitted, _ = jax.jit(lambda t, n, *a: layer.stateless_call(t, n, *a, **case.call_kwargs))(
        trainable, non_trainable, *args
    )
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(again), strict=True):
        assert a.dtype == b.dtype
        if is_float(a.dtype):
            assert_close(a, b, compute)
        else:
            np.testing.assert_array_equal(a, b)

    # Gradients for every trainable weight, in the storage dtype.
    if trainable:

        def loss(values: list) -> jax.Array:
            out, _ = layer.stateless_call(values, non_trainable, *args, **case.call_kwargs)
            return sum(jnp.sum(leaf.astype(jnp.float32) ** 2) for leaf in _floating_leaves(out))

        grads = jax.jit(jax.grad(loss))(trainable)
        for variable, grad in zip(layer.trainable_variables, grads, strict=True):
            assert grad.shape == variable.shape and grad.dtype == jnp.dtype(variable.dtype), variable.path
            assert np.isfinite(np.asarray(grad, np.float64)).all(), variable.path
            if case.grads_nonzero:
                assert np.any(np.asarray(grad) != 0), f"zero gradient for {variable.path}"

    # Config round trip through JSON reproduces the layer and, with the same weights, its outputs.
    config = json.loads(json.dumps(layer.get_config()))
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone(*args, **case.call_kwargs)
    for target, source in zip(clone.variables, layer.variables, strict=True):
        target.assign(source._read_storage())  # weights and state (random keys) alike
    _assert_trees_equal(clone(*args, **case.call_kwargs), layer(*args, **case.call_kwargs))

    # Error against the float64 reference.
    if case.reference is not None:
        weights = [np.asarray(w, np.float64) for w in layer.get_weights()]
        # The reference sees the inputs as the layer does: cast to its input dtype (or not).
        input_dtype = compute if layer.autocast and layer._autocast_inputs else "float32"
        expected = case.reference(*[_as_seen(a, input_dtype) for a in args], weights=weights)
        (leaf,) = _floating_leaves(outputs)
        rtol, atol = tolerance(compute)
        np.testing.assert_allclose(np.asarray(leaf, np.float64), expected, rtol=rtol, atol=atol)
