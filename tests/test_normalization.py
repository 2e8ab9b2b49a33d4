"""LayerNormalization and RMSNormalization: float32 statistics, float32 parameters, references in float64."""

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
from layers._builtin import _normalization
from layers._builtin._normalization import LayerNormalization, RMSNormalization
from tests._conformance import Case, check_layer
from tests._tolerances import assert_close, tolerance

POLICIES = ["float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16"]
INPUT_DTYPES = ["float32", "bfloat16", "float16"]
MODES = ["eager", "jit"]


# --- float64 NumPy references (independent of the layer code) -------------------------------------


def _arranged(parameter, axes, ndim):
    """A parameter whose dims follow `axes` (in the given order), shaped to broadcast over rank `ndim`."""
    positive = [axis % ndim for axis in axes]
    order = np.argsort(positive)
    arranged = np.transpose(np.asarray(parameter, np.float64), order)
    shape = [1] * ndim
    for axis, size in zip(sorted(positive), arranged.shape, strict=True):
        shape[axis] = size
    return arranged.reshape(shape)


def layer_norm_reference(x, axes, gamma=None, beta=None, epsilon=1e-3, rms=False):
    x = np.asarray(x, np.float64)
    reduce = tuple(sorted(axis % x.ndim for axis in axes))
    if rms:
        y = x / np.sqrt(np.mean(x * x, axis=reduce, keepdims=True) + epsilon)
    else:
        mean = x.mean(axis=reduce, keepdims=True)
        variance = ((x - mean) ** 2).mean(axis=reduce, keepdims=True)
        y = (x - mean) / np.sqrt(variance + epsilon)
    if gamma is not None:
        y = y * _arranged(gamma, axes, x.ndim)
    if beta is not None:
        y = y + _arranged(beta, axes, x.ndim)
    return y


def _as_bfloat16(a):
    return np.asarray(a).astype(jnp.bfloat16).astype(np.float64)


def _axes(axis):
    return tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)


# --- helpers -------------------------------------------------------------------------------------


