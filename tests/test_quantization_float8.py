"""Float8 numerics of Dense/EinsumDense (SPEC §6) against independent NumPy references.

Every expected value here is computed in NumPy (float64, rounded with `ml_dtypes` where a format
says so) from the formulas of SPEC §6 written out below, never by calling `dtypepolicy.float8` or
the quantization strategies:

- q/dq: `q = float8(saturate(x / s))`, `x_hat = q * s`, `x` and `s` first rounded to the compute
  dtype, the quotient rounded once (our rule: in float32), the product rounded to the compute dtype.
- delayed recipe: new scale `1 / (dtype_max / max(history) / 2**margin)` when that amax is finite
  and positive, else the old scale; history `roll(h, -1)`, then `h[0] = max|x|`. The new scale is
  taken from the history BEFORE this step's amax goes in, so step t quantizes with the scale of
  step t-1 and the first steps use 1.0.
- forward: the q/dq'd operands multiplied in float64, plus the bias, rounded once to the compute
  dtype; backward: the output gradient q/dq'd in E5M2, kernel gradient `x_hat^T g_hat` rounded to
  the compute dtype (the dtype of the kernel operand), bias gradient the float32 sum.

`tests/fixtures/keras_float8_dense.json` records real Keras 3 training (see its generator).
"""

import json
import pathlib
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import dtypepolicy as dp
import layers
from layers import Layer, losses, optimizers, training
from tests._tolerances import assert_close

FIXTURE = json.loads((pathlib.Path(__file__).parent / "fixtures" / "keras_float8_dense.json").read_text())

E4M3, E5M2, BF16 = ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2, ml_dtypes.bfloat16
E4M3_MAX, E5M2_MAX = 448.0, 57344.0  # hand-known: 1.75 * 2**8 and 1.75 * 2**15
STATE = (
    "inputs_scale",
    "kernel_scale",
    "outputs_grad_scale",
    "inputs_amax_history",
    "kernel_amax_history",
    "outputs_grad_amax_history",
)
ORDER = ("kernel", "bias", *STATE)
COMPUTE = {"float32": np.float32, "mixed_bfloat16": BF16, "mixed_float16": np.float16}
SOURCES = ("float32", "mixed_bfloat16")  # the two sources of the training sweeps
ALL_SOURCES = tuple(COMPUTE)
STATE_RTOL = 1e-5  # the "same scales and histories" tolerance


def policy(source, **options):
    return dp.QuantizedFloat8DTypePolicy("float8", source, **options)


# --- NumPy references ---------------------------------------------------------------------------


def rnd(x, dtype):
    """`x` rounded to `dtype` (float64 out); float64 -> float32 first, as a float32 program would hold it."""
    x = np.asarray(x, np.float64)
    return x if dtype is np.float64 else x.astype(np.float32).astype(dtype).astype(np.float64)


def qdq_ref(x, scale, fmt, compute, quotient=np.float32):
    limit = float(ml_dtypes.finfo(fmt).max)
    s, x = rnd(scale, compute), rnd(x, compute)
    q = np.clip(rnd(x / s, quotient), -limit, limit)
    return rnd(rnd(q, fmt) * s, compute)


def scale_ref(amax, old, dtype_max, margin=0):
    amax = np.float32(amax)
    if np.isfinite(amax) and amax > 0:
        return np.float32(1) / (np.float32(dtype_max) / amax / np.float32(2.0**margin))
    return np.float32(old)


def history_ref(amax, history):
    new = np.roll(np.asarray(history, np.float32), -1)
    new[0] = amax
    return new


def amax_ref(x):
    return np.float32(np.max(np.abs(x)))


def train_ref(
    kernel,
    bias,
    batches,
    targets,
    *,
    compute,
    loss,
    rule="ours",
    recipe="delayed",
    equation="ab,bc->ac",
    length=3,
    margin=0,
    lr=0.05,
):
    """SGD steps of a float8 projection (bias on the last axis); one dict of the values per step.

    `recipe="delayed"`: the eight values; `"current"`: kernel and bias (each tensor's scale from
    its own amax in the same step, no state).

    `rule="ours"`: the quotient rounded in float32, the product and bias summed in float64 and
    rounded once, float32 bias gradient (SPEC §5/§6). `rule="keras"`: Keras 3's rule as read in its
    source (keras_float8.md): the quotient rounded to the compute dtype, the product rounded to the
    compute dtype before the bias, the bias rounded through bfloat16 under float32 and added in
    the compute dtype, and (from that cast) a bfloat16 bias gradient.
    """
    kernel, bias = np.asarray(kernel, np.float32), np.asarray(bias, np.float32)
    scales, histories = [np.float32(1)] * 3, [np.zeros(length, np.float32) for _ in range(3)]
    quotient = compute if rule == "keras" else np.float32
    x_letters, k_letters, out_letters = re.split(",|->", equation)
    out = []
    for x, target in zip(batches, targets, strict=True):
        x_c, k_c = rnd(x, compute), rnd(kernel, compute)
        if recipe == "current":
            scales[:2] = [scale_ref(amax_ref(v), 1.0, E4M3_MAX, margin) for v in (x_c, k_c)]
        x_hat = qdq_ref(x_c, scales[0], E4M3, compute, quotient)
        k_hat = qdq_ref(k_c, scales[1], E4M3, compute, quotient)
        if rule == "keras":
            y = rnd(rnd(x_hat @ k_hat, compute) + rnd(rnd(bias, BF16), compute), compute)
        else:
            y = rnd(np.einsum(equation, x_hat, k_hat) + bias, compute)
        if loss == "linear":  # sum(y * w): the output gradient is w, exactly
            grad = rnd(target, compute)
        else:  # mean((y - t)**2) over all entries
            grad = rnd(rnd(2.0 * (rnd(y, np.float32) - target) / y.size, np.float32), compute)
        new_scales = [
            scale_ref(h.max(), s, m, margin)
            for h, s, m in zip(histories, scales, (E4M3_MAX, E4M3_MAX, E5M2_MAX), strict=True)
        ]
        histories = [history_ref(amax_ref(v), h) for v, h in zip((x_c, k_c, grad), histories, strict=True)]
        if recipe == "current":
            scales[2] = scale_ref(amax_ref(grad), 1.0, E5M2_MAX, margin)
        g_hat = qdq_ref(grad, scales[2], E5M2, compute, quotient)
        kernel_grad = rnd(np.einsum(f"{x_letters},{out_letters}->{k_letters}", x_hat, g_hat), compute)
        bias_grad = rnd(grad.reshape(-1, grad.shape[-1]).sum(0), BF16 if rule == "keras" else np.float32)
        kernel = (kernel - np.float32(lr) * kernel_grad.astype(np.float32)).astype(np.float32)
        bias = (bias - np.float32(lr) * bias_grad.astype(np.float32)).astype(np.float32)
        if recipe == "current":
            out.append({"kernel": kernel, "bias": bias})
            continue
        scales = new_scales
        out.append(dict(zip(ORDER, (kernel, bias, *scales, *histories), strict=True)))
    return out


