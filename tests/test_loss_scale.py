"""Loss scaling (`dtypepolicy.loss_scale`) against a pure-Python reference of the rule.

The reference (`reference_run`) is written here from the contract, in NumPy float32 so rounding
is the same as the library's float32 state; it never calls the library. Sequences run eagerly,
with a jitted `adjust` per step, and inside a jitted `jax.lax.scan`.
"""

import dataclasses
import math
import re

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from dtypepolicy.loss_scale import DynamicLossScale, NoOpLossScale, StaticLossScale, all_finite
from tests._tolerances import assert_close

F32 = np.float32
TRANSFORMS = [pytest.param(lambda f: f, id="eager"), pytest.param(jax.jit, id="jit")]
FLOAT_DTYPES = {
    "float32": np.dtype(np.float32),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float16": np.dtype(np.float16),
}
META = ("growth_interval", "factor", "min_scale", "max_scale")


# --- the reference rule and three ways of running the library ----------------------------------


def reference_run(flags, initial_scale, growth_interval, factor, min_scale, max_scale):
    """Returns [(scale, counter)] after each step, by the contract's rule, in float32."""
    scale, counter, out = F32(initial_scale), 0, []
    for finite in flags:
        if not finite:
            scale, counter = max(scale / F32(factor), F32(min_scale)), 0
        elif counter + 1 == growth_interval:  # the growth_interval-th consecutive finite step
            scale, counter = min(scale * F32(factor), F32(max_scale)), 0
        else:
            counter += 1
        out.append((F32(scale), counter))
    return out


_jitted_adjust = jax.jit(lambda s, finite: s.adjust(finite))


@jax.jit
def _scanned(loss_scale, flags):
    def body(s, finite):
        s = s.adjust(finite)
        return s, (s.loss_scale, s.counter)

    return jax.lax.scan(body, loss_scale, flags)


def run_eager(loss_scale, flags):
    out = []
    for finite in flags:
        loss_scale = loss_scale.adjust(finite)
        out.append((loss_scale.loss_scale, loss_scale.counter))
    return out, loss_scale


def run_jit(loss_scale, flags):
    out = []
    for finite in flags:
        loss_scale = _jitted_adjust(loss_scale, jnp.asarray(finite))
        out.append((loss_scale.loss_scale, loss_scale.counter))
    return out, loss_scale


def run_scan(loss_scale, flags):
    final, (scales, counters) = _scanned(loss_scale, jnp.asarray(flags, bool))
    return list(zip(scales, counters, strict=True)), final


RUNNERS = [
    pytest.param(run_eager, id="eager"),
    pytest.param(run_jit, id="jit"),
    pytest.param(run_scan, id="jitted-scan"),
]


def assert_trajectory(actual, expected):
    """Each step's (scale, counter) equals the reference exactly, with float32/int32 state."""
    assert len(actual) == len(expected)
    for step, ((scale, counter), (ref_scale, ref_counter)) in enumerate(zip(actual, expected, strict=True)):
        scale, counter = np.asarray(scale), np.asarray(counter)
        assert scale.dtype == np.float32 and counter.dtype == np.int32, (step, scale.dtype, counter.dtype)
        assert (scale.item(), counter.item()) == (ref_scale.item(), ref_counter), (
            f"step {step}: got ({scale.item()}, {counter.item()}), expected ({ref_scale.item()}, {ref_counter})"
        )


def meta_of(loss_scale):
    return {name: getattr(loss_scale, name) for name in META}


def make(**config):
    """A DynamicLossScale and the same config for the reference."""
    return DynamicLossScale(**config), config


# --- defaults and the growth / shrink rule -----------------------------------------------------


def test_dynamic_defaults():
    loss_scale = DynamicLossScale()
    assert np.asarray(loss_scale.loss_scale).item() == 32768.0
    assert loss_scale.loss_scale.dtype == jnp.float32 and loss_scale.loss_scale.shape == ()
    assert np.asarray(loss_scale.counter).item() == 0 and loss_scale.counter.dtype == jnp.int32
    assert meta_of(loss_scale) == {"growth_interval": 2000, "factor": 2.0, "min_scale": 1.0, "max_scale": 16777216.0}
    assert type(loss_scale.growth_interval) is int and type(loss_scale.factor) is float


GROWTH_TABLE = [  # flags -> scales and counters after each step; growth_interval=3, initial 8
    pytest.param(
        [True] * 7,
        [8, 8, 16, 16, 16, 32, 32],
        [1, 2, 0, 1, 2, 0, 1],
        id="grows-every-third-finite-step",
    ),
    pytest.param(
        [True, True, False, True, True, True, True],
        [8, 8, 4, 4, 4, 8, 8],
        [1, 2, 0, 1, 2, 0, 1],
        id="non-finite-step-resets-the-count",
    ),
    pytest.param(
        [True, True, False, False, True, True, True],
        [8, 8, 4, 2, 2, 2, 4],
        [1, 2, 0, 0, 1, 2, 0],
        id="two-non-finite-steps",
    ),
]


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize(("flags", "scales", "counters"), GROWTH_TABLE)
def test_grows_after_exactly_growth_interval_finite_steps(run, flags, scales, counters):
    trajectory, _ = run(DynamicLossScale(initial_scale=8.0, growth_interval=3), flags)
    assert_trajectory(trajectory, [(F32(s), c) for s, c in zip(scales, counters, strict=True)])


