"""Dropout: identity outside training, seeded masks held in a variable, stateless under jit."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
from layers import Layer, initializers
from layers._builtin._dropout import Dropout
from tests._conformance import Case, check_layer
from tests._tolerances import assert_close

POLICIES = ["float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16"]


# Every call in this module raises if the layer returns a dtype wider than its policy allows.
pytestmark = pytest.mark.usefixtures("strict_raise")


def _values(variables):
    return [v.value for v in variables]


def _eager(layer, x, **kwargs):
    return layer(x, **kwargs)


def _jitted(layer, x, **kwargs):
    call = jax.jit(lambda tv, ntv, x: layer.stateless_call(tv, ntv, x, **kwargs))
    out, _ = call(_values(layer.trainable_variables), _values(layer.non_trainable_variables), x)
    return out


MODES = {"eager": _eager, "jit": _jitted}


def _identity(x, weights):
    return x


def _inputs(shape=(8, 64), seed=0):
    # Positive values: a dropped entry is the only way to get a 0.
    return np.random.default_rng(seed).uniform(0.5, 2.0, shape)


# ---------------------------------------------------------------- the conformance table

CASES = [
    # Training: check_layer calls twice, so it also checks that stateless_call, given the state
    # the second call started from, draws that call's mask, and that set_weights carries the state.
    Case(
        "training",
        lambda **kw: Dropout(0.3, seed=7, **kw),
        lambda: (_inputs().astype(np.float32),),
        call_kwargs={"training": True},
    ),
    Case("inference", lambda **kw: Dropout(0.3, seed=7, **kw), lambda: (_inputs().astype(np.float32),), _identity),
]
# Dropout has no floating variables, so bfloat16/mixed_bfloat16 (and float16/mixed_float16) differ
# only in name here: one policy per compute dtype keeps the module fast.
SWEEP = [(CASES[0], policy) for policy in ("float32", "mixed_bfloat16", "float16")] + [(CASES[1], "mixed_bfloat16")]


@pytest.mark.parametrize(("case", "policy"), SWEEP, ids=[f"{case.name}-{policy}" for case, policy in SWEEP])
def test_conformance(case, policy):
    check_layer(case, policy)


# ---------------------------------------------------------------- numerics across policies and modes


@pytest.mark.parametrize("policy", POLICIES)
def test_training_drops_and_scales_in_the_compute_dtype(policy):
    # Eager here; test_conformance checks the jitted stateless_call draws the same outputs.
    rate = 0.3
    layer = Dropout(rate, seed=7, dtype=policy)
    compute = dp.get(policy).compute_dtype
    x = jnp.asarray(_inputs()).astype(compute)
    out = layer(x, training=True)
    assert out.dtype == jnp.dtype(compute)
    out64, x64 = np.asarray(out, np.float64), np.asarray(x, np.float64)
    kept = out64 != 0
    assert 0 < kept.sum() < kept.size
    assert_close(out64[kept], x64[kept] / (1 - rate), compute)


@pytest.mark.parametrize("policy", POLICIES)
def test_state_variable_is_uint32_non_trainable_and_not_autocast(policy):
    layer = Dropout(0.5, seed=1, dtype=policy)
    (state,) = layer.variables
    assert layer.built and layer.trainable_weights == [] and layer.non_trainable_variables == [state]
    assert state.dtype == "uint32" and state.autocast is False and state.trainable is False
    assert state.path == f"{layer.name}/seed_generator_state"
    np.testing.assert_array_equal(state.numpy(), jax.random.key_data(jax.random.key(1)))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("policy", POLICIES)
def test_identity_when_not_training(policy, mode):
    layer = Dropout(0.5, seed=0, dtype=policy)
    compute = dp.get(policy).compute_dtype
    x = jnp.asarray(_inputs()).astype(compute)
    before = layer.seed_generator_state.numpy()
    for kwargs in ({}, {"training": False}):
        out = MODES[mode](layer, x, **kwargs)
        assert out.dtype == jnp.dtype(compute)
        np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(x, np.float32))
    np.testing.assert_array_equal(layer.seed_generator_state.numpy(), before)


def test_rate_zero_is_identity_in_training_and_has_no_state():
    layer = Dropout(0.0)
    x = jnp.asarray(_inputs(), jnp.float32)
    np.testing.assert_array_equal(layer(x, training=True), x)
    assert layer.variables == [] and layer.count_params() == 0


def test_dropped_entries_are_exactly_zero_even_for_inf_and_nan():
    layer = Dropout(0.5, seed=0)
    x = jnp.full((16, 16), jnp.inf).at[::2].set(jnp.nan)
    out = np.asarray(layer(x, training=True))
    dropped = ~np.isnan(out) & ~np.isinf(out)
    assert dropped.any() and (out[dropped] == 0).all() and not np.signbit(out[dropped]).any()


# ---------------------------------------------------------------- statistics


def test_kept_fraction_and_scale_match_the_rate():
    rate, n = 0.3, 100_000
    layer = Dropout(rate, seed=123)
    x = np.random.default_rng(1).uniform(0.5, 2.0, n).astype(np.float32)
    out = np.asarray(layer(x, training=True), np.float64)
    kept = out != 0
    standard_error = np.sqrt(rate * (1 - rate) / n)
    assert abs(kept.mean() - (1 - rate)) < 5 * standard_error
    assert_close(out[kept], x[kept].astype(np.float64) / (1 - rate), "float32")


# ---------------------------------------------------------------- random state


def _mask(out):
    return np.asarray(out, np.float32) != 0


def test_consecutive_training_calls_draw_different_masks():
    layer = Dropout(0.5, seed=0)
    x = jnp.ones((16, 16))
    first_state = layer.seed_generator_state.numpy()
    a, b = _mask(layer(x, training=True)), _mask(layer(x, training=True))
    assert not np.array_equal(a, b)
    assert not np.array_equal(layer.seed_generator_state.numpy(), first_state)


def test_same_seed_same_sequence_different_seed_different_sequence():
    x = jnp.ones((16, 16))
    sequences = []
    for seed in (5, 5, 6):
        layer = Dropout(0.5, seed=seed)
        sequences.append([_mask(layer(x, training=True)) for _ in range(3)])
    for a, b in zip(sequences[0], sequences[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(sequences[0][0], sequences[2][0])


def test_unseeded_layers_differ_and_set_random_seed_makes_them_reproducible():
    x = jnp.ones((16, 16))
    initializers.set_random_seed(11)
    first = [_mask(Dropout(0.5)(x, training=True)) for _ in range(2)]
    assert not np.array_equal(first[0], first[1])
    initializers.set_random_seed(11)
    again = [_mask(Dropout(0.5)(x, training=True)) for _ in range(2)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_jitted_stateless_call_threads_the_state_through_its_outputs():
    layer = Dropout(0.5, seed=2)
    x = jnp.ones((16, 16))
    step = jax.jit(lambda tv, ntv, x: layer.stateless_call(tv, ntv, x, training=True))
    initial = _values(layer.non_trainable_variables)
    out1, state1 = step([], initial, x)
    out2, state2 = step([], state1, x)
    replay, replay_state = step([], initial, x)
    assert state1[0].dtype == jnp.uint32 and not np.array_equal(state1[0], initial[0])
    assert not np.array_equal(_mask(out1), _mask(out2))
    np.testing.assert_array_equal(replay, out1)
    np.testing.assert_array_equal(replay_state[0], state1[0])
    assert not np.array_equal(state2[0], state1[0])
    np.testing.assert_array_equal(layer.seed_generator_state.numpy(), initial[0])  # layer untouched
    # The jitted sequence is the eager one.
    np.testing.assert_array_equal(layer(x, training=True), out1)
    np.testing.assert_array_equal(layer(x, training=True), out2)


class _Block(Layer):
    """Uses one dropout twice; its call has no training argument."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dropout = Dropout(0.5, seed=4)

    def call(self, x):
        return self.dropout(x), self.dropout(x)