# --- our side ------------------------------------------------------------------------------------


def linear_loss(y_true, y_pred):
    """sum(y_pred * y_true): its gradient with respect to y_pred is y_true, exactly."""
    return jnp.sum(y_pred.astype(jnp.float32) * y_true)


LOSSES = {"linear": linear_loss, "mse": losses.MeanSquaredError()}


def make_dense(source, kernel, bias, **options):
    dense = layers.Dense(kernel.shape[1], dtype=policy(source, **options))
    dense.build((None, kernel.shape[0]))
    dense.kernel.assign(kernel)
    dense.bias.assign(bias)
    return dense


def train_ours(dense, loss, batches, targets, *, lr=0.05, via="train_step"):
    """Trains `dense` with SGD; the eight trainable values (by name) after each step."""
    names = [v.name for v in dense.trainable_variables]
    loss_fn = LOSSES[loss]
    out = []
    if via == "train_step":
        step = training.make_train_step(dense, loss_fn, optimizers.SGD(lr))
        state = step.init_state()
        for x, y in zip(batches, targets, strict=True):
            state, _ = step.jitted(state, (jnp.asarray(x), jnp.asarray(y)))
            out.append(dict(zip(names, map(np.asarray, state.trainable), strict=True)))
        return out
    optimizer = optimizers.SGD(lr)
    optimizer.build(dense.trainable_variables)
    values = [jnp.array(v.value) for v in dense.trainable_variables]
    opt_state = optimizer.init(values)

    @jax.jit
    def step(values, opt_state, x, y):
        def objective(values):
            outputs, _ = dense.stateless_call(values, [], x, training=True)
            return loss_fn(y, outputs)

        return optimizer.stateless_apply(opt_state, jax.grad(objective)(values), values)

    for x, y in zip(batches, targets, strict=True):
        values, opt_state = step(values, opt_state, jnp.asarray(x), jnp.asarray(y))
        out.append(dict(zip(names, map(np.asarray, values), strict=True)))
    return out


def assert_state_equal(actual, expected, names=STATE, rtol=STATE_RTOL, what=""):
    for name in names:
        np.testing.assert_allclose(actual[name], expected[name], rtol=rtol, atol=0, err_msg=f"{what} {name}")


def assert_weights_close(actual, expected, rtol=1e-5, atol=1e-6, what=""):
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(actual[name], expected[name], rtol=rtol, atol=atol, err_msg=f"{what} {name}")


# --- 1. k steps on generated data against the NumPy recipe ---------------------------------------

GEN_STEPS = 5
GEN_FACTORS = (4.0, 1.0, 0.5, 0.25, 2.0)  # the largest amax comes first and leaves the L=3 window at step 3


def generated_task(seed=7, batch=6, features=7, units=3):
    rng = np.random.default_rng(seed)
    kernel = (rng.standard_normal((features, units)) * 0.4).astype(np.float32)
    bias = (rng.standard_normal(units) * 0.3).astype(np.float32)
    xs = [(rng.standard_normal((batch, features)) * f).astype(np.float32) for f in GEN_FACTORS]
    # Multiples of 1/8 times a power of two: exact in bfloat16, so the output gradient is w exactly.
    ws = [
        (np.round(rng.standard_normal((batch, units)) * 8) / 8 * 2.0 ** (t % 3 - 1)).astype(np.float32)
        for t in range(GEN_STEPS)
    ]
    return kernel, bias, xs, ws


@pytest.mark.parametrize(
    "source, via, margin",
    [
        ("float32", "train_step", 0),
        ("mixed_bfloat16", "train_step", 0),
        ("mixed_bfloat16", "grad", 0),
        ("float32", "grad", 1),
    ],
)
def test_delayed_state_after_k_steps_equals_the_numpy_recipe(source, via, margin):
    kernel, bias, xs, ws = generated_task()
    dense = make_dense(source, kernel, bias, amax_history_length=3, margin=margin)
    ours = train_ours(dense, "linear", xs, ws, via=via)
    expected = train_ref(kernel, bias, xs, ws, compute=COMPUTE[source], loss="linear", margin=margin)
    for t in range(GEN_STEPS):
        assert_state_equal(ours[t], expected[t], what=f"step {t}")
        assert_weights_close(ours[t], expected[t], what=f"step {t}")


