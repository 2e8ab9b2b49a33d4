"""Float8 delayed-scaling math (`dtypepolicy.float8`) against hand-derived and NumPy references.

References never go through the library: expected values are written by hand or computed with
NumPy float32/float64 and ml_dtypes casts done in NumPy. Each numeric case runs eagerly and
under `jax.jit`.
"""

import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from dtypepolicy import float8
from tests._tolerances import assert_close

F32 = np.float32
TRANSFORMS = [pytest.param(lambda f: f, id="eager"), pytest.param(jax.jit, id="jit")]
FORMATS = {  # float8 format -> (largest finite value, written by hand)
    "float8_e4m3fn": 448.0,
    "float8_e5m2": 57344.0,
}
COMPUTE_DTYPES = ["float32", "bfloat16", "float16"]
NP_DTYPES = {
    "float32": np.dtype(np.float32),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float16": np.dtype(np.float16),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
}


def keras_scale(amax, dtype_max, margin=0):
    """Keras 3's formulation `1 / (dtype_max / amax / 2**margin)`, step by step in NumPy float32."""
    return F32(1) / (F32(dtype_max) / F32(amax) / F32(2.0**margin))


def reference_qdq(x, scale, fmt, compute):
    """`saturate(x / s)` cast to float8 and back times `s`, in NumPy.

    x and s are rounded to `compute` first; the quotient is formed in float32 (one rounding,
    then one more to float8); the product q * s is rounded to `compute`.
    """
    dtype = NP_DTYPES[compute]
    limit = np.float32(FORMATS[fmt])
    s = np.asarray(np.float32(scale)).astype(dtype)
    scaled = np.asarray(x, np.float32).astype(dtype).astype(np.float32) / s.astype(np.float32)
    clipped = np.where(scaled > limit, limit, np.where(scaled < -limit, -limit, scaled)).astype(np.float32)
    return clipped.astype(NP_DTYPES[fmt]).astype(dtype) * s


