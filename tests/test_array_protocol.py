"""A Variable passes for an array in jax.numpy, jax.nn, jax.lax and JAX transformations."""

import copy
import pickle

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import dtypepolicy as dp
import layers
from tests._tolerances import assert_close

START = np.array([[0.5, -1.25, 2.0], [3.0, -0.75, 0.1]], np.float32)
RIGHT = np.array([[1.0, 2.0], [-1.0, 0.5], [0.25, -3.0]], np.float32)

# Each case: how a user calls the function on a variable. The reference is the same function
# given a plain array built independently of the Variable (NumPy, rounded to the read dtype).
FUNCTIONS = {
    "jnp.matmul": lambda v: jnp.matmul(v, jnp.asarray(RIGHT).astype(jnp.asarray(v).dtype)),
    "jnp.dot": lambda v: jnp.dot(v, v.T),
    "jnp.einsum": lambda v: jnp.einsum("ij,kj->ik", v, v),
    "jnp.tanh": jnp.tanh,
    "jnp.exp": jnp.exp,
    "jnp.sum": jnp.sum,
    "jnp.mean": lambda v: jnp.mean(v, axis=0),
    "jnp.max": jnp.max,
    "jnp.where": lambda v: jnp.where(v > 0, v, jnp.zeros((), jnp.asarray(v).dtype)),
    "jnp.concatenate": lambda v: jnp.concatenate([v, v]),
    "jnp.stack": lambda v: jnp.stack([v, v]),
    "jnp.reshape": lambda v: jnp.reshape(v, (3, 2)),
    "jnp.transpose": jnp.transpose,
    "jnp.clip": lambda v: jnp.clip(v, -1, 1),
    "jnp.take": lambda v: jnp.take(v, jnp.array([2, 0]), axis=1),
    "jnp.linalg.norm": jnp.linalg.norm,
    "jnp.square": jnp.square,
    "jnp.abs": jnp.abs,
    "jnp.pad": lambda v: jnp.pad(v, 1),
    "jax.nn.relu": jax.nn.relu,
    "jax.nn.gelu": jax.nn.gelu,
    "jax.nn.sigmoid": jax.nn.sigmoid,
    "jax.nn.softmax": jax.nn.softmax,
    "jax.nn.silu": jax.nn.silu,
    "jax.lax.add": lambda v: jax.lax.add(v, v),
    "jax.lax.dot_general": lambda v: jax.lax.dot_general(v, v, (((1,), (1,)), ((), ()))),
    "jax.lax.exp": jax.lax.exp,
    ".T": lambda v: v.T,
    ".reshape": lambda v: v.reshape(-1),
    ".sum": lambda v: v.sum(axis=1),
    ".mean": lambda v: v.mean(),
    ".max": lambda v: v.max(axis=0),
    ".min": lambda v: v.min(),
    ".transpose": lambda v: v.transpose(),
}
# The read dtype inside each scope: None is no autocast scope at all.
SCOPES = {"no scope": (None, np.float32), "bfloat16 scope": ("bfloat16", ml_dtypes.bfloat16)}


# How the function meets the variable: called directly, closed over by a jitted function, or
# passed to one as an argument (the pytree route: it arrives as its read).
MODES = {
    "eager": lambda function, value: function(value),
    "jit closure": lambda function, value: jax.jit(lambda: function(value))(),
    "jit argument": lambda function, value: jax.jit(function)(value),
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("scope", list(SCOPES), ids=list(SCOPES))
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_jax_functions_accept_a_variable_and_read_it_through_autocast(name, scope, mode):
    function, run = FUNCTIONS[name], MODES[mode]
    autocast, read_dtype = SCOPES[scope]
    variable = dp.Variable(START)
    plain = jnp.asarray(START.astype(read_dtype))
    with dp.autocast_scope(autocast):
        got = run(function, variable)
    expected = run(function, plain)
    assert got.dtype == expected.dtype == np.dtype(read_dtype)
    np.testing.assert_array_equal(np.asarray(got, np.float64), np.asarray(expected, np.float64))


def test_a_mixed_bfloat16_layer_sees_its_kernel_as_bfloat16_in_jnp_matmul():
    seen = {}

    class Projection(layers.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 2), initializer=lambda s, d: jnp.asarray(RIGHT))

        def call(self, x):
            product = jnp.matmul(x, self.kernel)
            seen["dtype"] = product.dtype
            return jax.nn.relu(product)

    layer = Projection(dtype="mixed_bfloat16")
    inputs = START
    out = layer(inputs)
    assert seen["dtype"] == jnp.bfloat16 and out.dtype == jnp.bfloat16
    expected = np.maximum(
        START.astype(ml_dtypes.bfloat16).astype(np.float64) @ RIGHT.astype(ml_dtypes.bfloat16).astype(np.float64), 0
    )
    np.testing.assert_allclose(np.asarray(out, np.float64), expected, rtol=2**-8)
    assert layer.kernel.dtype == "float32"