def test_einsum_dense_delayed_state_after_k_steps_equals_the_numpy_recipe():
    kernel, bias, xs, ws = generated_task()
    xs, ws = [x.reshape(2, 3, -1) for x in xs], [w.reshape(2, 3, -1) for w in ws]
    layer = layers.EinsumDense(
        "abc,cd->abd", (3, 3), bias_axes="d", dtype=policy("mixed_bfloat16", amax_history_length=3)
    )
    layer.build((2, 3, 7))
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)
    ours = train_ours(layer, "linear", xs, ws, via="grad")
    expected = train_ref(kernel, bias, xs, ws, compute=BF16, loss="linear", equation="abc,cd->abd")
    for t in range(GEN_STEPS):
        assert_state_equal(ours[t], expected[t], what=f"step {t}")
        assert_weights_close(ours[t], expected[t], what=f"step {t}")


@pytest.mark.parametrize("source", SOURCES)
def test_current_scaling_weights_after_k_steps_equal_the_numpy_recipe(source):
    kernel, bias, xs, ws = generated_task()
    dense = make_dense(source, kernel, bias, recipe="current")
    assert [v.name for v in dense.weights] == ["kernel", "bias"]
    ours = train_ours(dense, "linear", xs, ws)
    expected = train_ref(kernel, bias, xs, ws, compute=COMPUTE[source], loss="linear", recipe="current")
    for t in range(GEN_STEPS):
        assert_weights_close(ours[t], expected[t], what=f"step {t}")


def test_delayed_timeline_first_steps_use_one_and_the_scale_lags_one_step():
    """Hand-written timeline (L=3): the scale returned by step t comes from the amaxes of steps < t."""
    kernel, bias, xs, ws = generated_task()
    dense = make_dense("float32", kernel, bias, amax_history_length=3)
    ours = train_ours(dense, "linear", xs, ws)
    a = [amax_ref(x) for x in xs]
    # The history after step t holds amax_t first, then the two before it, oldest last.
    assert ours[0]["inputs_amax_history"].tolist() == [a[0], 0, 0]
    assert ours[1]["inputs_amax_history"].tolist() == [a[1], 0, a[0]]
    assert ours[2]["inputs_amax_history"].tolist() == [a[2], a[0], a[1]]
    assert ours[3]["inputs_amax_history"].tolist() == [a[3], a[1], a[2]]
    # At step 0 the history before the step is all zeros: the scale stays 1.0 (steps 0 and 1 use 1.0).
    assert ours[0]["inputs_scale"] == 1.0
    # After step t the scale is from the history before step t: [a0, 0, 0] at t = 1.
    assert ours[1]["inputs_scale"] == np.float32(1) / (np.float32(448) / a[0])
    assert ours[2]["inputs_scale"] == np.float32(1) / (np.float32(448) / max(a[0], a[1]))
    # At t = 4 the window before the step is [a3, a1, a2]: a0 (the largest) has left it.
    assert ours[4]["inputs_scale"] == np.float32(1) / (np.float32(448) / max(a[1], a[2], a[3]))
    assert max(a[1], a[2], a[3]) < a[0]


# --- 2. against Keras 3 (the golden fixture) -----------------------------------------------------


def decode(value):
    return np.asarray(np.vectorize(float, otypes=[np.float64])(np.asarray(value, object)), np.float32)


DATA = FIXTURE["data"]
K_KERNEL, K_BIAS = decode(DATA["initial_kernel"]), decode(DATA["initial_bias"])
K_XS = [decode(x) for x in DATA["x"]]
K_W, K_TARGETS = decode(DATA["w"]), decode(DATA["targets"])
K_LR = FIXTURE["meta"]["optimizer"]["learning_rate"]
K_LENGTH = FIXTURE["meta"]["amax_history_length"]
SCENARIOS = {(s["source_policy"], s["loss"]): s for s in FIXTURE["scenarios"]}


def keras_steps(scenario):
    return [{name: decode(step[name]) for name in ORDER} for step in scenario["steps"]]


def keras_task(loss):
    targets = K_W if loss == "linear" else K_TARGETS
    return K_XS, [targets] * len(K_XS)


@pytest.fixture(scope="module")
def ours_on_keras_data():
    """Our Dense trained like the fixture's, per (source, loss); computed once for the module."""
    results = {}
    for source, loss in SCENARIOS:
        xs, ys = keras_task(loss)
        dense = make_dense(source, K_KERNEL, K_BIAS, amax_history_length=K_LENGTH)
        results[source, loss] = train_ours(dense, loss, xs, ys, lr=K_LR)
    return results


def test_fixture_scenarios_are_the_ones_these_tests_expect():
    assert sorted(SCENARIOS) == [
        ("float32", "linear"),
        ("float32", "mse"),
        ("mixed_bfloat16", "linear"),
        ("mixed_bfloat16", "mse"),
    ]
    assert FIXTURE["meta"]["optimizer"] == {"class": "SGD", "learning_rate": 0.05, "momentum": 0.0}
    assert all(s["amax_history_length"] == 3 for s in FIXTURE["scenarios"])


@pytest.mark.parametrize("source", SOURCES)
def test_linear_loss_state_matches_keras_at_every_step(ours_on_keras_data, source):
    """With sum(y * w) the output gradient is w whatever the forward computes: all six match Keras."""
    expected = keras_steps(SCENARIOS[source, "linear"])
    for t, (ours, keras) in enumerate(zip(ours_on_keras_data[source, "linear"], expected, strict=True)):
        assert_state_equal(ours, keras, what=f"step {t}")


