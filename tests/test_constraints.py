"""Constraints: results against float64 NumPy, dtype preservation, lookup and errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from layers import constraints as cons
from tests._tolerances import assert_close

DTYPES = ("float32", "bfloat16", "float16")
EPSILON = 1e-7  # Keras' fuzz factor in the norm denominators


def _norms(w, axis):
    return np.sqrt(np.sum(np.square(w), axis=axis, keepdims=True))


def _np_non_neg(w):
    return np.where(w < 0, 0.0, w)


def _np_max_norm(max_value, axis):
    def reference(w):
        norms = _norms(w, axis)
        return w * np.minimum(norms, max_value) / (EPSILON + norms)

    return reference


def _np_unit_norm(axis):
    return lambda w: w / (EPSILON + _norms(w, axis))


def _np_min_max_norm(min_value, max_value, rate, axis):
    def reference(w):
        norms = _norms(w, axis)
        desired = rate * np.clip(norms, min_value, max_value) + (1 - rate) * norms
        return w * desired / (EPSILON + norms)

    return reference


def _weights(shape, scales):
    # Last-axis slices scaled differently, so the bounds below leave some norms alone and move others.
    return np.random.default_rng(0).normal(size=shape) * np.asarray(scales)


# Column norms ≈ 0.05, 0.63, 1.71, 1.23, 4.64; row norms ≈ 1.15, 2.76, 2.87, 2.16, 1.94, 0.92.
MATRIX = _weights((6, 5), [0.05, 0.3, 0.6, 1.2, 2.0])
# Norms over (0, 1, 2) ≈ 0.19, 1.97, 4.42, 5.78.
KERNEL = _weights((3, 3, 2, 4), [0.05, 0.5, 1.0, 1.5])

# (id, constraint, float64 reference, input)
CASES = [
    ("non_neg", cons.NonNeg(), _np_non_neg, MATRIX),
    ("max_norm_axis0", cons.MaxNorm(1.5, axis=0), _np_max_norm(1.5, 0), MATRIX),
    ("max_norm_axis1", cons.MaxNorm(2.5, axis=1), _np_max_norm(2.5, 1), MATRIX),
    ("max_norm_conv", cons.MaxNorm(2.0, axis=[0, 1, 2]), _np_max_norm(2.0, (0, 1, 2)), KERNEL),
    ("max_norm_negative_axis", cons.MaxNorm(1.5, axis=-2), _np_max_norm(1.5, 0), MATRIX),
    ("unit_norm_axis0", cons.UnitNorm(axis=0), _np_unit_norm(0), MATRIX),
    ("unit_norm_axis1", cons.UnitNorm(axis=1), _np_unit_norm(1), MATRIX),
    ("min_max_norm_rate1", cons.MinMaxNorm(0.5, 1.0, rate=1.0), _np_min_max_norm(0.5, 1.0, 1.0, 0), MATRIX),
    ("min_max_norm_rate07", cons.MinMaxNorm(0.5, 1.0, rate=0.7), _np_min_max_norm(0.5, 1.0, 0.7, 0), MATRIX),
    (
        "min_max_norm_conv",
        cons.MinMaxNorm(0.2, 3.0, rate=0.5, axis=[0, 1, 2]),
        _np_min_max_norm(0.2, 3.0, 0.5, (0, 1, 2)),
        KERNEL,
    ),
]


def _inputs(w):
    return {dtype: jnp.asarray(w, dtype) for dtype in DTYPES}


def _compare(outputs, reference, w, mode):
    for dtype, x in _inputs(w).items():
        out = outputs[dtype]
        assert out.dtype == jnp.dtype(dtype), f"{dtype} input gave {out.dtype} ({mode})"
        assert out.shape == w.shape
        try:
            # The reference sees the inputs as rounded to `dtype`: only the constraint's error counts.
            assert_close(out, reference(np.asarray(x, np.float64)), dtype)
        except AssertionError as error:
            raise AssertionError(f"{dtype} input, {mode}: {error}") from None


@pytest.fixture(scope="module")
def jitted():
    """Every case and dtype through one jax.jit: a compilation per case would dominate the suite's time."""
    inputs = {case: _inputs(w) for case, _, _, w in CASES}
    constraints = {case: constraint for case, constraint, _, _ in CASES}

    def run_all(xs):
        return {case: {dtype: constraints[case](x) for dtype, x in per_dtype.items()} for case, per_dtype in xs.items()}

    # Module fixtures run outside conftest's per-test strict-promotion scope, so set it here.
    with jax.numpy_dtype_promotion("strict"):
        return jax.jit(run_all)(inputs)