BAD_GRADS = {  # scaled gradients for params {"w": (1, 2) float32, "b": (1,)}, one non-finite value each
    "inf": (jnp.array([[1.0, jnp.inf]], jnp.float32), jnp.ones(1, jnp.bfloat16)),
    "minus-inf-float16": (jnp.ones((1, 2), jnp.float32), jnp.array([-jnp.inf], jnp.float16)),
    "nan": (jnp.array([[0.5, jnp.nan]], jnp.float32), jnp.ones(1, jnp.bfloat16)),
    "nan-bfloat16": (jnp.ones((1, 2), jnp.float32), jnp.array([jnp.nan], jnp.bfloat16)),
}


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("case", BAD_GRADS)
def test_non_finite_gradients_halve_the_scale_and_skip_the_update(transform, case):
    params = {"w": jnp.full((1, 2), 3.0, jnp.float32), "b": jnp.full((1,), 0.5, jnp.float32)}
    grads = dict(zip(("w", "b"), BAD_GRADS[case], strict=True))

    @transform
    def train_step(loss_scale, params, scaled_grads):
        grads = loss_scale.unscale(scaled_grads)
        finite = all_finite(grads)
        updated = jax.tree.map(lambda p, g: p - 0.1 * g.astype(p.dtype), params, grads)
        params = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, params)
        return loss_scale.adjust(finite), params, finite

    start = DynamicLossScale(initial_scale=1024.0, growth_interval=3).adjust(True)  # counter 1
    loss_scale, new_params, finite = train_step(start, params, grads)
    assert not bool(finite)
    assert np.asarray(loss_scale.loss_scale).item() == 512.0
    assert np.asarray(loss_scale.counter).item() == 0
    for name in params:
        np.testing.assert_array_equal(np.asarray(new_params[name]), np.asarray(params[name]))


def test_float16_overflow_from_scaling_is_detected_and_shrinks_the_scale():
    loss_scale = DynamicLossScale()  # 2**15
    scaled = loss_scale.scale({"g": jnp.array([4.0, 1.0], jnp.float16)})  # 4 * 32768 > 65504
    assert np.isinf(np.asarray(scaled["g"], np.float64)[0])
    finite = all_finite(scaled)
    assert not bool(finite)
    assert np.asarray(loss_scale.adjust(finite).loss_scale).item() == 16384.0


CLAMP_TABLE = [  # (config, flags, expected scales after each step, expected counters)
    pytest.param(
        {"initial_scale": 1.0, "min_scale": 0.25},
        [False] * 4,
        [0.5, 0.25, 0.25, 0.25],
        [0, 0, 0, 0],
        id="min-below-one",
    ),
    pytest.param(
        {"initial_scale": 3.0, "min_scale": 0.25},
        [False] * 5,
        [1.5, 0.75, 0.375, 0.25, 0.25],
        [0, 0, 0, 0, 0],
        id="min-not-on-the-factor-grid",
    ),
    pytest.param({"initial_scale": 2.0}, [False] * 3, [1.0, 1.0, 1.0], [0, 0, 0], id="default-min-one"),
    pytest.param(
        {"initial_scale": 2.0**23, "growth_interval": 1},
        [True] * 3,
        [2.0**24, 2.0**24, 2.0**24],
        [0, 0, 0],
        id="default-max",
    ),
    pytest.param(
        {"initial_scale": 64.0, "growth_interval": 2, "max_scale": 100.0},
        [True] * 5 + [False],
        [64.0, 100.0, 100.0, 100.0, 100.0, 50.0],
        [1, 0, 1, 0, 1, 0],
        id="max-not-on-the-factor-grid",
    ),
]


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize(("config", "flags", "scales", "counters"), CLAMP_TABLE)
def test_clamps_at_min_and_max_scale(run, config, flags, scales, counters):
    trajectory, final = run(DynamicLossScale(**config), flags)
    assert_trajectory(trajectory, [(F32(s), c) for s, c in zip(scales, counters, strict=True)])
    assert meta_of(final) == meta_of(DynamicLossScale(**config))


