"""Initializers: distributions against hand-derived formulas, seeds, dtypes, lookup and errors."""

import json
import math
import threading
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from layers import initializers as inits
from layers.initializers._variance_scaling import compute_fans
from tests._compilations import compilations

DTYPES = ("float32", "bfloat16", "float16")

# Standard deviation of a standard normal truncated to [-2, 2], derived from the density:
# Var = 1 - 2·2·φ(2) / (Φ(2) - Φ(-2)), with φ(2) = e^-2/√(2π) and Φ(2) - Φ(-2) = erf(√2).
TRUNCATED_STD = math.sqrt(1 - 4 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(math.sqrt(2)))
# The constant the library divides by; a truncated VarianceScaling draw has std sqrt(var) times this.
CORRECTION = TRUNCATED_STD / 0.87962566103423978
UNIFORM_STD = 1 / math.sqrt(12)  # std of U(0, 1)

# One shape for nearly everything: each new shape compiles the bit generator again (~0.3 s on CPU).
SHAPE = (300, 200)  # fan_in 300, fan_out 200, fan_avg 250
# A QR of SHAPE takes a few hundred ms on CPU, so Orthogonal gets a smaller one of its own.
ORTHOGONAL_SHAPE = (32, 16)

# (id, initializer, expected mean, expected std), all derived by hand for SHAPE.
STATISTICS = [
    ("random_normal", inits.RandomNormal(mean=0.1, stddev=0.5, seed=1), 0.1, 0.5),
    ("random_uniform", inits.RandomUniform(minval=-0.3, maxval=0.5, seed=2), 0.1, 0.8 * UNIFORM_STD),
    ("truncated_normal", inits.TruncatedNormal(mean=0.2, stddev=0.5, seed=3), 0.2, 0.5 * TRUNCATED_STD),
    ("glorot_uniform", inits.GlorotUniform(seed=4), 0.0, math.sqrt(1 / 250)),
    ("glorot_normal", inits.GlorotNormal(seed=5), 0.0, math.sqrt(1 / 250) * CORRECTION),
    ("he_uniform", inits.HeUniform(seed=6), 0.0, math.sqrt(2 / 300)),
    ("he_normal", inits.HeNormal(seed=7), 0.0, math.sqrt(2 / 300) * CORRECTION),
    ("lecun_uniform", inits.LecunUniform(seed=8), 0.0, math.sqrt(1 / 300)),
    ("lecun_normal", inits.LecunNormal(seed=9), 0.0, math.sqrt(1 / 300) * CORRECTION),
    (
        "variance_scaling_untruncated_fan_out",
        inits.VarianceScaling(3.0, "fan_out", "untruncated_normal", seed=10),
        0.0,
        math.sqrt(3 / 200),
    ),
    (
        "variance_scaling_normal_is_truncated",
        inits.VarianceScaling(0.5, "fan_avg", "normal", seed=11),
        0.0,
        math.sqrt(0.5 / 250) * CORRECTION,
    ),
]

# Factories for every initializer that takes a seed, used by the seed and dtype sweeps.
SEEDED = {
    "random_normal": lambda seed: inits.RandomNormal(seed=seed),
    "random_uniform": lambda seed: inits.RandomUniform(seed=seed),
    "truncated_normal": lambda seed: inits.TruncatedNormal(seed=seed),
    "glorot_normal": lambda seed: inits.GlorotNormal(seed=seed),
    "glorot_uniform": lambda seed: inits.GlorotUniform(seed=seed),
    "he_normal": lambda seed: inits.HeNormal(seed=seed),
    "he_uniform": lambda seed: inits.HeUniform(seed=seed),
    "lecun_normal": lambda seed: inits.LecunNormal(seed=seed),
    "lecun_uniform": lambda seed: inits.LecunUniform(seed=seed),
    "variance_scaling": lambda seed: inits.VarianceScaling(2.0, "fan_out", "uniform", seed=seed),
    "orthogonal": lambda seed: inits.Orthogonal(seed=seed),
}