def test_training_reaches_dropout_through_a_parent_and_the_state_advances_within_a_call():
    block = _Block()
    x = jnp.ones((16, 16))
    a, b = block(x)
    np.testing.assert_array_equal(a, x)
    np.testing.assert_array_equal(b, x)
    a, b = block(x, training=True)
    assert (~_mask(a)).any() and not np.array_equal(_mask(a), _mask(b))
    before = block.dropout.seed_generator_state.numpy()
    (a, b), state = block.stateless_call([], _values(block.non_trainable_variables), x, training=True)
    assert not np.array_equal(_mask(a), _mask(b))
    assert len(state) == 1 and not np.array_equal(state[0], before)
    np.testing.assert_array_equal(block.dropout.seed_generator_state.numpy(), before)


# ---------------------------------------------------------------- noise_shape


@pytest.mark.parametrize("noise_shape", [(None, 1, None), (4, 1, 8), [None, 1, 8]])
def test_noise_shape_broadcasts_the_mask(noise_shape):
    layer = Dropout(0.5, noise_shape=noise_shape, seed=0)
    out = layer(jnp.ones((4, 6, 8)), training=True)
    mask = _mask(out)
    assert (mask == mask[:, :1, :]).all()  # constant along the broadcast axis
    assert mask.any() and (~mask).any()


@pytest.mark.parametrize(
    ("noise_shape", "match"),
    [((4, 1), r"has 2 entries, but the input has shape \(4, 6, 8\)"), ((4, 3, 8), r"does not broadcast")],
)
def test_noise_shape_that_does_not_fit_the_input(noise_shape, match):
    layer = Dropout(0.5, noise_shape=noise_shape, seed=0)
    before = layer.seed_generator_state.numpy()
    with pytest.raises(ValueError, match=match):
        layer(jnp.ones((4, 6, 8)), training=True)
    np.testing.assert_array_equal(layer.seed_generator_state.numpy(), before)


# ---------------------------------------------------------------- gradients, masks, shapes


