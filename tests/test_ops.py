"""layers.ops: the keras.ops names, against float64 NumPy formulas, with Variables read through autocast."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

import dtypepolicy as dp
from layers import ops
from tests._tolerances import assert_close

X = np.array([-7.5, -3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 2.5, 6.5, 9.0], np.float32)
SELU_SCALE, SELU_ALPHA = 1.0507009873554805, 1.6732632423543772


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _hard_sigmoid(x):
    return np.clip(x / 6 + 0.5, 0, 1)


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _erf(x):
    return np.vectorize(math.erf)(x)


# name -> (call with Keras defaults, float64 reference)
UNARY = {
    "relu": (ops.relu, lambda x: np.maximum(x, 0)),
    "relu6": (ops.relu6, lambda x: np.clip(x, 0, 6)),
    "sigmoid": (ops.sigmoid, _sigmoid),
    "log_sigmoid": (ops.log_sigmoid, lambda x: -np.logaddexp(0, -x)),
    "softplus": (ops.softplus, lambda x: np.logaddexp(0, x)),
    "softsign": (ops.softsign, lambda x: x / (1 + np.abs(x))),
    "silu": (ops.silu, lambda x: x * _sigmoid(x)),
    "swish": (ops.swish, lambda x: x * _sigmoid(x)),
    "hard_sigmoid": (ops.hard_sigmoid, _hard_sigmoid),
    "hard_silu": (ops.hard_silu, lambda x: x * _hard_sigmoid(x)),
    "hard_swish": (ops.hard_swish, lambda x: x * _hard_sigmoid(x)),
    "leaky_relu": (ops.leaky_relu, lambda x: np.where(x >= 0, x, 0.2 * x)),
    "elu": (ops.elu, lambda x: np.where(x > 0, x, np.expm1(x))),
    "selu": (ops.selu, lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x))),
    # keras.ops.gelu defaults to the tanh approximation.
    "gelu": (ops.gelu, lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
    "tanh": (ops.tanh, np.tanh),
    "softmax": (ops.softmax, _softmax),
    "log_softmax": (ops.log_softmax, lambda x: np.log(_softmax(x))),
    "erf": (ops.erf, _erf),
    "logsumexp": (ops.logsumexp, lambda x: np.log(np.sum(np.exp(x)))),
    "stop_gradient": (ops.stop_gradient, lambda x: x),
    "convert_to_tensor": (ops.convert_to_tensor, lambda x: x),
    "celu": (ops.celu, lambda x: np.where(x >= 0, x, np.expm1(x))),
    "mish": (ops.mish, lambda x: x * np.tanh(np.logaddexp(0, x))),
    "hard_tanh": (ops.hard_tanh, lambda x: np.clip(x, -1, 1)),
    "sparse_plus": (ops.sparse_plus, lambda x: np.where(x <= -1, 0, np.where(x >= 1, x, (x + 1) ** 2 / 4))),
    "sparse_sigmoid": (ops.sparse_sigmoid, lambda x: np.clip((x + 1) / 2, 0, 1)),
    "squareplus": (ops.squareplus, lambda x: (x + np.sqrt(x**2 + 4)) / 2),
    "soft_shrink": (ops.soft_shrink, lambda x: np.where(x > 0.5, x - 0.5, np.where(x < -0.5, x + 0.5, 0))),
    "hard_shrink": (ops.hard_shrink, lambda x: np.where(np.abs(x) > 0.5, x, 0)),
    "tanh_shrink": (ops.tanh_shrink, lambda x: x - np.tanh(x)),
    "threshold": (lambda x: ops.threshold(x, 1.0, -3.0), lambda x: np.where(x > 1, x, -3.0)),
    "glu": (ops.glu, lambda x: x[:5] * _sigmoid(x[5:])),
    "normalize": (ops.normalize, lambda x: x / np.sqrt(np.sum(x**2))),
    "rms_normalization": (ops.rms_normalization, lambda x: x / np.sqrt(np.mean(x**2) + 1e-7)),
    "layer_normalization": (ops.layer_normalization, lambda x: (x - x.mean()) / np.sqrt(x.var() + 1e-7)),
}
NEW = [
    "celu", "mish", "hard_tanh", "sparse_plus", "sparse_sigmoid", "squareplus", "soft_shrink", "hard_shrink",
    "tanh_shrink", "threshold", "glu", "normalize", "rms_normalization", "layer_normalization",
]  # fmt: skip


@pytest.mark.parametrize("name", UNARY)
def test_functions_match_float64_formulas(name):
    function, reference = UNARY[name]
    out = function(jnp.asarray(X))
    assert out.dtype == jnp.float32
    assert_close(out, reference(X.astype(np.float64)), "float32")


@pytest.mark.parametrize("name", UNARY)
def test_functions_accept_a_variable_and_read_it_through_autocast(name):
    function, reference = UNARY[name]
    variable = dp.Variable(X)
    assert_close(function(variable), reference(X.astype(np.float64)), "float32")
    with dp.autocast_scope("bfloat16"):
        out = function(variable)
    assert out.dtype == jnp.bfloat16  # the variable was read as bfloat16, and the function kept it
    seen = np.asarray(jnp.asarray(X, jnp.bfloat16), np.float64)
    assert_close(out, reference(seen), "bfloat16")


@pytest.mark.parametrize("name", ["relu", "gelu", "softmax", "logsumexp", "erf", *NEW])
def test_functions_run_under_jit_with_a_variable_argument(name):
    function, reference = UNARY[name]
    variable = dp.Variable(X)
    out = jax.jit(lambda v: function(v))(variable)
    assert_close(out, reference(X.astype(np.float64)), "float32")


def test_keras_argument_names_and_defaults():
    x = jnp.asarray(X)
    exact = 0.5 * X.astype(np.float64) * (1 + _erf(X.astype(np.float64) / math.sqrt(2)))
    assert_close(ops.gelu(x, approximate=False), exact, "float32")
    assert_close(ops.leaky_relu(x, negative_slope=0.5), np.where(X >= 0, X, 0.5 * X), "float32")
    assert_close(ops.elu(x, alpha=2.0), np.where(X > 0, X, 2.0 * np.expm1(X.astype(np.float64))), "float32")
    matrix = X.reshape(2, 5).astype(np.float64)
    assert_close(ops.softmax(x.reshape(2, 5), axis=0), _softmax(matrix, axis=0), "float32")
    assert_close(ops.log_softmax(x.reshape(2, 5), axis=0), np.log(_softmax(matrix, axis=0)), "float32")
    reduced = ops.logsumexp(x.reshape(2, 5), axis=1, keepdims=True)
    assert reduced.shape == (2, 1)
    assert_close(reduced, np.log(np.exp(matrix).sum(1, keepdims=True)), "float32")


def test_reductions_compute_in_float32_from_bfloat16():
    # 300 values near 100: a bfloat16 sum of exp(x - max) would lose the tail; float32 does not.
    x = jnp.asarray(np.linspace(96.0, 100.0, 300), jnp.bfloat16)
    seen = np.asarray(x, np.float64)
    out = ops.logsumexp(x)
    assert out.dtype == jnp.bfloat16
    assert_close(out, scipy.special.logsumexp(seen), "bfloat16")
    mean, variance = ops.moments(x, axes=[0])
    assert mean.dtype == variance.dtype == jnp.bfloat16
    assert_close(mean, seen.mean(), "bfloat16")
    assert_close(variance, seen.var(), "bfloat16")


def test_erfinv_rsqrt_moments_and_top_k():
    y = np.array([-0.9, -0.3, 0.0, 0.4, 0.99], np.float32)
    assert_close(ops.erfinv(jnp.asarray(y)), scipy.special.erfinv(y.astype(np.float64)), "float32")
    positive = np.array([0.25, 1.0, 4.0, 9.0], np.float32)
    assert_close(ops.rsqrt(dp.Variable(positive)), 1 / np.sqrt(positive.astype(np.float64)), "float32")
    data = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    mean, variance = ops.moments(dp.Variable(data), axes=0, keepdims=True)
    assert mean.shape == variance.shape == (1, 3)
    assert_close(mean, data.astype(np.float64).mean(0, keepdims=True), "float32")
    assert_close(variance, data.astype(np.float64).var(0, keepdims=True), "float32")
    values, indices = ops.top_k(dp.Variable(X), 3)
    assert indices.tolist() == np.argsort(-X)[:3].tolist()
    np.testing.assert_array_equal(values, np.sort(X)[::-1][:3])


def test_one_hot_and_multi_hot():
    indices = np.array([[0, 3], [2, -1]])
    expected = np.zeros((2, 2, 4))
    for (i, j), k in np.ndenumerate(indices):
        if 0 <= k < 4:
            expected[i, j, k] = 1
    out = ops.one_hot(jnp.asarray(indices), 4)
    assert out.dtype == jnp.float32  # Keras' floatx default
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(ops.one_hot(indices, 4, axis=0), np.moveaxis(expected, -1, 0))
    assert ops.one_hot(dp.Variable(np.array([1], np.int32)), num_classes=2, dtype="bfloat16").dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        ops.multi_hot(jnp.array([[0, 2], [1, 1]]), 3), np.array([[1, 0, 1], [0, 1, 0]], np.float32)
    )
    np.testing.assert_array_equal(ops.multi_hot(jnp.array([0, 2]), 3), np.array([1, 0, 1], np.float32))


def test_cast_convert_dtype_shape_and_is_tensor_read_variables_through_autocast():
    variable = dp.Variable(np.array([1.0 + 2**-10, -2.5], np.float32))
    assert ops.dtype(variable) == "float32" and ops.shape(variable) == (2,)
    casted = ops.cast(variable, "int32")
    assert casted.dtype == jnp.int32 and casted.tolist() == [1, -2]
    with dp.autocast_scope("bfloat16"):
        assert ops.dtype(variable) == "bfloat16"
        # Read as bfloat16 first: 1 + 2**-10 rounds to 1 before the cast back to float32.
        assert ops.cast(variable, "float32").tolist() == [1.0, -2.5]
        assert ops.convert_to_numpy(variable).dtype == jnp.bfloat16
        assert ops.convert_to_tensor(variable, dtype="float32").tolist() == [1.0, -2.5]
    assert ops.convert_to_numpy(variable).tolist() == [1.0 + 2**-10, -2.5]
    assert ops.dtype(np.ones(2, np.int8)) == "int8" and ops.dtype(jax.ShapeDtypeStruct((1,), jnp.float16)) == "float16"
    assert ops.shape(jax.ShapeDtypeStruct((3, 4), jnp.float32)) == (3, 4) and ops.shape([[1, 2]]) == (1, 2)
    assert ops.convert_to_tensor([1, 2]).dtype == jnp.int32
    assert ops.is_tensor(jnp.ones(1)) and not ops.is_tensor(np.ones(1)) and not ops.is_tensor(variable)


def test_stop_gradient_blocks_the_gradient():
    grad = jax.grad(lambda x: jnp.sum(ops.stop_gradient(x) * x))(jnp.asarray(X))
    np.testing.assert_array_equal(grad, X)


def test_jax_numpy_names_still_mirror_jax_numpy_and_dir_lists_both():
    assert ops.clip is not None and ops.matmul(jnp.ones((1, 2)), dp.Variable(jnp.ones((2, 1)))).tolist() == [[2.0]]
    assert {"relu", "one_hot", "matmul", "einsum"} <= set(dir(ops))
    with pytest.raises(AttributeError, match=r"layers.ops has no function 'rleu'"):
        ops.rleu  # noqa: B018


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ops.relu(None), TypeError, r"ops.relu expects an array or a Variable, received None"),
        (lambda: ops.cast(jnp.ones(2), "float33"), TypeError, r"ops.cast: 'float33' is not a dtype"),
        (lambda: ops.dtype("float32"), TypeError, r"ops.dtype expects an array or a Variable, received 'float32'"),
        (lambda: ops.one_hot(jnp.arange(2), 0), ValueError, r"num_classes must be a positive int, received 0"),
        (lambda: ops.one_hot(jnp.arange(2), 2.0), ValueError, r"num_classes must be a positive int, received 2.0"),
        (lambda: ops.one_hot(jnp.arange(2), 2, sparse=True), ValueError, r"sparse=True is not supported"),
        (lambda: ops.top_k(jnp.ones(3), 0), ValueError, r"ops.top_k: k must be a positive int, received 0"),
        (lambda: ops.moments(jnp.ones(3), 0, synchronized=True), ValueError, r"synchronized=True is not supported"),
        (lambda: ops.convert_to_tensor([1], ragged=True), ValueError, r"ragged=True; only dense arrays"),
    ],
)
def test_bad_arguments_name_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()
