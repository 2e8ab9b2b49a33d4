"""BatchNormalization: float32 batch and moving statistics, checked against float64 NumPy."""

import doctest
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
import layers
from layers import constraints, initializers, regularizers
from layers._base._masking import get_mask
from layers._builtin import _batch_normalization
from layers._builtin._batch_normalization import BatchNormalization
from tests._conformance import Case, check_layer
from tests._tolerances import assert_close, tolerance

POLICIES = ["float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16"]
INPUT_DTYPES = ["float32", "bfloat16", "float16"]
MODES = ["eager", "jit"]
VARIABLES = ["gamma", "beta", "moving_mean", "moving_variance"]
SHAPE = (16, 2, 4)  # one shape for most cases, so eager ops compiled once are reused


# --- float64 NumPy references --------------------------------------------------------------------


def _per_feature(vector, axis, ndim):
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return np.asarray(vector, np.float64).reshape(shape)


def batch_moments(x, axis=-1, mask=None):
    """Biased per-feature mean and variance over every axis but `axis` (unmasked positions only)."""
    x = np.asarray(x, np.float64)
    axes = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    weights = np.ones_like(x) if mask is None else np.broadcast_to(np.asarray(mask, np.float64), x.shape)
    x = np.where(weights > 0, x, 0.0)
    count = weights.sum(axis=axes)
    mean = (weights * x).sum(axis=axes) / count
    variance = (weights * (x - _per_feature(mean, axis, x.ndim)) ** 2).sum(axis=axes) / count
    return mean, variance


def normalize(x, mean, variance, gamma=None, beta=None, epsilon=1e-3, axis=-1):
    x = np.asarray(x, np.float64)
    y = (x - _per_feature(mean, axis, x.ndim)) / np.sqrt(_per_feature(variance, axis, x.ndim) + epsilon)
    if gamma is not None:
        y = y * _per_feature(gamma, axis, x.ndim)
    if beta is not None:
        y = y + _per_feature(beta, axis, x.ndim)
    return y


def simulate_moving_statistics(batches, momentum, mean=0.0, variance=1.0, axis=-1, round_to=None):
    """The update rule in float64 (or rounded to `round_to` after each step, to show what storage costs)."""
    for batch in batches:
        batch_mean, batch_variance = batch_moments(batch, axis)
        mean = mean * momentum + batch_mean * (1 - momentum)
        variance = variance * momentum + batch_variance * (1 - momentum)
        if round_to is not None:
            mean = np.asarray(jnp.asarray(mean, round_to), np.float64)
            variance = np.asarray(jnp.asarray(variance, round_to), np.float64)
    return mean, variance


# --- helpers -------------------------------------------------------------------------------------


def _values(variables):
    return [v.value for v in variables]


def _state(layer):
    return {v.name: np.asarray(v.numpy()).copy() for v in layer.weights}


def _randomize(layer, seed=0):
    """Random gamma, beta, moving mean and (positive) moving variance."""
    rng = np.random.default_rng(seed)
    values = {
        "gamma": lambda n: rng.uniform(0.5, 1.5, n),
        "beta": lambda n: rng.normal(0, 1, n),
        "moving_mean": lambda n: rng.normal(0, 1, n),
        "moving_variance": lambda n: rng.uniform(0.5, 2.0, n),
    }
    layer.set_weights([values[w.name](w.shape).astype(np.float32) for w in layer.weights])


def _weights(layer):
    return {v.name: np.asarray(v.numpy(), np.float64) for v in layer.weights}


def _run_all(layer, xs, mode, training):
    """Outputs for each input, eagerly or from one jitted `stateless_call` program."""
    if mode == "eager":
        return [layer(x, training=training) for x in xs]

    @jax.jit
    def run(trainable, non_trainable, xs):
        return [layer.stateless_call(trainable, non_trainable, x, training=training)[0] for x in xs]

    return run(_values(layer.trainable_variables), _values(layer.non_trainable_variables), xs)


# --- conformance and the numerics sweep --------------------------------------------------------------