def test_grad_and_vmap_of_jnp_functions_of_a_variable():
    variable = dp.Variable(START)
    gradient = jax.grad(lambda v: jnp.sum(jnp.tanh(v)))(variable)
    assert_close(gradient, 1 - np.tanh(START.astype(np.float64)) ** 2, "float32")
    rows = jax.vmap(jnp.sum)(variable)
    np.testing.assert_allclose(np.asarray(rows), START.astype(np.float64).sum(axis=1), rtol=1e-6)
    # A variable closed over by a function that is differentiated w.r.t. something else.
    weight = jax.grad(lambda x: jnp.sum(jnp.matmul(x, variable)))(jnp.ones((1, 2)))
    np.testing.assert_allclose(np.asarray(weight), START.sum(axis=1, keepdims=True).T, rtol=1e-6)


def test_stateless_call_substitutes_values_read_by_jnp_functions():
    class Scale(layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")

        def call(self, x):
            return jnp.multiply(x, jnp.tanh(self.w))

    layer = Scale()
    x = jnp.ones((2, 3))
    layer(x)
    new_w = jnp.array([0.5, 1.0, 2.0])
    out, _ = jax.jit(layer.stateless_call)([new_w], [], x)
    np.testing.assert_allclose(np.asarray(out), np.tanh(np.array([0.5, 1.0, 2.0]))[None].repeat(2, 0), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(layer.w), np.ones(3))


def test_jax_tree_over_weights_gives_their_values_and_keeps_the_variables():
    layer = layers.Dense(3, name="dense")
    layer(jnp.ones((2, 4)))
    weights = layer.weights
    assert weights[0] is layer.kernel and weights[1] is layer.bias
    leaves = jax.tree.leaves(weights)
    assert [leaf.shape for leaf in leaves] == [(4, 3), (3,)]
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)
    np.testing.assert_array_equal(np.asarray(leaves[0]), np.asarray(layer.kernel._value))
    doubled = jax.tree.map(lambda leaf: leaf * 2, weights)
    np.testing.assert_array_equal(np.asarray(doubled[0]), 2 * np.asarray(layer.kernel._value))
    # The Variable objects as leaves, on request, as with any pytree node.
    is_variable = lambda leaf: isinstance(leaf, dp.Variable)  # noqa: E731
    assert jax.tree.map(lambda v: v.path, weights, is_leaf=is_variable) == ["dense/kernel", "dense/bias"]
    # The hand-written SGD step over variables and gradients.
    kernel_before = np.asarray(layer.kernel._value)
    grads = [jnp.ones((4, 3)), jnp.full((3,), 2.0)]
    jax.tree.map(lambda v, g: v.assign(v - 0.5 * g), weights, grads, is_leaf=is_variable)
    np.testing.assert_array_equal(np.asarray(layer.kernel._value), kernel_before - 0.5)
    np.testing.assert_array_equal(np.asarray(layer.bias._value), np.full((3,), -1.0, np.float32))


def test_a_raw_variable_where_jax_needs_an_array_is_a_clear_type_error():
    # jax.typeof abstracts its argument without flattening it, like any JAX internal would.
    variable = dp.Variable(jnp.ones((2,)), name="w")
    with pytest.raises(TypeError, match=r"JAX received Variable 'w' \(shape \(2,\), dtype float32\).*Pass `w.value`"):
        jax.typeof(variable)


def test_an_integer_variable_indexes_a_variable():
    table, row = dp.Variable(START), dp.Variable(jnp.array(1))
    np.testing.assert_array_equal(np.asarray(table[row]), START[1])
    np.testing.assert_array_equal(np.asarray(table[row, dp.Variable(jnp.array(2))]), START[1, 2])


def test_variables_of_one_shape_share_a_jit_compilation():
    traces = []

    @jax.jit
    def total(v):
        traces.append(1)
        return jnp.sum(v)

    first, second = dp.Variable(jnp.ones((3,))), dp.Variable(jnp.zeros((3,)))
    assert float(total(first)) == 3.0 and float(total(second)) == 0.0
    assert len(traces) == 1