def _randomize(layer, seed=0):
    """Non-trivial gamma/beta/scale so that parameter layout mistakes show."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in layer.get_weights()])


def _run(layer, x, mode):
    return _run_all(layer, [x], mode)[0]


def _run_all(layer, xs, mode):
    """The layer on each input, eagerly or in one jitted `stateless_call` program (one compile)."""
    if mode == "eager":
        return [layer(x) for x in xs]

    @jax.jit
    def run(trainable, non_trainable, xs):
        return [layer.stateless_call(trainable, non_trainable, x)[0] for x in xs]

    return run(_values(layer.trainable_variables), _values(layer.non_trainable_variables), xs)


def _values(variables):
    return [v.value for v in variables]


def _weights64(layer):
    return [np.asarray(w, np.float64) for w in layer.get_weights()]


# --- layouts: (id, class, constructor arguments) ---------------------------------------------------

SHAPE = (3, 4, 8)  # one shape for every layout, so eager ops compiled once are reused
LAYOUTS = [
    ("ln_last", LayerNormalization, {}),
    ("ln_middle", LayerNormalization, {"axis": 1}),
    ("ln_two_axes", LayerNormalization, {"axis": [1, 2]}),
    ("ln_unsorted_axes", LayerNormalization, {"axis": [2, 0]}),
    ("ln_no_center", LayerNormalization, {"center": False}),
    ("ln_no_scale", LayerNormalization, {"scale": False, "epsilon": 1e-5}),
    ("ln_rms_scaling", LayerNormalization, {"rms_scaling": True}),
    ("rms_last", RMSNormalization, {}),
    ("rms_two_axes", RMSNormalization, {"axis": [-1, 1]}),
]


def _reference_for(layer, x):
    weights = _weights64(layer)
    if isinstance(layer, RMSNormalization):
        return layer_norm_reference(x, layer._axes, weights[0], epsilon=layer.epsilon, rms=True)
    gamma = weights.pop(0) if layer.gamma is not None else None
    beta = weights.pop(0) if layer.beta is not None else None
    return layer_norm_reference(x, _axes(layer.axis), gamma, beta, layer.epsilon, rms=layer.rms_scaling)


# The full policy sweep, eager and jitted, on each layer's default layout; the other layouts under
# mixed_bfloat16 and jitted (their first call is eager), where a misplaced parameter still shows as
# an O(1) error.
SWEEP = [
    pytest.param(*row, policy, MODES if row[0] in ("ln_last", "rms_last") else ["jit"], id=f"{row[0]}-{policy}")
    for row in LAYOUTS
    for policy in (POLICIES if row[0] in ("ln_last", "rms_last") else ["mixed_bfloat16"])
]


@pytest.mark.parametrize(("name", "cls", "kwargs", "policy", "modes"), SWEEP)
def test_matches_float64_reference(name, cls, kwargs, policy, modes):
    rng = np.random.default_rng(1)
    compute = dp.get(policy).compute_dtype
    layer = cls(dtype=policy, **kwargs)
    xs = [jnp.asarray(rng.normal(0.5, 2.0, SHAPE), input_dtype) for input_dtype in INPUT_DTYPES]
    layer(xs[0])
    _randomize(layer)
    for mode in modes:
        for x, y in zip(xs, _run_all(layer, xs, mode), strict=True):
            assert y.dtype == jnp.dtype(compute), (mode, x.dtype, y.dtype)
            # The reference sees exactly the values that arrived: inputs are not autocast.
            assert_close(y, _reference_for(layer, np.asarray(x, np.float64)), compute)
    assert all(v.dtype == "float32" and not v.autocast for v in layer.weights)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    "case",
    [
        Case(
            "layer_normalization",
            lambda **kw: LayerNormalization(axis=[1, 2], **kw),
            lambda: (np.random.default_rng(2).normal(size=SHAPE).astype(np.float32),),
            lambda x, weights: layer_norm_reference(x, (1, 2), weights[0], weights[1]),
        ),
        Case(
            "rms_normalization",
            RMSNormalization,
            lambda: (np.random.default_rng(3).normal(size=SHAPE).astype(np.float32),),
            lambda x, weights: layer_norm_reference(x, (-1,), weights[0], epsilon=1e-6, rms=True),
        ),
    ],
    ids=lambda case: case.name,
)
def test_conformance(case, policy):
    check_layer(case, policy)


# --- the float32-statistics rule, shown on inputs where it matters ---------------------------------


def test_bfloat16_input_with_large_offset_needs_float32_statistics():
    # bfloat16 holds 996..1008 only in steps of 4 (std here ~4.5); each row's mean is 1002, which
    # bfloat16 rounds to 1000 or 1004: half a standard deviation off.
    rng = np.random.default_rng(4)
    x = jnp.asarray(1000 + 4 * rng.permuted(np.tile([-1, 0, 1, 2], (8, 16)), axis=1), jnp.bfloat16)
    expected = layer_norm_reference(np.asarray(x, np.float64), (-1,), epsilon=1e-3)
    layer = LayerNormalization(dtype="mixed_bfloat16")
    for y in (layer(x), _run(layer, x, "jit")):
        assert y.dtype == jnp.bfloat16
        assert_close(y, expected, "bfloat16")

    # Even exact statistics, once rounded to bfloat16 (the best a bfloat16 computation can keep), miss badly.
    x64 = np.asarray(x, np.float64)
    mean, variance = (_as_bfloat16(s(x64, axis=-1, keepdims=True)) for s in (np.mean, np.var))
    naive = (x64 - mean) / np.sqrt(variance + 1e-3)
    assert np.max(np.abs(naive - expected)) > 10 * tolerance("bfloat16")[1]


def test_inputs_are_not_autocast_before_the_statistics():
    # float32 data around 1000 with std 1: rounding them to bfloat16 first (step 4) would destroy them.
    x = (1000 + np.random.default_rng(5).normal(size=(4, 128))).astype(np.float32)
    expected = layer_norm_reference(x, (-1,))
    for layer in (LayerNormalization(dtype="mixed_bfloat16"), RMSNormalization(dtype="mixed_bfloat16")):
        y = layer(x)
        assert y.dtype == jnp.bfloat16
        if isinstance(layer, LayerNormalization):
            assert_close(y, expected, "bfloat16")
        else:
            assert_close(y, layer_norm_reference(x, (-1,), epsilon=1e-6, rms=True), "bfloat16")
    rounded_first = layer_norm_reference(np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64), (-1,))
    assert np.max(np.abs(rounded_first - expected)) > 0.5  # the test could tell the two apart


@pytest.mark.parametrize("cls", [LayerNormalization, RMSNormalization])
def test_float16_sum_of_squares_overflow_stays_finite(cls):
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.choice([-1.0, 1.0], size=(4, 2048)) * rng.uniform(100, 300, size=(4, 2048)), jnp.float16)
    assert np.min(np.sum(np.asarray(x, np.float64) ** 2, axis=-1)) > np.finfo(np.float16).max
    layer = cls(dtype="float16")
    for y in (layer(x), _run(layer, x, "jit")):
        assert y.dtype == jnp.float16 and np.isfinite(np.asarray(y, np.float32)).all()
        assert_close(y, _reference_for(layer, np.asarray(x, np.float64)), "float16")


def test_float64_inputs_compute_in_float64():
    with jax.enable_x64(True):
        # Differences of 1e-9 around 1 vanish in float32: a float32 computation returns zeros.
        x = jnp.asarray(1 + 1e-9 * np.arange(-4.0, 4.0))[None]
        for layer in (LayerNormalization(epsilon=0.0, dtype="float64"), RMSNormalization(dtype="float64")):
            y = layer(x)
            assert y.dtype == jnp.float64
            assert all(v.dtype == "float32" for v in layer.weights)
            expected = _reference_for(layer, np.asarray(x))
            np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-6, atol=1e-6)  # data ulp ~1e-16 on 1e-9 steps


def test_output_dtype_follows_the_policy_not_the_input():
    x16 = jnp.asarray(np.random.default_rng(11).normal(size=SHAPE), jnp.float16)
    assert LayerNormalization()(x16).dtype == jnp.float32
    assert RMSNormalization(dtype="mixed_bfloat16")(x16).dtype == jnp.bfloat16
    assert LayerNormalization(dtype="p=f32,c=bf16,o=f32")(x16).dtype == jnp.float32


def test_integer_inputs_are_normalized_as_floats():
    y = LayerNormalization(dtype="mixed_bfloat16")(jnp.array([[1, 2, 3]], jnp.int32))
    assert y.dtype == jnp.bfloat16
    assert_close(y, layer_norm_reference(np.array([[1.0, 2.0, 3.0]]), (-1,)), "bfloat16")


# --- Keras semantics -------------------------------------------------------------------------------


def test_parameter_shapes_follow_axis_order():
    layer = LayerNormalization(axis=[2, 1])
    layer.build((5, 20, 30))
    assert layer.gamma.shape == (30, 20) and layer.beta.shape == (30, 20)
    rms = RMSNormalization(axis=[-1, 1])
    rms.build((5, 20, 30))
    assert rms.scale.shape == (20, 30)  # Keras sorts RMSNormalization's axes
    assert [w.name for w in layer.weights] == ["gamma", "beta"] and rms.weights[0].name == "scale"


def test_center_scale_and_rms_scaling_choose_the_weights():
    def names(**kwargs):
        layer = LayerNormalization(**kwargs)
        layer.build((2, 3))
        return [w.name for w in layer.weights]

    assert names() == ["gamma", "beta"]
    assert names(center=False) == ["gamma"]
    assert names(scale=False) == ["beta"]
    assert names(center=False, scale=False) == []
    assert names(rms_scaling=True, scale=False) == ["gamma"]  # center and scale are ignored


def test_rms_scaling_matches_rms_normalization():
    x = np.random.default_rng(7).normal(1.0, 2.0, size=SHAPE).astype(np.float32)
    ln = LayerNormalization(rms_scaling=True, epsilon=1e-6)
    rms = RMSNormalization()
    ln(x), rms(x)
    _randomize(ln)
    rms.set_weights(ln.get_weights())
    np.testing.assert_allclose(np.asarray(ln(x)), np.asarray(rms(x)), rtol=1e-6, atol=1e-6)


def test_a_built_layer_accepts_other_ranks_along_negative_axes():
    layer = LayerNormalization()
    layer(np.ones(SHAPE, np.float32))
    x = np.random.default_rng(8).normal(size=SHAPE[1:]).astype(np.float32)
    assert_close(layer(x), layer_norm_reference(x, (-1,)), "float32")


def test_an_axis_counted_from_the_front_pins_the_rank():
    layer = LayerNormalization(axis=[1, -1])
    layer(np.ones(SHAPE, np.float32))
    with pytest.raises(ValueError, match=r"expected ndim=3, found ndim=2"):
        layer(np.ones(SHAPE[1:], np.float32))


@pytest.mark.parametrize("cls", [LayerNormalization, RMSNormalization])
def test_stateless_call_under_vmap(cls):
    layer = cls(axis=[-2, -1])
    x = np.random.default_rng(12).normal(1.0, 2.0, size=SHAPE).astype(np.float32)
    layer(x)
    _randomize(layer)
    trainable = _values(layer.trainable_variables)
    y = jax.vmap(lambda x: layer.stateless_call(trainable, [], x)[0])(x)
    assert_close(y, _reference_for(layer, x), "float32")


@pytest.mark.parametrize("cls", [LayerNormalization, RMSNormalization])
def test_masks_pass_through(cls):
    x = jnp.ones(SHAPE)
    mask = jnp.asarray(np.arange(12).reshape(SHAPE[:2]) % 3 > 0)
    layer = cls()
    y = layer(x, mask=mask)
    assert layer.supports_masking and get_mask(y) is mask
    assert layer.compute_mask(x, mask) is mask


def test_weight_regularizers_and_constraints_are_attached():
    layer = LayerNormalization(
        gamma_regularizer="l2", beta_regularizer=regularizers.L1(0.5), gamma_constraint="non_neg"
    )
    layer(np.ones(SHAPE, np.float32))
    assert len(layer.losses) == 2 and all(loss.dtype == jnp.float32 for loss in layer.losses)
    assert isinstance(layer.gamma.constraint, constraints.NonNeg) and layer.beta.constraint is None


@pytest.mark.parametrize("cls", [LayerNormalization, RMSNormalization])
def test_gradients_reach_every_weight_under_jit(cls):
    layer = cls(axis=[1, 2], dtype="mixed_bfloat16")
    x = jnp.asarray(np.random.default_rng(9).normal(size=SHAPE), jnp.bfloat16)
    layer(x)
    target = jnp.asarray(np.random.default_rng(10).normal(size=SHAPE), jnp.float32)

    @jax.jit
    def grads(trainable):
        def loss(trainable):
            y, _ = layer.stateless_call(trainable, [], x)
            return jnp.sum((y.astype(jnp.float32) - target) ** 2)

        return jax.grad(loss)(trainable)

    result = grads([v.value for v in layer.trainable_variables])
    assert len(result) == len(layer.trainable_variables) > 0
    for grad, variable in zip(result, layer.trainable_variables, strict=True):
        assert grad.dtype == jnp.float32 and grad.shape == variable.shape
        assert np.isfinite(np.asarray(grad)).all() and np.any(np.asarray(grad) != 0)


# --- configs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [
        lambda: LayerNormalization(
            axis=(1, 2),
            epsilon=1e-5,
            center=False,
            beta_initializer=initializers.Constant(0.5),
            gamma_initializer="random_normal",
            gamma_regularizer=regularizers.L2(0.1),
            beta_constraint="max_norm",
            dtype="mixed_float16",
            name="norm",
        ),
        lambda: LayerNormalization(rms_scaling=True),
        lambda: RMSNormalization(axis=[0, -1], epsilon=1e-5, dtype="bfloat16"),
    ],
    ids=["layer_normalization", "rms_scaling", "rms_normalization"],
)
def test_config_round_trips_through_json(factory):
    layer = factory()
    config = json.loads(json.dumps(layer.get_config()))
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    assert clone.dtype_policy == layer.dtype_policy
    assert (clone._axes, clone.epsilon, clone.name) == (layer._axes, layer.epsilon, layer.name)


def test_config_of_a_built_layer_keeps_the_axis_as_given():
    layer = LayerNormalization(axis=-1)
    layer(np.ones((2, 3), np.float32))
    assert layer.get_config()["axis"] == -1
    assert LayerNormalization(axis=[2, 1]).get_config()["axis"] == [2, 1]


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"axis": "last"}, TypeError, r"axis must be an int or a list/tuple of ints, received 'last'"),
        ({"axis": True}, TypeError, r"axis must be an int or a list/tuple of ints, received True"),
        ({"axis": []}, ValueError, r"axis must name at least one axis, received \[\]"),
        ({"axis": [1, 2.0]}, TypeError, r"every entry of axis must be an int, received 2.0"),
        ({"epsilon": -1e-3}, ValueError, r"epsilon must be finite and >= 0.0, received -0.001"),
        ({"epsilon": "small"}, TypeError, r"epsilon must be a real number, received 'small'"),
        ({"epsilon": float("nan")}, ValueError, r"epsilon must be finite"),
        ({"center": 1}, TypeError, r"center must be a bool, received 1"),
        ({"scale": None}, TypeError, r"scale must be a bool, received None"),
        ({"rms_scaling": "yes"}, TypeError, r"rms_scaling must be a bool, received 'yes'"),
        ({"gamma_initializer": "onez"}, ValueError, r"Unknown initializer 'onez'.*Did you mean 'ones'"),
        ({"beta_regularizer": 3}, TypeError, r"Cannot interpret 3 of type int as a regularizer"),
        ({"units": 3}, TypeError, r"Unrecognized keyword arguments passed to LayerNormalization"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        LayerNormalization(**kwargs)


def test_rms_normalization_constructor_errors():
    with pytest.raises(TypeError, match=r"RMSNormalization: axis must be an int or a list/tuple of ints, received 1.5"):
        RMSNormalization(axis=1.5)
    with pytest.raises(ValueError, match=r"RMSNormalization: epsilon must be finite and >= 0.0, received -1"):
        RMSNormalization(epsilon=-1)


@pytest.mark.parametrize(
    ("cls", "kwargs", "shape", "match"),
    [
        (LayerNormalization, {"axis": 3}, (2, 3, 4), r"axis 3 is out of range for inputs of rank 3 \(input shape"),
        (LayerNormalization, {"axis": [-4]}, (2, 3, 4), r"axis -4 is out of range for inputs of rank 3"),
        (LayerNormalization, {"axis": [1, -2]}, (2, 3, 4), r"axes \[1, -2\] name the same input axis twice"),
        (RMSNormalization, {"axis": [2, 2]}, (2, 3, 4), r"axes \[2, 2\] name the same input axis twice"),
        (LayerNormalization, {}, (2, None), r"dimensions along axes \[-1\] must be known"),
    ],
)
def test_build_errors_leave_the_layer_unbuilt(cls, kwargs, shape, match):
    layer = cls(**kwargs)
    with pytest.raises(ValueError, match=match):
        layer.build(shape)
    assert not layer.built and layer.weights == []


@pytest.mark.parametrize("cls", [LayerNormalization, RMSNormalization])
def test_input_that_does_not_fit_the_built_layer(cls):
    layer = cls()
    layer(np.ones((2, 4), np.float32))
    before = [w.copy() for w in layer.get_weights()]
    with pytest.raises(ValueError, match=r"expected axis -1 of the input shape to have value 4.*\(2, 5\)"):
        layer(np.ones((2, 5), np.float32))
    for old, new in zip(before, layer.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


# --- docs ----------------------------------------------------------------------------------------


def test_docstring_examples_run(monkeypatch):
    # The examples import from `layers`; register the classes there in case the package does not yet.
    for name in _normalization.__all__:
        monkeypatch.setattr(layers, name, getattr(_normalization, name), raising=False)
    result = doctest.testmod(_normalization, extraglobs={"jnp": jnp, "np": np, "dp": dp}, verbose=False)
    assert result.attempted > 0 and result.failed == 0