def _conformance_inputs():
    return (np.random.default_rng(1).normal(1.0, 2.0, size=SHAPE).astype(np.float32),)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    "case",
    [
        Case(
            "inference",
            BatchNormalization,
            _conformance_inputs,
            lambda x, weights: normalize(x, weights[2], weights[3], weights[0], weights[1]),
        ),
        Case(
            "training",
            lambda **kw: BatchNormalization(axis=1, **kw),
            _conformance_inputs,
            lambda x, weights: normalize(x, *batch_moments(x, 1), weights[0], weights[1], axis=1),
            call_kwargs={"training": True},
            grads_nonzero=False,  # the sum of a batch-normalized output does not depend on beta
        ),
    ],
    ids=lambda case: case.name,
)
def test_conformance(case, policy):
    check_layer(case, policy)


@pytest.mark.parametrize("policy", POLICIES)
def test_matches_float64_reference(policy):
    rng = np.random.default_rng(2)
    compute = dp.get(policy).compute_dtype
    layer = BatchNormalization(dtype=policy)
    xs = [jnp.asarray(rng.normal(0.5, 2.0, SHAPE), dtype) for dtype in INPUT_DTYPES]
    layer(xs[0])
    _randomize(layer)
    for mode in MODES:
        for training in (False, True):
            w = _weights(layer)  # an eager training call has moved the statistics
            for x, y in zip(xs, _run_all(layer, xs, mode, training), strict=True):
                assert y.dtype == jnp.dtype(compute), (mode, training, x.dtype, y.dtype)
                x64 = np.asarray(x, np.float64)  # inputs are not autocast: the reference sees what arrived
                mean, variance = batch_moments(x64) if training else (w["moving_mean"], w["moving_variance"])
                assert_close(y, normalize(x64, mean, variance, w["gamma"], w["beta"]), compute)
    assert [v.name for v in layer.weights] == VARIABLES
    assert all(v.dtype == "float32" and not v.autocast for v in layer.weights)


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_channels_first_axis(training):
    x = np.random.default_rng(3).normal(2.0, 3.0, size=(4, 3, 5, 5)).astype(np.float32)
    layer = BatchNormalization(axis=1, center=False, dtype="mixed_bfloat16")
    layer(x)
    _randomize(layer)
    w = _weights(layer)
    y = layer(x, training=training)
    mean, variance = batch_moments(x, 1) if training else (w["moving_mean"], w["moving_variance"])
    assert layer.gamma.shape == (3,) and layer.beta is None
    assert_close(y, normalize(x, mean, variance, w["gamma"], axis=1), "bfloat16")


# --- moving statistics -----------------------------------------------------------------------------


def _bf16_batches(steps, seed=4):
    rng = np.random.default_rng(seed)
    return [
        jnp.asarray(rng.normal([3.0, -1.0, 0.5], [2.0, 0.5, 4.0], size=(32, 3)), jnp.bfloat16) for _ in range(steps)
    ]


def test_statistics_under_mixed_bfloat16_stay_float32_and_match_numpy():
    batches = _bf16_batches(steps=5)
    momentum = 0.9
    expected_mean, expected_variance = simulate_moving_statistics(batches, momentum)

    # Eagerly: each training call assigns the new statistics.
    layer = BatchNormalization(momentum=momentum, dtype="mixed_bfloat16")
    for batch in batches:
        y = layer(batch, training=True)
        assert y.dtype == jnp.bfloat16
        assert_close(y, normalize(batch, *batch_moments(batch)), "bfloat16")
    assert [(v.name, v.dtype) for v in layer.weights] == [(name, "float32") for name in VARIABLES]
    assert_close(layer.moving_mean.numpy(), expected_mean, "float32")
    assert_close(layer.moving_variance.numpy(), expected_variance, "float32")

    # Jitted: the same steps through stateless_call, carrying the returned non-trainable values.
    twin = BatchNormalization(momentum=momentum, dtype="mixed_bfloat16")
    twin(batches[0])
    untouched = _state(twin)
    step = jax.jit(lambda t, n, x: twin.stateless_call(t, n, x, training=True))
    trainable, non_trainable = _values(twin.trainable_variables), _values(twin.non_trainable_variables)
    for batch in batches:
        y, non_trainable = step(trainable, non_trainable, batch)
        assert y.dtype == jnp.bfloat16
        assert_close(y, normalize(batch, *batch_moments(batch)), "bfloat16")
    assert [v.dtype for v in non_trainable] == [jnp.float32, jnp.float32]
    assert_close(non_trainable[0], expected_mean, "float32")
    assert_close(non_trainable[1], expected_variance, "float32")
    assert all(np.array_equal(_state(twin)[k], untouched[k]) for k in untouched)

    # The tolerance can tell float32 storage from bfloat16 storage of the statistics.
    rounded_mean, _ = simulate_moving_statistics(batches, momentum, round_to=jnp.bfloat16)
    rtol, atol = tolerance("float32")
    assert not np.allclose(rounded_mean, expected_mean, rtol=rtol, atol=atol)


