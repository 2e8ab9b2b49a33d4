"""layers.optimizers against the Keras 3 update rules written out in float64 NumPy."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dtypepolicy as dp
import layers
from layers import optimizers

RNG = np.random.default_rng(0)
W0 = [RNG.normal(size=(3, 2)), RNG.normal(size=(2,))]
GRADS = [[RNG.normal(size=(3, 2)), RNG.normal(size=(2,))] for _ in range(3)]


def _variables(values=W0, dtype="float32", **kwargs):
    return [dp.Variable(np.asarray(v, np.float32), dtype=dtype, **kwargs) for v in values]


def _f32(arrays):
    return [jnp.asarray(np.asarray(a, np.float32)) for a in arrays]


def _run_eager(opt, grads_seq, variables):
    for grads in grads_seq:
        opt.apply(_f32(grads), variables)
    return [np.asarray(v.numpy(), np.float64) for v in variables]


def _reference_inputs():
    # The NumPy reference starts from the float32-rounded values the optimizer sees.
    return [np.asarray(np.float32(w), np.float64) for w in W0], [
        [np.asarray(np.float32(g), np.float64) for g in grads] for grads in GRADS
    ]


# --- the Keras 3 rules, in float64 NumPy (from keras/src/optimizers/*.py) ---------------------


def keras_sgd(ws, grads_seq, lr, momentum=0.0, nesterov=False, weight_decay=None):
    ws = [w.copy() for w in ws]
    ms = [np.zeros_like(w) for w in ws]
    for grads in grads_seq:
        for i, g in enumerate(grads):
            if weight_decay:
                ws[i] = ws[i] - ws[i] * weight_decay * lr
            if momentum:
                ms[i] = ms[i] * momentum - g * lr
                ws[i] = ws[i] + (ms[i] * momentum - g * lr if nesterov else ms[i])
            else:
                ws[i] = ws[i] - g * lr
    return ws


def keras_adam(ws, grads_seq, lr, beta_1, beta_2, epsilon, weight_decay=None, amsgrad=False):
    ws = [w.copy() for w in ws]
    ms = [np.zeros_like(w) for w in ws]
    vs = [np.zeros_like(w) for w in ws]
    vhs = [np.zeros_like(w) for w in ws]
    for step, grads in enumerate(grads_seq):
        t = step + 1
        for i, g in enumerate(grads):
            if weight_decay:
                ws[i] = ws[i] - ws[i] * weight_decay * lr
            alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
            ms[i] = ms[i] + (g - ms[i]) * (1 - beta_1)
            vs[i] = vs[i] + (g * g - vs[i]) * (1 - beta_2)
            v = vs[i]
            if amsgrad:
                vhs[i] = np.maximum(vhs[i], vs[i])
                v = vhs[i]
            ws[i] = ws[i] - ms[i] * alpha / (np.sqrt(v) + epsilon)
    return ws


def keras_rmsprop(ws, grads_seq, lr, rho, epsilon, momentum=0.0, centered=False):
    ws = [w.copy() for w in ws]
    vel = [np.zeros_like(w) for w in ws]
    mom = [np.zeros_like(w) for w in ws]
    avg = [np.zeros_like(w) for w in ws]
    for grads in grads_seq:
        for i, g in enumerate(grads):
            vel[i] = rho * vel[i] + (1 - rho) * g * g
            if centered:
                avg[i] = rho * avg[i] + (1 - rho) * g
                denominator = vel[i] - avg[i] ** 2 + epsilon
            else:
                denominator = vel[i] + epsilon
            increment = lr * g / np.sqrt(denominator)
            if momentum:
                mom[i] = momentum * mom[i] + increment
                ws[i] = ws[i] - mom[i]
            else:
                ws[i] = ws[i] - increment
    return ws


def keras_lion(ws, grads_seq, lr, beta_1, beta_2):
    ws = [w.copy() for w in ws]
    ms = [np.zeros_like(w) for w in ws]
    for grads in grads_seq:
        for i, g in enumerate(grads):
            ws[i] = ws[i] - lr * np.sign(ms[i] * beta_1 + g * (1 - beta_1))
            ms[i] = ms[i] * beta_2 + g * (1 - beta_2)
    return ws


def _close(actual, expected, rtol=2e-6, atol=2e-7):
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float64), e, rtol=rtol, atol=atol)


# --- one step and a few steps against the Keras rules ------------------------------------------


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize(("momentum", "nesterov"), [(0.0, False), (0.9, False), (0.7, True)])
def test_sgd_matches_the_keras_rule(steps, momentum, nesterov):
    ws, grads = _reference_inputs()
    expected = keras_sgd(ws, grads[:steps], lr=0.05, momentum=momentum, nesterov=nesterov)
    opt = optimizers.SGD(learning_rate=0.05, momentum=momentum, nesterov=nesterov)
    _close(_run_eager(opt, GRADS[:steps], _variables()), expected)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_matches_the_keras_rule_with_its_epsilon_placement(steps, amsgrad):
    # A large epsilon tells Keras' sqrt(v) + eps apart from optax's sqrt(v_hat) + eps.
    ws, grads = _reference_inputs()
    hyper = {"beta_1": 0.8, "beta_2": 0.9, "epsilon": 1e-2}
    expected = keras_adam(ws, grads[:steps], lr=0.01, amsgrad=amsgrad, **hyper)
    opt = optimizers.Adam(learning_rate=0.01, amsgrad=amsgrad, **hyper)
    _close(_run_eager(opt, GRADS[:steps], _variables()), expected)


def test_adam_defaults_are_keras_defaults():
    opt = optimizers.Adam()
    assert (opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon, opt.amsgrad) == (0.001, 0.9, 0.999, 1e-7, False)
    sgd = optimizers.SGD()
    assert (sgd.learning_rate, sgd.momentum, sgd.nesterov, sgd.weight_decay) == (0.01, 0.0, False, None)
    rms = optimizers.RMSprop()
    assert (rms.learning_rate, rms.rho, rms.momentum, rms.epsilon, rms.centered) == (0.001, 0.9, 0.0, 1e-7, False)
    lion = optimizers.Lion()
    assert (lion.learning_rate, lion.beta_1, lion.beta_2) == (0.001, 0.9, 0.99)
    adamw = optimizers.AdamW()
    assert (adamw.learning_rate, adamw.weight_decay, adamw.epsilon) == (0.001, 0.004, 1e-7)


@pytest.mark.parametrize("steps", [1, 3])
def test_adamw_decays_before_the_adam_update_as_keras_does(steps):
    ws, grads = _reference_inputs()
    expected = keras_adam(ws, grads[:steps], lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.5)
    opt = optimizers.AdamW(learning_rate=0.01, weight_decay=0.5)
    _close(_run_eager(opt, GRADS[:steps], _variables()), expected)
    # and the decay is really there: plain Adam lands elsewhere
    plain = keras_adam(ws, grads[:steps], lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    assert not np.allclose(plain[0], expected[0], rtol=1e-4)


def test_sgd_weight_decay_is_decoupled_from_momentum():
    ws, grads = _reference_inputs()
    expected = keras_sgd(ws, grads, lr=0.1, momentum=0.9, weight_decay=0.3)
    opt = optimizers.SGD(learning_rate=0.1, momentum=0.9, weight_decay=0.3)
    _close(_run_eager(opt, GRADS, _variables()), expected)


@pytest.mark.parametrize(("momentum", "centered"), [(0.0, False), (0.5, False), (0.0, True)])
def test_rmsprop_matches_the_keras_rule(momentum, centered):
    ws, grads = _reference_inputs()
    expected = keras_rmsprop(ws, grads, lr=0.01, rho=0.8, epsilon=1e-3, momentum=momentum, centered=centered)
    opt = optimizers.RMSprop(learning_rate=0.01, rho=0.8, epsilon=1e-3, momentum=momentum, centered=centered)
    _close(_run_eager(opt, GRADS, _variables()), expected)


def test_lion_matches_the_keras_rule():
    ws, grads = _reference_inputs()
    expected = keras_lion(ws, grads, lr=0.01, beta_1=0.8, beta_2=0.95)
    opt = optimizers.Lion(learning_rate=0.01, beta_1=0.8, beta_2=0.95)
    _close(_run_eager(opt, GRADS, _variables()), expected)


def test_stateless_apply_under_jit_matches_eager_and_the_reference():
    ws, grads = _reference_inputs()
    expected = keras_adam(ws, grads, lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    opt = optimizers.Adam(learning_rate=0.01)
    values = _f32(W0)
    state = opt.init(values)
    step = jax.jit(opt.stateless_apply)
    for g in GRADS:
        values, state = step(state, _f32(g), values)
    _close(values, expected)
    assert int(state.iterations) == 3
    eager = _run_eager(optimizers.Adam(learning_rate=0.01), GRADS, _variables())
    for a, b in zip(values, eager, strict=True):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-7)


def test_wrapping_any_optax_transform():
    opt = optimizers.Optimizer(optax.sgd(0.1))
    ws, grads = _reference_inputs()
    _close(_run_eager(opt, GRADS, _variables()), keras_sgd(ws, grads, lr=0.1))
    assert opt.iterations == 3
    assert opt.learning_rate is None


def test_a_dense_layer_trains_with_apply():
    layer = layers.Dense(2)
    x = jnp.asarray(RNG.normal(size=(4, 3)), jnp.float32)
    layer(x)
    opt = optimizers.SGD(0.1)
    before = [np.array(v.numpy()) for v in layer.trainable_variables]

    def loss(values):
        y, _ = layer.stateless_call(values, [], x)
        return jnp.mean(jnp.square(y))

    values = [v.value for v in layer.trainable_variables]
    grads = jax.grad(loss)(values)
    opt.apply(grads, layer.trainable_variables)
    for v, b, g in zip(layer.trainable_variables, before, grads, strict=True):
        np.testing.assert_allclose(v.numpy(), b - 0.1 * np.asarray(g), rtol=1e-6, atol=1e-7)


# --- schedules ---------------------------------------------------------------------------------


def test_an_optax_schedule_is_called_with_iterations():
    schedule = optax.exponential_decay(0.1, transition_steps=1, decay_rate=0.5)
    opt = optimizers.SGD(learning_rate=schedule)
    w = dp.Variable(jnp.zeros(()))
    expected = 0.0
    for step in range(4):
        assert float(opt.learning_rate) == pytest.approx(0.1 * 0.5**step)
        opt.apply([jnp.asarray(1.0)], [w])
        expected -= 0.1 * 0.5**step
    assert float(w.numpy()) == pytest.approx(expected, rel=1e-6)


def test_a_schedule_step_does_not_advance_on_skipped_or_accumulating_steps():
    schedule = optax.piecewise_constant_schedule(1.0, {1: 0.5, 2: 0.5})
    w = dp.Variable(jnp.zeros(()))
    opt = optimizers.LossScaleOptimizer(optimizers.SGD(schedule, gradient_accumulation_steps=2), initial_scale=1.0)
    for g in [1.0, jnp.inf, 1.0, 3.0, 1.0]:  # micro, skipped, update (lr 1), micro, update (lr 0.5)
        opt.apply([jnp.asarray(g, jnp.float32)], [w])
    assert opt.iterations == 2
    assert float(w.numpy()) == pytest.approx(-1.0 * 1.0 - 2.0 * 0.5)


# --- dtypes: float32 updates and slots ---------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_slots_are_float32_and_values_keep_their_storage_dtype(dtype):
    variables = _variables(dtype=dtype)
    opt = optimizers.Adam()
    opt.apply([jnp.asarray(g, dtype) for g in GRADS[0]], variables)
    slot_dtypes = {leaf.dtype for leaf in jax.tree.leaves(opt.state.inner) if jnp.issubdtype(leaf.dtype, jnp.floating)}
    assert slot_dtypes == {jnp.dtype("float32")}
    assert [v.dtype for v in variables] == [dtype, dtype]


def test_float32_master_weights_take_updates_smaller_than_bfloat16_resolution():
    # A bf16 gradient applied to a float32 weight of 1.0: the step 1e-4 is below bf16's resolution at 1.0
    w = dp.Variable(jnp.ones(()))
    optimizers.SGD(1e-4).apply([jnp.asarray(1.0, jnp.bfloat16)], [w])
    assert w.dtype == "float32"
    assert float(w.numpy()) == pytest.approx(1.0 - 1e-4, rel=1e-7)


def test_a_pure_float16_dense_trains_with_adam_without_nan():
    layer = layers.Dense(4, dtype="float16")
    x = jnp.asarray(RNG.normal(size=(8, 3)), jnp.float16)
    layer(x)

    def loss(values):
        y, _ = layer.stateless_call(values, [], x)
        return jnp.mean(jnp.square(y.astype(jnp.float32))) * 1e-4  # small gradients: v underflows in float16

    opt = optimizers.Adam(learning_rate=1e-3)
    for _ in range(3):
        values = [v.value for v in layer.trainable_variables]
        grads = jax.grad(loss)(values)
        assert all(g.dtype == jnp.float16 for g in grads)
        opt.apply(grads, layer.trainable_variables)
        assert all(np.isfinite(np.asarray(v.numpy(), np.float32)).all() for v in layer.trainable_variables)
    assert [v.dtype for v in layer.trainable_variables] == ["float16", "float16"]


def test_float16_adam_with_tiny_gradients_follows_the_reference():
    # In float16 slots 0.001 * g**2 underflows to 0 and eps=1e-7 rounds: the step would be inf at step 2.
    g = np.full((4,), 1e-4, np.float16)
    w = dp.Variable(jnp.ones((4,)), dtype="float16")
    opt = optimizers.Adam(learning_rate=1e-3)
    for _ in range(2):
        opt.apply([jnp.asarray(g)], [w])
    assert w.dtype == "float16"
    expected = keras_adam([np.ones(4)], [[g.astype(np.float64)]] * 2, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    np.testing.assert_allclose(np.asarray(w.numpy(), np.float64), expected[0], rtol=1e-3)


# --- clipping ----------------------------------------------------------------------------------


def _clip_reference(grads, clipnorm=None, clipvalue=None, global_clipnorm=None):
    if clipnorm is not None:
        return [g * clipnorm / max(np.sqrt(np.sum(g * g)), clipnorm) for g in grads]
    if global_clipnorm is not None:
        total = np.sqrt(sum(np.sum(g * g) for g in grads))
        return [g * global_clipnorm / max(total, global_clipnorm) for g in grads]
    return [np.clip(g, -clipvalue, clipvalue) for g in grads]


@pytest.mark.parametrize("clip", [{"clipnorm": 0.5}, {"global_clipnorm": 0.7}, {"clipvalue": 0.3}])
def test_clipping_matches_keras(clip):
    ws, grads = _reference_inputs()
    big = [[g * 3 for g in grads[0]]]
    expected = keras_sgd(ws, [_clip_reference(big[0], **clip)], lr=1.0)
    opt = optimizers.SGD(learning_rate=1.0, **clip)
    _close(_run_eager(opt, big, _variables()), expected)
    unclipped = keras_sgd(ws, big, lr=1.0)
    assert not np.allclose(unclipped[0], expected[0])


def test_clipping_happens_after_averaging_accumulated_gradients():
    w = dp.Variable(jnp.zeros((2,)))
    opt = optimizers.SGD(1.0, clipvalue=1.0, gradient_accumulation_steps=2)
    opt.apply([jnp.asarray([3.0, -0.5])], [w])
    opt.apply([jnp.asarray([-2.0, -0.5])], [w])
    np.testing.assert_allclose(w.numpy(), [-0.5, 0.5])  # mean [0.5, -0.5]: nothing to clip


# --- overwrite-with-gradient, constraints, accumulation ----------------------------------------


def _owg_setup():
    w = dp.Variable(jnp.asarray([1.0, 2.0]), name="w")
    scale = dp.Variable(jnp.asarray([5.0, 5.0]), name="scale", overwrite_with_gradient=True)
    return w, scale


@pytest.mark.parametrize(
    "make",
    [
        lambda: optimizers.AdamW(learning_rate=0.1, weight_decay=0.5, clipvalue=0.01),
        lambda: optimizers.SGD(learning_rate=0.3, momentum=0.9, global_clipnorm=0.01, weight_decay=0.1),
        lambda: optimizers.LossScaleOptimizer(optimizers.Adam(0.1, clipnorm=1e-3), initial_scale=8.0),
    ],
)
def test_overwrite_with_gradient_takes_the_incoming_value_untouched(make):
    w, scale = _owg_setup()
    opt = make()
    for new in ([3.0, -7.0], [11.0, 0.25]):
        opt.apply([jnp.asarray([0.1, 0.1]), jnp.asarray(new)], [w, scale])
        np.testing.assert_array_equal(scale.numpy(), new)  # no lr, clipping, decay, moments or unscaling
    assert not np.array_equal(w.numpy(), [1.0, 2.0])
    # and it has no slots: the transform's state is the one a model of w alone gets
    fresh = make().init([jnp.zeros(2)])
    assert jax.tree.structure(_transform_state(opt.state)) == jax.tree.structure(_transform_state(fresh))


def _transform_state(state):
    return state.inner.inner if isinstance(state, optimizers.LossScaleState) else state.inner


def test_overwrite_with_gradient_under_accumulation_takes_the_max_on_the_update_step():
    w, scale = _owg_setup()
    opt = optimizers.SGD(learning_rate=1.0, gradient_accumulation_steps=3)
    incoming = [[-3.0, 1.0], [-4.0, 9.0], [-5.0, 2.0]]
    gw = [[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]]
    for step in range(3):
        opt.apply([jnp.asarray(gw[step]), jnp.asarray(incoming[step])], [w, scale])
        if step < 2:
            np.testing.assert_array_equal(scale.numpy(), [5.0, 5.0])
            np.testing.assert_array_equal(w.numpy(), [1.0, 2.0])
            assert opt.iterations == 0
    np.testing.assert_array_equal(scale.numpy(), [-3.0, 9.0])
    np.testing.assert_allclose(w.numpy(), [1.0 - 3.0, 2.0 - 2.0], atol=1e-6)  # the mean gradient
    assert opt.iterations == 1
    # the accumulators restart: the next cycle's max ignores the previous one
    for step in range(3):
        opt.apply([jnp.zeros(2), jnp.asarray([-10.0 - step, -20.0])], [w, scale])
    np.testing.assert_array_equal(scale.numpy(), [-10.0, -20.0])


def test_accumulation_averages_gradients_and_matches_one_big_step_under_jit():
    ws, grads = _reference_inputs()
    mean = [(a + b) / 2 for a, b in zip(grads[0], grads[1], strict=True)]
    expected = keras_adam(ws, [mean], lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    opt = optimizers.Adam(0.01, gradient_accumulation_steps=2)
    values = _f32(W0)
    state = opt.init(values)
    step = jax.jit(opt.stateless_apply)
    values, state = step(state, _f32(GRADS[0]), values)
    _close(values, ws)
    assert int(state.iterations) == 0
    values, state = step(state, _f32(GRADS[1]), values)
    _close(values, expected)
    assert int(state.iterations) == 1


def test_non_neg_constraint_keeps_a_dense_kernel_non_negative_through_training():
    layer = layers.Dense(3, kernel_constraint="non_neg")
    x = jnp.asarray(RNG.normal(size=(16, 4)), jnp.float32)
    layer(x)
    opt = optimizers.SGD(0.5, momentum=0.9)

    def loss(values):
        y, _ = layer.stateless_call(values, [], x)
        return jnp.mean(jnp.square(y + 3.0))  # pushes the kernel negative

    for _ in range(5):
        values = [v.value for v in layer.trainable_variables]
        opt.apply(jax.grad(loss)(values), layer.trainable_variables)
        assert (layer.kernel.numpy() >= 0).all()
    assert (layer.kernel.numpy() == 0).any()


def test_constraints_run_in_stateless_apply_after_build():
    w = dp.Variable(jnp.asarray([1.0, 1.0]), constraint=layers.constraints.get("non_neg"))
    opt = optimizers.SGD(1.0)
    opt.build([w])
    state = opt.init([w.value])
    values, state = jax.jit(opt.stateless_apply)(state, [jnp.asarray([3.0, -1.0])], [w.value])
    np.testing.assert_array_equal(values[0], [0.0, 2.0])


def test_constraints_apply_to_overwrite_with_gradient_values_too():
    w = dp.Variable(jnp.asarray([1.0]), overwrite_with_gradient=True, constraint=layers.constraints.get("non_neg"))
    opt = optimizers.SGD(1.0)
    opt.apply([jnp.asarray([-4.0])], [w])
    np.testing.assert_array_equal(w.numpy(), [0.0])


# --- loss scaling ------------------------------------------------------------------------------


def test_an_inf_gradient_skips_the_whole_update_and_halves_the_scale():
    variables = _variables()
    opt = optimizers.LossScaleOptimizer(optimizers.Adam(0.01), initial_scale=2.0**10)
    opt.apply([opt.scale_loss(g) for g in _f32(GRADS[0])], variables)
    weights = [np.array(v.numpy()) for v in variables]
    slots = [np.array(leaf) for leaf in jax.tree.leaves(opt.state.inner)]
    bad = _f32(GRADS[1])
    bad[1] = bad[1].at[0].set(jnp.inf)
    opt.apply(bad, variables)
    for v, before in zip(variables, weights, strict=True):
        np.testing.assert_array_equal(v.numpy(), before)
    for leaf, before in zip(jax.tree.leaves(opt.state.inner), slots, strict=True):
        np.testing.assert_array_equal(np.asarray(leaf), before)
    assert opt.iterations == 1
    assert float(opt.loss_scale) == 2.0**9
    nan = _f32(GRADS[1])
    nan[0] = nan[0].at[0, 0].set(jnp.nan)
    opt.apply(nan, variables)
    assert float(opt.loss_scale) == 2.0**8 and opt.iterations == 1


def test_gradients_are_unscaled_before_the_inner_step():
    ws, grads = _reference_inputs()
    expected = keras_adam(ws, grads, lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    opt = optimizers.LossScaleOptimizer(optimizers.Adam(0.01), initial_scale=2.0**12, growth_interval=100)
    variables = _variables()
    for g in GRADS:
        opt.apply([opt.scale_loss(x) for x in _f32(g)], variables)
    _close([v.numpy() for v in variables], expected)


def test_the_scale_doubles_after_growth_interval_finite_steps():
    w = dp.Variable(jnp.zeros(()))
    opt = optimizers.LossScaleOptimizer(optimizers.SGD(0.1), initial_scale=4.0, growth_interval=3)
    for step in range(1, 7):
        opt.apply([jnp.asarray(1.0)], [w])
        assert float(opt.loss_scale) == 4.0 * 2 ** (step // 3)
    assert opt.iterations == 6


def test_min_and_max_scale_hold_under_jit():
    opt = optimizers.LossScaleOptimizer(
        optimizers.SGD(0.1), initial_scale=2.0, growth_interval=1, min_scale=0.5, max_scale=8.0
    )
    values = [jnp.zeros(())]
    state = opt.init(values)
    step = jax.jit(opt.stateless_apply)
    seen = []
    for g in [jnp.inf] * 4 + [1.0] * 6:
        values, state = step(state, [jnp.asarray(g, jnp.float32)], values)
        seen.append(float(state.loss_scale.loss_scale))
    assert seen == [1.0, 0.5, 0.5, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert int(state.inner.iterations) == 6
    expected = -0.1 * sum(1.0 / s for s in [0.5, 1.0, 2.0, 4.0, 8.0, 8.0])
    assert float(values[0]) == pytest.approx(expected, rel=1e-6)


def test_scale_loss_uses_the_state_under_jit_and_returns_float32():
    opt = optimizers.LossScaleOptimizer(optimizers.SGD(0.1), initial_scale=2.0**15)
    state = opt.init([jnp.zeros(())])
    scaled = jax.jit(opt.scale_loss)(jnp.asarray(4.0, jnp.float16), state)
    assert scaled.dtype == jnp.float32 and float(scaled) == 4.0 * 2.0**15
    assert float(opt.scale_loss(1.0)) == 2.0**15


def test_loss_scaling_with_float16_values_under_jit_stays_finite():
    layer = layers.Dense(4, dtype="mixed_float16")
    x = jnp.asarray(RNG.normal(size=(8, 3)), jnp.float32)
    layer(x)
    opt = optimizers.LossScaleOptimizer(optimizers.Adam(1e-2))
    trainable = layer.trainable_variables
    opt.build(trainable)
    values = [v.value for v in trainable]
    state = opt.init(values)

    @jax.jit
    def train_step(state, values):
        def loss(vals):
            y, _ = layer.stateless_call(vals, [], x)
            return opt.scale_loss(jnp.mean(jnp.square(y.astype(jnp.float32))), state)

        return opt.stateless_apply(state, jax.grad(loss)(values), values)

    for _ in range(3):
        values, state = train_step(state, values)
    assert all(np.isfinite(np.asarray(v)).all() for v in values)
    assert int(state.inner.iterations) == 3


# --- jit and the stateful form -----------------------------------------------------------------


@pytest.mark.parametrize(
    "make", [optimizers.Adam, lambda: optimizers.LossScaleOptimizer(optimizers.SGD())], ids=["Adam", "LossScale"]
)
def test_stateful_apply_under_jit_raises_a_clear_error_and_leaks_nothing(make):
    w = dp.Variable(jnp.ones(()))
    opt = make()

    @jax.jit
    def bad(g):
        opt.apply([g], [w])
        return g

    with pytest.raises(RuntimeError, match=r"stateful.*stateless_apply"):
        bad(jnp.asarray(1.0))
    assert opt.state is None and not opt.built and float(w.numpy()) == 1.0
    opt.apply([jnp.asarray(1.0)], [w])  # still usable eagerly
    assert opt.iterations == 1


def test_stateful_apply_under_jit_with_constant_gradients_raises_too():
    w = dp.Variable(jnp.ones(()))
    opt = optimizers.SGD()

    @jax.jit
    def bad(x):
        opt.apply([jnp.ones(())], [w])
        return x

    with pytest.raises(RuntimeError, match="stateful"):
        bad(jnp.asarray(1.0))
    assert opt.state is None and float(w.numpy()) == 1.0


def test_apply_reads_storage_values_inside_an_autocast_scope():
    w = dp.Variable(jnp.asarray([1.0, 2.0]))
    with dp.autocast_scope("bfloat16"):
        optimizers.SGD(1e-3).apply([jnp.ones(2)], [w])
    np.testing.assert_allclose(w.numpy(), [1.0 - 1e-3, 2.0 - 1e-3], rtol=1e-7)


# --- bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: optimizers.SGD(momentum=1.5), ValueError, r"momentum.*1\.5"),
        (lambda: optimizers.SGD(learning_rate="fast"), TypeError, "learning_rate.*'fast'"),
        (lambda: optimizers.SGD(learning_rate=-0.1), ValueError, r"learning_rate.*-0\.1"),
        (lambda: optimizers.SGD(nesterov="yes"), TypeError, "nesterov.*'yes'"),
        (lambda: optimizers.Adam(beta_1=1.0), ValueError, r"beta_1.*1\.0"),
        (lambda: optimizers.Adam(epsilon=-1.0), ValueError, "epsilon"),
        (lambda: optimizers.AdamW(weight_decay=None), ValueError, "weight_decay=None"),
        (lambda: optimizers.Adam(weight_decay=-2.0), ValueError, r"weight_decay.*-2\.0"),
        (lambda: optimizers.Lion(beta_1=0.0), ValueError, r"beta_1.*0\.0"),
        (lambda: optimizers.RMSprop(rho=True), TypeError, "rho.*True"),
        (lambda: optimizers.SGD(clipnorm=1.0, clipvalue=1.0), ValueError, "clipnorm=1.0, clipvalue=1.0"),
        (lambda: optimizers.SGD(clipnorm=0.0), ValueError, r"clipnorm.*0\.0"),
        (lambda: optimizers.SGD(gradient_accumulation_steps=0), ValueError, "gradient_accumulation_steps.*0"),
        (lambda: optimizers.SGD(gradient_accumulation_steps=2.0), TypeError, r"gradient_accumulation_steps.*2\.0"),
        (lambda: optimizers.Optimizer(lambda g: g), TypeError, "optax GradientTransformation"),
        (lambda: optimizers.LossScaleOptimizer(optax.adam(1e-3)), TypeError, "Optimizer"),
        (lambda: optimizers.LossScaleOptimizer(optimizers.SGD(), initial_scale=0.0), ValueError, "initial_scale"),
        (lambda: optimizers.LossScaleOptimizer(optimizers.SGD(), growth_interval=0), ValueError, "growth_interval"),
        (
            lambda: optimizers.LossScaleOptimizer(optimizers.LossScaleOptimizer(optimizers.SGD())),
            TypeError,
            "without loss scaling",
        ),
    ],
)
def test_bad_constructor_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_apply_arguments_change_nothing():
    w = dp.Variable(jnp.ones((2,)), name="w")
    opt = optimizers.Adam()
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(2,\)"):
        opt.apply([jnp.ones(3)], [w])
    with pytest.raises(ValueError, match="1 gradients for 2"):
        opt.apply([jnp.ones(2)], [w, dp.Variable(jnp.ones(()))])
    with pytest.raises(ValueError, match="None"):
        opt.apply([None], [w])
    with pytest.raises(TypeError, match="list or tuple"):
        opt.apply(jnp.ones(2), [w])
    with pytest.raises(TypeError, match=r"dtypepolicy Variables.*index 0"):
        opt.apply([jnp.ones(2)], [jnp.ones(2)])
    with pytest.raises(TypeError, match="floating"):
        opt.apply([jnp.ones(2, jnp.int32)], [w])
    frozen = dp.Variable(jnp.ones(()), trainable=False, name="frozen")
    with pytest.raises(ValueError, match="'frozen' is not trainable"):
        opt.apply([jnp.ones(())], [frozen])
    assert opt.state is None and not opt.built
    np.testing.assert_array_equal(w.numpy(), [1.0, 1.0])
    opt.apply([jnp.ones(2)], [w])
    other = dp.Variable(jnp.ones((2,)), name="other")
    with pytest.raises(ValueError, match="built for the variables"):
        opt.apply([jnp.ones(2)], [other])
    assert opt.iterations == 1


def test_bad_stateless_arguments():
    opt = optimizers.SGD()
    with pytest.raises(TypeError, match="state made by its init"):
        opt.stateless_apply({"not": "a state"}, [jnp.ones(2)], [jnp.ones(2)])
    with pytest.raises(TypeError, match="floating"):
        opt.init([jnp.ones(2, jnp.int32)])
    lso = optimizers.LossScaleOptimizer(opt)
    with pytest.raises(TypeError, match="state made by its init"):
        lso.stateless_apply(opt.init([jnp.ones(2)]), [jnp.ones(2)], [jnp.ones(2)])
    with pytest.raises(TypeError, match="floating loss"):
        lso.scale_loss(jnp.asarray(3))
    accumulating = optimizers.SGD(gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        accumulating.stateless_apply(opt.init([jnp.ones(2)]), [jnp.ones(2)], [jnp.ones(2)])


def test_import_layers_and_dtypepolicy_without_optax():
    code = "import sys; sys.modules['optax'] = None; import dtypepolicy, layers; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.stdout.strip() == "ok", result.stderr


def test_scale_loss_without_a_state_under_a_trace_is_refused():
    optimizer = optimizers.LossScaleOptimizer(optimizers.SGD(0.1))
    with pytest.raises(RuntimeError, match=r"scale_loss\(loss\) without a state cannot run inside jax.jit"):
        jax.jit(optimizer.scale_loss)(jnp.ones(()))
    assert float(optimizer.scale_loss(jnp.ones(()))) == 2.0**15  # eagerly it reads the stateful scale
