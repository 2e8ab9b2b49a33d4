"""Op-level numerics against float64 NumPy references, eagerly and under jit."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from dtypepolicy import _numerics as numerics
from tests._tolerances import assert_close

BACKENDS = {"eager": lambda f: f, "jit": jax.jit}
FLOATS = ["float32", "bfloat16", "float16"]
NP = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def rng_array(shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).normal(scale=scale, size=shape)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("dtype", FLOATS)
def test_dense_matmul_rounds_once_after_the_bias(backend, dtype):
    x64, w64, b64 = rng_array((64, 512)), rng_array((512, 256), 1, 0.05), rng_array((256,), 2)
    x, w = jnp.asarray(x64).astype(dtype), jnp.asarray(w64).astype(dtype)
    out = BACKENDS[backend](lambda x, w, b: numerics.dense_matmul(x, w, b))(x, w, jnp.asarray(b64, jnp.float32))
    assert out.dtype == jnp.dtype(dtype)
    # Reference: the same rounded inputs, exact products and sums, bias added, one rounding.
    xr = np.asarray(x.astype(jnp.float32), np.float64)
    wr = np.asarray(w.astype(jnp.float32), np.float64)
    exact = xr @ wr + np.asarray(np.float32(b64), np.float64)
    rounded_once = exact.astype(np.float32).astype(NP[dtype]).astype(np.float64)
    if dtype != "float32":
        # Accumulating in float32 differs from the exact sum far below a 16-bit rounding step.
        assert np.mean(np.asarray(out, np.float64) != rounded_once) < 0.02
    assert_close(out, exact, dtype)


def test_dense_matmul_beats_rounding_twice_in_bfloat16():
    x64, w64, b64 = rng_array((64, 512)), rng_array((512, 256), 1, 0.05), rng_array((256,), 2)
    x, w = jnp.asarray(x64).astype(jnp.bfloat16), jnp.asarray(w64).astype(jnp.bfloat16)
    exact = np.asarray(x.astype(jnp.float32), np.float64) @ np.asarray(w.astype(jnp.float32), np.float64) + b64
    once = np.asarray(numerics.dense_matmul(x, w, jnp.asarray(b64, jnp.float32)), np.float64)
    twice = np.asarray(jnp.matmul(x, w) + jnp.asarray(b64).astype(jnp.bfloat16), np.float64)
    error_once = np.linalg.norm(once - exact) / np.linalg.norm(exact)
    error_twice = np.linalg.norm(twice - exact) / np.linalg.norm(exact)
    assert error_once < error_twice


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_einsum_matches_dense_and_numpy(backend):
    x, w = rng_array((2, 5, 8)), rng_array((8, 2, 3), 1)
    out = BACKENDS[backend](lambda x, w: numerics.einsum("bti,ihd->bthd", x, w, jnp.ones((2, 3)), "float32"))(
        jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)
    )
    assert_close(out, np.einsum("bti,ihd->bthd", x, w) + 1.0, "float32")


def test_accumulation_dtypes():
    assert [numerics.accumulation_dtype(d) for d in ["float16", "bfloat16", "float32", "float64", "int8"]] == [
        "float32",
        "float32",
        "float32",
        "float64",
        "int32",
    ]


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_in_float32_against_float64(backend, dtype):
    logits = rng_array((3, 1000), scale=4.0)
    out = BACKENDS[backend](numerics.softmax)(jnp.asarray(logits).astype(dtype))
    assert out.dtype == jnp.dtype(dtype)
    rounded = np.asarray(jnp.asarray(logits).astype(dtype).astype(jnp.float32), np.float64)
    expected = np.exp(rounded - rounded.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    assert_close(out, expected, dtype)


def test_bfloat16_softmax_over_1000_logits_sums_to_one():
    logits = jnp.asarray(rng_array((1000,), scale=3.0)).astype(jnp.bfloat16)
    probabilities = numerics.softmax(logits)
    # each probability is the float32 result rounded once to bfloat16 (relative error <= 2**-9)
    assert abs(float(jnp.sum(probabilities.astype(jnp.float32))) - 1.0) <= 2**-9
    wide = numerics.softmax(logits.astype(jnp.float32))
    assert abs(float(jnp.sum(wide)) - 1.0) <= 1000 * np.finfo(np.float32).eps


@pytest.mark.parametrize("dtype", FLOATS)
def test_masked_softmax_has_no_inf_or_nan_even_when_a_row_is_fully_masked(dtype):
    logits = jnp.asarray([[1e4, -1e4, 3.0], [5.0, 6.0, 7.0]]).astype(dtype)
    mask = jnp.array([[True, False, True], [False, False, False]])
    out = np.asarray(numerics.softmax(logits, mask=mask), np.float64)
    assert np.isfinite(out).all()
    assert out[0, 1] == 0.0 and out[1].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype", FLOATS)
def test_mask_fill_value_survives_subtracting_a_large_maximum(dtype):
    fill = numerics.mask_fill_value(dtype)
    maximum = float(jnp.finfo(dtype).max) / 4
    assert np.isfinite(np.asarray(jnp.asarray(fill, dtype) - jnp.asarray(maximum, dtype), np.float64))
    with pytest.raises(ValueError, match="received 'int8'"):
        numerics.mask_fill_value("int8")


@pytest.mark.parametrize("dtype", FLOATS)
def test_moments_are_float32_and_match_numpy(dtype):
    x = rng_array((4, 64), scale=3.0) + 100.0
    rounded = np.asarray(jnp.asarray(x).astype(dtype).astype(jnp.float32), np.float64)
    mean, variance = numerics.moments(jnp.asarray(x).astype(dtype), axes=-1)
    assert mean.dtype == jnp.float32 and variance.dtype == jnp.float32
    np.testing.assert_allclose(mean, rounded.mean(-1), rtol=1e-6)
    np.testing.assert_allclose(variance, rounded.var(-1), rtol=1e-4)
    mean, variance = numerics.moments(jnp.asarray(x).astype(dtype), axes=(0, 1), keepdims=True)
    assert mean.shape == (1, 1) and variance.shape == (1, 1)


def test_reductions_are_float32():
    x = jnp.full((4096,), 1.0, jnp.float16) * 32.0  # the sum overflows float16
    assert numerics.reduce_sum(x).dtype == jnp.float32 and float(numerics.reduce_sum(x)) == 131072.0
    assert float(numerics.reduce_mean(x)) == 32.0