# Every name `get` accepts, with the class it must build (written out, not derived from the module).
NAMES = {
    "zeros": inits.Zeros,
    "ones": inits.Ones,
    "constant": inits.Constant,
    "random_normal": inits.RandomNormal,
    "random_uniform": inits.RandomUniform,
    "truncated_normal": inits.TruncatedNormal,
    "glorot_normal": inits.GlorotNormal,
    "glorot_uniform": inits.GlorotUniform,
    "he_normal": inits.HeNormal,
    "he_uniform": inits.HeUniform,
    "lecun_normal": inits.LecunNormal,
    "lecun_uniform": inits.LecunUniform,
    "orthogonal": inits.Orthogonal,
    "variance_scaling": inits.VarianceScaling,
}


def _f64(x):
    return np.asarray(x, np.float64)


def _sweep_shape(name):
    return ORTHOGONAL_SHAPE if name == "orthogonal" else SHAPE


# --- distributions ---------------------------------------------------------------------------


@pytest.mark.parametrize(("init", "mean", "std"), [case[1:] for case in STATISTICS], ids=[c[0] for c in STATISTICS])
def test_mean_and_std_match_the_formula(init, mean, std):
    values = _f64(init(SHAPE))
    n = values.size
    # Five standard errors; 0.71/sqrt(n) bounds the relative error of a sample std for any
    # distribution here (kurtosis <= 3).
    assert abs(values.mean() - mean) < 5 * std / math.sqrt(n)
    assert abs(values.std() / std - 1) < 5 * 0.71 / math.sqrt(n)


# shape -> (fan_in, fan_out) worked out by hand: 2-D is (in, out); a conv kernel (kh, kw, in, out)
# multiplies both by kh·kw; 1-D uses its size for both; a scalar uses 1.
FANS = [
    ((), (1, 1)),
    ((7,), (7, 7)),
    ((300, 200), (300, 200)),
    ((3, 3, 16, 32), (144, 288)),
    ((2, 5, 5, 8, 4), (400, 200)),
]


@pytest.mark.parametrize(("shape", "fans"), FANS, ids=[str(s) for s, _ in FANS])
def test_compute_fans(shape, fans):
    assert compute_fans(shape) == fans


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize(("shape", "fans"), [FANS[2], FANS[3]], ids=["2d", "conv"])
def test_fans_set_the_uniform_limit(shape, fans, mode):
    fan = {"fan_in": fans[0], "fan_out": fans[1], "fan_avg": (fans[0] + fans[1]) / 2}[mode]
    # Thousands of uniform draws reach within 0.5% of the limit (the chance of missing is below
    # e^-20), so the observed maximum pins down the fan the initializer used.
    limit = math.sqrt(3 * 2.0 / fan)
    values = np.abs(_f64(inits.VarianceScaling(2.0, mode, "uniform", seed=0)(shape)))
    assert values.max() <= limit * (1 + 1e-6)
    assert values.max() >= limit * (1 - 0.005)


def test_truncated_normal_never_beyond_two_stddev():
    values = _f64(inits.TruncatedNormal(mean=1.0, stddev=0.5, seed=0)(SHAPE))
    assert values.min() >= 0.0
    assert values.max() <= 2.0
    # Truncation redraws rather than clips: nothing piles up on the bounds.
    assert np.sum((values == 0.0) | (values == 2.0)) < 3


def test_truncated_variance_scaling_never_beyond_two_stddev():
    stddev = math.sqrt(2 / 300) / 0.87962566103423978
    values = _f64(inits.HeNormal(seed=0)(SHAPE))
    assert np.abs(values).max() <= 2 * stddev * (1 + 1e-6)
    assert np.abs(values).max() >= 1.9 * stddev


@pytest.mark.parametrize("gain", [1.0, 1.5])
# Tall, and wide with conv-like leading dims (flattened to 4×8, so Q is transposed).
@pytest.mark.parametrize("shape", [ORTHOGONAL_SHAPE, (2, 2, 8)], ids=str)
def test_orthogonal_gram_matrix_is_gain_squared_identity(shape, gain):
    matrix = _f64(inits.Orthogonal(gain=gain, seed=0)(shape)).reshape(-1, shape[-1])
    rows, cols = matrix.shape
    gram = matrix.T @ matrix if rows >= cols else matrix @ matrix.T
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(rows, cols)), atol=2e-5 * gain**2)


def test_orthogonal_is_not_always_the_same_matrix():
    a = _f64(inits.Orthogonal(seed=0)(ORTHOGONAL_SHAPE))
    b = _f64(inits.Orthogonal(seed=1)(ORTHOGONAL_SHAPE))
    assert not np.allclose(a, b)