@pytest.mark.parametrize(("constraint", "reference", "w"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_eager_matches_float64_reference_and_keeps_dtype(constraint, reference, w):
    _compare({dtype: constraint(x) for dtype, x in _inputs(w).items()}, reference, w, "eager")


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_jit_matches_float64_reference_and_keeps_dtype(case, jitted):
    _, _, reference, w = next(c for c in CASES if c[0] == case)
    _compare(jitted[case], reference, w, "jit")


def test_results_satisfy_the_bounds():
    w = jnp.asarray(MATRIX, jnp.float32)
    norms = np.linalg.norm(np.asarray(cons.MaxNorm(1.5)(w), np.float64), axis=0)
    assert norms.max() <= 1.5 + 1e-5
    # The small slices are left alone.
    small = np.linalg.norm(MATRIX, axis=0) < 1.5
    # (up to the 1e-7 fuzz in the denominator, a relative 2e-6 on the smallest norm here)
    np.testing.assert_allclose(np.asarray(cons.MaxNorm(1.5)(w))[:, small], MATRIX[:, small], rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(cons.UnitNorm(1)(w), np.float64), axis=1), 1.0, rtol=1e-5)
    norms = np.linalg.norm(np.asarray(cons.MinMaxNorm(0.5, 1.0)(w), np.float64), axis=0)
    assert norms.min() >= 0.5 - 1e-5
    assert norms.max() <= 1.0 + 1e-5


def test_float16_norms_do_not_overflow():
    # 1000² overflows float16 (max 65504); the norm is computed in float32.
    w = jnp.full((4, 3), 1000.0, jnp.float16)
    assert_close(cons.UnitNorm()(w), np.full((4, 3), 0.5), "float16")
    assert_close(cons.MaxNorm(2.0)(w), np.full((4, 3), 1.0), "float16")


def test_zero_slice_stays_zero():
    w = jnp.zeros((3, 2), jnp.bfloat16)
    for constraint in (cons.UnitNorm(), cons.MaxNorm(), cons.MinMaxNorm(0.5, 1.0)):
        out = constraint(w)
        assert out.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(out, np.float64), 0.0)


def test_non_neg_is_exact_and_keeps_nan():
    w = jnp.asarray([-2.0, -0.0, 0.0, 3.5, np.nan, -np.inf], jnp.bfloat16)
    out = np.asarray(cons.NonNeg()(w), np.float64)
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 3.5, np.nan, 0.0])
    np.testing.assert_array_equal(np.asarray(cons.NonNeg()(jnp.asarray([-3, 4], jnp.int32))), [0, 4])


# --- lookup and serialization -----------------------------------------------------------------

NAMES = {"non_neg": cons.NonNeg, "max_norm": cons.MaxNorm, "unit_norm": cons.UnitNorm, "min_max_norm": cons.MinMaxNorm}


@pytest.mark.parametrize("name", list(NAMES))
def test_get_by_snake_and_class_name(name):
    cls = NAMES[name]
    assert type(cons.get(name)) is cls
    assert type(cons.get(cls.__name__)) is cls
    assert type(cons.get(cls)) is cls


def test_get_passes_through_none_instances_and_callables():
    constraint = cons.MaxNorm(3.0)

    def custom(w):
        return jnp.clip(w, -1, 1)

    assert cons.get(None) is None
    assert cons.get(constraint) is constraint
    assert cons.get(custom) is custom


def test_defaults_follow_keras():
    assert cons.MaxNorm().get_config() == {"max_value": 2.0, "axis": 0}
    assert cons.UnitNorm().get_config() == {"axis": 0}
    assert cons.MinMaxNorm().get_config() == {"min_value": 0.0, "max_value": 1.0, "rate": 1.0, "axis": 0}


