"""layers.ops: the keras.ops names, against float64 NumPy formulas, with Variables read through autocast."""

import math
import re

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


# --- normalization, attention ---------------------------------------------------------------------

RNG = np.random.default_rng(7)
DATA = (RNG.normal(size=(2, 3, 4)) * 3 + 5).astype(np.float32)


def test_normalizations_over_several_axes_with_parameters_match_numpy():
    x = DATA.astype(np.float64)
    gamma = RNG.normal(size=(3, 4)).astype(np.float32)
    beta = RNG.normal(size=(3, 4)).astype(np.float32)
    mean, var = x.mean((1, 2), keepdims=True), x.var((1, 2), keepdims=True)
    expected = (x - mean) / np.sqrt(var + 1e-3) * gamma + beta
    out = ops.layer_normalization(jnp.asarray(DATA), gamma, beta, axis=[1, 2], epsilon=1e-3, rms_scaling=False)
    assert_close(out, expected, "float32")
    # gamma sized like the normalized (non-trailing) axis is placed on it, as in Keras.
    scale = RNG.normal(size=(3,)).astype(np.float32)
    rms = x / np.sqrt(np.mean(x**2, axis=1, keepdims=True) + 1e-7) * scale[None, :, None]
    assert_close(ops.rms_normalization(dp.Variable(DATA), scale, axis=1), rms, "float32")
    assert_close(ops.normalize(DATA, axis=0, order=1), x / np.abs(x).sum(0, keepdims=True), "float32")
    assert_close(ops.normalize(np.zeros(3, np.float32)), np.zeros(3), "float32")  # no NaN for a zero vector
    stats = [RNG.uniform(0.5, 2, size=(3,)).astype(np.float32) for _ in range(4)]
    m, v, o, s = (stat.astype(np.float64)[None, :, None] for stat in stats)
    expected = (x - m) / np.sqrt(v + 1e-3) * s + o
    assert_close(
        ops.batch_normalization(DATA, *stats[:2], axis=1, offset=stats[2], scale=stats[3]), expected, "float32"
    )


def test_normalization_statistics_compute_in_float32_for_bfloat16():
    # Values near 256 with a spread of 1: a bfloat16 mean (8 bits of mantissa) would be off by ~1.
    x = jnp.asarray(256 + np.linspace(-1, 1, 64), jnp.bfloat16)
    seen = np.asarray(x, np.float64)
    out = ops.layer_normalization(x)
    assert out.dtype == jnp.bfloat16
    assert_close(out, (seen - seen.mean()) / np.sqrt(seen.var() + 1e-7), "bfloat16")
    assert ops.rms_normalization(x).dtype == ops.normalize(x).dtype == jnp.bfloat16