@pytest.mark.parametrize("dtype", ["int32", "bfloat16", "float32"])
def test_constant_fills_and_broadcasts(dtype):
    np.testing.assert_array_equal(_f64(inits.Constant(3)((2, 3), dtype)), np.full((2, 3), 3.0))
    out = inits.Constant([1.0, 2.0, 3.0])((2, 3), dtype)
    assert out.dtype == jnp.dtype(dtype)
    np.testing.assert_array_equal(_f64(out), [[1, 2, 3], [1, 2, 3]])


@pytest.mark.parametrize("dtype", [*DTYPES, "int32", "bool"])
def test_zeros_and_ones_in_any_dtype(dtype):
    zeros, ones = inits.Zeros()((2, 3), dtype), inits.Ones()((2, 3), dtype)
    assert zeros.dtype == ones.dtype == jnp.dtype(dtype)
    np.testing.assert_array_equal(_f64(zeros), np.zeros((2, 3)))
    np.testing.assert_array_equal(_f64(ones), np.ones((2, 3)))


# --- dtypes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(SEEDED))
def test_draws_in_float32_then_casts(name, dtype):
    init, shape = SEEDED[name](seed=3), _sweep_shape(name)
    out = init(shape, dtype)
    assert out.dtype == jnp.dtype(dtype)
    assert out.shape == shape
    # Exactly the rounded float32 draw: the random bits never see the 16-bit format.
    np.testing.assert_array_equal(np.asarray(out), np.asarray(init(shape, "float32")).astype(dtype))


def test_dtype_none_means_float32_and_dtype_objects_are_accepted():
    init = inits.GlorotUniform(seed=3)
    assert init(SHAPE).dtype == jnp.float32
    np.testing.assert_array_equal(init(SHAPE), init(SHAPE, "float32"))
    assert init(SHAPE, jnp.bfloat16).dtype == jnp.bfloat16
    assert init(SHAPE, np.dtype("float16")).dtype == jnp.float16
    assert init(list(SHAPE)).shape == SHAPE


def test_jit_matches_eager():
    # The most involved sampler (QR); the uniform one runs under jit in the trace-time test below.
    init = inits.Orthogonal(seed=5)
    shape = ORTHOGONAL_SHAPE
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda: init(shape, "bfloat16"))()), init(shape, "bfloat16"))


# --- seeds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SEEDED))
def test_int_seed_reproduces_every_call(name):
    first, shape = SEEDED[name](seed=11), _sweep_shape(name)
    np.testing.assert_array_equal(first(shape), first(shape))
    np.testing.assert_array_equal(first(shape), SEEDED[name](seed=11)(shape))
    assert not np.array_equal(first(shape), SEEDED[name](seed=12)(shape))


@pytest.mark.parametrize("name", list(SEEDED))
def test_unseeded_calls_differ(name):
    init, shape = SEEDED[name](seed=None), _sweep_shape(name)
    assert not np.array_equal(init(shape), init(shape))
    assert not np.array_equal(SEEDED[name](None)(shape), SEEDED[name](None)(shape))


def test_set_random_seed_reproduces_a_run():
    def run():
        return [np.asarray(inits.GlorotUniform()(SHAPE)), np.asarray(inits.RandomNormal()(SHAPE))]

    inits.set_random_seed(1234)
    first = run()
    inits.set_random_seed(1234)
    second = run()
    inits.set_random_seed(4321)
    third = run()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], third[0])


def test_every_test_starts_its_unseeded_draws_from_a_seed_fixed_by_its_id(request):
    # Before: the generator kept its seed from `secrets`, so unseeded values changed run to run.
    first = np.asarray(inits.RandomNormal()(SHAPE))
    inits.set_random_seed(zlib.crc32(request.node.nodeid.encode()))  # what tests/conftest.py does
    np.testing.assert_array_equal(inits.RandomNormal()(SHAPE), first)