@pytest.mark.parametrize("run", RUNNERS)
def test_long_random_sequence_matches_the_reference(run):
    rng = np.random.default_rng(1234)
    flags = (rng.random(400) < 0.8).tolist()
    loss_scale, config = make(initial_scale=16.0, growth_interval=3, factor=2.0, min_scale=0.25, max_scale=1024.0)
    expected = reference_run(flags, **config)
    # The sequence is only interesting if it reaches both clamps.
    assert min(s for s, _ in expected) == F32(0.25) and max(s for s, _ in expected) == F32(1024.0)
    trajectory, final = run(loss_scale, flags)
    assert_trajectory(trajectory, expected)
    assert meta_of(final) == meta_of(loss_scale)


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # only the autouse strict-promotion fixture
)
@given(
    flags=st.lists(st.booleans(), min_size=24, max_size=24),
    growth_interval=st.sampled_from([1, 2, 3, 5]),
    factor=st.sampled_from([2.0, 4.0]),
    min_scale=st.sampled_from([0.25, 1.0]),
    max_scale=st.sampled_from([64.0, 1000.0, 2.0**24]),
    initial_scale=st.sampled_from([1.0, 3.0, 48.0]),
)
def test_random_sequences_agree_with_the_reference_eager_jit_and_scan(
    flags, growth_interval, factor, min_scale, max_scale, initial_scale
):
    config = {
        "initial_scale": max(initial_scale, min_scale),
        "growth_interval": growth_interval,
        "factor": factor,
        "min_scale": min_scale,
        "max_scale": max_scale,
    }
    expected = reference_run(flags, **config)
    for run in (run_eager, run_jit, run_scan):
        trajectory, _ = run(DynamicLossScale(**config), flags)
        assert_trajectory(trajectory, expected)


# --- pytree: flatten/unflatten, jit, vmap ------------------------------------------------------

CONFIG = {"initial_scale": 6.0, "growth_interval": 7, "factor": 4.0, "min_scale": 0.25, "max_scale": 1000.0}


def test_every_field_survives_flatten_and_unflatten():
    loss_scale = DynamicLossScale(**CONFIG).adjust(True)  # counter 1
    leaves, treedef = jax.tree_util.tree_flatten(loss_scale)
    assert [np.asarray(leaf).item() for leaf in leaves] == [6.0, 1]
    same = jax.tree_util.tree_unflatten(treedef, leaves)
    assert meta_of(same) == {"growth_interval": 7, "factor": 4.0, "min_scale": 0.25, "max_scale": 1000.0}
    rebuilt = jax.tree_util.tree_unflatten(treedef, [jnp.float32(5.0), jnp.int32(4)])
    assert np.asarray(rebuilt.loss_scale).item() == 5.0 and np.asarray(rebuilt.counter).item() == 4
    assert meta_of(rebuilt) == meta_of(loss_scale)
    doubled = jax.tree.map(lambda x: x * 2, loss_scale)
    assert np.asarray(doubled.loss_scale).item() == 12.0 and meta_of(doubled) == meta_of(loss_scale)


def test_every_field_survives_jit_as_argument_and_as_return_value():
    loss_scale = DynamicLossScale(**CONFIG).adjust(True)
    seen = {}

    @jax.jit
    def inside(s):
        seen.update(meta_of(s))
        return s

    returned = inside(loss_scale)
    assert seen == meta_of(loss_scale)
    assert type(seen["growth_interval"]) is int and type(seen["min_scale"]) is float
    assert meta_of(returned) == meta_of(loss_scale)
    assert np.asarray(returned.loss_scale).item() == 6.0 and np.asarray(returned.counter).item() == 1
    created = jax.jit(lambda: DynamicLossScale(**CONFIG))()
    assert meta_of(created) == meta_of(loss_scale) and np.asarray(created.loss_scale).item() == 6.0


def test_jit_uses_each_loss_scales_own_static_fields():
    # Same leaves, different min_scale: a cached trace must not leak one's min_scale into the other.
    low = DynamicLossScale(initial_scale=1.0, min_scale=0.25)
    high = DynamicLossScale(initial_scale=1.0, min_scale=1.0)
    assert np.asarray(_jitted_adjust(low, False).loss_scale).item() == 0.5
    assert np.asarray(_jitted_adjust(high, False).loss_scale).item() == 1.0
    assert _jitted_adjust(low, False).min_scale == 0.25


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_vmap_over_a_stack_of_two_loss_scales(transform):
    config = {"growth_interval": 2, "factor": 2.0, "min_scale": 0.5, "max_scale": 16.0}
    a = DynamicLossScale(initial_scale=8.0, **config)
    b = DynamicLossScale(initial_scale=1.0, **config)
    stacked = jax.tree.map(lambda *x: jnp.stack(x), a, b)
    assert stacked.loss_scale.shape == (2,) and stacked.counter.shape == (2,)
    assert meta_of(stacked) == meta_of(a)
    flags = [[True, False], [True, False], [True, True], [False, True], [True, True], [True, True]]
    adjust = transform(jax.vmap(lambda s, finite: s.adjust(finite)))
    expected = [
        reference_run([step[row] for step in flags], initial_scale=initial, **config)
        for row, initial in enumerate([8.0, 1.0])
    ]
    for t, step_flags in enumerate(flags):
        stacked = adjust(stacked, jnp.asarray(step_flags))
        assert meta_of(stacked) == meta_of(a)
        for row in range(2):
            assert_trajectory([(stacked.loss_scale[row], stacked.counter[row])], [expected[row][t]])


# --- scale / unscale ---------------------------------------------------------------------------