def test_inference_uses_the_moving_statistics_and_changes_nothing():
    x = np.random.default_rng(5).normal(size=SHAPE).astype(np.float32)
    layer = BatchNormalization()
    layer(x)
    _randomize(layer)
    before = _state(layer)
    w = _weights(layer)
    expected = normalize(x, w["moving_mean"], w["moving_variance"], w["gamma"], w["beta"])
    for training in (None, False):
        assert_close(layer(x, training=training), expected, "float32")
        y, non_trainable = layer.stateless_call(
            _values(layer.trainable_variables), _values(layer.non_trainable_variables), x, training=training
        )
        assert_close(y, expected, "float32")
        np.testing.assert_array_equal(non_trainable[0], before["moving_mean"])
    assert all(np.array_equal(_state(layer)[k], before[k]) for k in before)


def test_jitted_stateless_training_call_returns_the_update_and_leaves_the_layer_alone():
    x = jnp.asarray(np.random.default_rng(6).normal(4.0, 3.0, size=SHAPE), jnp.float32)
    layer = BatchNormalization(momentum=0.8)
    layer(x)
    _randomize(layer)
    before = _state(layer)
    w = _weights(layer)
    outputs, non_trainable = jax.jit(lambda t, n, x: layer.stateless_call(t, n, x, training=True))(
        _values(layer.trainable_variables), _values(layer.non_trainable_variables), x
    )
    mean, variance = batch_moments(x)
    assert_close(outputs, normalize(x, mean, variance, w["gamma"], w["beta"]), "float32")
    assert_close(non_trainable[0], w["moving_mean"] * 0.8 + mean * 0.2, "float32")
    assert_close(non_trainable[1], w["moving_variance"] * 0.8 + variance * 0.2, "float32")
    assert all(np.array_equal(_state(layer)[k], before[k]) for k in before)

    # The eager call makes the same update in place.
    eager = layer(x, training=True)
    np.testing.assert_allclose(np.asarray(eager), np.asarray(outputs), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.moving_mean.numpy(), np.asarray(non_trainable[0]), rtol=1e-6, atol=1e-6)


def test_a_frozen_layer_runs_in_inference_mode():
    x = np.random.default_rng(7).normal(3.0, 1.0, size=SHAPE).astype(np.float32)
    layer = BatchNormalization()
    layer(x)
    layer.trainable = False
    before = _state(layer)
    y = layer(x, training=True)
    assert_close(y, normalize(x, before["moving_mean"], before["moving_variance"]), "float32")
    assert all(np.array_equal(_state(layer)[k], before[k]) for k in before)
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 4


def test_momentum_one_keeps_and_momentum_zero_replaces_the_statistics():
    x = np.random.default_rng(8).normal(2.0, 3.0, size=SHAPE).astype(np.float32)
    keep, replace = BatchNormalization(momentum=1.0), BatchNormalization(momentum=0)
    keep(x, training=True), replace(x, training=True)
    np.testing.assert_array_equal(keep.moving_mean.numpy(), np.zeros(SHAPE[-1]))
    mean, variance = batch_moments(x)
    assert_close(replace.moving_mean.numpy(), mean, "float32")
    assert_close(replace.moving_variance.numpy(), variance, "float32")