def test_unseeded_draws_are_distinct_across_threads():
    results, errors = [], []

    def draw():
        try:
            for _ in range(20):
                results.append(np.asarray(inits.RandomUniform(seed=None)(SHAPE))[0, :8].tobytes())
        except Exception as error:  # surfaced below; a thread swallowing it would hide a failure
            errors.append(error)

    threads = [threading.Thread(target=draw) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 160
    assert len(set(results)) == 160


def test_unseeded_initializer_inside_jit_draws_at_trace_time():
    init = inits.GlorotUniform()
    compiled = jax.jit(lambda: init(SHAPE))
    # The key is taken while tracing (documented): the compiled function replays those values,
    # and no tracer leaks into the generator, so eager draws afterwards still differ.
    np.testing.assert_array_equal(compiled(), compiled())
    assert not np.array_equal(init(SHAPE), init(SHAPE))


# --- distribution shapes and bounds -------------------------------------------------------------


def _normal_cdf(z):
    return 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))


def _truncated_cdf(z):
    low, high = _normal_cdf(np.float64(-2.0)), _normal_cdf(np.float64(2.0))
    return np.clip((_normal_cdf(np.clip(z, -2.0, 2.0)) - low) / (high - low), 0.0, 1.0)


# (id, initializer, the CDF of the distribution it must draw from), written out by hand.
CDFS = [
    ("random_normal", inits.RandomNormal(mean=0.1, stddev=0.5, seed=21), lambda v: _normal_cdf((v - 0.1) / 0.5)),
    (
        "truncated_normal",
        inits.TruncatedNormal(mean=0.2, stddev=0.5, seed=22),
        lambda v: _truncated_cdf((v - 0.2) / 0.5),
    ),
    ("random_uniform", inits.RandomUniform(-0.3, 0.5, seed=23), lambda v: np.clip((v + 0.3) / 0.8, 0, 1)),
    # Glorot normal: truncated at 2 of its own stddev, which is sqrt(1/250) / 0.8796...
    (
        "glorot_normal",
        inits.GlorotNormal(seed=24),
        lambda v: _truncated_cdf(v / (math.sqrt(1 / 250) / 0.87962566103423978)),
    ),
    ("he_uniform", inits.HeUniform(seed=25), lambda v: np.clip((v / math.sqrt(6 / 300) + 1) / 2, 0, 1)),
    (
        "untruncated_fan_out",
        inits.VarianceScaling(3.0, "fan_out", "untruncated_normal", seed=26),
        lambda v: _normal_cdf(v / math.sqrt(3 / 200)),
    ),
]


@pytest.mark.parametrize(("init", "cdf"), [case[1:] for case in CDFS], ids=[c[0] for c in CDFS])
def test_empirical_distribution_matches_the_cdf(init, cdf):
    # Kolmogorov-Smirnov distance against the exact CDF. By the Dvoretzky-Kiefer-Wolfowitz
    # inequality a correct sampler exceeds sqrt(ln(2/a) / 2n) with probability below a = 1e-6;
    # with n = 60000 that is 0.011, so a stddev off by 3% or a wrong shape fails.
    values = np.sort(_f64(init(SHAPE)).ravel())
    n = values.size
    expected = cdf(values)
    upper = np.arange(1, n + 1) / n
    distance = max(np.max(upper - expected), np.max(expected - (upper - 1 / n)))
    assert distance < math.sqrt(math.log(2 / 1e-6) / (2 * n))


def test_uniform_stays_below_maxval_where_float32_rounding_would_reach_it():
    # [1, 1 + 2**-23) holds a single float32, 1.0; a draw computed as 1 + u * 2**-23 in float32
    # rounds to maxval for every u above one half.
    maxval = 1.0 + 2.0**-23
    values = _f64(inits.RandomUniform(1.0, maxval, seed=0)((1000,)))
    assert values.min() >= 1.0
    assert values.max() < maxval


def test_uniform_bounds_on_a_large_draw():
    values = np.asarray(inits.RandomUniform(-1.0, 1.0, seed=1)((1_000_000,)))
    assert values.min() >= -1.0
    assert values.max() < 1.0
    # Both ends are reached to within a few multiples of the expected gap 2/n.
    assert values.min() < -1.0 + 2e-5
    assert values.max() > 1.0 - 2e-5


# --- cost: drawing compiles nothing ---------------------------------------------------------------


