"""Regression losses (MSE, MAE, Huber) against float64 NumPy formulas: functions, classes, dtypes, errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layers import losses
from tests._tolerances import assert_close

RNG = np.random.default_rng(80)
Y_TRUE = RNG.normal(size=(5, 4)).astype(np.float32)
Y_PRED = (Y_TRUE + RNG.normal(scale=1.5, size=(5, 4))).astype(np.float32)  # errors on both sides of delta
WEIGHT = RNG.uniform(size=(5,)).astype(np.float32)


def _huber64(t, p, delta):
    e = p - t
    return np.where(np.abs(e) <= delta, 0.5 * e**2, delta * np.abs(e) - 0.5 * delta**2).mean(-1)


# id -> (function, class instance with the same arguments, float64 per-sample reference)
CASES = {
    "mean_squared_error": (losses.mean_squared_error, losses.MeanSquaredError(), lambda t, p: ((t - p) ** 2).mean(-1)),
    "mean_absolute_error": (
        losses.mean_absolute_error,
        losses.MeanAbsoluteError(),
        lambda t, p: np.abs(t - p).mean(-1),
    ),
    "huber": (losses.huber, losses.Huber(), lambda t, p: _huber64(t, p, 1.0)),
    "huber_delta_0.3": (
        lambda t, p: losses.huber(t, p, delta=0.3),
        losses.Huber(delta=0.3),
        lambda t, p: _huber64(t, p, 0.3),
    ),
}


def _reduce64(values, reduction, weight):
    weighted = values * (1.0 if weight is None else weight)
    return {
        "sum_over_batch_size": weighted.mean(),
        "mean": weighted.mean(),
        "sum": weighted.sum(),
        "mean_with_sample_weight": weighted.sum() / (np.sum(weight) if weight is not None else values.size),
        "none": weighted,
    }[reduction]


@pytest.mark.parametrize("case", list(CASES))
def test_functions_return_per_sample_float32_values_eagerly_and_under_jit(case):
    function, _, reference = CASES[case]
    expected = reference(Y_TRUE.astype(np.float64), Y_PRED.astype(np.float64))
    for out in (function(Y_TRUE, Y_PRED), jax.jit(function)(Y_TRUE, Y_PRED)):
        assert out.dtype == jnp.float32 and out.shape == (5,)
        assert_close(out, expected, "float32")


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "mean", "sum", "mean_with_sample_weight", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("case", list(CASES))
def test_classes_reduce_as_keras_eagerly_and_under_jit(case, reduction, weighted):
    _, loss, reference = CASES[case]
    loss = type(loss).from_config({**loss.get_config(), "reduction": reduction})
    weight = WEIGHT if weighted else None
    expected = _reduce64(
        reference(Y_TRUE.astype(np.float64), Y_PRED.astype(np.float64)), reduction, None if weight is None else weight
    )
    for out in (loss(Y_TRUE, Y_PRED, weight), jax.jit(lambda t, p, w: loss(t, p, w))(Y_TRUE, Y_PRED, weight)):
        assert out.dtype == jnp.float32
        assert_close(out, expected, "float32")


def test_keras_documented_values():
    # The numbers in the Keras 3 docstrings of MeanSquaredError, MeanAbsoluteError and huber.
    assert_close(losses.MeanSquaredError()(np.array([1.0, 0.0, 1.0]), np.array([0.9, 0.1, 0.8])), 0.02, "float32")
    assert_close(losses.MeanAbsoluteError()(np.array([1.0, 0.3, 1.0]), np.array([1.9, 0.3, 1.8])), 0.5666667, "float32")
    assert_close(losses.huber(np.array([[0, 1], [0, 0]]), np.array([[0.6, 0.4], [0.4, 0.6]])), [0.18, 0.13], "float32")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("case", list(CASES))
def test_16_bit_inputs_give_float32_losses_of_the_rounded_inputs(case, dtype):
    function, loss, reference = CASES[case]
    t16, p16 = jnp.asarray(Y_TRUE, dtype), jnp.asarray(Y_PRED, dtype)
    per_sample = reference(np.asarray(t16, np.float64), np.asarray(p16, np.float64))
    assert function(t16, p16).dtype == jnp.float32
    assert_close(function(t16, p16), per_sample, "float32")
    assert loss(t16, p16).dtype == jnp.float32
    assert_close(loss(t16, p16), per_sample.mean(), "float32")


def test_float16_squared_errors_past_65504_stay_finite():
    # An error of 300 squares to 90000, past float16's largest value: computed in float16 it is inf.
    y_true, y_pred = jnp.zeros((8, 2), jnp.float16), jnp.full((8, 2), 300.0, jnp.float16)
    assert not jnp.isfinite(jnp.mean(jnp.square(y_pred - y_true)))
    assert_close(losses.MeanSquaredError()(y_true, y_pred), 90000.0, "float32")
    assert_close(losses.mse(y_true, y_pred), np.full(8, 90000.0), "float32")


def test_float64_inputs_stay_float64():
    with jax.enable_x64(True):
        t, p = jnp.asarray(Y_TRUE, jnp.float64), jnp.asarray(Y_PRED, jnp.float64) + 1e-9
        out = losses.mean_squared_error(t, p)
        assert out.dtype == jnp.float64
        assert_close(out, ((np.asarray(t) - np.asarray(p)) ** 2).mean(-1), "float64")
        assert losses.Huber()(t, p).dtype == jnp.float64


def test_a_trailing_axis_of_size_1_is_matched_as_in_keras():
    # (batch,) labels against (batch, 1) predictions compare as (batch, 1): one value per sample.
    t, p = Y_TRUE[:, 0], Y_PRED[:, :1]
    assert_close(losses.mean_squared_error(t, p), (t.astype(np.float64) - p[:, 0]) ** 2, "float32")
    assert_close(losses.mean_squared_error(p, t), (t.astype(np.float64) - p[:, 0]) ** 2, "float32")
    # (batch, steps, 1) against (batch, steps) drops the trailing axis.
    out = losses.mean_absolute_error(Y_TRUE[..., None], Y_PRED)
    assert_close(out, np.abs(Y_TRUE.astype(np.float64) - Y_PRED).mean(-1), "float32")


def test_integer_targets_are_cast():
    labels = np.array([[1, 0], [0, 1]])
    assert_close(losses.mse(labels, np.array([[0.5, 0.5], [0.0, 1.0]])), [0.25, 0.0], "float32")


@pytest.mark.parametrize("loss", [losses.MeanSquaredError(), losses.MeanAbsoluteError(), losses.Huber(delta=2.5)])
def test_config_round_trips_through_json(loss):
    config = json.loads(json.dumps(loss.get_config()))
    again = type(loss).from_config(config)
    assert again.get_config() == loss.get_config()
    assert_close(again(Y_TRUE, Y_PRED), loss(Y_TRUE, Y_PRED), "float32")


def test_keras_default_names_and_config():
    assert losses.MeanSquaredError().get_config() == {"name": "mean_squared_error", "reduction": "sum_over_batch_size"}
    assert losses.MeanAbsoluteError().name == "mean_absolute_error"
    assert losses.Huber().get_config() == {"name": "huber_loss", "reduction": "sum_over_batch_size", "delta": 1.0}


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: losses.mean_squared_error(np.ones((2, 3)), np.ones((2, 4))),
            ValueError,
            r"losses.mean_squared_error: y_true and y_pred must have the same shape \(up to a trailing axis of size "
            r"1\), received y_true.shape=\(2, 3\) and y_pred.shape=\(2, 4\)",
        ),
        (
            lambda: losses.MeanAbsoluteError()(np.ones((2,)), np.ones((2, 3))),
            ValueError,
            r"MeanAbsoluteError: y_true and y_pred must have the same shape .* y_true.shape=\(2,\) and "
            r"y_pred.shape=\(2, 3\)",
        ),
        (
            lambda: losses.mse(np.float32(1), np.float32(2)),
            ValueError,
            r"y_pred must have rank >= 1 \(the last axis is averaged\), received shape \(\)",
        ),
        (lambda: losses.Huber(delta=0), ValueError, r"Huber: delta must be a finite number > 0, received 0"),
        (lambda: losses.Huber(delta=float("nan")), ValueError, r"received nan"),
        (lambda: losses.huber(Y_TRUE, Y_PRED, delta="1"), TypeError, r"losses.huber: delta must be a positive number"),
        (lambda: losses.MeanSquaredError(reduction="auto"), ValueError, r"reduction must be one of .* received 'auto'"),
        (lambda: losses.mse(Y_TRUE, "x"), TypeError, r"losses.mean_squared_error: y_pred must be an array"),
    ],
)
def test_bad_arguments_raise_naming_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()
