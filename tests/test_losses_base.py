"""The Loss base: reductions and sample weights against the Keras 3 rule in float64 NumPy, dtypes, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dtypepolicy as dp
import layers
from layers import losses
from layers._base._masking import attach_mask
from tests._tolerances import assert_close

RNG = np.random.default_rng(8)


class Squares(losses.Loss):
    """Elementwise squared error: per-sample values of the inputs' own shape, so every weight shape applies."""

    def call(self, y_true, y_pred):
        return jnp.square(y_true - y_pred)


def _reference(values, reduction, weight=None, mask=None):
    """The Keras 3 reduction written out in float64; a lower-rank weight lines up with the leading axes."""
    values = np.asarray(values, np.float64)
    if weight is None:
        w = np.ones_like(values)
    else:
        weight = np.asarray(weight, np.float64)
        if weight.ndim == values.ndim + 1:
            weight = weight[..., 0]
        w = np.broadcast_to(weight.reshape(weight.shape + (1,) * (values.ndim - weight.ndim)), values.shape)
    m = np.ones_like(values) if mask is None else np.asarray(mask, np.float64)
    weighted = values * w * m
    if reduction in (None, "none"):
        return weighted
    if reduction == "sum":
        return weighted.sum()
    if reduction == "mean_with_sample_weight" and (weight is not None or mask is not None):
        divisor = (w * m).sum()
    elif mask is not None:
        divisor = m.sum()
    else:
        divisor = values.size
    return weighted.sum() / divisor if divisor else 0.0


Y_TRUE = RNG.normal(size=(4, 3)).astype(np.float32)
Y_PRED = RNG.normal(size=(4, 3)).astype(np.float32)
WEIGHTS = {
    "none": None,
    "scalar": 0.5,
    "per_sample": RNG.uniform(size=(4,)).astype(np.float32),
    "per_sample_column": RNG.uniform(size=(4, 1)).astype(np.float32),
    "per_entry": RNG.uniform(size=(4, 3)).astype(np.float32),
    "per_entry_trailing_one": RNG.uniform(size=(4, 3, 1)).astype(np.float32),
}


@pytest.mark.parametrize("reduction", losses.REDUCTIONS)
@pytest.mark.parametrize("weight", list(WEIGHTS))
def test_reductions_with_sample_weights_match_numpy_eagerly_and_under_jit(reduction, weight):
    loss = Squares(reduction=reduction)
    sample_weight = WEIGHTS[weight]
    expected = _reference(np.square(Y_TRUE.astype(np.float64) - Y_PRED), reduction, sample_weight)
    eager = loss(Y_TRUE, Y_PRED, sample_weight)
    jitted = jax.jit(lambda t, p, w: loss(t, p, w))(Y_TRUE, Y_PRED, sample_weight)
    for out in (eager, jitted):
        assert out.dtype == jnp.float32
        assert out.shape == np.shape(expected)
        assert_close(out, expected, "float32")


def test_mean_is_sum_over_batch_size_and_none_is_the_weighted_values():
    w = WEIGHTS["per_sample"]
    per_entry = Squares(reduction=None)(Y_TRUE, Y_PRED, w)
    assert_close(Squares(reduction="mean")(Y_TRUE, Y_PRED, w), np.asarray(per_entry).mean(), "float32")
    assert_close(Squares()(Y_TRUE, Y_PRED, w), np.asarray(per_entry).sum() / per_entry.size, "float32")
    assert_close(Squares(reduction="sum")(Y_TRUE, Y_PRED, w), np.asarray(per_entry).sum(), "float32")