def make_tree():
    return {
        "f32": jnp.array([1.5, -0.75, 3.0e-3, 0.0], jnp.float32),
        "nested": [
            jnp.array([[0.5, -1.0], [0.0078125, 0.25]], jnp.bfloat16),
            (jnp.array([0.5, -0.875, 0.015625], jnp.float16), {"ints": jnp.array([1, -7, 40000], jnp.int32)}),
        ],
        "step": jnp.array(3, jnp.int32),
    }


def float64_reference(tree, multiplier):
    def one(leaf):
        dtype = np.asarray(leaf).dtype
        if dtype.name not in FLOAT_DTYPES:
            return np.asarray(leaf)
        return (np.asarray(leaf, np.float64) * multiplier).astype(dtype)

    return jax.tree.map(one, tree)


def assert_trees_bits_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        got, want = np.asarray(got), np.asarray(want)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want, strict=True)


LOSS_SCALES = [  # (factory, scale value) -- powers of two, including below one
    pytest.param(lambda: StaticLossScale(2.0**15), 2.0**15, id="static-2^15"),
    pytest.param(lambda: DynamicLossScale(), 2.0**15, id="dynamic-2^15"),
    pytest.param(lambda: DynamicLossScale(initial_scale=0.25, min_scale=0.25), 0.25, id="dynamic-0.25"),
    pytest.param(lambda: StaticLossScale(1), 1.0, id="static-1"),
]


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize(("factory", "value"), LOSS_SCALES)
def test_scale_and_unscale_keep_dtypes_and_leave_ints_alone(transform, factory, value):
    loss_scale, tree = factory(), make_tree()
    scaled = transform(lambda s, t: s.scale(t))(loss_scale, tree)
    assert_trees_bits_equal(scaled, float64_reference(tree, value))
    unscaled = transform(lambda s, t: s.unscale(t))(loss_scale, scaled)
    assert_trees_bits_equal(unscaled, tree)  # exact for power-of-two scales
    np.testing.assert_array_equal(np.asarray(scaled["nested"][1][1]["ints"]), [1, -7, 40000])


def test_scale_leaves_python_ints_untouched_and_scales_python_floats():
    out = StaticLossScale(4.0).scale({"n": 7, "x": 0.5, "none": None})
    assert out["n"] == 7 and type(out["n"]) is int and out["none"] is None
    assert np.asarray(out["x"]).item() == 2.0


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_non_power_of_two_scale_is_exact_and_unscale_is_within_tolerance(transform):
    loss_scale, tree = StaticLossScale(1000.0), make_tree()
    scaled = transform(lambda s, t: s.scale(t))(loss_scale, tree)
    # A 16-bit or float32 value times 1000 is exact in float32, so one rounding to the leaf dtype.
    assert_trees_bits_equal(scaled, float64_reference(tree, 1000.0))
    unscaled = transform(lambda s, t: s.unscale(t))(loss_scale, scaled)
    for got, want in zip(jax.tree.leaves(unscaled), jax.tree.leaves(tree), strict=True):
        assert got.dtype == want.dtype
        dtype = np.asarray(want).dtype
        if dtype.name in FLOAT_DTYPES:
            assert_close(got, np.asarray(want, np.float64), dtype.name)


# --- static and no-op --------------------------------------------------------------------------


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("finite", [True, False])
def test_static_loss_scale_never_changes(transform, finite):
    loss_scale = StaticLossScale(128.0)
    adjusted = transform(lambda s, f: s.adjust(f))(loss_scale, jnp.asarray(finite))
    assert type(adjusted) is StaticLossScale
    assert np.asarray(adjusted.loss_scale).item() == 128.0 and adjusted.loss_scale.dtype == jnp.float32
    leaves, treedef = jax.tree_util.tree_flatten(loss_scale)
    assert [np.asarray(leaf).item() for leaf in leaves] == [128.0]
    assert np.asarray(jax.tree_util.tree_unflatten(treedef, leaves).loss_scale).item() == 128.0
    assert np.asarray(adjusted.scale(jnp.array([2.0], jnp.bfloat16))).tolist() == [256.0]


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_no_op_loss_scale_returns_its_inputs(transform):
    loss_scale, tree = NoOpLossScale(), make_tree()
    assert loss_scale.scale(tree) is tree and loss_scale.unscale(tree) is tree
    assert_trees_bits_equal(transform(lambda s, t: s.scale(t))(loss_scale, tree), tree)
    assert np.asarray(loss_scale.loss_scale).item() == 1.0 and loss_scale.loss_scale.dtype == jnp.float32
    assert loss_scale.adjust(False) == NoOpLossScale() and loss_scale.adjust(True) is loss_scale
    assert type(transform(lambda s: s.adjust(False))(loss_scale)) is NoOpLossScale
    assert jax.tree_util.tree_leaves(loss_scale) == []


# --- all_finite --------------------------------------------------------------------------------