NO_SEED = {
    "zeros": inits.Zeros,
    "ones": inits.Ones,
    "constant": lambda: inits.Constant(0.5),
    "glorot_uniform_unseeded": inits.GlorotUniform,
    "random_normal_unseeded": inits.RandomNormal,
}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", [*SEEDED, *NO_SEED])
def test_a_new_shape_compiles_nothing(name, dtype):
    # Building a model used to compile the bit generator once per distinct weight shape (most of
    # a TransformerBlock's build time). A shape that no other test draws must not compile.
    index = [*SEEDED, *NO_SEED].index(name)
    shape = (101 + index, 3 + DTYPES.index(dtype))
    init = SEEDED[name](seed=0) if name in SEEDED else NO_SEED[name]()
    with compilations() as compiled:
        values = init(shape, dtype)
    assert values.shape == shape
    assert values.dtype == jnp.dtype(dtype)
    assert compiled == []


def test_the_compilation_counter_sees_a_compilation():
    # The "compiles nothing" checks mean something only if the shared counter does count.
    x = jax.block_until_ready(jnp.ones((7, 3, 11)))
    with compilations() as compiled:
        jax.jit(lambda x: x * 3.0 + 1.0)(x)  # a new function: compiled here, once
    assert len(compiled) == 1


@pytest.mark.parametrize("name", list(SEEDED))
def test_seeded_draw_is_the_same_under_jit_and_eagerly(name):
    init, shape = SEEDED[name](seed=13), _sweep_shape(name)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda: init(shape, "bfloat16"))()), init(shape, "bfloat16"))


# --- lookup and serialization -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(NAMES))
def test_get_by_snake_and_class_name(name):
    cls = NAMES[name]
    assert type(inits.get(name)) is cls
    assert type(inits.get(cls.__name__)) is cls
    assert type(inits.get(cls)) is cls


def test_get_passes_through_none_instances_and_callables():
    init = inits.HeNormal(seed=1)

    def custom(shape, dtype=None):
        return jnp.zeros(shape, dtype)

    assert inits.get(None) is None
    assert inits.get(init) is init
    assert inits.get(custom) is custom


def test_get_rebuilds_a_config_dict_with_its_values():
    init = inits.get({"class_name": "RandomUniform", "config": {"minval": 1.0, "maxval": 3.0, "seed": 7}})
    np.testing.assert_array_equal(init(SHAPE), inits.RandomUniform(1.0, 3.0, seed=7)(SHAPE))
    assert inits.get({"class_name": "he_uniform", "config": {"seed": 2}}).get_config() == {"seed": 2}


def test_serialize_gives_class_name_and_config():
    assert inits.serialize(inits.VarianceScaling(2.0, "fan_out", "uniform", seed=4)) == {
        "class_name": "VarianceScaling",
        "config": {"scale": 2.0, "mode": "fan_out", "distribution": "uniform", "seed": 4},
    }
    assert inits.serialize(inits.Constant([1, 2])) == {"class_name": "Constant", "config": {"value": [1, 2]}}