# --- masks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_masked_statistics_ignore_the_padding(mode):
    rng = np.random.default_rng(9)
    x = rng.normal(1.0, 2.0, size=(3, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    x[~mask] = np.nan  # padding may hold anything
    x[2, 4] = 1e30
    layer = BatchNormalization(momentum=0.5)
    layer(x)
    mask_j = jnp.asarray(mask)
    if mode == "eager":
        y = layer(x, training=True, mask=mask_j)
        assert get_mask(y) is mask_j
        new_mean, new_variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    else:
        y, (new_mean, new_variance) = jax.jit(lambda t, n, x, m: layer.stateless_call(t, n, x, training=True, mask=m))(
            _values(layer.trainable_variables), _values(layer.non_trainable_variables), x, mask_j
        )
    mean, variance = batch_moments(x, mask=mask[..., None])
    assert np.isfinite(mean).all() and np.isfinite(np.asarray(new_variance)).all()
    assert_close(new_mean, 0.5 * mean, "float32")
    assert_close(new_variance, 0.5 + 0.5 * variance, "float32")
    assert_close(np.asarray(y)[mask], normalize(x, mean, variance)[mask], "float32")


def test_full_rank_and_fully_masked_masks():
    x = np.random.default_rng(10).normal(size=(4, 3)).astype(np.float32)
    mask = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], bool)  # feature 2 fully masked
    layer = BatchNormalization(momentum=0.0)
    layer(x, training=True, mask=jnp.asarray(mask))
    mean, variance = batch_moments(x[:, :2], mask=mask[:, :2])
    assert_close(layer.moving_mean.numpy(), [*mean, 0.0], "float32")
    assert_close(layer.moving_variance.numpy(), [*variance, 0.0], "float32")


def test_a_mask_that_does_not_fit_is_an_error_and_changes_nothing():
    x = np.ones((4, 5, 3), np.float32)
    layer = BatchNormalization()
    layer(x)
    before = _state(layer)
    with pytest.raises(
        ValueError, match=r"mask must have the input's shape without the feature axis -1.*\(4, 4\).*\(4, 5, 3\)"
    ):
        layer(x, training=True, mask=jnp.ones((4, 4), bool))
    with pytest.raises(ValueError, match=r"received mask shape \(4,\)"):
        layer(x, training=True, mask=jnp.ones((4,), bool))
    assert all(np.array_equal(_state(layer)[k], before[k]) for k in before)


# --- the float32-statistics rule, shown on inputs where it matters ---------------------------------


def test_bfloat16_input_with_large_offset_needs_float32_statistics():
    # bfloat16 holds 996..1008 only in steps of 4 (std here ~4.5); each feature's batch mean is 1002,
    # which bfloat16 rounds to 1000 or 1004: half a standard deviation off.
    rng = np.random.default_rng(11)
    x = jnp.asarray(1000 + 4 * rng.permuted(np.tile([[-1], [0], [1], [2]], (16, 3)), axis=0), jnp.bfloat16)
    layer = BatchNormalization(momentum=0.0, dtype="bfloat16")
    mean, variance = batch_moments(x)
    for y in (layer(x, training=True), *_run_all(layer, [x], "jit", training=True)):
        assert y.dtype == jnp.bfloat16
        assert_close(y, normalize(x, mean, variance), "bfloat16")
    assert_close(layer.moving_mean.numpy(), mean, "float32")

    # Even exact statistics, once rounded to bfloat16 (the best a bfloat16 computation can keep), miss badly.
    naive = normalize(x, *(np.asarray(s).astype(jnp.bfloat16).astype(np.float64) for s in (mean, variance)))
    assert np.max(np.abs(naive - normalize(x, mean, variance))) > 10 * tolerance("bfloat16")[1]


def test_inputs_are_not_autocast_before_the_statistics():
    # float32 data around 1000 with std 1: rounding them to bfloat16 first (step 4) would destroy them.
    x = (1000 + np.random.default_rng(15).normal(size=(128, 2))).astype(np.float32)
    layer = BatchNormalization(momentum=0.0, dtype="mixed_bfloat16")
    y = layer(x, training=True)
    mean, variance = batch_moments(x)
    assert y.dtype == jnp.bfloat16
    assert_close(y, normalize(x, mean, variance), "bfloat16")
    assert_close(layer.moving_variance.numpy(), variance, "float32")
    rounded = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64)
    assert np.max(np.abs(normalize(rounded, *batch_moments(rounded)) - normalize(x, mean, variance))) > 0.5