ALL_FINITE_CASES = [
    pytest.param({}, True, id="empty-dict"),
    pytest.param([], True, id="empty-list"),
    pytest.param({"a": None, "b": ()}, True, id="only-empty-nodes"),
    pytest.param({"a": jnp.array([1, 2], jnp.int32), "b": [jnp.array(3, jnp.int8)]}, True, id="ints-only"),
    pytest.param({name: jnp.ones(2, name) for name in FLOAT_DTYPES}, True, id="finite-each-dtype"),
    pytest.param({"big": jnp.array([np.finfo(np.float32).max, -65504.0], jnp.float32)}, True, id="largest-finite"),
    pytest.param(
        {"a": [{"b": (jnp.ones(3), {"c": jnp.array([0.0, jnp.nan])})}], "d": jnp.arange(3)}, False, id="deep-nan"
    ),
    pytest.param({"a": [(jnp.ones(2, jnp.float16), [jnp.array([-jnp.inf], jnp.bfloat16)])]}, False, id="deep-inf-bf16"),
    pytest.param({"a": jnp.array([jnp.inf], jnp.float16), "b": jnp.arange(2)}, False, id="inf-float16"),
]


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize(("tree", "expected"), ALL_FINITE_CASES)
def test_all_finite(transform, tree, expected):
    result = transform(all_finite)(tree)
    assert result.dtype == jnp.bool_ and result.shape == ()
    assert bool(result) is expected


# --- constructor validation --------------------------------------------------------------------