def _attention_reference(q, k, v, bias=None, mask=None, causal=False, scale=None):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    heads, depth = q.shape[2:]
    groups = heads // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) * (1 / np.sqrt(depth) if scale is None else scale)
    if bias is not None:
        logits = logits + bias
    attend = np.ones(logits.shape, bool)
    if mask is not None:
        attend = attend & (np.asarray(mask) != 0)
    if causal:
        attend = attend & np.tril(np.ones(logits.shape[-2:], bool))
    weights = np.where(attend, np.exp(logits - logits.max(-1, keepdims=True)), 0)
    total = weights.sum(-1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    return np.einsum("bnts,bsnh->btnh", weights, v)


Q = RNG.normal(size=(2, 5, 4, 8)).astype(np.float32)
K = RNG.normal(size=(2, 6, 2, 8)).astype(np.float32)  # grouped-query: 4 query heads share 2 key heads
V = RNG.normal(size=(2, 6, 2, 3)).astype(np.float32)


def test_dot_product_attention_matches_numpy_eagerly_and_under_jit():
    bias = RNG.normal(size=(1, 4, 5, 6)).astype(np.float32)
    mask = RNG.integers(0, 3, size=(2, 1, 5, 6))  # integer mask: non-zero attends (a 2 too)
    mask[0, 0, 1] = 0  # one query row with every key masked: zero output, no NaN
    expected = _attention_reference(Q, K, V, bias=bias, mask=mask, scale=0.3)
    out = ops.dot_product_attention(Q, K, V, bias=bias, mask=mask, scale=0.3)
    assert out.shape == (2, 5, 4, 3) and out.dtype == jnp.float32
    assert_close(out, expected, "float32")
    assert np.all(np.asarray(out)[0, 1] == 0)
    jitted = jax.jit(lambda q, k, v: ops.dot_product_attention(q, k, v, is_causal=True))
    assert_close(jitted(dp.Variable(Q), K, V), _attention_reference(Q, K, V, causal=True), "float32")
    # Mixed input dtypes promote as in Keras (explicitly, so strict promotion is not tripped).
    mixed = ops.dot_product_attention(jnp.asarray(Q, jnp.bfloat16), K, V)
    assert mixed.dtype == jnp.float32
    seen = np.asarray(jnp.asarray(Q, jnp.bfloat16), np.float64)
    assert_close(mixed, _attention_reference(seen, K, V), "float32")


def _attention_dots(dtype, gradient=False):
    """(operand, operand, result, precision) of each dot_general in the lowered attention (or its gradient)."""
    q, k, v = (jnp.asarray(a, dtype) for a in (Q, K, V))

    def attend(q, k, v):
        return ops.dot_product_attention(q, k, v)

    if gradient:
        attend = jax.grad(lambda q, k, v: jnp.sum(ops.dot_product_attention(q, k, v).astype(jnp.float32)), (0, 1, 2))
    found = []
    for line in jax.jit(attend).lower(q, k, v).as_text().splitlines():
        if "dot_general" in line:
            precision = re.search(r"precision = \[(\w+), (\w+)\]", line)
            types = re.search(r":\s*\(tensor<([^>]*)>, tensor<([^>]*)>\)\s*->\s*tensor<([^>]*)>", line)
            found.append(
                (*(t.rsplit("x", 1)[-1] for t in types.groups()), precision.group(1) if precision else "DEFAULT")
            )
    return found


@pytest.mark.parametrize("gradient", [False, True])
def test_float32_dot_product_attention_pins_full_float32_products(gradient):
    # Without a policy the op takes its inputs' default algorithm: JAX's default precision would let
    # a GPU run these float32 products as TF32.
    dots = _attention_dots(jnp.float32, gradient)
    assert len(dots) >= (4 if gradient else 2)
    assert all(dot == ("f32", "f32", "f32", "HIGHEST") for dot in dots), dots


def test_bfloat16_dot_product_attention_products_accumulate_in_float32():
    dots = _attention_dots(jnp.bfloat16)
    assert len(dots) == 2 and all(dot[2] == "f32" for dot in dots), dots


def test_dot_product_attention_reads_variables_as_bfloat16_and_accumulates_in_float32():
    variables = [dp.Variable(a) for a in (Q, K, V)]
    with dp.autocast_scope("bfloat16"):
        out = ops.dot_product_attention(*variables, mask=np.tril(np.ones((5, 6))))
    assert out.dtype == jnp.bfloat16
    seen = [np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64) for a in (Q, K, V)]
    assert_close(out, _attention_reference(*seen, mask=np.tril(np.ones((5, 6)))), "bfloat16")
    # Logits of 16-bit inputs with large products stay finite: float32 accumulation, safe fill.
    big = jnp.full((1, 2, 1, 64), 40.0, jnp.float16)  # q·k = 102400 overflows a float16 accumulator
    out = ops.dot_product_attention(big, big, big, mask=np.array([[True, False], [False, False]]))
    assert out.dtype == jnp.float16 and np.all(np.isfinite(np.asarray(out, np.float32)))


# --- control flow, slicing, segments ------------------------------------------------------------