seeds = st.none() | st.integers(0, 2**32 - 1)
finite = st.floats(-1e3, 1e3, allow_nan=False)
non_negative = st.floats(0, 1e3)
CONFIGS = st.one_of(
    st.tuples(st.sampled_from(["Zeros", "Ones"]), st.just({})),
    st.tuples(st.just("Constant"), st.fixed_dictionaries({"value": finite | st.lists(finite, max_size=4)})),
    st.tuples(
        st.sampled_from(["RandomNormal", "TruncatedNormal"]),
        st.fixed_dictionaries({"mean": finite, "stddev": non_negative, "seed": seeds}),
    ),
    st.tuples(
        st.just("RandomUniform"),
        st.tuples(finite, finite, seeds).map(lambda t: {"minval": min(t[:2]), "maxval": max(t[:2]), "seed": t[2]}),
    ),
    st.tuples(
        st.sampled_from(["GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "LecunNormal", "LecunUniform"]),
        st.fixed_dictionaries({"seed": seeds}),
    ),
    st.tuples(
        st.just("VarianceScaling"),
        st.fixed_dictionaries(
            {
                "scale": st.floats(1e-6, 1e3),
                "mode": st.sampled_from(["fan_in", "fan_out", "fan_avg"]),
                "distribution": st.sampled_from(["normal", "truncated_normal", "untruncated_normal", "uniform"]),
                "seed": seeds,
            }
        ),
    ),
    st.tuples(st.just("Orthogonal"), st.fixed_dictionaries({"gain": finite, "seed": seeds})),
)


@given(CONFIGS)
def test_serialize_get_round_trip_through_json(case):
    class_name, config = case
    init = inits.get({"class_name": class_name, "config": config})
    assert type(init).__name__ == class_name
    assert init.get_config() == config
    data = json.loads(json.dumps(inits.serialize(init)))
    again = inits.get(data)
    assert type(again) is type(init)
    assert inits.serialize(again) == inits.serialize(init)


# --- errors --------------------------------------------------------------------------------------

ERRORS = [
    ("negative_stddev", lambda: inits.RandomNormal(stddev=-1.0), ValueError, r"stddev.*-1\.0"),
    ("truncated_negative_stddev", lambda: inits.TruncatedNormal(stddev=-0.5), ValueError, r"-0\.5"),
    ("nan_mean", lambda: inits.RandomNormal(mean=float("nan")), ValueError, r"nan"),
    ("minval_above_maxval", lambda: inits.RandomUniform(minval=1.0, maxval=0.0), ValueError, r"minval=1\.0"),
    ("string_mean", lambda: inits.RandomNormal(mean="0"), TypeError, r"'0'.*str"),
    ("unknown_mode", lambda: inits.VarianceScaling(mode="fan_inn"), ValueError, r"'fan_inn'"),
    ("unknown_distribution", lambda: inits.VarianceScaling(distribution="gaussian"), ValueError, r"'gaussian'"),
    ("zero_scale", lambda: inits.VarianceScaling(scale=0.0), ValueError, r"scale.*0\.0"),
    ("negative_scale", lambda: inits.VarianceScaling(scale=-2), ValueError, r"-2"),
    ("string_seed", lambda: inits.GlorotUniform(seed="1"), TypeError, r"'1'.*str"),
    ("float_seed", lambda: inits.HeNormal(seed=1.5), TypeError, r"1\.5"),
    ("negative_seed", lambda: inits.RandomNormal(seed=-1), ValueError, r"-1"),
    ("huge_seed", lambda: inits.RandomNormal(seed=2**32), ValueError, r"4294967296"),
    ("set_random_seed_none", lambda: inits.set_random_seed(None), TypeError, r"None"),
    ("set_random_seed_negative", lambda: inits.set_random_seed(-5), ValueError, r"-5"),
    ("orthogonal_1d", lambda: inits.Orthogonal()((3,)), ValueError, r"\(3,\)"),
    ("int_dtype_for_random", lambda: inits.GlorotUniform(seed=0)((2, 2), "int32"), ValueError, r"int32"),
    ("unknown_dtype", lambda: inits.Zeros()((2, 2), "float99"), ValueError, r"float99"),
    ("float64_without_x64", lambda: inits.Ones()((2,), "float64"), ValueError, r"float64"),
    ("int_shape", lambda: inits.GlorotUniform(seed=0)(5), TypeError, r"5.*int"),
    ("negative_dim", lambda: inits.Zeros()((2, -1)), ValueError, r"-1"),
    ("constant_not_broadcastable", lambda: inits.Constant([1, 2, 3])((2, 2)), ValueError, r"\(3,\).*\(2, 2\)"),
    ("constant_string", lambda: inits.Constant("a"), TypeError, r"'a'"),
    (
        "from_config_unknown_key",
        lambda: inits.GlorotUniform.from_config({"seed": 1, "scale": 2.0}),
        ValueError,
        "scale",
    ),
    (
        "unknown_name",
        lambda: inits.get("glorot_unifrom"),
        ValueError,
        r"'glorot_unifrom'.*Did you mean 'glorot_uniform'",
    ),
    ("unknown_name_lists_names", lambda: inits.get("qqqq"), ValueError, r"'qqqq'.*he_normal.*variance_scaling"),
    ("bad_type", lambda: inits.get(42), TypeError, r"42.*int"),
    ("unknown_class_name", lambda: inits.get({"class_name": "Nope", "config": {}}), ValueError, r"'Nope'"),
    ("missing_class_name", lambda: inits.get({"config": {}}), ValueError, r"class_name"),
    ("config_not_dict", lambda: inits.get({"class_name": "Zeros", "config": 3}), ValueError, r"3"),
    ("serialize_function", lambda: inits.serialize(len), TypeError, r"len"),
]


@pytest.mark.parametrize(("make", "error", "match"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_the_bad_value(make, error, match):
    with pytest.raises(error, match=match):
        make()