def assert_bits_equal(actual, expected):
    """Exact equality, dtype included (NaN equal to NaN)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    np.testing.assert_array_equal(actual, expected, strict=True)


# --- constants ---------------------------------------------------------------------------------


def test_format_maxima_are_the_hand_known_values():
    assert float8.E4M3_MAX == 448.0
    assert float8.E5M2_MAX == 57344.0
    assert type(float8.E4M3_MAX) is float and type(float8.E5M2_MAX) is float


# --- amax history ------------------------------------------------------------------------------


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_history_holds_the_last_amaxes_newest_first_then_oldest(transform):
    update = transform(float8.update_amax_history)
    # Each step's max is negative or not the largest signed value, so only max|x| gives 5, 7, 9.
    steps = [
        (np.array([-5.0, 1.0, 4.5], F32), [5.0, 0.0, 0.0]),
        (np.array([[3.0, -7.0], [6.5, 0.0]], F32), [7.0, 0.0, 5.0]),
        (np.array([2.0, -9.0], F32), [9.0, 5.0, 7.0]),
        (np.array([-1.0], F32), [1.0, 7.0, 9.0]),
    ]
    history = jnp.zeros(3, jnp.float32)
    for x, expected in steps:
        history = update(jnp.asarray(x), history)
        assert_bits_equal(history, np.array(expected, F32))


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_history_of_length_one_keeps_only_the_newest(transform):
    update = transform(float8.update_amax_history)
    history = update(jnp.array([-5.0]), jnp.zeros(1, jnp.float32))
    history = update(jnp.array([2.0, -3.0]), history)
    assert_bits_equal(history, np.array([3.0], F32))


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("x_dtype", ["bfloat16", "float16"])
def test_history_keeps_its_dtype_when_inputs_are_16_bit(transform, x_dtype):
    x = np.array([0.5, -3.25, 2.0], NP_DTYPES[x_dtype])
    history = transform(float8.update_amax_history)(jnp.asarray(x), jnp.array([1.0, 2.0], jnp.float32))
    assert_bits_equal(history, np.array([3.25, 1.0], F32))


# --- compute_scale -----------------------------------------------------------------------------


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_scale_for_amax_10_is_10_over_448(transform):
    scale = transform(lambda a, s: float8.compute_scale(a, s, 448))(10.0, 1.0)
    direct = F32(10) / F32(448)
    reciprocal = F32(1) / (F32(448) / F32(10))
    assert direct == reciprocal  # for 10 both float32 formulations agree bit for bit
    assert_bits_equal(scale, direct)
    assert_bits_equal(scale, reciprocal)
    assert abs(float(scale) - 10 / 448) <= np.spacing(direct)


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_scale_matches_keras_reciprocal_and_is_within_one_ulp_of_amax_over_max(transform, fmt):
    dtype_max = FORMATS[fmt]
    # 11 and 19 are amaxes where `amax / max` and `1 / (max / amax)` round differently in float32.
    amax = np.concatenate([np.arange(1, 64, dtype=F32), np.array([0.015625, 0.3, 11.0, 19.0, 1e4, 3e5], F32)])
    scale = transform(lambda a, s: float8.compute_scale(a, s, dtype_max))(jnp.asarray(amax), 1.0)
    assert_bits_equal(scale, keras_scale(amax, dtype_max))
    direct = amax / F32(dtype_max)
    assert np.all(np.abs(np.asarray(scale) - direct) <= np.spacing(direct))
    assert_close(scale, amax.astype(np.float64) / dtype_max, "float32")


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize(
    "amax",
    [0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, -448.0],
    ids=["zero", "negative-zero", "inf", "minus-inf", "nan", "minus-one", "minus-448"],
)
@pytest.mark.parametrize("old_scale", [0.3, 1.0, 7.25e-3], ids=["0.3", "1.0", "7.25e-3"])
def test_unusable_amax_keeps_the_old_scale_exactly(transform, amax, old_scale):
    scale = transform(lambda a, s: float8.compute_scale(a, s, 448.0))(F32(amax), F32(old_scale))
    assert_bits_equal(scale, F32(old_scale))


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("margin", [0, 1, 2, 3, -1])
def test_margin_multiplies_the_scale_by_a_power_of_two(transform, margin):
    scale = transform(lambda a, s: float8.compute_scale(a, s, 448.0, margin=margin))(10.0, 1.0)
    assert_bits_equal(scale, F32(10) / F32(448) * F32(2.0**margin))
    assert_bits_equal(scale, keras_scale(10.0, 448.0, margin))


def test_margin_one_doubles_and_margin_two_quadruples():
    base, one, two = (float(float8.compute_scale(11.0, 1.0, 448.0, margin=m)) for m in (0, 1, 2))
    assert one == 2 * base and two == 4 * base


def test_scale_for_e5m2_uses_57344():
    assert_bits_equal(float8.compute_scale(57344.0, 1.0, float8.E5M2_MAX), F32(1))
    assert_bits_equal(float8.compute_scale(448.0, 1.0, float8.E4M3_MAX), F32(1))
    assert_bits_equal(float8.compute_scale(1.0, 0.5, float8.E5M2_MAX), keras_scale(1.0, 57344.0))


# --- quantize_dequantize -----------------------------------------------------------------------

SATURATION_CASES = [  # (format, compute dtype, scale); float16 cannot hold 2 * 57344
    (fmt, compute, scale)
    for fmt in FORMATS
    for compute in COMPUTE_DTYPES
    for scale in (1.0, 0.5, 2.0)
    if not (fmt == "float8_e5m2" and compute == "float16" and scale > 1)
]


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize(("fmt", "compute", "scale"), SATURATION_CASES, ids=lambda v: str(v))
def test_far_out_of_range_values_saturate_instead_of_becoming_nan(transform, fmt, compute, scale):
    limit = FORMATS[fmt]
    x = np.array([1e6, -1e6, np.inf, -np.inf, 2 * limit * scale, -3 * limit * scale], F32)
    qdq = transform(lambda v, s: float8.quantize_dequantize(v, s, fmt, compute))
    out = qdq(jnp.asarray(x), scale)
    assert out.dtype == jnp.dtype(compute)
    expected = np.array([1, -1, 1, -1, 1, -1], np.float64) * limit * scale
    assert_bits_equal(out, expected.astype(NP_DTYPES[compute]))
    assert not np.isnan(np.asarray(out, np.float64)).any()


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_scale_is_a_dequantization_multiplier(transform):
    qdq = transform(lambda v, s: float8.quantize_dequantize(v, s, "float8_e4m3fn", "float32"))
    x = jnp.array([896.0, -896.0, 900.0, 1000.0, 3.0, 448.0], jnp.float32)
    # A scale of 2 lets values up to 2 * 448 through: q = x / 2, x_hat = q * 2.
    assert_bits_equal(qdq(x, 2.0), np.array([896.0, -896.0, 896.0, 896.0, 3.0, 448.0], F32))
    # With scale 1 the same values saturate at 448.
    assert_bits_equal(qdq(x, 1.0), np.array([448.0, -448.0, 448.0, 448.0, 3.0, 448.0], F32))
    # A scale of 1/4 gives finer steps: 0.3 / 0.25 = 1.2 rounds to 1.25 in E4M3 -> 0.3125.
    assert_bits_equal(qdq(jnp.array([0.3], jnp.float32), 0.25), np.array([0.3125], F32))


def _sample_inputs():
    rng = np.random.default_rng(20240514)
    magnitudes = 10.0 ** rng.uniform(-3, 3.5, size=400)
    signs = rng.choice([-1.0, 1.0], size=400)
    specials = [0.0, -0.0, 448.0, 449.0, 464.0, 480.0, 57344.0, 61440.0, 1e-3, 2.0**-9, 2.0**-10]
    return np.concatenate([signs * magnitudes, specials]).astype(F32)


QDQ_CASES = [(fmt, compute, scale) for fmt in FORMATS for compute in COMPUTE_DTYPES for scale in (1.0, 0.37, 2.5)]


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize(("fmt", "compute", "scale"), QDQ_CASES, ids=lambda v: str(v))
def test_quantize_dequantize_matches_a_numpy_ml_dtypes_reference(transform, fmt, compute, scale):
    x = _sample_inputs()
    if compute == "float16":
        x = np.clip(x, -6e4, 6e4)  # keep the input itself representable in float16
    qdq = transform(lambda v, s: float8.quantize_dequantize(v, s, fmt, compute))
    out = qdq(jnp.asarray(x).astype(compute), scale)
    expected = reference_qdq(x, scale, fmt, compute)
    assert_bits_equal(out, expected)
    # Sanity against float64: values inside the range come back within float8 precision.
    s = float(np.asarray(np.float32(scale)).astype(NP_DTYPES[compute]))
    x_in = np.asarray(x).astype(NP_DTYPES[compute]).astype(np.float64)
    inside = (np.abs(x_in) / s <= FORMATS[fmt]) & (np.abs(x_in) / s >= 2.0**-6)
    assert_close(np.asarray(out, np.float64)[inside], x_in[inside], fmt)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_nan_input_stays_nan(transform):
    qdq = transform(lambda v: float8.quantize_dequantize(v, 1.0, "float8_e4m3fn", "float32"))
    out = np.asarray(qdq(jnp.array([np.nan, 1.0], jnp.float32)))
    assert np.isnan(out[0]) and out[1] == 1.0


@pytest.mark.parametrize("compute", COMPUTE_DTYPES)
def test_accepts_dtype_objects_as_well_as_names(compute):
    x = jnp.array([1.1, 500.0], jnp.float32)
    by_name = float8.quantize_dequantize(x, 1.0, "float8_e4m3fn", compute)
    by_object = float8.quantize_dequantize(x, 1.0, jnp.float8_e4m3fn, jnp.dtype(compute))
    assert_bits_equal(by_object, np.asarray(by_name))


# --- delayed scaling over several steps --------------------------------------------------------


def numpy_delayed_scaling(xs, history_length, margin=0):
    """Hand-written delayed scaling: step t quantizes with the scale computed after step t-1."""
    scale, history = F32(1.0), np.zeros(history_length, F32)
    outputs, scales, histories = [], [], []
    for x in xs:
        outputs.append(reference_qdq(x, scale, "float8_e4m3fn", "float32"))
        history = np.roll(history, -1)
        history[0] = np.max(np.abs(x))
        amax = history.max()
        if np.isfinite(amax) and amax > 0:
            scale = keras_scale(amax, 448.0, margin)
        scales.append(scale)
        histories.append(history.copy())
    return outputs, scales, histories


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("margin", [0, 1])
def test_delayed_scaling_simulation_matches_numpy_loop(transform, margin):
    rng = np.random.default_rng(7)
    # Magnitudes rise (the previous scale saturates the new outlier), then fall so that the
    # window of length 2 forgets the peak; one step is all zeros.
    magnitudes = [3.0, 50.0, 2000.0, 11.0, 0.0, 0.2, 0.05]
    xs = [(rng.standard_normal(16) * m).astype(F32) for m in magnitudes]
    xs[2][0] = -2000.0 * 4  # an outlier far beyond 448 * scale_{t-1}

    @transform
    def step(x, scale, history):
        y = float8.quantize_dequantize(x, scale, "float8_e4m3fn", "float32")
        history = float8.update_amax_history(x, history)
        return y, float8.compute_scale(jnp.max(history), scale, float8.E4M3_MAX, margin=margin), history

    scale, history = jnp.asarray(1.0, jnp.float32), jnp.zeros(2, jnp.float32)
    outputs, scales, histories = numpy_delayed_scaling(xs, 2, margin)
    for t, x in enumerate(xs):
        y, scale, history = step(jnp.asarray(x), scale, history)
        assert_bits_equal(y, outputs[t])
        assert_bits_equal(scale, scales[t])
        assert_bits_equal(history, histories[t])
    # The first step used 1.0: its outputs are plain E4M3 roundings of x.
    assert_bits_equal(outputs[0], xs[0].astype(ml_dtypes.float8_e4m3fn).astype(F32))
    # The outlier step was quantized with the scale from step 1 and saturated.
    assert outputs[2][0] == -448.0 * scales[1]


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["float16", "int8", "bfloat16", jnp.int8])
def test_quantize_dequantize_rejects_a_non_float8_format(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        float8.quantize_dequantize(jnp.ones(2), 1.0, bad, "float32")


def test_quantize_dequantize_rejects_an_unknown_format_name():
    with pytest.raises(ValueError, match=r"Unknown dtype 'flaot8_e4m3fn'.*Did you mean 'float8_e4m3fn'"):
        float8.quantize_dequantize(jnp.ones(2), 1.0, "flaot8_e4m3fn", "float32")


@pytest.mark.parametrize("bad", ["int32", "bool", "uint8"])
def test_quantize_dequantize_rejects_a_non_floating_compute_dtype(bad):
    with pytest.raises(ValueError, match=f"compute_dtype must be floating, received '{bad}'"):
        float8.quantize_dequantize(jnp.ones(2), 1.0, "float8_e4m3fn", bad)


@pytest.mark.parametrize("bad", [1.0, True, "1", None], ids=repr)
def test_compute_scale_rejects_a_non_int_margin(bad):
    with pytest.raises(TypeError, match=f"margin must be an int, received {re.escape(repr(bad))}"):
        float8.compute_scale(10.0, 1.0, 448.0, margin=bad)


@pytest.mark.parametrize("bad", [0, 0.0, -448.0, float("nan")], ids=repr)
def test_compute_scale_rejects_a_non_positive_dtype_max(bad):
    with pytest.raises(ValueError, match=f"dtype_max must be a positive number.*received {re.escape(repr(bad))}"):
        float8.compute_scale(10.0, 1.0, bad)


@pytest.mark.parametrize("bad", ["448", None, True], ids=repr)
def test_compute_scale_rejects_a_dtype_max_that_is_not_a_number(bad):
    with pytest.raises((TypeError, ValueError), match=f"dtype_max must be .*received {re.escape(repr(bad))}"):
        float8.compute_scale(10.0, 1.0, bad)


@pytest.mark.parametrize("shape", [(3, 2), (), (0,)], ids=str)
def test_update_amax_history_rejects_a_history_that_is_not_a_non_empty_vector(shape):
    with pytest.raises(ValueError, match=f"1-D array, received shape {re.escape(str(shape))}"):
        float8.update_amax_history(jnp.ones(2), jnp.zeros(shape, jnp.float32))


# --- regressions: bugs found in review, fixed in the source ----------------------------------


QUOTIENT_CASES = [  # (compute dtype, x, scale 0.37 in that dtype, expected x_hat), all derived by hand
    # 0.036163330078125 / 0.3701171875 = 0.0977077...; in float16 that is 0.09771728515625, above the
    # E4M3 midpoint 0.09765625 between 0.09375 and 0.1015625, so q = 0.1015625 and
    # x_hat = float16(0.1015625 * 0.3701171875) = 0.03759765625. Computed as x * float16(1 / s)
    # = x * 2.701171875 the quotient lands on the midpoint itself and rounds to even: q = 0.09375.
    pytest.param("float16", 0.036163330078125, 0.03759765625, id="float16"),
    # 0.43937498 / 0.37 = 1.18749994 (float32 1.1874999), just below the E4M3 midpoint 1.1875
    # between 1.125 and 1.25, so q = 1.125 and x_hat = float32(1.125 * 0.37) = 0.41625.
    # x * float32(1 / 0.37) is exactly 1.1875 and rounds to even: q = 1.25, x_hat = 0.4625.
    pytest.param("float32", 0.43937498, float(F32(1.125) * F32(0.37)), id="float32"),
]


@pytest.mark.parametrize(
    "run",
    [
        pytest.param(lambda f, x, s: f(x, s), id="eager"),
        pytest.param(lambda f, x, s: jax.jit(f)(x, s), id="jit"),
        pytest.param(lambda f, x, s: jax.jit(lambda v: f(v, s))(x), id="jit-constant-scale"),
    ],
)
@pytest.mark.parametrize(("compute", "x", "expected"), QUOTIENT_CASES)
def test_quotient_x_over_s_is_rounded_once_not_via_a_rounded_reciprocal(run, compute, x, expected, request):
    if compute == "float32" and "jit-constant-scale" in request.node.name:
        # Known XLA limitation: with s a compile-time constant, x / s is rewritten as x * (1 / s).
        # Training scales are variables, never constants, so this case does not arise there.
        request.applymarker(pytest.mark.xfail(strict=True, reason="XLA folds x / constant into x * (1 / constant)"))
    # Fails eagerly and with a constant scale: XLA rewrites `x / broadcast(s)` as `x * (1 / s)`.
    values = jnp.full((8,), x, compute)
    out = run(lambda v, s: float8.quantize_dequantize(v, s, "float8_e4m3fn", compute), values, 0.37)
    assert_bits_equal(out, np.full((8,), expected, NP_DTYPES[compute]))


def test_compute_scale_accepts_numpy_scalar_dtype_max():
    # `np.float32(448)` (or `jnp.finfo(jnp.float8_e4m3fn).max`) is a positive number, yet
    # compute_scale rejects it with "dtype_max must be a positive number ... received np.float32(448.0)".
    expected = keras_scale(10.0, 448.0)
    assert_bits_equal(float8.compute_scale(10.0, 1.0, np.float32(448.0)), expected)
    assert_bits_equal(float8.compute_scale(10.0, 1.0, np.int32(448)), expected)


def test_integer_histories_are_rejected_instead_of_truncating_amaxes():
    with pytest.raises(ValueError, match=r"history must be floating.*int32"):
        float8.update_amax_history(jnp.array([5.5]), jnp.zeros(3, jnp.int32))


def test_margin_range_and_numpy_ints():
    assert float(float8.compute_scale(448.0, 1.0, 448.0, margin=np.int64(1))) == 2.0
    for bad in (128, -127, 2000):
        with pytest.raises(ValueError, match=f"margin must lie in .*received {bad}"):
            float8.compute_scale(1.0, 1.0, 448.0, margin=bad)


def test_only_signed_float8_formats_are_accepted():
    out = float8.quantize_dequantize(jnp.array([1e6, -1.0]), 1.0, "float8_e4m3fnuz", "float32")
    assert out.tolist() == [240.0, -1.0]
    with pytest.raises(ValueError, match=r"signed float8 format.*received 'float8_e8m0fnu'"):
        float8.quantize_dequantize(jnp.ones(2), 1.0, "float8_e8m0fnu", "float32")


# --- regressions (issue 7) ---------------------------------------------------------------------

FLOAT32_MAX, FLOAT32_TINY = F32(3.4028235e38), F32(2.0**-126)  # the float32 normal range, by hand


@pytest.mark.parametrize("shape", [(0,), (2, 0), (0, 3)], ids=str)
def test_update_amax_history_refuses_an_empty_input_naming_its_shape(shape):
    # Before: JAX's "zero-size array to reduction operation max which has no identity".
    history = jnp.array([5.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=re.escape(f"received an empty array of shape {shape}")):
        float8.update_amax_history(jnp.zeros(shape), history)
    with pytest.raises(ValueError, match="x must hold at least one value"):
        jax.jit(float8.update_amax_history)(jnp.zeros(shape), history)


EXTREME_SCALES = [  # (amax, margin, the clamped scale), derived by hand from amax * 2**margin / 448
    pytest.param(3.0e38, 127, FLOAT32_MAX, id="overflow-to-inf"),
    pytest.param(448.0, 127, F32(2.0**127), id="largest-power-of-two-is-kept"),
    pytest.param(1.0e-30, -126, FLOAT32_TINY, id="underflow-to-zero"),
    pytest.param(1.0e-36, 0, FLOAT32_TINY, id="tiny-amax-without-margin"),  # 1e-36 / 448 is subnormal
    pytest.param(448.0, -126, FLOAT32_TINY, id="smallest-normal-is-kept"),
]


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize(("amax", "margin", "expected"), EXTREME_SCALES)
def test_extreme_margins_give_a_finite_positive_scale(transform, amax, margin, expected):
    # Before: inf for the overflow case and 0.0 for the underflow ones.
    scale = transform(lambda a, s: float8.compute_scale(a, s, float8.E4M3_MAX, margin=margin))(F32(amax), F32(1.0))
    assert_bits_equal(scale, expected)
    assert np.isfinite(np.asarray(scale)) and np.asarray(scale) > 0


def test_compute_scale_refuses_an_infinite_dtype_max():
    with pytest.raises(ValueError, match=r"dtype_max must be a positive.*received inf"):
        float8.compute_scale(10.0, 1.0, float("inf"))


@pytest.mark.parametrize(("x", "history", "what"), [("x", jnp.zeros(3), "x"), (jnp.ones(2), "h", "history")])
def test_update_amax_history_refuses_non_numeric_input_naming_it(x, history, what):
    with pytest.raises(TypeError, match=rf"{what} must be a numeric array, received '"):
        float8.update_amax_history(x, history)