def test_linear_loss_float32_weights_match_keras(ours_on_keras_data):
    """Under float32 the quotient is float32 in both and w is exact: kernel and bias match too."""
    expected = keras_steps(SCENARIOS["float32", "linear"])
    for t, (ours, keras) in enumerate(zip(ours_on_keras_data["float32", "linear"], expected, strict=True)):
        assert_weights_close(ours, keras, what=f"step {t}")


@pytest.mark.parametrize("source, loss", list(SCENARIOS))
def test_keras_rule_written_out_reproduces_the_fixture(source, loss):
    """The NumPy rendering of Keras's rule gives Keras's six state variables (so the differences are known).

    The kernel to 1e-4 absolute: under mixed_bfloat16 with mse Keras forms the bfloat16 output
    gradient in an order this rendering does not reproduce bit for bit (one column at step 4).
    """
    xs, ys = keras_task(loss)
    expected = train_ref(K_KERNEL, K_BIAS, xs, ys, compute=COMPUTE[source], loss=loss, rule="keras", lr=K_LR)
    for t, (ref, keras) in enumerate(zip(expected, keras_steps(SCENARIOS[source, loss]), strict=True)):
        assert_state_equal(ref, keras, what=f"step {t}")
        np.testing.assert_allclose(ref["kernel"], keras["kernel"], rtol=1e-5, atol=1e-4, err_msg=f"step {t}")


@pytest.mark.parametrize("source, loss", list(SCENARIOS))
def test_our_training_on_keras_data_equals_our_rule_written_out(ours_on_keras_data, source, loss):
    xs, ys = keras_task(loss)
    expected = train_ref(K_KERNEL, K_BIAS, xs, ys, compute=COMPUTE[source], loss=loss, lr=K_LR)
    for t, (ours, ref) in enumerate(zip(ours_on_keras_data[source, loss], expected, strict=True)):
        assert_state_equal(ours, ref, what=f"step {t}")
        assert_weights_close(ours, ref, what=f"step {t}")


def test_bfloat16_linear_kernel_differs_from_keras_only_through_the_quotient_rounding(ours_on_keras_data):
    """Under mixed_bfloat16 Keras rounds x / s to bfloat16 before float8 (two roundings); we round once.

    While every scale is 1 (steps 0 and 1, and while x / s stays exact) the kernels agree; once
    the scales move, the few entries whose double rounding differs move the kernel by a
    float8-sized step of their gradient term. Our rule with Keras's quotient reproduces Keras.
    """
    ours, keras = ours_on_keras_data["mixed_bfloat16", "linear"], keras_steps(SCENARIOS["mixed_bfloat16", "linear"])
    for t in (0, 1):
        assert_weights_close(ours[t], keras[t], what=f"step {t}")
    assert not np.allclose(ours[-1]["kernel"], keras[-1]["kernel"], rtol=1e-5, atol=1e-6)


def test_mse_first_step_output_gradient_amax_differs_by_the_forward_difference_only(ours_on_keras_data):
    """mse: the output gradient 2 (y - t) / N depends on the forward, where we differ on purpose.

    Under float32 Keras adds the bias rounded through bfloat16 (|b - bf16(b)| <= 2**-9 |b|), so
    after step 0 (scales 1.0, same kernel) the recorded output-gradient amax differs by at most
    2 * 2**-9 * max|b| / N (plus float32 noise); the inputs and kernel state still match at 1e-5.
    Under mixed_bfloat16 Keras rounds the product to bfloat16 before adding the bfloat16 bias (two
    roundings, ours one, each at most half an ulp of |y| <= 2**-9 |y|), and both round the gradient
    itself to bfloat16: the bound is 2 * 2 * 2**-9 * max|y| / N plus one bfloat16 ulp of the amax.
    Later steps compound the difference through the kernel; the rules written out (tests above)
    reproduce each side at 1e-5.
    """
    n = K_TARGETS.size
    for source in SOURCES:
        ours, keras = ours_on_keras_data[source, "mse"], keras_steps(SCENARIOS[source, "mse"])
        for t in range(len(keras)):
            assert_state_equal(ours[t], keras[t], names=STATE[0:1] + STATE[3:4], what=f"{source} step {t}")
        if source == "float32":
            bound = 2 * 2.0**-9 * np.abs(K_BIAS).max() / n
        else:
            y0 = decode(SCENARIOS[source, "mse"]["forward_x0_training_false"])
            amax = keras[0]["outputs_grad_amax_history"][0]
            bound = 2 * 2 * 2.0**-9 * np.abs(y0).max() / n + 2.0 ** (np.floor(np.log2(amax)) - 7)
        gap = abs(ours[0]["outputs_grad_amax_history"][0] - keras[0]["outputs_grad_amax_history"][0])
        assert 0 < gap <= bound + 1e-7, (source, gap, bound)
        assert_state_equal(ours[0], keras[0], names=STATE[:5], what=source)


def state_gradients(layer, x, w, training):
    values = [v.value for v in layer.trainable_variables]

    def objective(values):
        outputs, _ = layer.stateless_call(values, [], jnp.asarray(x), training=training)
        return linear_loss(jnp.asarray(w), outputs)

    return dict(zip([v.name for v in layer.trainable_variables], jax.jit(jax.grad(objective))(values), strict=True))