def test_a_zero_divisor_gives_zero_not_nan():
    # All weights zero under "mean_with_sample_weight", and an empty batch: 0, as Keras' divide_no_nan.
    zero = Squares(reduction="mean_with_sample_weight")(Y_TRUE, Y_PRED, np.zeros(4, np.float32))
    assert float(zero) == 0.0
    empty = np.zeros((0, 3), np.float32)
    for reduction in ("sum_over_batch_size", "mean", "sum", "mean_with_sample_weight"):
        assert float(Squares(reduction=reduction)(empty, empty)) == 0.0
    assert Squares(reduction="none")(empty, empty).shape == (0, 3)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_predictions_give_a_float32_loss_of_the_rounded_inputs(dtype):
    y_pred = jnp.asarray(Y_PRED, dtype)
    seen = np.asarray(y_pred, np.float64)
    for reduction in ("sum_over_batch_size", "none"):
        out = Squares(reduction=reduction)(
            jnp.asarray(Y_TRUE, dtype), y_pred, jnp.asarray(WEIGHTS["per_sample"], dtype)
        )
        assert out.dtype == jnp.float32
        weights = np.asarray(jnp.asarray(WEIGHTS["per_sample"], dtype), np.float64)
        expected = np.square(np.asarray(jnp.asarray(Y_TRUE, dtype), np.float64) - seen)
        assert_close(out, _reference(expected, reduction, weights), "float32")


def test_float64_predictions_stay_float64():
    with jax.enable_x64(True):
        y_pred = jnp.asarray(Y_PRED, jnp.float64) / 3
        out = Squares()(jnp.asarray(Y_TRUE, jnp.float64), y_pred, np.ones(4))
        assert out.dtype == jnp.float64
        assert_close(out, np.mean(np.square(Y_TRUE.astype(np.float64) - np.asarray(y_pred))), "float64")


def test_call_receives_float32_predictions_and_targets_cast_to_them():
    seen = {}

    class Spy(losses.Loss):
        def call(self, y_true, y_pred):
            seen.update(y_true=y_true.dtype, y_pred=y_pred.dtype)
            return jnp.zeros(y_pred.shape[:1], jnp.bfloat16)  # a 16-bit result is reduced in float32 too

    out = Spy()(np.array([[1, 0]]), jnp.ones((1, 2), jnp.bfloat16))
    assert seen == {"y_true": jnp.float32, "y_pred": jnp.float32}
    assert out.dtype == jnp.float32


def test_variables_are_read_as_arrays():
    assert_close(
        Squares()(Y_TRUE, dp.Variable(Y_PRED)), np.mean(np.square(Y_TRUE - Y_PRED.astype(np.float64))), "float32"
    )


def test_name_reduction_and_config_round_trip():
    loss = Squares(reduction="sum")
    assert loss.name == "squares"  # the class name in snake_case
    assert loss.get_config() == {"name": "squares", "reduction": "sum"}
    again = Squares.from_config(loss.get_config())
    assert (again.name, again.reduction) == ("squares", "sum")
    assert Squares(name="mine").name == "mine"
    assert repr(loss) == "Squares(name='squares', reduction='sum')"