def test_cond_while_loop_fori_loop_and_scan_match_python_loops_eagerly_and_under_jit():
    def run(x):  # x is a Variable: loop states take it as it is, closures read it once
        value = ops.asarray(x)
        grown = ops.while_loop(lambda a, n: jnp.sum(a) < 100, lambda a, n: (a * 2, n + 1), (x, 0))
        capped = ops.while_loop(lambda a: jnp.sum(a) < 100, lambda a: a * 2, x, maximum_iterations=2)
        total = ops.fori_loop(1, 4, lambda i, acc: acc + i * value, ops.zeros_like(x))
        carry, ys = ops.scan(lambda c, row: (c + row, c * row), ops.zeros_like(x), ops.stack([x, value + 1, value * 3]))
        signed = ops.cond(ops.sum(x) > 0, lambda: value, lambda: -value)
        return grown, capped, total, carry, ys, signed

    x = np.array([1.0, 2.0, 3.5], np.float32)
    a, n = x.astype(np.float64), 0
    while a.sum() < 100:
        a, n = a * 2, n + 1
    rows = [x, x + 1, x * 3]
    expected_ys, c = [], np.zeros(3)
    for row in rows:
        expected_ys.append(c * row)
        c = c + row
    for call in (run, jax.jit(run)):
        (grown, count), capped, total, carry, ys, signed = call(dp.Variable(x))
        assert_close(grown, a, "float32")
        assert int(count) == n
        assert_close(capped, x * 4, "float32")
        assert_close(total, 6 * x, "float32")
        assert_close(carry, sum(rows), "float32")
        assert_close(ys, np.stack(expected_ys), "float32")
        assert_close(signed, x, "float32")
    carry, ys = ops.scan(lambda c, _: (c + 1, c), 0, length=3, reverse=True)
    assert int(carry) == 3 and ys.tolist() == [2, 1, 0]


def test_loops_read_variable_state_through_autocast():
    variable = dp.Variable(np.array([1.0 + 2**-10, 2.0], np.float32))
    with dp.autocast_scope("bfloat16"):
        state = ops.while_loop(lambda a: a[0] < 4, lambda a: a * 2, variable)
        total = ops.fori_loop(0, 2, lambda i, acc: acc + 1, variable)
        carry, _ = ops.scan(lambda c, row: (c + row, row), variable, jnp.ones((2, 2), jnp.bfloat16))
        chosen = ops.cond(True, lambda: variable.value, lambda: variable.value * 0)
        mapped = ops.map(lambda row: row * 2, variable)
    assert state.dtype == total.dtype == carry.dtype == chosen.dtype == mapped.dtype == jnp.bfloat16
    assert state.tolist() == [4.0, 8.0] and total.tolist() == [3.0, 4.0]  # 1 + 2**-10 read as 1
    assert carry.tolist() == [3.0, 4.0] and mapped.tolist() == [2.0, 4.0]


def test_slice_and_slice_update_match_numpy_eagerly_and_under_jit():
    data = np.arange(24, dtype=np.float32).reshape(4, 6)
    np.testing.assert_array_equal(ops.slice(data, (1, 2), (2, 3)), data[1:3, 2:5])
    np.testing.assert_array_equal(ops.slice(dp.Variable(data), [2, 1], [-1, 2]), data[2:, 1:3])
    sliced = jax.jit(lambda x, i: ops.slice(x, (i, 0), (2, 6)))(dp.Variable(data), 1)
    np.testing.assert_array_equal(sliced, data[1:3])
    expected = data.copy()
    expected[1:3, 4:6] = -1
    patch = -np.ones((2, 2), np.float32)
    np.testing.assert_array_equal(ops.slice_update(data, (1, 4), patch), expected)
    updated = jax.jit(lambda x, i: ops.slice_update(x, jnp.stack([i, 4]), patch))(dp.Variable(data), 1)
    np.testing.assert_array_equal(updated, expected)
    with dp.autocast_scope("bfloat16"):
        assert ops.slice_update(dp.Variable(data), (0, 0), patch).dtype == jnp.bfloat16  # updates cast to inputs


def test_segment_reductions_match_numpy_eagerly_and_under_jit():
    data = RNG.normal(size=(7, 3)).astype(np.float32)
    ids = np.array([0, 2, 2, 0, 3, 3, 3])
    expected_sum = np.stack([data[ids == s].astype(np.float64).sum(0) for s in range(5)])
    expected_max = np.stack([data[ids == s].max(0) if np.any(ids == s) else np.full(3, -np.inf) for s in range(5)])
    assert_close(ops.segment_sum(dp.Variable(data), ids, num_segments=5), expected_sum, "float32")
    np.testing.assert_array_equal(ops.segment_max(data, ids, num_segments=5), expected_max)
    assert ops.segment_sum(data, ids).shape == (4, 3)  # eagerly, num_segments defaults to max(ids) + 1
    jitted = jax.jit(lambda d, i: (ops.segment_sum(d, i, 5, sorted=False), ops.segment_max(d, i, 5)))
    total, largest = jitted(dp.Variable(data), ids)
    assert_close(total, expected_sum, "float32")
    np.testing.assert_array_equal(largest, expected_max)
    np.testing.assert_array_equal(
        np.asarray(ops.segment_min(data, ids, 4))[[0, 2, 3]], np.stack([data[ids == s].min(0) for s in (0, 2, 3)])
    )
    assert_close(ops.segment_prod(data, ids, 4)[3], data[4:].astype(np.float64).prod(0), "float32")
    # A bfloat16 sum of 300 ones stalls at 256; the float32 accumulator does not.
    with dp.autocast_scope("bfloat16"):
        out = ops.segment_sum(dp.Variable(np.ones(300, np.float32)), np.zeros(300, np.int32), 1)
    assert out.dtype == jnp.bfloat16 and out.tolist() == [300.0]


