"""`fit`: trains, writes back, reports a history, accepts arrays or batches, refuses bad input."""

import jax.numpy as jnp
import numpy as np
import pytest

import layers
from layers import losses, optimizers, training

X = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
Y = 3 * X - 1


def test_fit_learns_a_line_writes_back_and_reports_a_history():
    model = layers.Dense(1, name="line")
    history = training.fit(model, (X, Y), "mse", optimizers.SGD(0.5), epochs=25, batch_size=16, verbose=False)
    losses_per_epoch = history.history["loss"]
    assert len(losses_per_epoch) == 25 and losses_per_epoch[-1] < 1e-4 < losses_per_epoch[0]
    np.testing.assert_allclose(model.kernel.numpy(), [[3.0]], atol=1e-2)
    np.testing.assert_allclose(model.bias.numpy(), [-1.0], atol=1e-2)
    assert int(history.state.step) == 25 * 4 and len(history.samples_per_second) == 25
    # The returned state's buffers are not the variables': stepping it again leaves the model alone.
    kernel = model.kernel.numpy()
    step = training.make_train_step(model, "mse", optimizers.SGD(0.5))
    step.optimizer.build(model.trainable_variables)
    state = training.TrainState(
        history.state.trainable,
        history.state.non_trainable,
        step.optimizer.init(history.state.trainable),
        history.state.step,
    )
    step.jitted(state, (X, Y))
    np.testing.assert_array_equal(model.kernel.numpy(), kernel)


def test_fit_takes_a_list_of_batches_and_a_function_of_batches_and_builds_the_model():
    batches = [(X[:32], Y[:32]), (X[32:], Y[32:])]
    for data in (batches, lambda: iter(batches)):
        model = layers.Sequential([layers.Dense(1)])
        assert not model.built
        history = training.fit(model, data, losses.MeanSquaredError(), optimizers.Adam(0.1), epochs=30, verbose=False)
        assert model.built and history.history["loss"][-1] < history.history["loss"][0] / 10


def test_fit_shows_progress_with_loss_and_samples_per_second(capsys):
    training.fit(layers.Dense(1), (X, Y), "mse", optimizers.SGD(0.1), epochs=2, verbose=True)
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert "epoch 2/2" in text and "loss" in text and "samples/s" in text


def test_fit_in_mixed_float16_turns_loss_scaling_on_and_reports_the_scale():
    model = layers.Dense(1, dtype="mixed_float16")
    history = training.fit(model, (X, Y), "mse", optimizers.SGD(0.5), epochs=10, verbose=False)
    assert history.history["loss_scale"][-1] > 1 and history.history["loss"][-1] < 1e-2
    assert model.kernel.dtype == "float32" and model(jnp.ones((1, 1))).dtype == jnp.float16


@pytest.mark.parametrize(
    ("data", "kwargs", "error", "message"),
    [
        ((X, Y[:10]), {}, ValueError, r"same number of samples, received \[64, 10\]"),
        ("data", {}, TypeError, "fit: data must be a tuple of arrays .* received str"),
        ((X, Y), {"epochs": 0}, ValueError, "epochs must be a positive int, received 0"),
        ((X, Y), {"batch_size": 2.5}, ValueError, "batch_size must be a positive int, received 2.5"),
        ((X[:0], Y[:0]), {}, ValueError, "the data holds no samples"),
    ],
)
def test_bad_input_is_a_clear_error(data, kwargs, error, message):
    model = layers.Dense(1)
    with pytest.raises(error, match=message):
        training.fit(model, data, "mse", optimizers.SGD(0.1), verbose=False, **kwargs)


def test_fit_continues_from_an_initial_state_and_weights_the_epoch_loss_by_batch_size():
    model = layers.Dense(1, kernel_initializer="zeros", bias_initializer="zeros")
    x, y = np.arange(33, dtype=np.float32)[:, None], np.arange(33, dtype=np.float32)[:, None]
    first = training.fit(model, (x, y), "mse", optimizers.SGD(0.0), epochs=2, batch_size=32, verbose=False)
    assert int(first.state.step) == 4
    np.testing.assert_allclose(first.history["loss"][0], np.mean(np.arange(33.0) ** 2), rtol=1e-6)  # per sample
    second = training.fit(
        model, (x, y), "mse", optimizers.SGD(0.0), epochs=1, batch_size=32, verbose=False, initial_state=first.state
    )
    assert int(second.state.step) == 6


def test_a_failing_batch_leaves_the_model_with_the_last_good_values():
    model = layers.Dense(1, name="line")
    good = [(X, Y)] * 3
    history = training.fit(model, good, "mse", optimizers.SGD(0.5), epochs=1, verbose=False)
    kernel = model.kernel.numpy()
    with pytest.raises(TypeError, match="A batch must be a tuple"):
        training.fit(model, [(X, Y), (X, Y), X], "mse", optimizers.SGD(0.5), epochs=1, verbose=False)
    trained = model.kernel.numpy()  # two good steps were written back, and the variables are alive
    assert np.isfinite(trained).all() and not np.array_equal(trained, kernel)
    assert history.history["loss"][0] > 0


def test_a_float8_model_continues_from_its_state_with_a_new_optimizer():
    # The new optimizer was never built by init_state: the step builds it (float8 state needs the
    # variables' overwrite flags), as restore and init_state do.
    x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
    y = np.ones((32, 4), np.float32)
    model = layers.Sequential([layers.Dense(16), layers.Dense(4)], dtype="float8_from_mixed_bfloat16")
    model(x[:1])
    first = training.fit(model, (x, y), "mse", optimizers.Adam(1e-3), batch_size=16, verbose=False)
    second = training.fit(
        model, (x, y), "mse", optimizers.Adam(1e-3), batch_size=16, verbose=False, initial_state=first.state
    )
    assert int(second.state.step) == 4 and np.isfinite(second.history["loss"][0])