def test_a_loss_without_call_says_what_to_implement():
    with pytest.raises(NotImplementedError, match=r"Loss must implement call\(y_true, y_pred\)"):
        losses.Loss()(Y_TRUE, Y_PRED)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: Squares(reduction="avg"),
            ValueError,
            r"Squares: reduction must be one of 'sum_over_batch_size', 'sum', 'mean', 'mean_with_sample_weight', "
            r"'none', None, received 'avg'",
        ),
        (lambda: Squares(reduction=["sum"]), ValueError, r"received \['sum'\]"),
        (lambda: Squares(name=3), TypeError, r"A loss name must be a non-empty string or None, received 3"),
        (
            lambda: Squares()(Y_TRUE, Y_PRED, np.ones(3)),
            ValueError,
            r"Squares: sample_weight of shape \(3,\) does not fit the per-sample losses of shape \(4, 3\); expected a "
            r"scalar or a shape that matches their leading axes, such as \(4,\) or \(4, 3\)",
        ),
        (lambda: Squares()(Y_TRUE, Y_PRED, np.ones((4, 3, 2))), ValueError, r"sample_weight of shape \(4, 3, 2\)"),
        (
            lambda: Squares()(Y_TRUE, Y_PRED, "heavy"),
            TypeError,
            r"Squares: sample_weight must be an array or a Variable, received 'heavy' of type str",
        ),
        (
            lambda: Squares()(Y_TRUE, object()),
            TypeError,
            r"Squares: y_pred must be an array or a Variable, received <object object",
        ),
        (lambda: Squares()(Y_TRUE, Y_PRED + 1j), TypeError, r"Squares: y_pred must be real, received dtype complex64"),
    ],
)
def test_bad_arguments_raise_naming_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(0, 5),
    steps=st.integers(1, 4),
    reduction=st.sampled_from(losses.REDUCTIONS),
    weight_rank=st.sampled_from([None, 0, 1, 2]),
    seed=st.integers(0, 2**16),
)
def test_any_shape_reduction_and_weight_rank_matches_numpy(batch, steps, reduction, weight_rank, seed):
    rng = np.random.default_rng(seed)
    y_true = rng.normal(size=(batch, steps)).astype(np.float32)
    y_pred = rng.normal(size=(batch, steps)).astype(np.float32)
    weight = None if weight_rank is None else rng.uniform(size=(batch, steps)[:weight_rank]).astype(np.float32)
    out = Squares(reduction=reduction)(y_true, y_pred, weight)
    expected = _reference(np.square(y_true.astype(np.float64) - y_pred), reduction, weight)
    assert out.dtype == jnp.float32 and out.shape == np.shape(expected)
    assert_close(out, expected, "float32")


def test_a_mask_attached_to_the_predictions_leaves_those_entries_out_as_in_keras():
    model = layers.Sequential([layers.Embedding(10, 4, mask_zero=True), layers.Dense(3)], dtype="mixed_bfloat16")
    tokens = np.array([[1, 2, 0, 0], [3, 0, 0, 0]])  # 0 is padding: 3 real steps out of 8
    labels = np.array([[0, 1, 2, 2], [1, 0, 0, 0]])
    keep = tokens != 0
    logits = model(tokens)
    seen = np.asarray(logits, np.float64)
    log_p = seen - np.log(np.exp(seen).sum(-1, keepdims=True))
    per_step = -np.take_along_axis(log_p, labels[..., None], -1)[..., 0]
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    assert_close(loss(labels, logits), per_step[keep].mean(), "float32")
    w = np.array([2.0, 0.5], np.float32)
    weighted = per_step * w[:, None] * keep
    assert_close(loss(labels, logits, w), weighted.sum() / keep.sum(), "float32")
    by_weight = losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")
    assert_close(by_weight(labels, logits, w), weighted.sum() / (keep * w[:, None]).sum(), "float32")
    # With ignore_class too, both masks apply; and the same inside one jitted function.
    both = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=2)
    kept = keep & (labels != 2)
    assert_close(both(labels, logits), per_step[kept].mean(), "float32")
    jitted = jax.jit(lambda t, x: both(t, model(x)))(labels, tokens)
    assert_close(jitted, per_step[kept].mean(), "float32")
    # A per-step MSE over the 3 outputs takes the (batch, steps) mask as well.
    mse = losses.MeanSquaredError()(np.zeros((2, 4, 3)), logits)
    assert_close(mse, (seen**2).mean(-1)[keep].mean(), "float32")


def test_an_attached_mask_that_does_not_fit_the_values_is_an_error():
    # A (2, 3) mask on (2, 3) predictions, but MSE averages the last axis: values of shape (2,).
    y_pred = jnp.ones((2, 3))
    attach_mask(y_pred, jnp.ones((2, 3), bool))
    with pytest.raises(
        ValueError,
        match=r"MeanSquaredError: the mask attached to y_pred of shape \(2, 3\) does not fit the per-sample losses "
        r"of shape \(2,\)",
    ):
        losses.MeanSquaredError()(np.zeros((2, 3)), y_pred)