def test_scatter_unstack_switch_divide_no_nan_and_erfc():
    indices = np.array([[0, 1], [2, 0], [0, 1]])
    expected = np.zeros((3, 2))
    for (i, j), value in zip(indices, [1.0, 2.0, 3.0], strict=True):
        expected[i, j] += value
    np.testing.assert_array_equal(ops.scatter(indices, np.array([1.0, 2.0, 3.0], np.float32), (3, 2)), expected)
    base = dp.Variable(np.ones((3, 2), np.float32))
    np.testing.assert_array_equal(
        ops.scatter_update(base, indices[:2], np.array([5.0, 7.0], np.float32)), [[1, 5], [1, 1], [7, 1]]
    )
    np.testing.assert_array_equal(
        ops.scatter_update(base, indices, np.ones(3, np.float32), "add"), [[1, 3], [1, 1], [2, 1]]
    )
    parts = ops.unstack(dp.Variable(DATA), axis=1)
    assert len(parts) == 3 and all(np.array_equal(p, DATA[:, i]) for i, p in enumerate(parts))
    branches = [lambda x: x + 1, lambda x: x * 10]
    assert [int(ops.switch(i, branches, jnp.int32(2))) for i in (-5, 0, 1, 9)] == [3, 3, 20, 20]  # clamped
    np.testing.assert_array_equal(
        ops.divide_no_nan(np.array([1.0, 3.0], np.float32), np.array([0.0, 2.0], np.float32)), [0, 1.5]
    )
    grad = jax.grad(lambda d: jnp.sum(ops.divide_no_nan(jnp.ones(2), d)))(jnp.array([0.0, 2.0]))
    np.testing.assert_array_equal(grad, [0.0, -0.25])
    assert_close(ops.erfc(dp.Variable(X)), 1 - _erf(X.astype(np.float64)), "float32")
    assert_close(ops.vectorized_map(jnp.sum, dp.Variable(DATA)), DATA.astype(np.float64).sum((1, 2)), "float32")
    assert_close(ops.associative_scan(jnp.add, dp.Variable(X)), np.cumsum(X.astype(np.float64)), "float32")


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ops.celu(jnp.ones(2), alpha=0), ValueError, r"ops.celu: alpha must be non-zero"),
        (lambda: ops.glu(jnp.ones(3)), ValueError, r"ops.glu: the size of axis -1 must be even.*shape \(3,\)"),
        (lambda: ops.glu(jnp.ones(4), axis=1), ValueError, r"ops.glu: axis 1 is out of range for inputs of rank 1"),
        (lambda: ops.squareplus(jnp.ones(2), b=-1), ValueError, r"b must be >= 0.*received -1"),
        (lambda: ops.threshold(jnp.ones(2), "1", 0), TypeError, r"threshold must be a real number, received '1'"),
        (lambda: ops.normalize(jnp.ones(2), order=0), ValueError, r"order must be an int >= 1, received 0"),
        (lambda: ops.normalize(jnp.ones(2), epsilon=-1.0), ValueError, r"epsilon must be >= 0, received -1.0"),
        (
            lambda: ops.rms_normalization(jnp.ones((2, 3)), jnp.ones(4)),
            ValueError,
            r"scale of shape \(4,\) does not fit",
        ),
        (
            lambda: ops.layer_normalization(jnp.ones(3), rms_scaling=True),
            TypeError,
            r"rms_scaling=True.*rms_normalization",
        ),
        (lambda: ops.layer_normalization(jnp.ones(3), axis="x"), TypeError, r"axis must be an int.*received 'x'"),
        (lambda: ops.layer_normalization(jnp.ones(3), gain=2), TypeError, r"unexpected argument gain=2"),
        (
            lambda: ops.batch_normalization(jnp.ones((2, 3)), jnp.ones(2), jnp.ones(3), axis=1),
            ValueError,
            r"mean must have shape \(3,\).*received shape \(2,\)",
        ),
        (
            lambda: ops.dot_product_attention(jnp.ones((2, 3, 4)), jnp.ones((2, 3, 4)), jnp.ones((2, 3, 4))),
            ValueError,
            r"expects 4-D .*query.shape=\(2, 3, 4\)",
        ),
        (
            lambda: ops.dot_product_attention(Q, Q[:, :, :3], Q[:, :, :3]),
            ValueError,
            r"N a multiple of K.*key.shape=\(2, 5, 3, 8\)",
        ),
        (
            lambda: ops.dot_product_attention(Q, K, V, mask=np.ones((3, 6))),
            ValueError,
            r"mask of shape \(3, 6\) does not broadcast to \(B, N, T, S\) = \(2, 4, 5, 6\)",
        ),
        (
            lambda: ops.dot_product_attention(Q, K, V, flash_attention=True),
            ValueError,
            r"flash_attention=True is not available",
        ),
        (lambda: ops.dot_product_attention(Q, K, V, attn_logits_soft_cap=5.0), ValueError, r"attn_logits_soft_cap=5.0"),
        (
            lambda: ops.cond(jnp.ones(2) > 0, lambda: 1, lambda: 2),
            ValueError,
            r"ops.cond: pred must be a scalar, received shape \(2,\)",
        ),
        (lambda: ops.cond(True, 1, lambda: 2), TypeError, r"ops.cond: true_fn must be callable, received 1"),
        (
            lambda: ops.while_loop(lambda i: i < 3, lambda i: i + 1, 0, maximum_iterations=-1),
            ValueError,
            r"maximum_iterations must be an int >= 0, received -1",
        ),
        (
            lambda: ops.while_loop(lambda a, b: a < 3, lambda a, b: a + 1, (0, 1)),
            ValueError,
            r"body must return 2 values",
        ),
        (
            lambda: ops.fori_loop(0.0, 3, lambda i, v: v, 0),
            ValueError,
            r"lower must be an integer scalar, received 0.0",
        ),
        (
            lambda: ops.scan(lambda c, x: (c, x), 0, jnp.ones(3), unroll=0),
            ValueError,
            r"unroll must be an int >= 1, received 0",
        ),
        (lambda: ops.scan(lambda c, x: (c, x), 0), ValueError, r"ops.scan: pass xs or length"),
        (
            lambda: ops.slice(jnp.ones((3, 3)), (0,), (1, 1)),
            ValueError,
            r"start_indices has 1 entries for inputs of rank 2",
        ),
        (
            lambda: ops.slice(jnp.ones((3, 3)), (0, 0), (1, 4)),
            ValueError,
            r"shape \(1, 4\) does not fit inside inputs of shape \(3, 3\)",
        ),
        (
            lambda: ops.slice(jnp.ones((3, 3)), (0.5, 0), (1, 1)),
            ValueError,
            r"start_indices must be integers, received \(0.5, 0\)",
        ),
        (
            lambda: jax.jit(lambda i: ops.slice(jnp.ones(3), (i,), (-1,)))(0),
            ValueError,
            r"shape\[0\] = -1 needs a concrete start",
        ),
        (
            lambda: ops.slice_update(jnp.ones((2, 2)), (0, 0), jnp.ones((3, 1))),
            ValueError,
            r"updates of shape \(3, 1\) do not fit inside inputs of shape \(2, 2\)",
        ),
        (
            lambda: ops.scatter_update(jnp.ones(3), [[0]], jnp.ones(1), reduction="sum"),
            ValueError,
            r"reduction must be None, .*received 'sum'",
        ),
        (
            lambda: ops.segment_sum(jnp.ones(3), jnp.zeros((3, 1), jnp.int32), 1),
            ValueError,
            r"segment_ids must be a 1-D integer array, received shape \(3, 1\)",
        ),
        (
            lambda: ops.segment_max(jnp.ones(3), jnp.zeros(2, jnp.int32), 1),
            ValueError,
            r"segment_ids of shape \(2,\) must match the leading axis of data of shape \(3,\)",
        ),
        (
            lambda: jax.jit(lambda i: ops.segment_sum(jnp.ones(3), i))(jnp.zeros(3, jnp.int32)),
            ValueError,
            r"num_segments=None needs concrete segment_ids.*pass num_segments",
        ),
        (
            lambda: ops.segment_sum(jnp.ones(3), jnp.zeros(3, jnp.int32), num_segments=-2),
            ValueError,
            r"num_segments must be an int >= 0, received -2",
        ),
        (lambda: ops.unstack(jnp.ones((2, 3)), num=3), ValueError, r"num=3 but inputs of shape \(2, 3\) have 2 slices"),
        (lambda: ops.switch(0, [], 1), TypeError, r"branches must be a non-empty list of callables, received \[\]"),
    ],
)
def test_bad_arguments_to_the_new_functions_name_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --- losses, metrics, sparsemax -----------------------------------------------------------------


