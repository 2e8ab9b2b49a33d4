"""Softmax: float32 inside, one rounding to the compute dtype, Keras masks, one or several axes."""

import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import dtypepolicy as dp
from layers import Layer
from layers._base._masking import attach_mask, get_mask
from layers._builtin._softmax import Softmax
from tests._conformance import Case, check_layer
from tests._tolerances import assert_close

POLICIES = ["float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16"]


# Every call in this module raises if the layer returns a dtype wider than its policy allows.
pytestmark = pytest.mark.usefixtures("strict_raise")


def reference(x, axis=-1, mask=None):
    """Float64 NumPy softmax; masked positions 0, a fully masked slice all 0."""
    x = np.asarray(x, np.float64)
    keep = np.ones(x.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), x.shape)
    shifted = np.where(keep, x, -np.inf)
    top = np.max(shifted, axis=axis, keepdims=True)
    e = np.where(keep, np.exp(shifted - np.where(np.isfinite(top), top, 0)), 0.0)
    total = e.sum(axis=axis, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def _eager(layer, x, **kwargs):
    return layer(x, **kwargs)


def _jitted(layer, x, **kwargs):
    return jax.jit(lambda x, kwargs: layer.stateless_call([], [], x, **kwargs))(x, kwargs)[0]


MODES = {"eager": _eager, "jit": _jitted}


def _logits(shape, scale=3.0, seed=0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------- the conformance table

_MASK = np.arange(16) % 4 != 3

CASES = [
    Case(
        "last_axis",
        lambda **kw: Softmax(**kw),
        lambda: (_logits((4, 5, 16)).astype(np.float32),),
        lambda x, weights: reference(x),
    ),
    Case(
        "two_axes",
        lambda **kw: Softmax(axis=(1, 2), **kw),
        lambda: (_logits((4, 5, 16)).astype(np.float32),),
        lambda x, weights: reference(x, axis=(1, 2)),
    ),
    Case(
        "masked",
        lambda **kw: Softmax(**kw),
        lambda: (_logits((4, 5, 16)).astype(np.float32),),
        lambda x, weights: reference(x, mask=_MASK),
        call_kwargs={"mask": jnp.asarray(_MASK)},
    ),
]
SWEEP = [(CASES[0], policy) for policy in POLICIES] + [(case, "mixed_bfloat16") for case in CASES[1:]]


@pytest.mark.parametrize(("case", "policy"), SWEEP, ids=[f"{case.name}-{policy}" for case, policy in SWEEP])
def test_conformance(case, policy):
    check_layer(case, policy)


# ---------------------------------------------------------------- masks across policies and modes


# Every policy eagerly, jitted under one 16-bit policy (test_conformance's "masked" case runs jitted too).
MASK_CASES = [(policy, "eager") for policy in POLICIES] + [("float16", "jit")]


@pytest.mark.parametrize(("policy", "mode"), MASK_CASES)
def test_masked_positions_get_zero_and_the_rest_share_the_mass(policy, mode):
    compute = dp.get(policy).compute_dtype
    x = jnp.asarray(_logits((3, 8))).astype(compute)
    mask = np.array([[True] * 5 + [False] * 3, [False, True] * 4, [False] * 8])
    out = MODES[mode](Softmax(dtype=policy), x, mask=jnp.asarray(mask))
    assert out.dtype == jnp.dtype(compute)
    expected = reference(x, mask=mask)
    assert_close(out, expected, compute)
    assert (np.asarray(out, np.float64)[~mask] == 0).all()  # exactly 0, the fully masked row included


@pytest.mark.parametrize("axis", [-1, 1, (1, 2), (0, -1), [-2]])
def test_axis_as_int_or_tuple(axis):
    # Axes are static: the jitted path is covered by the sweeps above.
    x = jnp.asarray(_logits((2, 3, 6)), jnp.float32)
    out = Softmax(axis=axis)(x)
    axes = axis if isinstance(axis, int) else tuple(axis)
    expected = reference(x, axis=axes)
    assert_close(out, expected, "float32")
    np.testing.assert_allclose(np.sum(np.asarray(out, np.float64), axis=axes), 1.0, rtol=1e-6)


def test_mask_broadcasts_and_is_taken_from_the_input():
    x = jnp.asarray(_logits((2, 3, 4)), jnp.float32)
    mask = jnp.array([[[True, True, False, True]], [[False, True, True, True]]])  # (2, 1, 4)
    expected = reference(x, mask=mask)
    assert_close(Softmax()(x, mask=mask), expected, "float32")
    attach_mask(x, mask)  # as a previous masking layer would
    out = Softmax()(x)
    assert_close(out, expected, "float32")
    assert get_mask(out) is mask  # and passed on


# ---------------------------------------------------------------- precision


def _half_ulp_bfloat16(p):
    """Half the bfloat16 spacing at each positive float64 value (8 significant bits)."""
    exponent = np.floor(np.log2(p))
    return np.exp2(exponent - 8)


@pytest.mark.parametrize("mode", MODES)
def test_bfloat16_softmax_over_1000_logits_is_rounded_once(mode):
    x = jnp.asarray(_logits((1000,)), jnp.bfloat16)
    out = MODES[mode](Softmax(dtype="bfloat16"), x)
    assert out.dtype == jnp.bfloat16
    expected = reference(x)
    actual = np.asarray(out, np.float64)
    # Each output is the float32 result rounded once: within half a bfloat16 ulp of the exact
    # value, plus the float32 computation's own error (far below a bfloat16 ulp).
    slack = _half_ulp_bfloat16(expected) + 2e-6 * expected
    assert (np.abs(actual - expected) <= slack).all(), np.max(np.abs(actual - expected) / slack)
    assert abs(actual.sum() - 1) <= slack.sum()


@pytest.mark.parametrize("mode", MODES)
def test_float32_softmax_over_1000_logits_sums_to_one(mode):
    x = jnp.asarray(_logits((1000,), seed=1), jnp.float32)
    out = MODES[mode](Softmax(), x)
    assert abs(float(jnp.sum(out)) - 1) <= 1e-6
    assert abs(float(np.sum(np.asarray(out), dtype=np.float32)) - 1) <= 1e-6
    assert_close(out, reference(x), "float32")


@pytest.mark.parametrize("mode", MODES)
def test_float16_large_logits_with_a_mask_stay_finite(mode):
    f16_max = float(ml_dtypes.finfo(np.float16).max)
    x = jnp.asarray(
        [[f16_max, -f16_max, 60000.0, 0.0], [-f16_max, -f16_max, -60000.0, -f16_max], [3.0, 1.0, -f16_max, f16_max]],
        jnp.float16,
    )
    mask = jnp.array([[False, True, True, True], [True, True, True, False], [False, False, False, False]])
    out = MODES[mode](Softmax(dtype="float16"), x, mask=mask)
    assert out.dtype == jnp.float16 and bool(jnp.all(jnp.isfinite(out)))
    assert_close(out, reference(x, mask=mask), "float16")


def test_gradient_with_respect_to_the_inputs():
    layer = Softmax()
    x = jnp.asarray(_logits((5,)), jnp.float32)
    weights = jnp.arange(5.0)
    grad = jax.jit(jax.grad(lambda x: jnp.sum(weights * layer.stateless_call([], [], x)[0])))(x)
    p = reference(x)
    assert_close(grad, p * (np.arange(5.0) - np.sum(p * np.arange(5.0))), "float32")


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_integer_logits_become_the_compute_dtype(policy):
    out = Softmax(dtype=policy)(jnp.array([0, 0]))
    assert out.dtype == jnp.dtype(dp.get(policy).compute_dtype) and out.tolist() == [0.5, 0.5]


def test_inside_a_parent_the_mask_argument_is_passed_explicitly():
    class Scores(Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.softmax = Softmax(axis=-1)

        def call(self, x, mask=None):
            return self.softmax(x, mask=mask)

    x = jnp.asarray(_logits((2, 4)), jnp.float32)
    mask = jnp.array([[True, False, True, True], [True, True, True, True]])
    out = Scores(dtype="mixed_bfloat16")(x, mask=mask)
    assert out.dtype == jnp.bfloat16
    assert_close(out, reference(jnp.asarray(x, jnp.bfloat16), mask=mask), "bfloat16")


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("axis", [-1, 2, (1, 2), [0, -1]])
def test_config_round_trips_through_json(axis):
    layer = Softmax(axis=axis, dtype="mixed_float16", name="probs")
    config = json.loads(json.dumps(layer.get_config()))
    clone = Softmax.from_config(config)
    assert clone.get_config() == config
    assert clone.axis == (axis if isinstance(axis, int) else tuple(axis))
    assert clone.dtype_policy == layer.dtype_policy and clone.name == "probs"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("axis", "error"),
    [
        ("a", TypeError),
        (1.0, TypeError),
        (True, TypeError),
        ((), TypeError),
        ((1, "a"), TypeError),
        ((1, 1), ValueError),
    ],
)
def test_bad_axis(axis, error):
    with pytest.raises(error, match=r"Softmax axis must be an int or a non-empty tuple of distinct ints, received"):
        Softmax(axis=axis)


@pytest.mark.parametrize("axis", [3, -4, (1, -2)])
def test_axis_that_does_not_fit_the_input(axis):
    with pytest.raises(ValueError, match=r"does not name distinct axes of an input of shape \(2, 3, 4\)"):
        Softmax(axis=axis)(jnp.ones((2, 3, 4)))


def test_mask_that_does_not_broadcast():
    with pytest.raises(ValueError, match=r"the mask of shape \(3,\) does not broadcast to the input shape \(2, 4\)"):
        Softmax()(jnp.ones((2, 4)), mask=jnp.ones((3,), bool))


def test_unknown_keyword_argument():
    with pytest.raises(TypeError, match=r"Unrecognized keyword arguments passed to Softmax: \{'axes': 1\}"):
        Softmax(axes=1)
