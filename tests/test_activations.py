"""Activations: float64 NumPy references per dtype, eager and jitted, float32 softmax, lookup."""

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from layers import activations as acts
from tests._tolerances import assert_close

DTYPES = ("float32", "bfloat16", "float16")

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_erf = np.vectorize(math.erf)


def _softplus(x):
    return np.log1p(np.exp(x))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# Written from the definitions (Keras 3 docs), in float64; none calls into the library.
ELEMENTWISE = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)),
    "softplus": _softplus,
    "softsign": lambda x: x / (1 + np.abs(x)),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.2 * x),
    "hard_sigmoid": lambda x: np.clip(x / 6 + 0.5, 0, 1),
    "exponential": np.exp,
    "mish": lambda x: x * np.tanh(_softplus(x)),
}

# Calls with non-default arguments, checked the same way.
WITH_ARGUMENTS = {
    "gelu_approximate": (
        functools.partial(acts.gelu, approximate=True),
        lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    ),
    "elu_alpha": (functools.partial(acts.elu, alpha=0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    "leaky_relu_slope": (
        functools.partial(acts.leaky_relu, negative_slope=0.01),
        lambda x: np.where(x >= 0, x, 0.01 * x),
    ),
}

X = np.linspace(-6.0, 6.0, 49)  # includes 0 and the kinks at 0, ±3 and 6


def _softmax64(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax64(x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


LOGITS = np.random.default_rng(0).normal(0.0, 3.0, size=(3, 17))


# id -> (function, float64 reference, input); every case runs for each of DTYPES, eager and jitted.
CASES = {name: (getattr(acts, name), reference, X) for name, reference in ELEMENTWISE.items()}
CASES.update({case: (fn, reference, X) for case, (fn, reference) in WITH_ARGUMENTS.items()})
for _axis in (-1, 0):
    CASES[f"softmax_axis{_axis}"] = (
        functools.partial(acts.softmax, axis=_axis),
        functools.partial(_softmax64, axis=_axis),
        LOGITS,
    )
    CASES[f"log_softmax_axis{_axis}"] = (
        functools.partial(acts.log_softmax, axis=_axis),
        functools.partial(_log_softmax64, axis=_axis),
        LOGITS,
    )


def _inputs(x64):
    return {dtype: jnp.asarray(x64, dtype) for dtype in DTYPES}


def _compare(outputs, reference, x64, mode):
    for dtype, x in _inputs(x64).items():
        out = outputs[dtype]
        assert out.dtype == jnp.dtype(dtype), f"{dtype} input gave {out.dtype} ({mode})"
        assert out.shape == x.shape
        try:
            # The reference sees the inputs as rounded to `dtype`: only the function's own error counts.
            assert_close(out, reference(np.asarray(x, np.float64)), dtype)
        except AssertionError as error:
            raise AssertionError(f"{dtype} input, {mode}: {error}") from None


@pytest.fixture(scope="module")
def jitted():
    """Every case and dtype through one jax.jit: a compilation per case would dominate the suite's time."""
    inputs = {case: _inputs(x64) for case, (_, _, x64) in CASES.items()}

    def run_all(xs):
        return {case: {dtype: CASES[case][0](x) for dtype, x in per_dtype.items()} for case, per_dtype in xs.items()}

    # Module fixtures run outside conftest's per-test strict-promotion scope, so set it here.
    with jax.numpy_dtype_promotion("strict"):
        return jax.jit(run_all)(inputs)


@pytest.mark.parametrize("case", list(CASES))
def test_eager_matches_float64_reference(case):
    fn, reference, x64 = CASES[case]
    _compare({dtype: fn(x) for dtype, x in _inputs(x64).items()}, reference, x64, "eager")


@pytest.mark.parametrize("case", list(CASES))
def test_jit_matches_float64_reference(case, jitted):
    _, reference, x64 = CASES[case]
    _compare(jitted[case], reference, x64, "jit")


def test_bfloat16_softmax_is_computed_in_float32():
    logits = jnp.asarray(np.random.default_rng(1).normal(0.0, 3.0, size=1000), jnp.bfloat16)
    out = acts.softmax(logits)
    assert out.dtype == jnp.bfloat16
    exact = _softmax64(np.asarray(logits, np.float64), axis=-1)
    # Computed in float32 and rounded once, every probability is within half a bfloat16 ulp
    # (relative 2**-8) of the exact value; exponentials taken in bfloat16 miss by several percent.
    relative = np.abs(np.asarray(out, np.float64) - exact) / exact
    assert relative.max() <= 2.0**-8 * (1 + 1e-3)
    # So the float32 sum is 1 up to those output roundings, which partly cancel.
    total = float(jnp.sum(out.astype(jnp.float32)))
    assert abs(total - 1.0) <= 2.0**-8
    assert abs(total - 1.0) <= 4 * 2.0**-8 * math.sqrt(np.sum(exact**2)) + 1e-6


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("fn", [acts.softmax, acts.log_softmax], ids=["softmax", "log_softmax"])
def test_softmax_math_runs_in_float32(fn, dtype):
    # Numerically a 16-bit log_softmax barely differs (JAX already sums in float32), so check the
    # program: every exp, log, max, sum, sub and div must run on float32 values.
    text = str(jax.make_jaxpr(fn)(jnp.ones((4,), dtype)))
    ops = re.findall(r":(\w+)\[[^\]]*\] = (exp|log|reduce_max|reduce_sum|sub|div)\b", text)
    assert ops, text
    assert {result_dtype for result_dtype, _ in ops} == {"f32"}, text


def test_integer_inputs_become_float32():
    out = acts.sigmoid(jnp.asarray([0, 2], jnp.int32))
    assert out.dtype == jnp.float32
    assert_close(out, _sigmoid(np.array([0.0, 2.0])), "float32")
    assert acts.relu([-1, 3]).dtype == jnp.float32


# --- lookup and serialization -----------------------------------------------------------------


@pytest.mark.parametrize("name", [*ELEMENTWISE, "softmax", "log_softmax"])
def test_get_and_serialize_by_name(name):
    fn = acts.get(name)
    assert fn is getattr(acts, name)
    assert acts.serialize(fn) == ("silu" if name == "swish" else name)


def test_get_none_is_linear_and_callables_pass_through():
    assert acts.get(None) is acts.linear
    assert acts.get(jax.nn.relu) is jax.nn.relu
    assert acts.swish is acts.silu


@given(st.sampled_from([*ELEMENTWISE, "softmax", "log_softmax"]))
def test_serialize_get_round_trip(name):
    fn = acts.get(name)
    assert acts.get(acts.serialize(fn)) is fn


def _my_activation(x):
    return x


ERRORS = [
    ("unknown_name", lambda: acts.get("rleu"), ValueError, r"'rleu'.*Did you mean 'relu'"),
    ("unknown_name_lists_names", lambda: acts.get("zzz"), ValueError, r"'zzz'.*linear, relu.*mish"),
    ("dict_identifier", lambda: acts.get({"class_name": "relu"}), TypeError, r"class_name.*dict"),
    ("int_identifier", lambda: acts.get(3), TypeError, r"3.*int"),
    ("serialize_unknown_function", lambda: acts.serialize(_my_activation), ValueError, r"_my_activation.*built-in"),
    ("serialize_non_callable", lambda: acts.serialize("relu"), TypeError, r"'relu'.*str"),
    ("call_on_string", lambda: acts.relu("x"), TypeError, r"relu.*'x'"),
]


@pytest.mark.parametrize(("make", "error", "match"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_the_bad_value(make, error, match):
    with pytest.raises(error, match=match):
        make()
