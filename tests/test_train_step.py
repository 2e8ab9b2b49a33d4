"""The jitted train step: it trains, in every policy; losses, state and loss scaling flow through it."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
import layers
from layers import losses, optimizers, training

# A fixed, learnable classification problem: 256 points in 8-D, labels from a random linear map.
_RNG = np.random.default_rng(0)
X = _RNG.normal(size=(256, 8)).astype(np.float32)
Y = np.argmax(X @ _RNG.normal(size=(8, 3)), axis=-1).astype(np.int32)
# The loss each policy must reach in STEPS full-batch Adam steps (float32 reaches about 0.01),
# and how far a mixed run may end from float32.
STEPS, TARGET, MIXED_FACTOR = 200, 0.05, 1.5


def _mlp(policy, seed=1):
    layers.initializers.set_random_seed(seed)
    model = layers.Sequential(
        [layers.Dense(32, activation="relu", name="hidden"), layers.Dense(3, name="logits")], dtype=policy, name="mlp"
    )
    model(X[:2])
    return model


def _train(policy, steps=STEPS, optimizer=None):
    model = _mlp(policy)
    step = training.make_train_step(
        model, losses.SparseCategoricalCrossentropy(from_logits=True), optimizer or optimizers.Adam(1e-2)
    )
    state = step.init_state()
    for _ in range(steps):
        state, metrics = step.jitted(state, (X, Y))
    return model, step, state, metrics


@pytest.fixture(scope="module")
def float32_run():
    return _train("float32")


def test_float32_training_reaches_the_stated_loss(float32_run):
    _, step, state, metrics = float32_run
    assert float(metrics["loss"]) < TARGET and int(state.step) == STEPS and not step.loss_scaling


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_training_reaches_the_loss_within_a_factor_of_float32(policy, float32_run):
    _, step, _, metrics = _train(policy)
    reference = float(float32_run[3]["loss"])
    assert float(metrics["loss"]) < TARGET and float(metrics["loss"]) < MIXED_FACTOR * reference
    assert step.loss_scaling == (policy == "mixed_float16")


def test_pure_float16_adam_stays_finite_and_learns():
    _, step, state, metrics = _train("float16")
    assert step.loss_scaling and np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) < TARGET
    assert all(value.dtype == jnp.float16 for value in state.trainable)
    assert all(np.all(np.isfinite(np.asarray(value, np.float32))) for value in state.trainable)


def test_loss_scaling_turns_on_for_one_float16_layer_in_a_float32_model_and_not_for_bfloat16():
    mixed_one = layers.Sequential([layers.Dense(4), layers.Dense(2, dtype="mixed_float16")])
    mixed_one(X[:2])
    assert mixed_one.dtype_policy.compute_dtype == "float32"
    step = training.make_train_step(mixed_one, "mse", optimizers.SGD(0.1))
    assert step.loss_scaling and isinstance(step.optimizer, optimizers.LossScaleOptimizer)
    bf16 = _mlp("mixed_bfloat16")
    step = training.make_train_step(bf16, "mse", optimizers.SGD(0.1))
    assert not step.loss_scaling and not isinstance(step.optimizer, optimizers.LossScaleOptimizer)


def test_one_step_of_sgd_matches_the_hand_derived_gradient_with_a_regularizer():
    # loss = mean((x @ w - y)^2) + 0.5 * sum(w^2): grad = 2/N * x^T (x w - y) + w.
    layer = layers.Dense(1, use_bias=False, kernel_regularizer=layers.regularizers.L2(0.5), name="linear")
    x = _RNG.normal(size=(16, 3)).astype(np.float32)
    y = _RNG.normal(size=(16, 1)).astype(np.float32)
    layer(x)
    w = np.asarray(layer.kernel.numpy(), np.float64)
    step = training.make_train_step(layer, "mse", optimizers.SGD(0.1))
    state, metrics = jax.jit(step)(step.init_state(), (x, y))
    residual = x.astype(np.float64) @ w - y
    expected_loss = np.mean(residual**2) + 0.5 * np.sum(w**2)
    expected_w = w - 0.1 * (2 / 16 * x.T.astype(np.float64) @ residual + w)
    np.testing.assert_allclose(float(metrics["loss"]), expected_loss, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(state.trainable[0]), expected_w, rtol=1e-5, atol=1e-6)


def test_batch_normalization_statistics_and_dropout_state_come_back_and_write_back_assigns_them():
    layers.initializers.set_random_seed(3)
    model = layers.Sequential([layers.Dense(4), layers.BatchNormalization(), layers.Dropout(0.5)], name="bn")
    model(X[:2])
    step = training.make_train_step(model, "mse", optimizers.SGD(0.01))
    state = step.init_state()
    before = [np.asarray(value) for value in state.non_trainable]
    state, _ = step.jitted(state, (X, np.zeros((256, 4), np.float32)))
    after = [np.asarray(value) for value in state.non_trainable]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))  # moving stats, RNG state
    step.write_back(state)
    for variable, value in zip(model.non_trainable_variables, state.non_trainable, strict=True):
        np.testing.assert_array_equal(np.asarray(variable._read_storage()), np.asarray(value))
    for variable, value in zip(model.trainable_variables, state.trainable, strict=True):
        np.testing.assert_array_equal(np.asarray(variable._read_storage()), np.asarray(value))


def test_the_eval_step_runs_in_inference_mode_and_changes_nothing(float32_run):
    model, _, state, _ = float32_run
    evaluate = jax.jit(training.make_eval_step(model, losses.SparseCategoricalCrossentropy(from_logits=True)))
    metrics = evaluate(state, (X, Y))
    logits = np.asarray(X, np.float64)
    for kernel, bias, relu in (
        (state.trainable[0], state.trainable[1], True),
        (state.trainable[2], state.trainable[3], False),
    ):
        logits = logits @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)
        logits = np.maximum(logits, 0) if relu else logits
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    expected = -np.mean(log_softmax[np.arange(len(Y)), Y])
    np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-4, atol=1e-6)


def test_sample_weights_reach_a_function_loss_as_keras_weights_a_function():
    layer = layers.Dense(1, use_bias=False, kernel_initializer="zeros")
    x, y = np.ones((4, 2), np.float32), np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
    layer(x)
    step = training.make_train_step(layer, losses.mean_squared_error, optimizers.SGD(0.0))
    weight = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
    _, metrics = step(step.init_state(), (x, y, weight))
    np.testing.assert_allclose(float(metrics["loss"]), (1.0 + 16.0) / 4)  # weighted sum over the batch size


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ((object(), "mse", optimizers.SGD(0.1)), TypeError, "expects a Layer as the model, received object"),
        ((layers.Dense(1), "mse", "sgd"), TypeError, "expects an optimizer from layers.optimizers, received str"),
        ((layers.Dense(1), 3, optimizers.SGD(0.1)), TypeError, "loss must be a loss from layers.losses"),
    ],
)
def test_bad_arguments_name_what_was_received(arguments, error, message):
    with pytest.raises(error, match=message):
        training.make_train_step(*arguments)


def test_bad_loss_scaling_and_bad_batches_are_clear_errors():
    model = _mlp("float32")
    with pytest.raises(ValueError, match="loss_scaling must be 'auto', True or False, received 'yes'"):
        training.make_train_step(model, "mse", optimizers.SGD(0.1), loss_scaling="yes")
    step = training.make_train_step(model, "mse", optimizers.SGD(0.1))
    with pytest.raises(TypeError, match=r"A batch must be a tuple \(x, y\) or \(x, y, sample_weight\), received ndarr"):
        step(step.init_state(), X)
    unbuilt = training.make_train_step(layers.Dense(2), "mse", optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="is not built: call it once on example inputs"):
        unbuilt.init_state()


# Resuming: a checkpoint of the state at step K restored in a fresh process gives a step K+1
# whose values are bit-identical to the run that never stopped.
_RESUME = textwrap.dedent(
    """
    import sys
    import numpy as np
    import jax
    import layers
    from layers import losses, optimizers, training

    policy, path, out, steps, mode = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(8, 3)), axis=-1).astype(np.int32)
    layers.initializers.set_random_seed(1)
    model = layers.Sequential([layers.Dense(16, activation="relu", name="h"), layers.Dropout(0.2, name="drop"),
                               layers.Dense(3, name="o")], dtype=policy, name="m")
    model(x[:2])
    step = training.make_train_step(model, losses.SparseCategoricalCrossentropy(from_logits=True),
                                    optimizers.Adam(1e-2))
    state = step.init_state()
    if mode == "save":
        for _ in range(steps):
            state, _ = step.jitted(state, (x, y))
        step.save(path, state)
        state, _ = step.jitted(state, (x, y))
    else:
        state = step.restore(path)
        state, _ = step.jitted(state, (x, y))
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(state)]
    np.savez(out, *[np.ascontiguousarray(leaf).reshape(-1).view(np.uint8) for leaf in leaves])
    """
)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_resumed_run_takes_a_bit_identical_next_step_in_a_fresh_process(policy, tmp_path):
    script = tmp_path / "resume.py"
    script.write_text(_RESUME)
    checkpoint = tmp_path / "state.ckpt"
    for mode, out in (("save", "straight.npz"), ("restore", "resumed.npz")):
        subprocess.run(
            [sys.executable, str(script), policy, str(checkpoint), str(tmp_path / out), "3", mode],
            check=True,
            timeout=300,
        )
    straight, resumed = np.load(tmp_path / "straight.npz"), np.load(tmp_path / "resumed.npz")
    assert len(straight.files) == len(resumed.files) > 0
    for key in straight.files:
        np.testing.assert_array_equal(straight[key], resumed[key])


def test_the_train_state_is_a_pytree_that_survives_jit_and_tree_utilities(float32_run):
    _, _, state, _ = float32_run
    leaves, treedef = jax.tree.flatten(state)
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert isinstance(rebuilt, training.TrainState) and int(rebuilt.step) == STEPS
    shapes = jax.tree.map(jnp.shape, state)
    assert shapes.step == () and [tuple(s) for s in shapes.trainable] == [(8, 32), (32,), (32, 3), (3,)]
    assert dp.get("float32").compute_dtype == "float32"


def test_the_saved_state_is_keyed_by_variable_path_and_a_mismatched_model_is_refused(tmp_path):
    model = _mlp("mixed_bfloat16")
    step = training.make_train_step(model, "mse", optimizers.Adam(1e-3))
    state = step.init_state()
    step.save(tmp_path / "state.ckpt", state)
    keyed = training.restore_checkpoint(tmp_path / "state.ckpt", like=step._by_path(state))
    assert sorted(keyed["trainable"]) == [
        "mlp/hidden/bias",
        "mlp/hidden/kernel",
        "mlp/logits/bias",
        "mlp/logits/kernel",
    ]
    restored = step.restore(tmp_path / "state.ckpt")
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    wider = layers.Sequential([layers.Dense(33, name="hidden"), layers.Dense(3, name="logits")], name="mlp")
    wider(X[:2])
    other = training.make_train_step(wider, "mse", optimizers.Adam(1e-3))
    with pytest.raises(ValueError, match="mlp/hidden/kernel"):
        other.restore(tmp_path / "state.ckpt")


# A TransformerBlock on random tokens: predict the previous token, which needs attention. The
# first position (the last token rolled round) cannot be predicted, so the floor is about
# ln(16) / 12 = 0.23; 150 Adam steps reach about 0.48 in every policy here.
TOKENS = np.random.default_rng(1).integers(1, 16, size=(64, 12)).astype(np.int32)
PREVIOUS = np.roll(TOKENS, 1, axis=1)
TOKEN_STEPS, TOKEN_TARGET = 150, 1.0


def _train_tokens(policy):
    layers.initializers.set_random_seed(2)
    model = layers.Sequential(
        [layers.Embedding(16, 32), layers.TransformerBlock(num_heads=2, key_dim=16, mlp_dim=64), layers.Dense(16)],
        dtype=policy,
    )
    model(TOKENS[:2])
    step = training.make_train_step(
        model, losses.SparseCategoricalCrossentropy(from_logits=True), optimizers.Adam(3e-3)
    )
    state = step.init_state()
    for _ in range(TOKEN_STEPS):
        state, metrics = step.jitted(state, (TOKENS, PREVIOUS))
    return float(metrics["loss"])


@pytest.fixture(scope="module")
def float32_tokens_loss():
    return _train_tokens("float32")


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_a_transformer_block_learns_the_previous_token_in_every_policy(policy, float32_tokens_loss):
    loss = float32_tokens_loss if policy == "float32" else _train_tokens(policy)
    assert loss < TOKEN_TARGET and loss < MIXED_FACTOR * float32_tokens_loss


def test_the_first_state_is_a_copy_so_donating_it_leaves_the_model_usable():
    model = _mlp("float32")
    kernel = model.layers[0].kernel.numpy()
    step = training.make_train_step(model, "mse", optimizers.SGD(0.1))
    state = step.init_state()
    state, _ = step.jitted(state, (X, np.zeros((256, 3), np.float32)))
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), kernel)  # not deleted, not yet trained
    assert model(X[:2]).shape == (2, 3)
    step.write_back(state)
    assert not np.array_equal(model.layers[0].kernel.numpy(), kernel)


def test_a_loss_scale_optimizer_always_gets_a_scaled_loss_and_false_with_one_is_refused():
    layer = layers.Dense(1, use_bias=False, kernel_initializer="ones")
    x, y = np.ones((2, 1), np.float32), np.zeros((2, 1), np.float32)
    layer(x)
    step = training.make_train_step(layer, "mse", optimizers.LossScaleOptimizer(optimizers.SGD(0.25)))
    assert step.loss_scaling  # a float32 model, but the optimizer unscales: the loss must be scaled
    state, _ = step.jitted(step.init_state(), (x, y))
    np.testing.assert_allclose(np.asarray(state.trainable[0]), [[1.0 - 0.25 * 2.0]])  # d/dw mean((w-0)^2) = 2w
    with pytest.raises(ValueError, match="loss_scaling=False with a LossScaleOptimizer"):
        training.make_train_step(layer, "mse", optimizers.LossScaleOptimizer(optimizers.SGD(0.1)), loss_scaling=False)


def test_a_step_skipped_for_overflow_keeps_the_batch_normalization_statistics():
    model = layers.Sequential(
        [layers.Dense(2, kernel_initializer="ones"), layers.BatchNormalization()], dtype="mixed_float16"
    )
    model(np.ones((2, 2), np.float32))
    step = training.make_train_step(model, "mse", optimizers.SGD(0.1))
    state = step.init_state()
    huge = np.full((4, 2), 6.0e4, np.float32)  # float16 activations overflow to inf
    new_state, metrics = jax.jit(step)(state, (huge, np.zeros((4, 2), np.float32)))  # no donation: compare after
    assert float(metrics["loss_scale"]) == 2.0**14  # the skip halved the scale
    for old, new in zip(state.non_trainable, new_state.non_trainable, strict=True):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
    for old, new in zip(state.trainable, new_state.trainable, strict=True):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