def test_float16_sum_of_squares_overflow_stays_finite():
    rng = np.random.default_rng(12)
    x = jnp.asarray(rng.choice([-1.0, 1.0], size=(2048, 2)) * rng.uniform(100, 300, size=(2048, 2)), jnp.float16)
    assert np.min(np.sum(np.asarray(x, np.float64) ** 2, axis=0)) > np.finfo(np.float16).max
    layer = BatchNormalization(momentum=0.0, dtype="float16")
    mean, variance = batch_moments(x)
    for y in (layer(x, training=True), *_run_all(layer, [x], "jit", training=True)):
        assert y.dtype == jnp.float16 and np.isfinite(np.asarray(y, np.float32)).all()
        assert_close(y, normalize(x, mean, variance), "float16")
    assert_close(layer.moving_variance.numpy(), variance, "float32")


# --- gradients, regularizers, configs --------------------------------------------------------------


def test_gradients_reach_gamma_and_beta_in_training_under_jit():
    x = jnp.asarray(np.random.default_rng(13).normal(size=SHAPE), jnp.bfloat16)
    target = jnp.asarray(np.random.default_rng(14).normal(size=SHAPE), jnp.float32)
    layer = BatchNormalization(dtype="mixed_bfloat16")
    layer(x)
    non_trainable = _values(layer.non_trainable_variables)

    @jax.jit
    def grads(trainable):
        def loss(trainable):
            y, _ = layer.stateless_call(trainable, non_trainable, x, training=True)
            return jnp.sum((y.astype(jnp.float32) - target) ** 2)

        return jax.grad(loss)(trainable)

    result = grads(_values(layer.trainable_variables))
    assert [v.name for v in layer.trainable_variables] == ["gamma", "beta"]
    for grad in result:
        assert grad.dtype == jnp.float32 and np.isfinite(np.asarray(grad)).all() and np.any(np.asarray(grad) != 0)


def test_weight_regularizers_and_constraints_are_attached():
    layer = BatchNormalization(gamma_regularizer="l2", beta_constraint=constraints.NonNeg())
    layer(np.ones(SHAPE, np.float32))
    assert len(layer.losses) == 1 and layer.losses[0].dtype == jnp.float32
    assert isinstance(layer.beta.constraint, constraints.NonNeg)
    assert layer.moving_mean.regularizer is None and layer.moving_mean.constraint is None


def test_config_round_trips_through_json():
    layer = BatchNormalization(
        axis=1,
        momentum=0.9,
        epsilon=1e-5,
        scale=False,
        beta_initializer=initializers.Constant(0.1),
        moving_variance_initializer="ones",
        beta_regularizer=regularizers.L1L2(0.1, 0.2),
        gamma_constraint="unit_norm",
        dtype="mixed_bfloat16",
        name="bn",
    )
    config = json.loads(json.dumps(layer.get_config()))
    clone = BatchNormalization.from_config(config)
    assert clone.get_config() == config
    assert (clone.axis, clone.momentum, clone.scale, clone.name) == (1, 0.9, False, "bn")
    assert clone.dtype_policy == dp.DTypePolicy("mixed_bfloat16")


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"axis": [1]}, TypeError, r"BatchNormalization: axis must be an int, received \[1\]"),
        ({"axis": 1.0}, TypeError, r"axis must be an int, received 1.0"),
        ({"momentum": 1.5}, ValueError, r"momentum must be in \[0.0, 1.0\], received 1.5"),
        ({"momentum": "high"}, TypeError, r"momentum must be a real number, received 'high'"),
        ({"epsilon": -1.0}, ValueError, r"epsilon must be finite and >= 0.0, received -1.0"),
        ({"center": "no"}, TypeError, r"center must be a bool, received 'no'"),
        ({"scale": 0}, TypeError, r"scale must be a bool, received 0"),
        ({"moving_mean_initializer": "zeroes"}, ValueError, r"Unknown initializer 'zeroes'.*Did you mean 'zeros'"),
        ({"gamma_constraint": 2}, TypeError, r"Cannot interpret 2 of type int as a constraint"),
        ({"synchronized": True}, TypeError, r"Unrecognized keyword arguments passed to BatchNormalization"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        BatchNormalization(**kwargs)


@pytest.mark.parametrize(
    ("axis", "shape", "match"),
    [
        (2, (4, 3), r"axis 2 is out of range for inputs of rank 2 \(input shape \(4, 3\)\)"),
        (-1, (4, None), r"dimensions along axes \[-1\] must be known"),
    ],
)
def test_build_errors_leave_the_layer_unbuilt(axis, shape, match):
    layer = BatchNormalization(axis=axis)
    with pytest.raises(ValueError, match=match):
        layer.build(shape)
    assert not layer.built and layer.weights == []


def test_inputs_that_do_not_fit_the_built_layer():
    layer = BatchNormalization()
    layer(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"expected axis -1 of the input shape to have value 3.*\(4, 5\)"):
        layer(np.ones((4, 5), np.float32), training=True)
    channels_first = BatchNormalization(axis=1)
    channels_first(np.ones((4, 3, 2), np.float32))
    with pytest.raises(ValueError, match=r"expected ndim=3, found ndim=2"):
        channels_first(np.ones((4, 3), np.float32), training=True)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), np.zeros(3))
    np.testing.assert_array_equal(channels_first.moving_mean.numpy(), np.zeros(3))


