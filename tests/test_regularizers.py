"""Regularizers: float32 penalties against float64 NumPy, lookup, serialization and errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from layers import regularizers as regs
from tests._tolerances import assert_close

DTYPES = ("float32", "bfloat16", "float16")

# (id, regularizer, float64 reference written from the definition)
CASES = [
    ("l1", regs.L1(0.3), lambda x: 0.3 * np.abs(x).sum()),
    ("l2", regs.L2(0.7), lambda x: 0.7 * np.square(x).sum()),
    ("l1_l2", regs.L1L2(l1=0.2, l2=0.05), lambda x: 0.2 * np.abs(x).sum() + 0.05 * np.square(x).sum()),
    ("l1_l2_defaults_are_zero", regs.L1L2(), lambda x: 0.0),
    ("l1_default", regs.get("l1"), lambda x: 0.01 * np.abs(x).sum()),
    ("l2_default", regs.get("l2"), lambda x: 0.01 * np.square(x).sum()),
]

NAMES = {"l1": regs.L1, "l2": regs.L2, "l1_l2": regs.L1L2}


def _weights(dtype):
    values = np.random.default_rng(0).normal(0.0, 2.0, size=(37, 11))
    return jnp.asarray(values, dtype)


def _inputs():
    return {dtype: _weights(dtype) for dtype in DTYPES}


def _compare(outputs, reference, mode):
    for dtype, x in _inputs().items():
        out = outputs[dtype]
        assert out.dtype == jnp.float32, f"{dtype} input gave {out.dtype} ({mode})"
        assert out.shape == ()
        try:
            # The reference sees the same rounded inputs; the penalty itself is float32 work.
            assert_close(out, reference(np.asarray(x, np.float64)), "float32")
        except AssertionError as error:
            raise AssertionError(f"{dtype} input, {mode}: {error}") from None


@pytest.fixture(scope="module")
def jitted():
    """Every case and dtype through one jax.jit: a compilation per case would dominate the suite's time."""
    regularizers = {case: regularizer for case, regularizer, _ in CASES}

    def run_all(xs):
        return {case: {dtype: reg(x) for dtype, x in xs.items()} for case, reg in regularizers.items()}

    # Module fixtures run outside conftest's per-test strict-promotion scope, so set it here.
    with jax.numpy_dtype_promotion("strict"):
        return jax.jit(run_all)(_inputs())


@pytest.mark.parametrize(("regularizer", "reference"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_eager_penalty_matches_float64_reference(regularizer, reference):
    _compare({dtype: regularizer(x) for dtype, x in _inputs().items()}, reference, "eager")


@pytest.mark.parametrize(("case", "reference"), [(c[0], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_jit_penalty_matches_float64_reference(case, reference, jitted):
    _compare(jitted[case], reference, "jit")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_reduction_is_float32_so_it_does_not_overflow_or_stall(dtype):
    # float16: 407·300² ≈ 3.7e7 overflows 65504. bfloat16: adding 1 to 256 stalls at 256.
    # (The shape of _weights, so no new compilation.)
    x = jnp.full((37, 11), 300.0, dtype)
    assert_close(regs.L2(1.0)(x), 407 * 300.0**2, "float32")
    assert_close(regs.L1(1.0)(jnp.ones((37, 11), dtype)), 407.0, "float32")


def test_accepts_array_likes():
    assert_close(regs.L1L2(1.0, 1.0)([1.0, -2.0]), 3.0 + 5.0, "float32")
    assert_close(regs.L1(1.0)(np.array([1, -2], np.int32)), 3.0, "float32")


# --- lookup and serialization -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(NAMES))
def test_get_by_snake_and_class_name(name):
    cls = NAMES[name]
    assert type(regs.get(name)) is cls
    assert type(regs.get(cls.__name__)) is cls
    assert type(regs.get(cls)) is cls


def test_get_passes_through_none_instances_and_callables():
    reg = regs.L2(0.5)

    def custom(x):
        return jnp.sum(x)

    assert regs.get(None) is None
    assert regs.get(reg) is reg
    assert regs.get(custom) is custom


def test_defaults_follow_keras():
    assert regs.L1().get_config() == {"l1": 0.01}
    assert regs.L2().get_config() == {"l2": 0.01}
    assert regs.L1L2().get_config() == {"l1": 0.0, "l2": 0.0}


def test_serialize_gives_class_name_and_config():
    assert regs.serialize(regs.L1L2(l1=0.5, l2=2)) == {"class_name": "L1L2", "config": {"l1": 0.5, "l2": 2.0}}


factors = st.floats(0, 1e6)
CONFIGS = st.one_of(
    st.tuples(st.just("L1"), st.fixed_dictionaries({"l1": factors})),
    st.tuples(st.just("L2"), st.fixed_dictionaries({"l2": factors})),
    st.tuples(st.just("L1L2"), st.fixed_dictionaries({"l1": factors, "l2": factors})),
)


@given(CONFIGS)
def test_serialize_get_round_trip_through_json(case):
    class_name, config = case
    reg = regs.get({"class_name": class_name, "config": config})
    assert type(reg).__name__ == class_name
    assert reg.get_config() == config
    again = regs.get(json.loads(json.dumps(regs.serialize(reg))))
    assert type(again) is type(reg)
    assert regs.serialize(again) == regs.serialize(reg)


# --- errors --------------------------------------------------------------------------------------

ERRORS = [
    ("negative_l1", lambda: regs.L1(-0.1), ValueError, r"l1.*-0\.1"),
    ("negative_l2", lambda: regs.L2(l2=-3), ValueError, r"l2.*-3"),
    ("infinite_l2", lambda: regs.L2(float("inf")), ValueError, r"inf"),
    ("nan_l1", lambda: regs.L1L2(l1=float("nan")), ValueError, r"nan"),
    ("negative_l1l2_l2", lambda: regs.L1L2(l2=-1.5), ValueError, r"-1\.5"),
    ("string_factor", lambda: regs.L1("0.1"), TypeError, r"'0\.1'.*str"),
    ("bool_factor", lambda: regs.L2(True), TypeError, r"True.*bool"),
    ("none_factor", lambda: regs.L1(None), TypeError, r"None"),
    ("call_on_string", lambda: regs.L2()("abc"), TypeError, r"'abc'"),
    ("from_config_unknown_key", lambda: regs.L1.from_config({"l1": 0.1, "l2": 0.1}), ValueError, r"'l2'"),
    ("unknown_name", lambda: regs.get("l3"), ValueError, r"'l3'.*l1, l2, l1_l2"),
    ("unknown_name_suggests", lambda: regs.get("l1l2"), ValueError, r"'l1l2'.*Did you mean 'l1_l2'"),
    ("bad_type", lambda: regs.get(0.01), TypeError, r"0\.01.*float"),
    ("unknown_class_name", lambda: regs.get({"class_name": "L3", "config": {}}), ValueError, r"'L3'"),
    ("missing_class_name", lambda: regs.get({"config": {"l1": 0.1}}), ValueError, r"class_name"),
    ("config_not_dict", lambda: regs.get({"class_name": "L1", "config": [0.1]}), ValueError, r"\[0\.1\]"),
    ("serialize_function", lambda: regs.serialize(jnp.sum), TypeError, r"Regularizer"),
]


@pytest.mark.parametrize(("make", "error", "match"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_the_bad_value(make, error, match):
    with pytest.raises(error, match=match):
        make()