def test_gradients_with_training_true_match_keras_and_with_training_false_differ_on_purpose():
    """The fixture's gradients of sum(y * w) at x_0 (float32): with training=True every one of
    the eight matches Keras (state "gradients" = the new state). With training=False Keras gives 0
    for the inputs/kernel state and still advances the output-gradient state; we give -inf
    ("not updated") for all six."""
    keras = FIXTURE["gradients_of_state_variables"]
    dense = make_dense("float32", K_KERNEL, K_BIAS, amax_history_length=K_LENGTH)
    ours = state_gradients(dense, K_XS[0], K_W, training=True)
    for name in ORDER:
        np.testing.assert_allclose(ours[name], decode(keras["training_True"][name]), rtol=1e-6, err_msg=name)
    ours = state_gradients(dense, K_XS[0], K_W, training=False)
    assert decode(keras["training_False"]["inputs_scale"]) == 0.0  # what an optimizer would assign in Keras
    assert decode(keras["training_False"]["outputs_grad_amax_history"])[0] == amax_ref(K_W)
    for name in STATE:
        assert np.all(np.asarray(ours[name]) == -np.inf), name
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(ours[name], decode(keras["training_False"][name]), rtol=1e-6, err_msg=name)


class TwoCalls(Layer):
    """Calls one Dense on x and on 2x and adds the outputs (the fixture's shared-layer model)."""

    def __init__(self, dense, **kwargs):
        super().__init__(**kwargs)
        self.dense = dense

    def call(self, inputs, training=None):
        return self.dense(inputs, training=training) + self.dense(inputs * 2.0, training=training)


def test_shared_layer_combines_by_max_where_keras_sums():
    """Keras adds the two uses' "gradients" (scales become 2.0); we take the element-wise max.

    Both uses see the same old state, so their new scales are equal and the max is either one;
    the input history records the larger amax, that of 2x (Keras: amax(x) + amax(2x)).
    """
    keras = FIXTURE["shared_layer_twice"]["steps"]
    assert [decode(keras[0][name]) for name in STATE[:3]] == [2.0, 2.0, 2.0]  # the Keras sum, recorded
    assert decode(keras[0]["inputs_amax_history"])[0] == pytest.approx(3 * amax_ref(K_XS[0]), rel=1e-6)
    dense = make_dense("float32", K_KERNEL, K_BIAS, amax_history_length=K_LENGTH)
    model = TwoCalls(dense)
    model(jnp.asarray(K_XS[0]))
    step = training.make_train_step(model, linear_loss, optimizers.SGD(K_LR))
    state = step.init_state()
    names = [v.name for v in model.trainable_variables]
    scales = [np.float32(1)] * 3
    histories = [np.zeros(K_LENGTH, np.float32) for _ in range(3)]
    kernel = K_KERNEL
    for t in range(2):
        state, _ = step.jitted(state, (jnp.asarray(K_XS[t]), jnp.asarray(K_W)))
        ours = dict(zip(names, map(np.asarray, state.trainable), strict=True))
        maxima = (E4M3_MAX, E4M3_MAX, E5M2_MAX)
        scales = [scale_ref(h.max(), s, m) for h, s, m in zip(histories, scales, maxima, strict=True)]
        # Inputs: max(amax(x), amax(2x)); kernel: the one kernel; output gradient: both uses get w.
        amaxes = (amax_ref(2 * K_XS[t]), amax_ref(kernel), amax_ref(K_W))
        histories = [history_ref(a, h) for a, h in zip(amaxes, histories, strict=True)]
        for name, value in zip(STATE, (*scales, *histories), strict=True):
            np.testing.assert_array_equal(ours[name], value, err_msg=f"step {t} {name}")
        if t == 0:  # the first step quantizes with scales 1.0 in both libraries: the kernels agree
            np.testing.assert_allclose(ours["kernel"], decode(keras[0]["kernel"]), rtol=1e-5, atol=1e-6)
        kernel = ours["kernel"]
    assert scales[0] != 1.0  # step 1 returned scales from step 0's history


# --- 3. the six variables -----------------------------------------------------------------------


@pytest.mark.parametrize("source", ALL_SOURCES)
def test_state_variables_are_float32_never_autocast_trainable_overwritten_in_order(source):
    dense = layers.Dense(3, dtype=policy(source, amax_history_length=5))
    dense.build((None, 4))
    assert [v.name for v in dense.weights] == list(ORDER)
    assert [v.name for v in dense.trainable_variables] == list(ORDER)
    state = [getattr(dense, name) for name in STATE]
    for variable in state:
        assert variable.dtype == "float32"
        assert variable.trainable and variable.overwrite_with_gradient and not variable.autocast
    assert [v.shape for v in state] == [(), (), (), (5,), (5,), (5,)]
    assert [float(v.value) for v in state[:3]] == [1.0, 1.0, 1.0]
    assert all(np.asarray(v.value).tolist() == [0.0] * 5 for v in state[3:])
    assert dense.kernel.dtype == dense.bias.dtype == "float32" and dense.kernel.trainable
    for scope in ("bfloat16", "float16"):
        with dp.autocast_scope(scope):
            assert all(v.value.dtype == jnp.float32 for v in state)
            assert dense.kernel.value.dtype == scope  # the kernel does autocast


@pytest.mark.parametrize("source", ALL_SOURCES)
def test_state_gradients_are_float32_inside_an_autocast_scope(source):
    dense = layers.Dense(3, dtype=policy(source, amax_history_length=2))
    dense.build((None, 4))
    values = [v.value for v in dense.trainable_variables]

    def objective(values):
        outputs, _ = dense.stateless_call(values, [], jnp.ones((2, 4)), training=True)
        return jnp.sum(outputs.astype(jnp.float32))

    with dp.autocast_scope("bfloat16"):
        grads = jax.jit(jax.grad(objective))(values)
    for name, grad in zip(ORDER, grads, strict=True):
        if name in STATE:
            assert grad.dtype == jnp.float32, name
    assert np.asarray(grads[ORDER.index("inputs_amax_history")]).tolist() == [1.0, 0.0]