def test_serialize_gives_class_name_and_config():
    assert cons.serialize(cons.MaxNorm(3, axis=(0, 1))) == {
        "class_name": "MaxNorm",
        "config": {"max_value": 3.0, "axis": [0, 1]},
    }


axes = st.integers(-4, 3) | st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True)
bounds = st.floats(0, 1e3)
CONFIGS = st.one_of(
    st.tuples(st.just("NonNeg"), st.just({})),
    st.tuples(st.just("MaxNorm"), st.fixed_dictionaries({"max_value": bounds, "axis": axes})),
    st.tuples(st.just("UnitNorm"), st.fixed_dictionaries({"axis": axes})),
    st.tuples(
        st.just("MinMaxNorm"),
        st.tuples(bounds, bounds, st.floats(0, 1), axes).map(
            lambda t: {"min_value": min(t[:2]), "max_value": max(t[:2]), "rate": t[2], "axis": t[3]}
        ),
    ),
)


@given(CONFIGS)
def test_serialize_get_round_trip_through_json(case):
    class_name, config = case
    constraint = cons.get({"class_name": class_name, "config": config})
    assert type(constraint).__name__ == class_name
    assert constraint.get_config() == config
    again = cons.get(json.loads(json.dumps(cons.serialize(constraint))))
    assert type(again) is type(constraint)
    assert cons.serialize(again) == cons.serialize(constraint)


# --- errors --------------------------------------------------------------------------------------

ERRORS = [
    ("negative_max_value", lambda: cons.MaxNorm(-1), ValueError, r"max_value.*-1"),
    ("nan_max_value", lambda: cons.MaxNorm(float("nan")), ValueError, r"nan"),
    ("string_max_value", lambda: cons.MaxNorm("2"), TypeError, r"'2'.*str"),
    ("min_above_max", lambda: cons.MinMaxNorm(min_value=2.0, max_value=1.0), ValueError, r"min_value=2\.0"),
    ("negative_min", lambda: cons.MinMaxNorm(min_value=-0.5), ValueError, r"-0\.5"),
    ("rate_above_one", lambda: cons.MinMaxNorm(rate=1.5), ValueError, r"rate.*1\.5"),
    ("negative_rate", lambda: cons.MinMaxNorm(rate=-0.1), ValueError, r"-0\.1"),
    ("string_axis", lambda: cons.UnitNorm(axis="0"), TypeError, r"'0'"),
    ("empty_axis", lambda: cons.UnitNorm(axis=[]), TypeError, r"\[\]"),
    ("repeated_axis", lambda: cons.MaxNorm(axis=[0, 0]), ValueError, r"\[0, 0\]"),
    ("same_axis_twice", lambda: cons.UnitNorm(axis=[0, -2])(jnp.ones((3, 4))), ValueError, r"\(0, -2\).*twice"),
    ("axis_out_of_range", lambda: cons.MaxNorm(axis=2)(jnp.ones((3, 4))), ValueError, r"axis=2.*\(3, 4\)"),
    ("call_on_string", lambda: cons.UnitNorm()("w"), TypeError, r"'w'"),
    ("from_config_unknown_key", lambda: cons.UnitNorm.from_config({"axis": 0, "rate": 1}), ValueError, r"'rate'"),
    ("unknown_name", lambda: cons.get("max_nrom"), ValueError, r"'max_nrom'.*non_neg.*Did you mean 'max_norm'"),
    ("bad_type", lambda: cons.get(2.0), TypeError, r"2\.0.*float"),
    ("unknown_class_name", lambda: cons.get({"class_name": "Clip", "config": {}}), ValueError, r"'Clip'"),
    ("missing_class_name", lambda: cons.get({"config": {}}), ValueError, r"class_name"),
    ("config_not_dict", lambda: cons.get({"class_name": "NonNeg", "config": None}), ValueError, r"None"),
    ("serialize_function", lambda: cons.serialize(abs), TypeError, r"abs"),
]


@pytest.mark.parametrize(("make", "error", "match"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_the_bad_value(make, error, match):
    with pytest.raises(error, match=match):
        make()