def test_a_negative_axis_accepts_other_ranks_and_vmap():
    rng = np.random.default_rng(16)
    layer = BatchNormalization(momentum=0.0)
    layer(np.ones(SHAPE, np.float32))
    x = rng.normal(1.0, 2.0, size=SHAPE).astype(np.float32)
    flat = x.reshape(-1, SHAPE[-1])
    assert_close(layer(flat, training=True), normalize(flat, *batch_moments(flat)), "float32")

    # Per-example statistics under jax.vmap: each slice is normalized with its own moments.
    trainable, non_trainable = _values(layer.trainable_variables), _values(layer.non_trainable_variables)
    y, (means, _) = jax.vmap(lambda x: layer.stateless_call(trainable, non_trainable, x, training=True))(x)
    assert means.shape == (SHAPE[0], SHAPE[-1])
    for i in range(SHAPE[0]):
        assert_close(y[i], normalize(x[i], *batch_moments(x[i])), "float32")
        assert_close(means[i], batch_moments(x[i])[0], "float32")


def test_docstring_examples_run(monkeypatch):
    # The example imports from `layers`; register the class there in case the package does not yet.
    monkeypatch.setattr(layers, "BatchNormalization", BatchNormalization, raising=False)
    result = doctest.testmod(_batch_normalization, extraglobs={"jnp": jnp, "np": np, "dp": dp}, verbose=False)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("training", ["false", 0, 1, jnp.array(False)])
@pytest.mark.parametrize("trainable", [True, False])
def test_training_that_is_not_a_bool_is_refused_and_changes_nothing(training, trainable):
    layer = BatchNormalization(name="bn", trainable=trainable)
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    layer(x)
    before = [np.asarray(w) for w in layer.get_weights()]
    with pytest.raises(
        TypeError, match=r"BatchNormalization 'bn': training must be a Python bool or None, received .* of type"
    ):
        layer(x, training=training)
    for old, new in zip(before, layer.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_a_traced_training_flag_in_stateless_call_is_a_clear_type_error():
    layer = BatchNormalization(name="bn")
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    layer(x)
    call = jax.jit(lambda t, n, x, training: layer.stateless_call(t, n, x, training=training))
    with pytest.raises(TypeError, match=r"BatchNormalization 'bn': training must be a Python bool, received a traced"):
        call(_values(layer.trainable_variables), _values(layer.non_trainable_variables), x, True)
    static = jax.jit(lambda t, n, x: layer.stateless_call(t, n, x, training=np.bool_(True)))
    _, (mean, _) = static(_values(layer.trainable_variables), _values(layer.non_trainable_variables), x)
    np.testing.assert_allclose(mean, 0.01 * x.astype(np.float64).mean(0), rtol=1e-6)