def test_history_length_is_honoured_and_margin_one_doubles_every_scale():
    kernel, bias, xs, ws = generated_task()
    plain = train_ours(make_dense("float32", kernel, bias, amax_history_length=4), "linear", xs[:3], ws[:3])
    doubled = train_ours(make_dense("float32", kernel, bias, amax_history_length=4, margin=1), "linear", xs[:3], ws[:3])
    assert plain[-1]["inputs_amax_history"].shape == (4,)
    # After step 1 the scales come from step 0's amaxes; both runs have seen the same data then.
    for name in STATE[:3]:
        assert doubled[1][name] == 2 * plain[1][name], name
        assert plain[1][name] != 1.0


# --- 4. forward numerics ------------------------------------------------------------------------

LAYER_CASES = {
    "dense": (lambda p: layers.Dense(5, dtype=p), (6, 4), "...i,io->...o"),
    "einsum_3d": (
        lambda p: layers.EinsumDense("abc,cd->abd", (3, 5), bias_axes="d", dtype=p),
        (2, 3, 4),
        "abc,cd->abd",
    ),
    "einsum_split": (
        lambda p: layers.EinsumDense("abc,cde->abde", (3, 2, 5), bias_axes="d", dtype=p),
        (2, 3, 4),
        "abc,cde->abde",
    ),
}
SET_SCALES = {"inputs_scale": 0.02, "kernel_scale": 0.0025}  # a few inputs exceed 448 * 0.02 and saturate


def built_layer(case, source, recipe="delayed"):
    make, shape, _ = LAYER_CASES[case]
    options = {"amax_history_length": 3} if recipe == "delayed" else {"recipe": recipe}
    layer = make(policy(source, **options))
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    layer(jnp.asarray(x))  # builds
    layer.kernel.assign(rng.standard_normal(layer.kernel.shape).astype(np.float32) * 0.5)
    layer.bias.assign(rng.standard_normal(layer.bias.shape).astype(np.float32))
    return layer, x


def forward_ref(layer, x, equation, compute, scales):
    x_hat = qdq_ref(x, scales[0], E4M3, compute, np.float64)
    k_hat = qdq_ref(np.asarray(layer.kernel.value, np.float32), scales[1], E4M3, compute, np.float64)
    return rnd(np.einsum(equation, x_hat, k_hat) + np.asarray(layer.bias.value, np.float64), compute)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("source", ALL_SOURCES)
@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_delayed_forward_equals_numpy_qdq_then_float64_product_rounded_once(case, source, jit):
    layer, x = built_layer(case, source)
    for name, value in SET_SCALES.items():
        getattr(layer, name).assign(value)
    compute = COMPUTE[source]
    expected = forward_ref(layer, x, LAYER_CASES[case][2], compute, (0.02, 0.0025))
    assert np.abs(x).max() > 448 * 0.02  # saturation is exercised
    if jit:
        values = [v.value for v in layer.trainable_variables]
        outputs, _ = jax.jit(lambda v, x: layer.stateless_call(v, [], x))(values, jnp.asarray(x))
    else:
        outputs = layer(jnp.asarray(x))
    assert outputs.dtype == jnp.dtype(compute)
    assert_close(outputs, expected, compute)


@pytest.mark.parametrize("source", SOURCES)
def test_current_scaling_outputs_and_gradients_equal_numpy_qdq_with_per_tensor_scales(source):
    compute = COMPUTE[source]
    layer, x = built_layer("dense", source, recipe="current")
    assert [v.name for v in layer.weights] == ["kernel", "bias"]  # no state variables
    kernel = np.asarray(layer.kernel.value, np.float32)
    bias = np.asarray(layer.bias.value, np.float32)
    w = (np.round(np.random.default_rng(5).standard_normal((6, 5)) * 8) / 8).astype(np.float32)
    x_c, k_c = rnd(x, compute), rnd(kernel, compute)
    x_hat = qdq_ref(x_c, amax_ref(x_c) / E4M3_MAX, E4M3, compute, np.float64)
    k_hat = qdq_ref(k_c, amax_ref(k_c) / E4M3_MAX, E4M3, compute, np.float64)
    g_hat = qdq_ref(w, amax_ref(w) / E5M2_MAX, E5M2, compute, np.float64)
    y_ref = rnd(x_hat @ k_hat + bias, compute)

    def objective(values, x):
        outputs, _ = layer.stateless_call(values, [], x, training=True)
        return linear_loss(jnp.asarray(w), outputs), outputs

    values = [v.value for v in layer.trainable_variables]
    (grads, x_grad), outputs = jax.jit(jax.grad(objective, argnums=(0, 1), has_aux=True))(values, jnp.asarray(x))
    assert_close(outputs, y_ref, compute)
    assert_close(grads[0], rnd(x_hat.T @ g_hat, compute), compute)
    np.testing.assert_array_equal(grads[1], w.sum(0))  # the bias gradient: the float32 sum of w
    assert_close(x_grad, rnd(g_hat @ k_hat.T, compute), compute)