def _sparsemax_reference(z):
    # Sorting-free definition: tau solves sum(max(z - tau, 0)) = 1, found by bisection in float64.
    low, high = z.min() - 1, z.max()
    for _ in range(200):
        tau = (low + high) / 2
        low, high = (tau, high) if np.maximum(z - tau, 0).sum() > 1 else (low, tau)
    return np.maximum(z - (low + high) / 2, 0)


LOGITS = RNG.normal(size=(4, 5)).astype(np.float32) * 2
LABELS = np.array([0, 3, 4, 1])


def test_cross_entropies_match_numpy_eagerly_under_jit_and_with_variables():
    z = LOGITS.astype(np.float64)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    expected = -log_p[np.arange(4), LABELS]
    onehot = np.eye(5)[LABELS]
    probabilities = np.exp(log_p)
    for call in (lambda f, *a, **k: f(*a, **k), lambda f, *a, **k: jax.jit(lambda *b: f(*b, **k))(*a)):
        assert_close(
            call(ops.sparse_categorical_crossentropy, LABELS, dp.Variable(LOGITS), from_logits=True),
            expected,
            "float32",
        )
        assert_close(
            call(ops.categorical_crossentropy, onehot, dp.Variable(LOGITS), from_logits=True), expected, "float32"
        )
        assert_close(call(ops.categorical_crossentropy, onehot, probabilities.astype(np.float32)), expected, "float32")
    column = ops.sparse_categorical_crossentropy(LABELS[:, None], LOGITS.T, from_logits=True, axis=0)
    assert_close(column, expected, "float32")  # classes on axis 0; the trailing size-1 target axis is dropped
    t = (RNG.uniform(size=(3, 4)) > 0.5).astype(np.float32)
    p = RNG.uniform(0.01, 0.99, size=(3, 4)).astype(np.float32)
    bce = -(t * np.log(p.astype(np.float64)) + (1 - t) * np.log1p(-p.astype(np.float64)))
    assert_close(ops.binary_crossentropy(t, dp.Variable(p)), bce, "float32")
    logit = np.log(p.astype(np.float64) / (1 - p))
    assert_close(ops.binary_crossentropy(t, logit.astype(np.float32), from_logits=True), bce, "float32")
    with dp.autocast_scope("bfloat16"):
        out = ops.sparse_categorical_crossentropy(LABELS, dp.Variable(LOGITS), from_logits=True)
    seen = np.asarray(jnp.asarray(LOGITS, jnp.bfloat16), np.float64)
    assert out.dtype == jnp.bfloat16
    assert_close(out, -(seen - np.log(np.exp(seen).sum(-1, keepdims=True)))[np.arange(4), LABELS], "bfloat16")