BAD_DYNAMIC = [
    ({"growth_interval": 0}, ValueError, "growth_interval must be at least 1, received 0"),
    ({"growth_interval": -3}, ValueError, "received -3"),
    ({"growth_interval": 2.0}, TypeError, "growth_interval must be an int, received 2.0"),
    ({"growth_interval": True}, TypeError, "growth_interval must be an int, received True"),
    ({"growth_interval": "3"}, TypeError, "growth_interval must be an int, received '3'"),
    ({"factor": 0.5}, ValueError, "factor must be >= 1, received 0.5"),
    ({"factor": 0}, ValueError, "factor must be a positive.*received 0"),
    ({"factor": float("inf")}, ValueError, "factor must be a positive number that float32 represents .*received inf"),
    ({"factor": "2"}, TypeError, "factor must be a real number .*received '2'"),
    ({"min_scale": 0}, ValueError, "min_scale must be a positive.*received 0"),
    ({"min_scale": -1.0}, ValueError, "min_scale must be a positive.*received -1.0"),
    ({"min_scale": None}, TypeError, "min_scale must be a real number .*received None"),
    ({"max_scale": 0.5}, ValueError, r"max_scale \(0.5\) must be >= min_scale \(1.0\)"),
    ({"initial_scale": 3.0, "min_scale": 4.0, "max_scale": 2.0}, ValueError, r"max_scale \(2.0\)"),
    ({"initial_scale": 0.5}, ValueError, r"initial_scale must lie in \[min_scale, max_scale\].*received 0.5"),
    ({"initial_scale": 2.0**25}, ValueError, "initial_scale must lie in .*received 33554432.0"),
    ({"initial_scale": 0.125, "min_scale": 0.25}, ValueError, "received 0.125"),
    ({"initial_scale": "1024"}, TypeError, "initial_scale must be a real number .*received '1024'"),
    ({"initial_scale": [1.0]}, TypeError, r"initial_scale must be a real number .*received \[1.0\]"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_DYNAMIC, ids=lambda v: repr(v))
def test_dynamic_loss_scale_validates_its_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        DynamicLossScale(**kwargs)


BAD_STATIC = [
    (0, ValueError, "received 0"),
    (-2.0, ValueError, "received -2.0"),
    (float("inf"), ValueError, "received inf"),
    (float("nan"), ValueError, "received nan"),
    (True, TypeError, "received True"),
]


@pytest.mark.parametrize(("value", "error", "match"), BAD_STATIC, ids=lambda v: repr(v))
def test_static_loss_scale_validates_its_argument(value, error, match):
    with pytest.raises(error, match=f"StaticLossScale loss_scale must be .*{match}"):
        StaticLossScale(value)


def test_accepts_numpy_numbers_and_a_factor_of_one():
    loss_scale = DynamicLossScale(np.float32(4.0), growth_interval=np.int64(2), factor=1.0, min_scale=np.float64(1))
    assert meta_of(loss_scale) == {"growth_interval": 2, "factor": 1.0, "min_scale": 1.0, "max_scale": 2.0**24}
    assert type(loss_scale.growth_interval) is int
    assert np.asarray(loss_scale.adjust(False).loss_scale).item() == 4.0


# --- regressions: bugs found in review, fixed in the source ----------------------------------


def construct_or_reject(value, **config):
    """The loss scale, or None when the constructor rejects `value` with a ValueError naming it.

    Either outcome fixes the bugs below; silently accepting the value and misbehaving does not.
    """
    try:
        return DynamicLossScale(**config)
    except ValueError as error:
        assert repr(float(value)) in str(error), str(error)
        return None


@pytest.mark.parametrize("run", RUNNERS)
def test_shrinking_by_a_non_power_of_two_factor_divides_exactly(run):
    # Hand-derived: 10 / 3 = 3.333...; the nearest float32 is 3.33333325 (0x40555555).
    # Under jit XLA rewrites `scale / 3.0` as `scale * float32(1/3)` = 3.33333349 (0x40555556).
    assert F32(10) / F32(3) == F32(3.3333333)
    loss_scale = construct_or_reject(3.0, initial_scale=10.0, factor=3.0, min_scale=0.25)
    if loss_scale is not None:
        trajectory, _ = run(loss_scale, [False, False])
        assert_trajectory(trajectory, [(F32(10) / F32(3), 0), (F32(10) / F32(3) / F32(3), 0)])


@pytest.mark.parametrize("value", ["2", None, [2.0]], ids=repr)
def test_static_loss_scale_rejects_non_numbers(value):
    # Currently accepted silently; the failure surfaces later, deep inside jnp, in scale().
    with pytest.raises(TypeError, match=re.escape(f"received {value!r}")):
        StaticLossScale(value)


def test_unbounded_max_scale_cannot_overflow_float32_and_get_stuck():
    # max_scale=inf is accepted, but the float32 state overflows: 2**127 * 2 = inf, and then a
    # non-finite step computes inf / 2 = inf, so every later step is skipped forever.
    loss_scale = construct_or_reject(math.inf, initial_scale=2.0**126, growth_interval=1, max_scale=math.inf)
    if loss_scale is not None:
        loss_scale = loss_scale.adjust(True).adjust(True)
        grown = np.asarray(loss_scale.loss_scale).item()
        assert math.isfinite(grown)
        assert np.asarray(loss_scale.adjust(False).loss_scale).item() < grown


def test_min_scale_below_float32_range_cannot_make_the_scale_zero():
    # 1e-50 passes validation but is 0.0 as float32 state, so unscale divides by zero.
    loss_scale = construct_or_reject(1e-50, initial_scale=1e-50, min_scale=1e-50)
    if loss_scale is not None:
        assert np.asarray(loss_scale.loss_scale).item() > 0
        assert bool(all_finite(loss_scale.unscale({"g": jnp.ones(2)})))


def test_complex_leaves_are_checked_and_scaled():
    tree = {"c": jnp.array([1 + 2j], jnp.complex64)}
    assert bool(all_finite(tree))
    assert not bool(all_finite({"c": jnp.array([complex(np.inf, 0)], jnp.complex64)}))
    scaled = StaticLossScale(4.0).scale(tree)["c"]
    assert scaled.dtype == jnp.complex64 and scaled.tolist() == [4 + 8j]


# --- regressions (issue 7): adjust takes a bool scalar only ------------------------------------

ALL_LOSS_SCALES = [
    pytest.param(lambda: DynamicLossScale(initial_scale=8.0), id="dynamic"),
    pytest.param(lambda: StaticLossScale(8.0), id="static"),
    pytest.param(NoOpLossScale, id="no-op"),
]

NOT_A_FLAG = [  # (value, fragment of the error naming it)
    pytest.param({"g": jnp.array([jnp.inf])}, "dict", id="gradient-tree-with-inf"),
    pytest.param([jnp.ones(2)], "list", id="gradient-list"),
    pytest.param(jnp.array([True]), r"shape \(1,\) and dtype bool", id="bool-vector"),
    pytest.param(jnp.array(1), r"shape \(\) and dtype int32", id="int-array"),
    pytest.param(jnp.array(1.0), "dtype float32", id="float-array"),
    pytest.param(1, "int", id="python-int"),  # under jit: an int32 tracer
    pytest.param(None, "None", id="none"),
    pytest.param("True", "'True' of type str", id="string"),
]


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("factory", ALL_LOSS_SCALES)
@pytest.mark.parametrize(("value", "fragment"), NOT_A_FLAG)
def test_adjust_refuses_anything_but_a_bool_scalar(transform, factory, value, fragment):
    # Before: DynamicLossScale read a gradient tree's truthiness, so an inf gradient counted as finite.
    loss_scale = factory()
    if isinstance(value, str | type(None)) and transform is jax.jit:
        pytest.skip("jit cannot take a string or None as an array argument")
    with pytest.raises(TypeError, match=f"received .*{fragment}.*all_finite"):
        transform(lambda s, v: s.adjust(v))(loss_scale, value)


@pytest.mark.parametrize(
    "flag",
    [True, np.bool_(False), np.asarray(True), jnp.asarray(False)],
    ids=["bool", "np.bool_", "np-0d", "jax-0d"],
)
@pytest.mark.parametrize("factory", ALL_LOSS_SCALES)
def test_adjust_accepts_every_kind_of_bool_scalar(factory, flag):
    loss_scale = factory()
    expected = 8.0 if (bool(flag) or not isinstance(loss_scale, DynamicLossScale)) else 4.0
    if isinstance(loss_scale, NoOpLossScale):
        expected = 1.0
    for adjust in (lambda s, f: s.adjust(f), jax.jit(lambda s, f: s.adjust(f))):
        assert np.asarray(adjust(loss_scale, flag).loss_scale).item() == expected


def test_an_inf_gradient_must_go_through_all_finite():
    grads = {"g": jnp.array([1.0, jnp.inf])}
    loss_scale = DynamicLossScale(initial_scale=8.0)
    with pytest.raises(TypeError, match=r"pass loss_scale\.all_finite\(grads\)"):
        loss_scale.adjust(grads)
    assert np.asarray(loss_scale.adjust(all_finite(grads)).loss_scale).item() == 4.0


# --- regressions (issue 7): JAX/NumPy real scalars as hyperparameters ---------------------------

REAL_SCALARS = [
    pytest.param(jnp.float16(8.0), id="jnp.float16"),
    pytest.param(jnp.bfloat16(8.0), id="jnp.bfloat16"),
    pytest.param(np.float32(8), id="np.float32"),
    pytest.param(jnp.array(8.0), id="jax-0d"),
    pytest.param(np.array(8.0), id="numpy-0d"),
    pytest.param(jnp.array(8, jnp.int32), id="jax-0d-int"),
]


@pytest.mark.parametrize("value", REAL_SCALARS)
def test_scales_accept_jax_and_numpy_real_scalars_stored_as_float32(value):
    for loss_scale in (DynamicLossScale(initial_scale=value), StaticLossScale(value)):
        assert loss_scale.loss_scale.dtype == jnp.float32 and loss_scale.loss_scale.shape == ()
        assert np.asarray(loss_scale.loss_scale).item() == 8.0
    loss_scale = DynamicLossScale(initial_scale=8.0, factor=value, min_scale=value, max_scale=value)
    assert meta_of(loss_scale) == {"growth_interval": 2000, "factor": 8.0, "min_scale": 8.0, "max_scale": 8.0}
    assert all(type(getattr(loss_scale, name)) is float for name in ("factor", "min_scale", "max_scale"))
    assert type(DynamicLossScale(growth_interval=jnp.array(3)).growth_interval) is int


BAD_SCALARS = [
    (jnp.array([8.0]), TypeError, r"a 0-d array, received an array of shape \(1,\)"),
    (jnp.array(True), TypeError, "dtype bool"),
    (np.complex64(8), TypeError, "complex64"),
    (jnp.array(0.0), ValueError, "received 0.0"),
    (jnp.float16(jnp.inf), ValueError, "received inf"),
]


@pytest.mark.parametrize(("value", "error", "match"), BAD_SCALARS, ids=lambda v: repr(v))
def test_scales_refuse_bad_array_scalars(value, error, match):
    with pytest.raises(error, match=f"initial_scale must be .*{match}"):
        DynamicLossScale(initial_scale=value)
    with pytest.raises(error, match=f"StaticLossScale loss_scale must be .*{match}"):
        StaticLossScale(value)


def test_a_traced_hyperparameter_is_a_clear_error():
    with pytest.raises(TypeError, match="initial_scale must be a concrete number"):
        jax.jit(lambda x: DynamicLossScale(initial_scale=x))(jnp.float32(8.0))
    # State may be traced: it is what a jitted step carries.
    built = jax.jit(lambda x: StaticLossScale(x))(jnp.float32(8.0))
    assert np.asarray(built.loss_scale).item() == 8.0


# --- regressions (issue 7): every jax.tree utility (SPEC §7) -----------------------------------


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(lambda: DynamicLossScale(**CONFIG), id="dynamic"),
        pytest.param(lambda: StaticLossScale(8.0), id="static"),
    ],
)
def test_loss_scales_survive_every_tree_utility(factory):
    loss_scale = factory()
    leaf_names = ["loss_scale", "counter"] if isinstance(loss_scale, DynamicLossScale) else ["loss_scale"]
    statics = {name: getattr(loss_scale, name) for name in META if hasattr(loss_scale, name)}

    def check(tree, leaves):
        assert type(tree) is type(loss_scale)
        assert [getattr(tree, name) for name in leaf_names] == leaves
        assert {name: getattr(tree, name) for name in statics} == statics

    # Before: unflattening re-ran the constructor's validation and raised for None and ().
    check(jax.tree.map(lambda _: None, loss_scale), [None] * len(leaf_names))
    check(jax.tree.map(jnp.shape, loss_scale), [()] * len(leaf_names))
    check(jax.tree.map(lambda x: x.dtype.name, loss_scale), ["float32", "int32"][: len(leaf_names)])
    marker = object()
    check(jax.tree.unflatten(jax.tree.structure(loss_scale), [marker] * len(leaf_names)), [marker] * len(leaf_names))
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(loss_scale)[0]]
    assert paths == [f".{name}" for name in leaf_names]
    # Masks (optax-style) and abstract evaluation go through the same unflatten.
    mask = jax.tree.map(lambda _: True, loss_scale)
    assert jax.tree.leaves(mask) == [True] * len(leaf_names)
    shapes = jax.eval_shape(lambda s: s, loss_scale)
    assert [getattr(shapes, name).shape for name in leaf_names] == [()] * len(leaf_names)
    stacked = jax.vmap(lambda x: jax.tree.map(lambda leaf: leaf + x.astype(leaf.dtype), loss_scale))(jnp.arange(3))
    assert stacked.loss_scale.shape == (3,)
    assert {name: getattr(stacked, name) for name in statics} == statics