def test_training_false_leaves_every_state_gradient_not_updated():
    """training=False: all six "gradients" are -inf ("not updated"), which the optimizer keeps.

    Keras gives zeros here for the inputs/kernel state (an optimizer would then set those scales
    to 0) and real values for the output-gradient state; we leave all six alone.
    """
    layer, x = built_layer("dense", "mixed_bfloat16")
    values = [v.value for v in layer.trainable_variables]

    def objective(values):
        outputs, _ = layer.stateless_call(values, [], jnp.asarray(x), training=False)
        return jnp.sum(outputs.astype(jnp.float32))

    grads = dict(zip(ORDER, jax.jit(jax.grad(objective))(values), strict=True))
    for name in STATE:
        assert np.all(np.asarray(grads[name]) == -np.inf), name
    optimizer = optimizers.SGD(0.1)
    optimizer.build(layer.trainable_variables)
    new, _ = optimizer.stateless_apply(optimizer.init(values), [grads[n] for n in ORDER], values)
    for name, before, after in zip(ORDER, values, new, strict=True):
        if name in STATE:
            np.testing.assert_array_equal(after, before, err_msg=name)


@pytest.mark.parametrize("source", SOURCES)
def test_inputs_of_1e6_give_finite_outputs_and_gradients_over_steps(source):
    layer, _ = built_layer("dense", source)
    x = jnp.full((6, 4), 1e6, jnp.float32)
    outputs = layer(x)
    assert np.all(np.isfinite(np.asarray(outputs, np.float32)))
    step = training.make_train_step(layer, linear_loss, optimizers.SGD(1e-9))
    state = step.init_state()
    for _ in range(3):
        state, metrics = step.jitted(state, (x, jnp.ones((6, 5), jnp.float32)))
        assert np.isfinite(float(metrics["loss"]))
        assert all(np.all(np.isfinite(np.asarray(v))) for v in state.trainable)
    values = dict(zip(ORDER, state.trainable, strict=True))
    # The scale after step 2 comes from the 1e6 amaxes of the first steps (as float32 saw them).
    compute = COMPUTE[source]
    assert float(values["inputs_scale"]) == scale_ref(amax_ref(rnd(1e6, compute)), 1.0, E4M3_MAX)


@pytest.mark.parametrize("recipe", ["delayed", "current"])
def test_float16_compute_keeps_a_gradient_scale_that_float16_cannot_hold(recipe):
    """Regression: under mixed_float16 the E5M2 scale of an output gradient with amax 2**-10 is
    2**-10 / 57344 ~ 1.7e-8, below float16's smallest subnormal half-step (2**-25). Rounded to
    float16 it became 0, so q/dq gave 0 * inf -> 0 for every gradient entry and 0 / 0 -> NaN for
    the zero ones: the kernel gradient was all 0 and NaN. Now such a scale is raised to 2**-14,
    float16's smallest normal number: w / 2**-14 still lies inside E5M2's range (amax < 3.5).
    """
    layer, x = built_layer("dense", "mixed_float16", recipe=recipe)
    w = np.round(np.random.default_rng(9).standard_normal((6, 5)) * 4) / 4 * 2.0**-12
    w[0, 0] = 0.0
    w.flat[np.argmax(np.abs(w))] = 2.0**-10  # the amax
    w = w.astype(np.float32)
    grad_scale = np.float32(2.0**-10) / np.float32(E5M2_MAX)
    if recipe == "delayed":  # the scale a step with this amax computes; the others stay 1.0
        layer.outputs_grad_scale.assign(grad_scale)
        in_scale = 1.0
    else:
        in_scale = amax_ref(rnd(x, np.float16)) / E4M3_MAX
    values = [v.value for v in layer.trainable_variables]

    def objective(values):
        outputs, _ = layer.stateless_call(values, [], jnp.asarray(x), training=True)
        return linear_loss(jnp.asarray(w), outputs)

    kernel_grad = np.asarray(jax.jit(jax.grad(objective))(values)[0], np.float64)  # x_hat^T g_hat: no kernel scale
    x_hat = qdq_ref(x, in_scale, E4M3, np.float16, np.float64)
    g_hat = qdq_ref(w, max(grad_scale, 2.0**-14), E5M2, np.float16, np.float64)
    assert np.all(np.isfinite(kernel_grad))
    assert_close(kernel_grad, rnd(x_hat.T @ g_hat, np.float16), "float16")
    # The raised scale keeps E5M2's relative precision (half an ulp, 2**-3) on every entry, as
    # the exact scale does: w / 2**-14 is a normal E5M2 number.
    assert np.all(np.abs(g_hat - w) <= 2.0**-3 * np.abs(w))
    assert np.all(np.abs(qdq_ref(w, grad_scale, E5M2, np.float64, np.float64) - w) <= 2.0**-3 * np.abs(w))


@pytest.mark.parametrize("bad", [0.0, np.inf, np.nan], ids=["zero", "inf", "nan"])
def test_an_unusable_amax_keeps_the_old_scale(bad):
    layer, x = built_layer("dense", "float32")
    layer.inputs_scale.assign(0.25)
    layer.inputs_amax_history.assign(jnp.asarray([bad, 0.0, 0.0] if bad != 0.0 else [0.0, 0.0, 0.0], jnp.float32))
    values = [v.value for v in layer.trainable_variables]

    def objective(values):
        outputs, _ = layer.stateless_call(values, [], jnp.asarray(x), training=True)
        return jnp.sum(outputs.astype(jnp.float32))

    grads = dict(zip(ORDER, jax.jit(jax.grad(objective))(values), strict=True))
    assert float(grads["inputs_scale"]) == 0.25
    assert np.asarray(grads["inputs_amax_history"]).tolist()[0] == amax_ref(x)