def test_gradient_with_respect_to_the_inputs_is_the_scaled_mask():
    layer = Dropout(0.5, seed=9)
    x = jnp.asarray(_inputs((16, 16)), jnp.float32)
    state = _values(layer.non_trainable_variables)

    def loss(x):
        return jnp.sum(layer.stateless_call([], state, x, training=True)[0])

    grad = jax.jit(jax.grad(loss))(x)
    out, _ = layer.stateless_call([], state, x, training=True)
    np.testing.assert_allclose(grad, np.where(_mask(out), 2.0, 0.0), rtol=1e-6)


def test_masks_pass_through_and_output_shape():
    from layers._base._masking import attach_mask, get_mask

    layer = Dropout(0.5, seed=0)
    x = jnp.ones((16, 16))
    mask = jnp.arange(16) % 3 > 0
    attach_mask(x, mask)
    assert get_mask(layer(x, training=True)) is mask
    assert layer.compute_output_shape((None, 16)) == (None, 16)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("kwargs", [{"rate": 0.2}, {"rate": 0.5, "noise_shape": (None, 16), "seed": 3}])
def test_config_round_trips_through_json(kwargs):
    layer = Dropout(**kwargs, dtype="mixed_bfloat16", name="drop")
    config = json.loads(json.dumps(layer.get_config()))
    clone = Dropout.from_config(config)
    assert clone.get_config() == config
    assert clone.dtype_policy == layer.dtype_policy and clone.noise_shape == layer.noise_shape
    if layer.seed is not None:
        x = jnp.ones((16, 16))
        np.testing.assert_array_equal(clone(x, training=True), layer(x, training=True))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("rate", "error", "match"),
    [
        (1.0, ValueError, r"rate must be a float in \[0, 1\), received rate=1\.0"),
        (1, ValueError, r"received rate=1\b"),
        (-0.1, ValueError, r"received rate=-0\.1"),
        (float("nan"), ValueError, r"received rate=nan"),
        ("0.5", TypeError, r"received '0\.5' of type str"),
        (True, TypeError, r"received True of type bool"),
        (None, TypeError, r"received None"),
    ],
)
def test_bad_rate(rate, error, match):
    with pytest.raises(error, match=match):
        Dropout(rate)


@pytest.mark.parametrize(
    ("noise_shape", "error"),
    [(3, TypeError), ((2, "a"), TypeError), ((2, 0), ValueError), ((2, 1.0), TypeError), ((True,), TypeError)],
)
def test_bad_noise_shape(noise_shape, error):
    with pytest.raises(error, match=r"noise_shape must be None or a tuple of positive ints .* received"):
        Dropout(0.5, noise_shape=noise_shape)


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [
        ("1", TypeError, r"seed must be an int or None, received '1'"),
        (1.5, TypeError, r"received 1\.5"),
        (-1, ValueError, r"seed must be in \[0, 2\*\*32\), received -1"),
        (2**32, ValueError, r"received 4294967296"),
    ],
)
def test_bad_seed(seed, error, match):
    with pytest.raises(error, match=match):
        Dropout(0.5, seed=seed)


def test_unknown_keyword_argument():
    with pytest.raises(TypeError, match=r"Unrecognized keyword arguments passed to Dropout: \{'rat': 0\.5\}"):
        Dropout(0.5, rat=0.5)


def test_integer_inputs_in_training():
    layer = Dropout(0.5, seed=0)
    np.testing.assert_array_equal(layer(jnp.arange(4)), jnp.arange(4))
    with pytest.raises(TypeError, match=r"needs floating inputs when training, received dtype int32"):
        layer(jnp.arange(4), training=True)


def test_traced_training_flag_is_refused():
    layer = Dropout(0.5, seed=0)
    call = jax.jit(lambda ntv, x, training: layer.stateless_call([], ntv, x, training=training))
    with pytest.raises(TypeError, match=r"training must be a Python bool, received a traced value"):
        call(_values(layer.non_trainable_variables), jnp.ones(3), True)


@pytest.mark.parametrize("training", ["false", "True", 0, 1, 1.0, jnp.array(True), np.array([True])])
def test_training_that_is_not_a_bool_is_refused_and_changes_nothing(training):
    layer = Dropout(0.5, seed=0, name="drop")
    before = np.asarray(layer.seed_generator_state.value)
    with pytest.raises(TypeError, match=r"Dropout 'drop': training must be a Python bool or None, received .* of type"):
        layer(jnp.ones(4), training=training)
    np.testing.assert_array_equal(layer.seed_generator_state.value, before)


def test_numpy_bools_are_bools():
    x = jnp.ones(64)
    dropped = Dropout(0.5, seed=0)(x, training=np.bool_(True))
    np.testing.assert_array_equal(dropped, Dropout(0.5, seed=0)(x, training=True))
    assert not np.array_equal(dropped, x)
    np.testing.assert_array_equal(Dropout(0.5, seed=0)(x, training=np.bool_(False)), x)


def test_a_bad_training_value_is_refused_even_with_rate_zero():
    with pytest.raises(TypeError, match=r"training must be a Python bool or None, received 'false'"):
        Dropout(0.0)(jnp.ones(4), training="false")
