"""Int8 inference (`dtypepolicy/quantization/_int8.py` and the layers that delegate to it).

Every expected value is an independent NumPy computation of the rule written out: kernel codes
per output channel (scale = max|k| over the summed axes / 127, round half to even, clip to ±127,
scale 1 for an all-zero slice), input codes per row, an exact integer product, the product
rescaled in float32 by row_scale * channel_scale, plus the float32 bias, rounded once to the
compute dtype.
"""

import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import dtypepolicy as dp
import layers
from dtypepolicy.quantization import DENSE, Contraction, Int8Strategy, absmax_quantize

COMPUTE = {"float32": np.float32, "mixed_bfloat16": ml_dtypes.bfloat16}


def normal(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


# --- NumPy references ---------------------------------------------------------------------------


def np_absmax(x, axes):
    """(int8 codes, float32 scales with size-1 `axes`) of float32 `x`, the rule written out."""
    x = np.asarray(x, np.float32)
    amax = np.max(np.abs(x), axis=axes, keepdims=True)
    # amax / 127 and x / scale as products with float32 reciprocals (see RECIPROCAL_DIFFERS).
    scale = np.where(amax > 0, amax * np.float32(1 / 127), np.float32(1)).astype(np.float32)
    codes = np.clip(np.round(x * (np.float32(1) / scale)), -127, 127).astype(np.int8)  # np.round: half to even
    return codes, scale


def np_int8_einsum(equation, x, kernel, bias, source, x_axes, kernel_axes, fused=False):
    """The int8 forward in NumPy: the float kernel `kernel` quantized here, not by the code under test.

    `fused`: the rescale and the bias add as one fused multiply-add (one rounding), which XLA's
    CPU and GPU backends may emit for `sums * scales + bias`; otherwise two float32 roundings.
    """
    compute = COMPUTE[source]
    x_seen = np.asarray(x, np.float32).astype(compute).astype(np.float32)  # the input in the compute dtype
    x_codes, x_scale = np_absmax(x_seen, x_axes)
    k_codes, k_scale = np_absmax(kernel, kernel_axes)
    sums = np.einsum(equation, x_codes.astype(np.int64), k_codes.astype(np.int64))  # exact integers
    assert np.abs(sums).max() < 2**24  # so the float32 conversion below is exact too
    scales = np.einsum(equation, x_scale, k_scale)  # summed axes have size 1: one float32 product each
    assert scales.dtype == np.float32
    sums = sums.astype(np.float32)
    if bias is None:
        outputs = sums * scales
    elif fused:
        outputs = (sums.astype(np.float64) * scales + np.asarray(bias, np.float64)).astype(np.float32)
    else:
        outputs = sums * scales + np.asarray(bias, np.float32)
    assert outputs.dtype == np.float32
    return outputs.astype(compute)


def assert_int8_output(actual, *reference_args):
    """Each element equals the NumPy int8 forward, with the rescale and bias add fused or not."""
    actual = np.asarray(actual)
    separate, fused = (np_int8_einsum(*reference_args, fused=f) for f in (False, True))
    assert actual.dtype == separate.dtype and actual.shape == separate.shape
    matches = (actual == separate) | (actual == fused)
    assert matches.all(), (actual[~matches], separate[~matches], fused[~matches])
    return separate


def as_numpy(array):
    return np.asarray(array).astype(np.float64)


# --- absmax_quantize and the strategy -----------------------------------------------------------


def test_absmax_quantize_rounds_half_to_even_and_gives_a_zero_slice_scale_one():
    # Column 0 has amax 127, so its scale is exactly 1 and x/scale are the ties themselves.
    x = jnp.array([[127.0, 0.0], [0.5, 0.0], [1.5, 0.0], [-2.5, 0.0], [-127.0, 0.0]])
    codes, scale = absmax_quantize(x, axes=(0,))
    assert codes.dtype == jnp.int8 and scale.dtype == jnp.float32 and scale.shape == (1, 2)
    assert codes[:, 0].tolist() == [127, 0, 2, -2, -127]
    assert codes[:, 1].tolist() == [0, 0, 0, 0, 0]
    assert scale.tolist() == [[1.0, 1.0]]


# amax values whose float32 quotient amax / 127 is one ulp away from amax * float32(1 / 127). XLA
# rewrites any division by a constant (or by a broadcast scale) into a product with the rounded
# reciprocal, so the engine writes both divisions as such products itself: the same bits on every
# backend and fusion, and what the NumPy reference above computes.
RECIPROCAL_DIFFERS = [2.8993968963623047, 3.2548441886901855, 3.6084141731262207, 1.6058024168014526]


@pytest.mark.parametrize("jit", [False, True])
def test_absmax_scale_is_amax_times_the_float32_reciprocal_of_127(jit):
    amax = np.array(RECIPROCAL_DIFFERS, np.float32)
    assert np.all(amax / np.float32(127) != amax * np.float32(1 / 127))  # the values tell the two forms apart
    x = np.stack([amax, -amax / 2, amax / 3], axis=1)  # rows whose absmax is `amax`
    quantize = jax.jit(absmax_quantize, static_argnames="axes") if jit else absmax_quantize
    codes, scale = quantize(jnp.asarray(x), axes=(1,))
    np.testing.assert_array_equal(np.asarray(scale)[:, 0], amax * np.float32(1 / 127))
    ulp = np.spacing(amax / np.float32(127))
    assert np.all(np.abs(np.asarray(scale)[:, 0] - amax / np.float32(127)) <= ulp)
    assert codes[:, 0].tolist() == [127] * 4 and codes[:, 1].tolist() == [-64] * 4  # -63.5 rounds to even


@pytest.mark.parametrize("axes", [(0,), (1,), (0, 1), (1, 2)])
def test_absmax_quantize_equals_numpy(axes):
    x = normal((4, 6, 5), seed=1, scale=3.0)
    x[1] = 0.0  # zero slices for every axes choice that keeps axis 0
    codes, scale = absmax_quantize(jnp.asarray(x), axes=axes)
    expected_codes, expected_scale = np_absmax(x, axes)
    np.testing.assert_array_equal(np.asarray(codes), expected_codes)
    np.testing.assert_array_equal(np.asarray(scale), expected_scale)
    assert int(np.abs(np.asarray(codes, np.int32)).max()) == 127


def test_absmax_quantize_under_jit_equals_eager():
    x = jnp.asarray(normal((8, 16), seed=2))
    eager = absmax_quantize(x, axes=(1,))
    jitted = jax.jit(absmax_quantize, static_argnames="axes")(x, axes=(1,))
    for a, b in zip(eager, jitted, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    ("equation", "kernel_shape", "summed"),
    [("...i,io->...o", (6, 5), (0,)), ("abc,cde->abde", (4, 2, 3), (0,)), ("abcd,cde->abe", (2, 3, 4), (0, 1))],
)
def test_strategy_stores_per_output_channel_codes_and_scales(equation, kernel_shape, summed):
    kernel = normal(kernel_shape, seed=3)
    kernel[..., 0] = 0.0  # all-zero output channels
    contraction = Contraction(equation)
    strategy = Int8Strategy()
    codes = strategy.stored_kernel(jnp.asarray(kernel), contraction)
    (spec,) = strategy.weight_specs(jnp.asarray(kernel), contraction)
    expected_codes, expected_scale = np_absmax(kernel, summed)
    expected_scale = np.squeeze(expected_scale, axis=summed)
    assert codes.dtype == jnp.int8
    np.testing.assert_array_equal(np.asarray(codes), expected_codes)
    assert spec.name == "kernel_scale" and spec.dtype == "float32"
    assert not spec.trainable and not spec.overwrite_with_gradient
    assert spec.shape == expected_scale.shape == kernel_shape[len(summed) :]
    np.testing.assert_array_equal(np.asarray(spec.value), expected_scale)
    assert np.all(expected_scale[..., 0] == 1.0) and np.all(expected_codes[..., 0] == 0)


def test_strategy_project_equals_numpy():
    x, kernel, bias = normal((5, 6), 4), normal((6, 3), 5), normal((3,), 6)
    strategy = Int8Strategy()
    codes = strategy.stored_kernel(jnp.asarray(kernel), DENSE)
    weights = {spec.name: spec.value for spec in strategy.weight_specs(jnp.asarray(kernel), DENSE)}
    got = strategy.project(
        jnp.asarray(x), codes, jnp.asarray(bias), weights, contraction=DENSE, compute_dtype="float32", training=False
    )
    assert_int8_output(got, "ni,io->no", x, kernel, bias, "float32", (1,), (0,))


# --- Dense and EinsumDense forward ----------------------------------------------------------------


def _quantized(layer, x):
    layer(x)
    kernel = np.asarray(layer.kernel.value, np.float32)
    bias = None if layer.bias is None else np.asarray(layer.bias._read_storage(), np.float32)
    layer.quantize("int8")
    return kernel, bias


def _stateless(layer):
    trainable = [v._read_storage() for v in layer.trainable_variables]
    non_trainable = [v._read_storage() for v in layer.non_trainable_variables]
    return jax.jit(lambda t, n, x: layer.stateless_call(t, n, x)[0]), trainable, non_trainable


@pytest.mark.parametrize("source", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("shape", [(7, 6), (2, 3, 6)])
def test_int8_dense_forward_equals_numpy_eager_and_jitted(source, shape):
    layer = layers.Dense(5, bias_initializer="random_normal", dtype=source)
    x = normal(shape, seed=7, scale=2.0)
    x[0, ...] = 0.0  # a zero row: scale 1, codes 0, the output is the bias
    kernel, bias = _quantized(layer, x)
    reference = ("...i,io->...o", x, kernel, bias, source, (len(shape) - 1,), (0,))
    eager = layer(x)
    expected = assert_int8_output(eager, *reference)
    np.testing.assert_array_equal(np.asarray(eager[0]), np.broadcast_to(bias, eager[0].shape).astype(expected.dtype))
    jitted, trainable, non_trainable = _stateless(layer)
    assert_int8_output(jitted(trainable, non_trainable, x), *reference)
    assert_int8_output(jax.jit(layer)(x), *reference)


@pytest.mark.parametrize("source", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize(
    ("equation", "output_shape", "bias_axes", "input_shape", "x_axes", "kernel_axes"),
    [
        ("abc,cde->abde", (None, 2, 3), "de", (2, 3, 4), (2,), (0,)),  # heads projection
        ("abcd,cde->abe", (None, 5), "e", (2, 3, 2, 4), (2, 3), (0, 1)),  # attention output: two summed axes
        ("...b,bc->...c", (4,), "c", (2, 3, 5), (2,), (0,)),
        ("ab...,bc->ac...", (4,), "c", (2, 5, 3), (1,), (0,)),  # rows are (a, ...) slices over b
    ],
)
def test_int8_einsum_dense_forward_equals_numpy(
    source, equation, output_shape, bias_axes, input_shape, x_axes, kernel_axes
):
    layer = layers.EinsumDense(
        equation, output_shape, bias_axes=bias_axes, bias_initializer="random_normal", dtype=source
    )
    x = normal(input_shape, seed=8, scale=1.5)
    kernel, bias = _quantized(layer, x)
    reference = (equation, x, kernel, bias, source, x_axes, kernel_axes)
    scale_shape = tuple(np.delete(np.array(kernel.shape), kernel_axes))
    assert layer.kernel_scale.shape == scale_shape and layer.kernel.dtype == "int8"
    assert_int8_output(layer(x), *reference)
    jitted, trainable, non_trainable = _stateless(layer)
    assert_int8_output(jitted(trainable, non_trainable, x), *reference)


def test_int8_dense_inside_an_outer_jit_with_an_activation_equals_numpy():
    layer = layers.Dense(4, activation="relu", bias_initializer="random_normal")
    x = normal((6, 3), seed=9)
    kernel, bias = _quantized(layer, x)
    got = np.asarray(jax.jit(lambda v: layer(v) * 1.0)(x))
    separate, fused = (np_int8_einsum("ni,io->no", x, kernel, bias, "float32", (1,), (0,), fused=f) for f in (0, 1))
    assert ((got == np.maximum(separate, 0)) | (got == np.maximum(fused, 0))).all()
    assert (got == 0).any() and (got > 0).any()


# --- the lowered program ----------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["float32", "mixed_bfloat16"])
def test_int8_dense_lowers_to_an_integer_dot(source):
    layer = layers.Dense(5, dtype=source)
    x = normal((3, 4))
    _quantized(layer, x)
    jitted, trainable, non_trainable = _stateless(layer)
    # The lowered program, what every backend receives. (XLA's CPU backend then widens the int8
    # operands to int32 for its dot; a GPU backend keeps them for an int8 GEMM.)
    text = jitted.lower(trainable, non_trainable, x).as_text()
    dots = re.findall(r"stablehlo\.dot_general.*?:\s*\((tensor<[^>]*>), (tensor<[^>]*>)\) -> (tensor<[^>]*>)", text)
    assert ("tensor<3x4xi8>", "tensor<4x5xi8>", "tensor<3x5xi32>") in dots, dots
    # No floating dot multiplies by the full kernel: the only other product is the (3,1)x(1,5) scale product.
    assert all(shapes[1] != "tensor<4x5xf32>" and shapes[1] != "tensor<4x5xbf16>" for shapes in dots), dots


# --- accuracy against float64 ------------------------------------------------------------------------

# Measured (XLA CPU, five initializer seeds): relative Frobenius error of the int8 MLP below against
# the float64 forward of its original float32 weights 1.01e-2 .. 1.20e-2 for a float32 source and
# 1.04e-2 .. 1.25e-2 for mixed_bfloat16 (the unquantized MLP: 2e-7 and 4e-3). That is the expected
# size: per-row absmax of 64-128 Gaussian-like features gives a step of ~2% of their std, so each
# quantized operand adds ~0.55% noise, six of them over three layers ~1.3%. Bound, with a 1.6x margin:
INT8_MLP_RELATIVE_ERROR = 2e-2


def _mlp(source):
    return layers.Sequential(
        [
            layers.Dense(128, activation="relu", bias_initializer="random_normal"),
            layers.Dense(128, activation="relu", bias_initializer="random_normal"),
            layers.Dense(16, bias_initializer="random_normal"),
        ],
        dtype=source,
    )


def _float64_mlp(x, weights):
    h = np.asarray(x, np.float64)
    for i in range(0, len(weights), 2):
        h = h @ weights[i] + weights[i + 1]
        if i + 2 < len(weights):
            h = np.maximum(h, 0)
    return h


def relative_error(actual, expected):
    return float(np.linalg.norm(as_numpy(actual) - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize("source", ["float32", "mixed_bfloat16"])
def test_int8_mlp_error_against_float64_is_within_the_stated_bound(source):
    model = _mlp(source)
    x = normal((256, 64), seed=10)
    model(x)
    original = [np.asarray(w, np.float64) for w in model.get_weights()]  # kernel, bias per layer, float32 masters
    report = model.quantize("int8")
    assert len(report.quantized) == 3
    expected = _float64_mlp(x, original)
    error = relative_error(model(x), expected)
    assert error < INT8_MLP_RELATIVE_ERROR, error


# --- variables, policy and gradients -----------------------------------------------------------------


@pytest.mark.parametrize("source", ["float32", "mixed_bfloat16"])
def test_quantize_int8_variables_and_policy(source):
    layer = layers.Dense(3, dtype=source)
    x = normal((2, 4))
    kernel, bias = _quantized(layer, x)
    assert layer.dtype_policy.name == f"int8_from_{source}"
    assert isinstance(layer.dtype_policy, dp.QuantizedDTypePolicy)
    assert layer.quantization_mode == "int8"
    assert layer.kernel.dtype == "int8" and not layer.kernel.trainable and not layer.kernel.autocast
    assert layer.kernel.shape == (4, 3) and layer.kernel.path == f"{layer.name}/kernel"
    assert layer.kernel_scale.dtype == "float32" and not layer.kernel_scale.trainable
    assert not layer.kernel_scale.autocast and layer.kernel_scale.shape == (3,)
    assert layer.bias.dtype == "float32" and layer.bias.trainable and layer.bias.autocast
    np.testing.assert_array_equal(np.asarray(layer.bias._read_storage()), bias)
    codes, scale = np_absmax(kernel, (0,))
    np.testing.assert_array_equal(np.asarray(layer.kernel.value), codes)
    np.testing.assert_array_equal(np.asarray(layer.kernel_scale.value), scale[0])
    assert [v.name for v in layer.trainable_variables] == ["bias"]
    assert sorted(v.name for v in layer.non_trainable_variables) == ["kernel", "kernel_scale"]
    assert len(layer.weights) == 3


def test_int8_input_gradient_is_straight_through_to_the_dequantized_kernel():
    layer = layers.Dense(5, bias_initializer="random_normal")
    x = normal((4, 6), seed=11)
    kernel, _ = _quantized(layer, x)
    cotangent = normal((4, 5), seed=12)
    trainable = [v._read_storage() for v in layer.trainable_variables]
    non_trainable = [v._read_storage() for v in layer.non_trainable_variables]

    def loss(t, v):
        return jnp.sum(layer.stateless_call(t, non_trainable, v)[0] * cotangent)

    (bias_grad,), x_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))(trainable, jnp.asarray(x))
    codes, scale = np_absmax(kernel, (0,))
    dequantized = codes.astype(np.float32) * scale  # float32, as the layer computes in float32
    expected = cotangent.astype(np.float64) @ dequantized.astype(np.float64).T
    np.testing.assert_allclose(np.asarray(x_grad, np.float64), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bias_grad), cotangent.sum(axis=0), rtol=1e-6)
    # Not the gradient of the float kernel: straight through means the dequantized one.
    assert not np.allclose(np.asarray(x_grad, np.float64), cotangent @ kernel.T.astype(np.float64), rtol=1e-7)


def test_int8_input_gradient_under_mixed_bfloat16():
    layer = layers.Dense(5, dtype="mixed_bfloat16")
    x = normal((4, 6), seed=13)
    kernel, _ = _quantized(layer, x)
    grad = jax.grad(lambda v: jnp.sum(layer(v).astype(jnp.float32)))(jnp.asarray(x))
    assert grad.dtype == jnp.float32
    codes, scale = np_absmax(kernel, (0,))
    dequantized = (codes.astype(np.float32) * scale).astype(ml_dtypes.bfloat16).astype(np.float64)
    expected = np.ones((4, 5)) @ dequantized.T
    np.testing.assert_allclose(np.asarray(grad, np.float64), expected, rtol=1e-2, atol=1e-2)


# --- int8_from_<source> at construction -------------------------------------------------------------


@pytest.mark.parametrize("source", ["float32", "mixed_bfloat16"])
def test_int8_policy_at_construction_quantizes_the_initializer_draw(source):
    init = {"class_name": "GlorotUniform", "config": {"seed": 5}}
    plain = layers.Dense(6, kernel_initializer=init, bias_initializer="ones", dtype=source)
    quantized = layers.Dense(6, kernel_initializer=init, bias_initializer="ones", dtype=f"int8_from_{source}")
    x = normal((3, 4), seed=14)
    plain(x)
    out = quantized(x)
    draw = np.asarray(plain.kernel._read_storage(), np.float32)
    codes, scale = np_absmax(draw, (0,))
    assert quantized.dtype_policy.name == f"int8_from_{source}"
    assert quantized.kernel.dtype == "int8" and not quantized.kernel.trainable
    np.testing.assert_array_equal(np.asarray(quantized.kernel.value), codes)
    np.testing.assert_array_equal(np.asarray(quantized.kernel_scale.value), scale[0])
    assert_int8_output(out, "ni,io->no", x, draw, np.ones(6, np.float32), source, (1,), (0,))
    # The same layer built by quantize() after the fact holds the same variables.
    plain.quantize("int8")
    for a, b in zip(plain.get_weights(), quantized.get_weights(), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_int8_policy_at_construction_on_einsum_dense():
    layer = layers.EinsumDense("abc,cde->abde", (None, 2, 3), bias_axes="de", dtype="int8_from_float32")
    layer(normal((2, 3, 4)))
    assert layer.kernel.dtype == "int8" and layer.kernel.shape == (4, 2, 3)
    assert layer.kernel_scale.shape == (2, 3) and layer.bias.shape == (2, 3)


def test_an_int8_layer_trains_its_bias_only_and_drops_the_kernel_regularizer():
    from layers import optimizers
    from layers.training import make_train_step

    x, y = normal((8, 3), seed=15), normal((8, 2), seed=16)
    model = layers.Sequential([layers.Dense(4, activation="relu"), layers.Dense(2, kernel_regularizer="l2")])
    model(x)
    assert len(model.losses) == 1
    model.quantize("int8")
    assert model.losses == []  # the regularizer belonged to the float kernel, which is gone
    codes = [np.asarray(layer.kernel.value) for layer in model.layers]
    step = make_train_step(model, "mean_squared_error", optimizers.SGD(0.1))
    state = step.init_state()
    losses = []
    for _ in range(3):
        state, metrics = step(state, (x, y))
        losses.append(float(metrics["loss"]))
    step.write_back(state)
    assert losses[-1] < losses[0]
    for layer, before in zip(model.layers, codes, strict=True):
        np.testing.assert_array_equal(np.asarray(layer.kernel.value), before)
        assert layer.kernel.dtype == "int8"


def test_int8_with_float16_compute_keeps_sums_past_float16s_range():
    # 64 inputs of 100 times kernel entries near 1: int32 sums of 127 * 127 * 64 ≈ 1.03e6 codes, far
    # past float16's 65504, while the dequantized output (6400) fits; rescaled in float16 they would
    # overflow to inf.
    dense = layers.Dense(1, use_bias=False, kernel_initializer="ones", dtype="int8_from_mixed_float16")
    x = np.full((1, 64), 100.0, np.float32)
    out = np.asarray(dense(x), np.float64)
    assert dense.kernel.dtype == "int8" and np.isfinite(out).all()
    np.testing.assert_allclose(out, 6400.0, rtol=2e-3)