def test_in_top_k_psnr_and_sparsemax_match_numpy():
    scores = LOGITS.copy()
    scores[1, 0] = scores[2, LABELS[2]] = np.nan  # a NaN elsewhere, and one at the target
    for k in (1, 2, 5):
        # A NaN score ranks below every number (Keras); ties with the target's score count as in.
        ranked = np.nan_to_num(scores, nan=-np.inf)
        expected = [bool(np.sum(row > row[label]) < k) for row, label in zip(ranked, LABELS, strict=True)]
        assert ops.in_top_k(LABELS, dp.Variable(scores), k).tolist() == expected
    a, b = RNG.uniform(size=(2, 8)).astype(np.float32), RNG.uniform(size=(2, 8)).astype(np.float32)
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    assert_close(ops.psnr(dp.Variable(a), b, 2.0), 20 * np.log10(2.0) - 10 * np.log10(mse), "float32")
    out = jax.jit(lambda x: ops.sparsemax(x, axis=0))(dp.Variable(LOGITS))
    assert_close(out, np.stack([_sparsemax_reference(col) for col in LOGITS.T.astype(np.float64)], axis=1), "float32")
    assert_close(out.sum(0), np.ones(5), "float32")
    with dp.autocast_scope("bfloat16"):
        assert ops.sparsemax(dp.Variable(LOGITS)).dtype == jnp.bfloat16


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: ops.binary_crossentropy(jnp.ones(2), jnp.ones(3)),
            ValueError,
            r"target and output must have the same shape, received target.shape=\(2,\), output.shape=\(3,\)",
        ),
        (
            lambda: ops.categorical_crossentropy(jnp.ones(2), jnp.ones(2), from_logits="yes"),
            TypeError,
            r"from_logits must be a bool, received 'yes'",
        ),
        (
            lambda: ops.sparse_categorical_crossentropy(jnp.ones(2), jnp.ones((2, 3))),
            TypeError,
            r"target must hold integer class ids, received dtype float32",
        ),
        (
            lambda: ops.sparse_categorical_crossentropy(jnp.zeros(3, jnp.int32), jnp.ones((2, 3))),
            ValueError,
            r"target of shape \(3,\) does not match output of shape \(2, 3\).*expected \(2,\)",
        ),
        (
            lambda: ops.categorical_crossentropy(jnp.ones((2, 3)), jnp.ones((2, 3)), axis=2),
            ValueError,
            r"axis 2 is out of range for inputs of shape \(2, 3\)",
        ),
        (
            lambda: ops.in_top_k(jnp.zeros(2, jnp.int32), jnp.ones((2, 3)), 0),
            ValueError,
            r"k must be a positive int, received 0",
        ),
        (
            lambda: ops.in_top_k(jnp.zeros(3, jnp.int32), jnp.ones((2, 3)), 1),
            ValueError,
            r"targets of shape \(3,\) and dtype int32 for predictions of shape \(2, 3\)",
        ),
        (
            lambda: ops.psnr(jnp.ones(2), jnp.ones(3), 1.0),
            ValueError,
            r"x1 and x2 must have the same shape, received \(2,\) and \(3,\)",
        ),
        (lambda: ops.sparsemax(jnp.ones(())), ValueError, r"sparsemax needs an array of rank >= 1"),
    ],
)
def test_bad_arguments_to_the_losses_name_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_mixed_bfloat16_layer_sees_its_float32_weights_as_bfloat16_through_the_new_ops():
    from layers import Layer

    class Block(Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")
            self.query = self.add_weight(shape=(1, 3, 2, input_shape[-1]), initializer="glorot_uniform", name="q")

        def call(self, x):
            normed = ops.rms_normalization(x, self.scale)
            attended = ops.dot_product_attention(self.query, normed, normed)
            total, _ = ops.scan(lambda c, row: (c + row, row), ops.zeros_like(self.scale), normed[0, :, 0])
            return normed, attended, total, ops.glu(self.scale)

    block = Block(dtype="mixed_bfloat16")
    x = RNG.normal(size=(1, 4, 2, 6)).astype(np.float32)
    normed, attended, total, gated = block(x)
    assert block.scale.dtype == "float32"
    assert normed.dtype == attended.dtype == total.dtype == gated.dtype == jnp.bfloat16
    seen = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64)
    assert_close(normed, seen / np.sqrt(np.mean(seen**2, -1, keepdims=True) + 1e-7), "bfloat16")
    query = np.asarray(jnp.asarray(block.query.numpy(), jnp.bfloat16), np.float64)
    assert_close(
        attended,
        _attention_reference(query, np.asarray(normed, np.float64), np.asarray(normed, np.float64)),
        "bfloat16",
    )