# --- regressions (issue 7): pytree fields come from the dataclass fields -----------------------
# Every check below walks `dataclasses.fields`, so a field added to a loss scale is checked
# without editing these tests: it must come through flatten/unflatten, jit, vmap and `adjust`.


def distinct_instance(cls):
    """An instance whose fields all differ from their defaults (so a dropped field shows)."""
    if cls is DynamicLossScale:
        return DynamicLossScale(
            initial_scale=6.0, growth_interval=7, factor=4.0, min_scale=0.25, max_scale=1000.0, counter=3
        )
    return StaticLossScale(12.0) if cls is StaticLossScale else NoOpLossScale()


def is_static(field):
    return bool(field.metadata.get("static"))


def field_values(obj, fields):
    """Every field as a Python value; statics keep their type. AttributeError if one is missing."""
    return {f.name: getattr(obj, f.name) if is_static(f) else np.asarray(getattr(obj, f.name)).tolist() for f in fields}


LOSS_SCALE_CLASSES = [NoOpLossScale, StaticLossScale, DynamicLossScale]


@pytest.mark.parametrize("cls", LOSS_SCALE_CLASSES, ids=lambda cls: cls.__name__)
def test_the_leaves_are_the_fields_not_marked_static_in_field_order(cls):
    fields = dataclasses.fields(cls)
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(distinct_instance(cls))[0]]
    assert paths == [(jax.tree_util.GetAttrKey(f.name),) for f in fields if not is_static(f)]
    if cls is DynamicLossScale:  # written out: the state is the leaves, the hyperparameters static
        assert [f.name for f in fields if not is_static(f)] == ["loss_scale", "counter"]
        assert [f.name for f in fields if is_static(f)] == list(META)


