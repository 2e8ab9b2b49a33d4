"""Activation: the activations module as a layer, in the compute dtype, with configs by name."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
from layers import activations
from layers._base._masking import attach_mask, get_mask
from layers._builtin._activation import Activation
from tests._conformance import Case, check_layer
from tests._tolerances import assert_close

POLICIES = ["float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16"]


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# Independent float64 references (NumPy and math.erf, never jax.nn).
REFERENCES = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "gelu": lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))),
    "silu": lambda x: x * _sigmoid(x),
    "softmax": _softmax,
}


# Every call in this module raises if the layer returns a dtype wider than its policy allows.
pytestmark = pytest.mark.usefixtures("strict_raise")


def _eager(layer, x):
    return layer(x)


def _jitted(layer, x):
    return jax.jit(lambda x: layer.stateless_call([], [], x))(x)[0]


MODES = {"eager": _eager, "jit": _jitted}


def _inputs(shape=(4, 32)):
    return 2 * np.random.default_rng(0).standard_normal(shape)


CASES = [
    Case(
        name,
        lambda name=name, **kw: Activation(name, **kw),
        lambda: (_inputs().astype(np.float32),),
        lambda x, weights, name=name: REFERENCES[name](x),
    )
    for name in ("gelu", "softmax")
]
SWEEP = [(CASES[0], policy) for policy in POLICIES] + [(CASES[1], "mixed_bfloat16")]


@pytest.mark.parametrize(("case", "policy"), SWEEP, ids=[f"{case.name}-{policy}" for case, policy in SWEEP])
def test_conformance(case, policy):
    check_layer(case, policy)


# Every activation under every policy eagerly, and jitted under one mixed policy (test_conformance
# also runs gelu jitted under every policy).
NUMERIC_CASES = [(policy, "eager") for policy in POLICIES] + [("mixed_bfloat16", "jit")]


@pytest.mark.parametrize(("policy", "mode"), NUMERIC_CASES)
@pytest.mark.parametrize("name", REFERENCES)
def test_matches_float64_reference_in_the_compute_dtype(name, policy, mode):
    layer = Activation(name, dtype=policy)
    compute = dp.get(policy).compute_dtype
    x = jnp.asarray(_inputs()).astype(compute)
    out = MODES[mode](layer, x)
    assert out.dtype == jnp.dtype(compute)
    assert layer.variables == []
    assert_close(out, REFERENCES[name](np.asarray(x, np.float64)), compute)


@pytest.mark.parametrize("policy", POLICIES)
def test_float32_inputs_are_autocast_and_stateless_call_equals_call(policy):
    layer = Activation("gelu", dtype=policy)
    x = jnp.asarray(_inputs(), jnp.float32)
    out = layer(x)
    assert out.dtype == jnp.dtype(dp.get(policy).compute_dtype)
    stateless, non_trainable = layer.stateless_call([], [], x)
    assert non_trainable == []
    np.testing.assert_array_equal(np.asarray(stateless, np.float32), np.asarray(out, np.float32))


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16", "float16"])
def test_integer_inputs_become_the_compute_dtype(policy):
    out = Activation("relu", dtype=policy)(jnp.array([-2, 3]))
    assert out.dtype == jnp.dtype(dp.get(policy).compute_dtype)
    assert out.tolist() == [0, 3]


def test_gradient_with_respect_to_the_inputs():
    layer = Activation("tanh")
    x = jnp.asarray(_inputs((8,)), jnp.float32)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(layer.stateless_call([], [], x)[0])))(x)
    assert_close(grad, 1 - np.tanh(np.asarray(x, np.float64)) ** 2, "float32")


def test_callable_activations_and_masks_pass_through():
    layer = Activation(lambda x: 3 * x)
    x = jnp.ones((2, 2))
    mask = jnp.array([[True, False], [True, True]])
    attach_mask(x, mask)
    out = layer(x)
    assert out.tolist() == [[3.0, 3.0], [3.0, 3.0]]
    assert get_mask(out) is mask


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("activation", "name"), [("relu", "relu"), ("swish", "silu"), (activations.gelu, "gelu"), (None, "linear")]
)
def test_config_round_trips_through_json_with_the_activation_name(activation, name):
    layer = Activation(activation, dtype="mixed_bfloat16", name="act")
    config = json.loads(json.dumps(layer.get_config()))
    assert config["activation"] == name and config["name"] == "act"
    clone = Activation.from_config(config)
    assert clone.get_config() == config
    assert clone.activation is activations.get(name) and clone.dtype_policy == layer.dtype_policy


def test_custom_callable_has_no_config():
    layer = Activation(lambda x: x)
    with pytest.raises(ValueError, match=r"Cannot serialize .*only the built-in activations have names"):
        layer.get_config()


# ---------------------------------------------------------------- bad input


def test_unknown_activation_name():
    with pytest.raises(ValueError, match=r"Unknown activation 'rleu'\. Expected one of .*Did you mean 'relu'\?"):
        Activation("rleu")


@pytest.mark.parametrize("activation", [3, 1.5, ["relu"]])
def test_activation_that_is_neither_a_name_nor_callable(activation):
    with pytest.raises(TypeError, match=r"Cannot interpret .* as an activation"):
        Activation(activation)


def test_missing_activation_and_unknown_keyword():
    with pytest.raises(TypeError, match=r"activation"):
        Activation()
    with pytest.raises(TypeError, match=r"Unrecognized keyword arguments passed to Activation: \{'axis': 1\}"):
        Activation("relu", axis=1)


@pytest.mark.parametrize("activation", ["relu", None, "softmax", lambda x: x])
@pytest.mark.parametrize(("inputs", "shown"), [(None, "None of type NoneType"), ({}, r"\{\} of type dict")])
def test_an_input_that_is_not_an_array_is_a_clear_type_error(activation, inputs, shown):
    layer = Activation(activation, name="act")
    with pytest.raises(
        TypeError, match=r"Activation 'act' expects an array \(or a number\) as input, received " + shown
    ):
        layer(inputs)


def test_python_numbers_and_lists_of_numbers_are_arrays():
    layer = Activation("relu", dtype="mixed_bfloat16")
    assert layer(-2.0).dtype == jnp.bfloat16 and float(layer(3.0)) == 3.0
    np.testing.assert_array_equal(np.asarray(layer(jnp.asarray([-1.0, 2.0])), np.float32), [0.0, 2.0])