def test_an_inf_in_the_inputs_is_recorded_and_then_keeps_the_scale():
    layer, x = built_layer("dense", "float32")
    x = x.copy()
    x[0, 0] = np.inf
    step = training.make_train_step(layer, linear_loss, optimizers.SGD(0.0))
    state = step.init_state()
    ones = jnp.ones((6, 5), jnp.float32)
    state, _ = step.jitted(state, (jnp.asarray(x), ones))
    assert float(state.trainable[ORDER.index("inputs_amax_history")][0]) == np.inf
    state, _ = step.jitted(state, (jnp.asarray(x), ones))
    assert float(state.trainable[ORDER.index("inputs_scale")]) == 1.0  # from [inf, 0, 0]: kept


# --- 5. the lowered HLO has the float8 GEMM pattern -----------------------------------------------

_OP = re.compile(r"^\s*(%[\w#.]+)(?::\d+)?\s*=\s*(\"?[\w.]+\"?)(.*)$")
_VALUE = re.compile(r"%[\w#.]+")
# Ops XLA's float8 GEMM rewrite lets sit between the scaling multiply and the dot. A convert is
# not among them: a dequantization formed in float32 and then rounded would not be rewritten.
_LAYOUT_OPS = ("stablehlo.broadcast_in_dim", "stablehlo.reshape", "stablehlo.transpose")


def parse_functions(text):
    """Per `func.func` of `text`: SSA name -> (op name, operand names, the text after the op name).

    SSA names restart in every function, so each function gets its own table.
    """
    functions = []
    for line in text.splitlines():
        if "func.func" in line:
            functions.append({})
            continue
        match = _OP.match(line)
        if match and functions:
            name, op, rest = match.groups()
            functions[-1][name] = (op.strip('"'), _VALUE.findall(rest.split(":")[0]), rest)
    return functions


def _convert_source_type(rest):
    """The element type of a convert's operand, from `(tensor<8x4xf8E4M3FN>) -> tensor<...>`."""
    match = re.search(r":\s*\(?tensor<(?:[\dx?]*x)?(\w+)>\)?\s*->", rest)
    return match.group(1) if match else None


def dequantized_format(ops, value):
    """The float8 type `value` is dequantized from (convert f8 -> wide, times a scale), or None.

    Walks back through layout ops (broadcasts, reshapes, transposes) to a multiply; one of its
    operands must be a convert whose source is a float8 type.
    """
    seen = set()
    while value in ops and value not in seen:
        seen.add(value)
        op, operands, _ = ops[value]
        if op == "stablehlo.multiply":
            for operand in operands:
                if operand in ops and ops[operand][0] == "stablehlo.convert":
                    source = _convert_source_type(ops[operand][2])
                    if source and source.startswith("f8"):
                        return source
            return None
        if op not in _LAYOUT_OPS or not operands:
            return None
        value = operands[0]
    return None


@pytest.mark.parametrize("source", ALL_SOURCES)
def test_lowered_forward_and_backward_dots_take_dequantized_float8_operands(source):
    layer = layers.Dense(5, dtype=policy(source, amax_history_length=3))
    layer.build((None, 4))
    values = [v.value for v in layer.trainable_variables]

    def objective(values, x):
        outputs, _ = layer.stateless_call(values, [], x, training=True)
        return jnp.sum(outputs.astype(jnp.float32) ** 2)

    text = jax.jit(jax.value_and_grad(objective, argnums=(0, 1))).lower(values, jnp.ones((8, 4))).as_text()
    dots = []  # (the formats its two operands are dequantized from, the op's text)
    for ops in parse_functions(text):
        for op, operands, rest in ops.values():
            if op == "stablehlo.dot_general":
                dots.append((tuple(sorted(dequantized_format(ops, o) or "none" for o in operands)), rest))
    # The forward x_hat . k_hat (both E4M3) and the two backward g_hat . (x_hat or k_hat) (E5M2 and E4M3).
    formats = sorted(f for f, _ in dots)
    assert formats == [("f8E4M3FN", "f8E4M3FN"), ("f8E4M3FN", "f8E5M2"), ("f8E4M3FN", "f8E5M2")], text
    forward = next(rest for f, rest in dots if f == ("f8E4M3FN", "f8E4M3FN"))
    assert re.search(r"->\s*tensor<8x5xf32>", forward), forward  # float32 accumulation
    assert "stablehlo.convert" in text and "xf8E5M2>" in text and "xf8E4M3FN>" in text


def test_hlo_pattern_parser_on_a_hand_written_snippet():
    text = """
    %8 = stablehlo.convert %7 : (tensor<8x4xf32>) -> tensor<8x4xf8E4M3FN>
    %9 = stablehlo.convert %8 : (tensor<8x4xf8E4M3FN>) -> tensor<8x4xbf16>
    %10 = stablehlo.broadcast_in_dim %2, dims = [] : (tensor<bf16>) -> tensor<8x4xbf16>
    %11 = stablehlo.multiply %9, %10 : tensor<8x4xbf16>
    %12 = stablehlo.transpose %11, dims = [1, 0] : (tensor<8x4xbf16>) -> tensor<4x8xbf16>
    %13 = stablehlo.add %3, %4 : tensor<8x4xbf16>
    %14 = stablehlo.convert %11 : (tensor<8x4xbf16>) -> tensor<8x4xf16>
    """
    (ops,) = parse_functions("func.func @main() {" + text)
    assert dequantized_format(ops, "%12") == "f8E4M3FN"
    assert dequantized_format(ops, "%13") is None
    assert dequantized_format(ops, "%9") is None  # a convert back with no scale multiply is not the pattern
    assert dequantized_format(ops, "%14") is None  # nor a scaled value converted again before the dot