def test_a_stateful_jnp_layer_under_the_users_jit_still_raises_the_clear_error():
    class Counter(layers.Layer):
        def build(self, input_shape):
            self.seen = self.add_weight(shape=(), initializer="zeros", trainable=False, name="seen")

        def call(self, x):
            self.seen.assign_add(jnp.sum(x))
            return jnp.tanh(x) + self.seen

    layer = Counter(name="counter")
    layer(jnp.ones((2,)))
    with pytest.raises(RuntimeError, match=r"'counter' updated variable 'counter/seen' while JAX was tracing"):
        jax.jit(lambda x: layer(x))(jnp.ones((2,)))
    assert float(layer.seen.value) == 2.0


def test_copy_deepcopy_and_pickle_give_independent_equal_variables():
    variable = dp.Variable(START, name="kernel", trainable=False, autocast=False)
    for clone in (copy.copy(variable), copy.deepcopy(variable), pickle.loads(pickle.dumps(variable))):
        assert clone is not variable
        assert (clone.name, clone.dtype, clone.trainable, clone.autocast) == ("kernel", "float32", False, False)
        np.testing.assert_array_equal(clone.numpy(), START)
        clone.assign(np.zeros_like(START))
        np.testing.assert_array_equal(variable.numpy(), START)


@pytest.mark.parametrize(
    ("variable", "call", "error", "message"),
    [
        (
            dp.Variable(jnp.ones(2), name="w"),
            lambda v: v.assign(None),
            TypeError,
            r"'w'.assign: expected an array.*None",
        ),
        (
            dp.Variable(jnp.ones(2), name="w"),
            lambda v: v.assign([[1.0], [2.0, 3.0]]),
            ValueError,
            r"'w'.assign: cannot convert \[\[1.0\], \[2.0, 3.0\]\] to a rectangular numeric array",
        ),
        (
            dp.Variable(np.array([True, False]), name="flags"),
            lambda v: v.assign_sub(np.array([True, True])),
            TypeError,
            r"'flags' stores bool values, which have no assign_sub; expected a numeric variable",
        ),
        (
            dp.Variable(np.array([True, False]), name="flags"),
            lambda v: v.assign_add(np.array([True, True])),
            TypeError,
            r"'flags' stores bool values, which have no assign_add",
        ),
    ],
    ids=["assign None", "assign ragged", "bool assign_sub", "bool assign_add"],
)
def test_bad_writes_name_the_value_and_change_nothing(variable, call, error, message):
    before = variable.numpy().copy()
    with pytest.raises(error, match=message):
        call(variable)
    np.testing.assert_array_equal(variable.numpy(), before)


def test_dtype_only_functions_work_through_layers_ops():
    variable = dp.Variable(START)
    with dp.autocast_scope("bfloat16"):
        zeros = layers.ops.zeros_like(variable)
        assert zeros.dtype == jnp.bfloat16 and zeros.shape == START.shape
        assert layers.ops.result_type(variable) == jnp.bfloat16
        assert jnp.zeros_like(variable.value).dtype == jnp.bfloat16


def test_a_write_traced_by_the_users_jit_outside_a_layer_is_refused_and_changes_nothing():
    variable = dp.Variable(jnp.ones(3), name="v")
    with pytest.raises(RuntimeError, match=r"Cannot store a value traced by JAX in variable 'v'"):
        jax.jit(lambda x: variable.assign(x))(jnp.zeros(3))
    with pytest.raises(RuntimeError, match=r"variable 'v'"):
        jax.grad(lambda x: jnp.sum(variable.assign_add(x)))(jnp.zeros(3))
    np.testing.assert_array_equal(variable.numpy(), np.ones(3))

    # Inside a StatelessScope the traced write is the scope's business, and allowed.
    def step(x):
        with dp.StatelessScope() as scope:
            variable.assign_add(x)
        return scope.get_current_value(variable)

    np.testing.assert_array_equal(np.asarray(jax.jit(step)(jnp.ones(3))), np.full(3, 2.0))


def test_at_and_numpy_read_the_value():
    variable = dp.Variable(START)
    with dp.autocast_scope("bfloat16"):
        updated = variable.at[0, 0].set(7.0)
    assert updated.dtype == jnp.bfloat16 and float(updated[0, 0]) == 7.0
    copy_of_value = variable.numpy()
    copy_of_value[0, 0] = 9.0  # writable, and the variable's own
    np.testing.assert_array_equal(variable.numpy(), START)