@pytest.mark.parametrize("cls", LOSS_SCALE_CLASSES, ids=lambda cls: cls.__name__)
def test_every_dataclass_field_survives_flatten_unflatten_jit_vmap_and_adjust(cls):
    obj, fields = distinct_instance(cls), dataclasses.fields(cls)
    expected = field_values(obj, fields)
    statics = {f.name: expected[f.name] for f in fields if is_static(f)}
    rebuilt = field_values(jax.tree.unflatten(*reversed(jax.tree.flatten(obj))), fields)
    assert rebuilt == expected
    assert {name: type(rebuilt[name]) for name in statics} == {name: type(value) for name, value in statics.items()}
    assert field_values(jax.jit(lambda s: s)(obj), fields) == expected
    traced = {}
    jax.jit(lambda s: traced.update({name: getattr(s, name) for name in statics}))(obj)
    assert traced == statics
    stacked = jax.vmap(lambda s: s, axis_size=2)(jax.tree.map(lambda leaf: jnp.stack([leaf, leaf]), obj))
    assert field_values(stacked, fields) == {
        name: value if name in statics else [value, value] for name, value in expected.items()
    }
    for adjusted in (obj.adjust(True), jax.jit(lambda s: s.adjust(jnp.asarray(False)))(obj)):
        assert type(adjusted) is cls
        assert {name: value for name, value in field_values(adjusted, fields).items() if name in statics} == statics


def test_a_class_registered_by_the_helper_carries_every_declared_field():
    # A stand-in for "a field was added": data and static fields declared once, nothing else.
    from dtypepolicy.loss_scale import _from_fields, _register, _replace, _static_field

    @_register
    @dataclasses.dataclass(frozen=True, init=False, eq=False)
    class Extended:
        scale: object
        steps: object
        extra: object
        name: str = _static_field()
        limit: int = _static_field()

        def __init__(self):
            raise AssertionError("tree utilities must rebuild instances without __init__")

    obj = _from_fields(Extended, scale=jnp.float32(2.0), steps=jnp.int32(1), extra=jnp.int32(9), name="x", limit=4)
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(obj)[0]]
    assert paths == [".scale", ".steps", ".extra"]
    fields = dataclasses.fields(Extended)
    expected = {"scale": 2.0, "steps": 1, "extra": 9, "name": "x", "limit": 4}
    assert field_values(jax.tree.unflatten(*reversed(jax.tree.flatten(obj))), fields) == expected
    assert field_values(jax.jit(lambda s: s)(obj), fields) == expected
    stacked = jax.vmap(lambda s: _replace(s, extra=s.extra + 1))(jax.tree.map(lambda leaf: jnp.stack([leaf] * 2), obj))
    assert field_values(stacked, fields) == {**expected, "scale": [2.0, 2.0], "steps": [1, 1], "extra": [10, 10]}
    assert field_values(_replace(obj, steps=jnp.int32(5)), fields) == {**expected, "steps": 5}


def test_building_from_fields_refuses_a_missing_or_unknown_field():
    from dtypepolicy.loss_scale import _from_fields, _replace

    with pytest.raises(TypeError, match=r"DynamicLossScale.*missing \['max_scale'\]"):
        _from_fields(DynamicLossScale, loss_scale=1.0, counter=0, growth_interval=2, factor=2.0, min_scale=1.0)
    with pytest.raises(TypeError, match=r"StaticLossScale.*unknown \['counter'\]"):
        _replace(StaticLossScale(2.0), counter=1)
