"""Cross-entropy losses against float64 NumPy formulas: from_logits, label_smoothing, axis, ignore_class, dtypes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layers import losses
from tests._tolerances import assert_close

RNG = np.random.default_rng(88)
EPSILON = 1e-7  # Keras' clipping bound; the inputs below stay clear of it except where a test says so

LOGITS = (RNG.normal(size=(6, 5)) * 3).astype(np.float32)
PROBABILITIES = (np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)).astype(np.float32)
CLASS_IDS = RNG.integers(0, 5, size=(6,))
ONE_HOT = np.eye(5, dtype=np.float32)[CLASS_IDS]
SOFT = RNG.dirichlet(np.ones(5), size=6).astype(np.float32)
BINARY = (RNG.uniform(size=(6, 5)) > 0.5).astype(np.float32)
BINARY_PROBABILITIES = RNG.uniform(0.02, 0.98, size=(6, 5)).astype(np.float32)
WEIGHT = RNG.uniform(size=(6,)).astype(np.float32)


def _log_sigmoid64(z):
    return -np.logaddexp(0.0, -z)


def _log_softmax64(z, axis):
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def bce64(t, p, from_logits=False, label_smoothing=0.0, axis=-1):
    t, p = np.asarray(t, np.float64), np.asarray(p, np.float64)
    t = t * (1 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        elementwise = -(t * _log_sigmoid64(p) + (1 - t) * _log_sigmoid64(-p))
    else:
        p = np.clip(p, EPSILON, 1 - EPSILON)
        elementwise = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    return elementwise.mean(axis)


def cce64(t, p, from_logits=False, label_smoothing=0.0, axis=-1):
    t, p = np.asarray(t, np.float64), np.asarray(p, np.float64)
    t = t * (1 - label_smoothing) + label_smoothing / p.shape[axis]
    if from_logits:
        log_p = _log_softmax64(p, axis)
    else:
        log_p = np.log(np.clip(p / p.sum(axis, keepdims=True), EPSILON, 1 - EPSILON))
    return -(t * log_p).sum(axis)


def scce64(ids, p, from_logits=False, axis=-1):
    one_hot = np.moveaxis(np.eye(np.shape(p)[axis])[np.asarray(ids)], -1, axis)
    return cce64(one_hot, p, from_logits, 0.0, axis)


def _cases():
    # id -> (function call, class instance, y_true, y_pred, float64 per-sample reference)
    cases = {}
    for from_logits in (False, True):
        kind = "logits" if from_logits else "probabilities"
        for smoothing in (0.0, 0.1):
            binary_pred = (
                np.log(BINARY_PROBABILITIES / (1 - BINARY_PROBABILITIES)) if from_logits else BINARY_PROBABILITIES
            )
            pred = LOGITS if from_logits else PROBABILITIES
            for labels_name, labels in (("binary", BINARY), ("soft", BINARY_PROBABILITIES[::-1].copy())):
                cases[f"binary_{labels_name}_{kind}_smoothing{smoothing}"] = (
                    lambda t, p, f=from_logits, s=smoothing: losses.binary_crossentropy(t, p, f, s),
                    losses.BinaryCrossentropy(from_logits=from_logits, label_smoothing=smoothing),
                    labels,
                    binary_pred.astype(np.float32),
                    bce64(labels, binary_pred, from_logits, smoothing),
                )
            for labels_name, labels in (("one_hot", ONE_HOT), ("soft", SOFT)):
                cases[f"categorical_{labels_name}_{kind}_smoothing{smoothing}"] = (
                    lambda t, p, f=from_logits, s=smoothing: losses.categorical_crossentropy(t, p, f, s),
                    losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=smoothing),
                    labels,
                    pred,
                    cce64(labels, pred, from_logits, smoothing),
                )
        cases[f"sparse_{kind}"] = (
            lambda t, p, f=from_logits: losses.sparse_categorical_crossentropy(t, p, f),
            losses.SparseCategoricalCrossentropy(from_logits=from_logits),
            CLASS_IDS,
            LOGITS if from_logits else PROBABILITIES,
            scce64(CLASS_IDS, LOGITS if from_logits else PROBABILITIES, from_logits),
        )
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_functions_match_float64_formulas_eagerly_and_under_jit(case):
    function, _, y_true, y_pred, expected = CASES[case]
    for out in (function(y_true, y_pred), jax.jit(function)(y_true, y_pred)):
        assert out.dtype == jnp.float32 and out.shape == (6,)
        assert_close(out, expected, "float32")


@pytest.mark.parametrize("case", list(CASES))
def test_classes_reduce_weighted_values_eagerly_and_under_jit(case):
    _, loss, y_true, y_pred, expected = CASES[case]
    jitted = jax.jit(lambda t, p, w: loss(t, p, w))
    assert_close(loss(y_true, y_pred), expected.mean(), "float32")
    assert_close(jitted(y_true, y_pred, WEIGHT), (expected * WEIGHT).mean(), "float32")
    summed = type(loss).from_config({**loss.get_config(), "reduction": "sum"})
    assert_close(summed(y_true, y_pred, WEIGHT), (expected * WEIGHT).sum(), "float32")
    per_sample = type(loss).from_config({**loss.get_config(), "reduction": None})
    assert_close(jax.jit(lambda t, p: per_sample(t, p))(y_true, y_pred), expected, "float32")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("case", list(CASES))
def test_16_bit_predictions_give_float32_losses_of_the_rounded_inputs(case, dtype):
    function, loss, y_true, y_pred, _ = CASES[case]
    rounded = jnp.asarray(y_pred, dtype)
    # The same formula on what the 16-bit array holds: only the loss's own arithmetic is judged.
    seen = np.asarray(rounded, np.float64)
    family = case.split("_")[0]
    if family == "sparse":
        reference = scce64(y_true, seen, loss.from_logits)
    else:
        formula = bce64 if family == "binary" else cce64
        reference = formula(y_true, seen, loss.from_logits, loss.label_smoothing)
    out = function(y_true, rounded)
    assert out.dtype == jnp.float32
    assert_close(out, reference, "float32")
    assert loss(y_true, rounded).dtype == jnp.float32
    assert_close(loss(y_true, rounded), reference.mean(), "float32")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_confident_right_answers_keep_their_loss_where_a_16_bit_log_softmax_rounds_it_to_0(dtype):
    # -log_softmax([m, 0, 0, 0])[0] = log(1 + 3 e**-m): 1e-3 for bfloat16's m = 8 and 2e-5 for
    # float16's m = 12, both below half a step of 1 in that dtype, so a 16-bit log-sum-exp gives 0.
    margin = 8.0 if dtype == "bfloat16" else 12.0
    logits = jnp.asarray(np.tile([margin, 0.0, 0.0, 0.0], (32, 1)), dtype)
    ids = np.zeros(32, np.int32)
    expected = np.log1p(3 * np.exp(-margin))
    in_16_bit = -jax.nn.log_softmax(logits)[:, 0]
    assert float(jnp.max(jnp.abs(in_16_bit))) == 0.0  # the loss a 16-bit computation reports
    scce = losses.SparseCategoricalCrossentropy(from_logits=True)
    cce = losses.CategoricalCrossentropy(from_logits=True)
    for out in (scce(ids, logits), jax.jit(lambda t, p: scce(t, p))(ids, logits), cce(np.eye(4)[ids], logits)):
        assert out.dtype == jnp.float32
        assert_close(out, expected, "float32")  # excludes 0: the float32 tolerance is below the loss
    # And the gradient is the float32 one, softmax - one_hot over the batch.
    grad = jax.grad(lambda z: scce(ids, z))(logits.astype(jnp.float32))
    softmax = np.exp(_log_softmax64(np.asarray(logits, np.float64), -1))
    np.testing.assert_allclose(np.asarray(grad), (softmax - np.eye(4)[ids]) / 32, rtol=1e-4, atol=1e-8)


def test_float64_predictions_stay_float64():
    with jax.enable_x64(True):
        logits = jnp.asarray(LOGITS, jnp.float64)
        for out, expected in (
            (losses.categorical_crossentropy(ONE_HOT, logits, from_logits=True), cce64(ONE_HOT, LOGITS, True)),
            (
                losses.sparse_categorical_crossentropy(CLASS_IDS, logits, from_logits=True),
                scce64(CLASS_IDS, LOGITS, True),
            ),
            (losses.binary_crossentropy(BINARY, logits, from_logits=True), bce64(BINARY, LOGITS, True)),
        ):
            assert out.dtype == jnp.float64
            assert_close(out, expected, "float64")
        assert losses.BinaryCrossentropy()(BINARY, jnp.asarray(BINARY_PROBABILITIES, jnp.float64)).dtype == jnp.float64


def test_keras_documented_values():
    # The numbers in the Keras 3 docstrings (rounded there to 3-4 digits).
    def close(actual, expected):
        np.testing.assert_allclose(np.asarray(actual), expected, atol=1e-3)

    t, z = np.array([[0, 1], [0, 0]]), np.array([[-18.6, 0.51], [2.94, -12.8]])
    close(losses.BinaryCrossentropy(from_logits=True)(t, z), 0.8654)
    close(losses.BinaryCrossentropy(from_logits=True)(t, z, sample_weight=[0.8, 0.2]), 0.243)
    close(losses.BinaryCrossentropy(from_logits=True, reduction="sum")(t, z), 1.730)
    close(losses.BinaryCrossentropy(from_logits=True, reduction=None)(t, z), [0.235, 1.496])
    close(losses.binary_crossentropy(t, np.array([[0.6, 0.4], [0.4, 0.6]])), [0.916, 0.714])
    one_hot, p = np.array([[0, 1, 0], [0, 0, 1]]), np.array([[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
    for loss, labels in ((losses.CategoricalCrossentropy, one_hot), (losses.SparseCategoricalCrossentropy, [1, 2])):
        close(loss()(labels, p), 1.177)
        close(loss()(labels, p, sample_weight=np.array([0.3, 0.7])), 0.814)
        close(loss(reduction="sum")(labels, p), 2.354)
        close(loss(reduction=None)(labels, p), [0.0513, 2.303])


def test_probabilities_are_clipped_to_epsilon():
    # A wrong answer with probability 0 costs -log(1e-7) in float32, not inf.
    out = losses.binary_crossentropy(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    bound = np.float64(np.float32(EPSILON)), np.float64(np.float32(1 - EPSILON))
    assert_close(out, [-(np.log(bound[0]) + np.log1p(-bound[1])) / 2], "float32")
    assert_close(
        losses.categorical_crossentropy(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])), [-np.log(bound[0])], "float32"
    )


def test_the_class_axis_can_be_any_axis():
    moved = np.moveaxis(LOGITS, -1, 0)
    assert_close(
        losses.categorical_crossentropy(ONE_HOT.T, moved, True, axis=0), cce64(ONE_HOT, LOGITS, True), "float32"
    )
    out = losses.SparseCategoricalCrossentropy(from_logits=True, axis=0, reduction=None)(CLASS_IDS, moved)
    assert_close(out, scce64(CLASS_IDS, LOGITS, True), "float32")
    # binary_crossentropy's axis is the one averaged over.
    assert_close(
        losses.binary_crossentropy(BINARY, BINARY_PROBABILITIES, axis=0),
        bce64(BINARY, BINARY_PROBABILITIES, axis=0),
        "float32",
    )


def test_binary_targets_of_shape_batch_match_predictions_of_shape_batch_1():
    t, p = BINARY[:, 0], BINARY_PROBABILITIES[:, :1]
    out = losses.BinaryCrossentropy(reduction=None)(t, p, WEIGHT)
    assert out.shape == (6,)
    assert_close(out, bce64(t[:, None], p) * WEIGHT, "float32")


def test_sparse_class_ids_of_any_integer_or_float_dtype_and_a_trailing_axis_of_1():
    expected = scce64(CLASS_IDS, LOGITS, True)
    for ids in (
        CLASS_IDS.astype(np.int8),
        CLASS_IDS.astype(np.uint8),
        CLASS_IDS.astype(np.float32),
        CLASS_IDS[:, None],
    ):
        assert_close(losses.sparse_categorical_crossentropy(ids, LOGITS, from_logits=True), expected, "float32")


def test_ignore_class_entries_count_neither_in_the_sum_nor_in_the_mean():
    logits = (RNG.normal(size=(2, 3, 4)) * 2).astype(np.float32)
    ids = np.array([[1, -1, 3], [-1, -1, 0]])
    keep = ids != -1
    per_entry = np.where(keep, scce64(np.where(keep, ids, 0), logits, True), 0.0)
    assert_close(losses.sparse_categorical_crossentropy(ids, logits, True, ignore_class=-1), per_entry, "float32")
    loss = losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    assert_close(loss(ids, logits), per_entry.sum() / keep.sum(), "float32")
    w = np.array([0.25, 2.0], np.float32)
    weighted = per_entry * w[:, None]
    assert_close(jax.jit(lambda t, p, s: loss(t, p, s))(ids, logits, w), weighted.sum() / keep.sum(), "float32")
    by_weight = losses.SparseCategoricalCrossentropy(True, -1, reduction="mean_with_sample_weight")
    assert_close(by_weight(ids, logits, w), weighted.sum() / (keep * w[:, None]).sum(), "float32")
    assert_close(
        losses.SparseCategoricalCrossentropy(True, -1, reduction="sum")(ids, logits, w), weighted.sum(), "float32"
    )
    assert_close(losses.SparseCategoricalCrossentropy(True, -1, reduction="none")(ids, logits, w), weighted, "float32")
    # Every entry ignored: 0, not 0 / 0.
    assert float(loss(np.full((2, 3), -1), logits)) == 0.0


def test_an_ignored_entry_with_non_finite_predictions_stays_out():
    probabilities = np.array([[0.0, 0.0], [0.3, 0.7]], np.float32)  # row 0 renormalizes to 0 / 0
    loss = losses.SparseCategoricalCrossentropy(ignore_class=5)
    assert_close(loss(np.array([5, 1]), probabilities), -np.log(0.7), "float32")


def test_a_single_class_warns_that_the_loss_is_always_about_0():
    with pytest.warns(
        UserWarning, match=r"losses.categorical_crossentropy: y_pred has a single class along axis 1 \(shape \(6, 1\)\)"
    ):
        losses.categorical_crossentropy(np.ones((6, 1)), np.ones((6, 1)))


@pytest.mark.parametrize(
    "loss",
    [
        losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.2, axis=0, reduction="sum", name="bce"),
        losses.CategoricalCrossentropy(label_smoothing=0.1),
        losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0, reduction=None),
    ],
)
def test_config_round_trips_through_json(loss):
    config = json.loads(json.dumps(loss.get_config()))
    again = type(loss).from_config(config)
    assert again.get_config() == loss.get_config()


def test_keras_default_names_and_config_keys():
    assert losses.BinaryCrossentropy().get_config() == {
        "name": "binary_crossentropy",
        "reduction": "sum_over_batch_size",
        "from_logits": False,
        "label_smoothing": 0.0,
        "axis": -1,
    }
    assert losses.CategoricalCrossentropy().name == "categorical_crossentropy"
    assert losses.SparseCategoricalCrossentropy().get_config() == {
        "name": "sparse_categorical_crossentropy",
        "reduction": "sum_over_batch_size",
        "from_logits": False,
        "ignore_class": None,
        "axis": -1,
    }


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: losses.BinaryCrossentropy(label_smoothing=1.5),
            ValueError,
            r"BinaryCrossentropy: label_smoothing must be in \[0, 1\], received 1.5",
        ),
        (
            lambda: losses.categorical_crossentropy(ONE_HOT, PROBABILITIES, label_smoothing=-0.1),
            ValueError,
            r"losses.categorical_crossentropy: label_smoothing must be in \[0, 1\], received -0.1",
        ),
        (
            lambda: losses.CategoricalCrossentropy(label_smoothing="0.1"),
            TypeError,
            r"label_smoothing must be a number in \[0, 1\], received '0.1' of type str",
        ),
        (lambda: losses.BinaryCrossentropy(label_smoothing=True), TypeError, r"received True of type bool"),
        (
            lambda: losses.SparseCategoricalCrossentropy(from_logits="yes"),
            TypeError,
            r"SparseCategoricalCrossentropy: from_logits must be a bool, received 'yes' of type str",
        ),
        (
            lambda: losses.binary_crossentropy(BINARY, LOGITS, from_logits=1),
            TypeError,
            r"from_logits must be a bool, received 1",
        ),
        (
            lambda: losses.CategoricalCrossentropy(axis=1.0),
            TypeError,
            r"axis must be an int, received 1.0 of type float",
        ),
        (
            lambda: losses.CategoricalCrossentropy(axis=2)(ONE_HOT, PROBABILITIES),
            ValueError,
            r"CategoricalCrossentropy: axis 2 is out of range for y_pred of shape \(6, 5\)",
        ),
        (
            lambda: losses.CategoricalCrossentropy()(CLASS_IDS, PROBABILITIES),
            ValueError,
            r"CategoricalCrossentropy: y_true \(one-hot or soft labels\) must have y_pred's shape, received "
            r"y_true.shape=\(6,\) and y_pred.shape=\(6, 5\)",
        ),
        (
            lambda: losses.SparseCategoricalCrossentropy()(CLASS_IDS[:5], PROBABILITIES),
            ValueError,
            r"y_true \(integer class ids\) of shape \(5,\) does not match y_pred of shape \(6, 5\) without its class "
            r"axis 1; expected shape \(6,\)",
        ),
        (
            lambda: losses.sparse_categorical_crossentropy(CLASS_IDS, PROBABILITIES, ignore_class="pad"),
            TypeError,
            r"ignore_class must be an int or None, received 'pad' of type str",
        ),
        (
            lambda: losses.BinaryCrossentropy()(BINARY, BINARY_PROBABILITIES[:, :4]),
            ValueError,
            r"BinaryCrossentropy: y_true and y_pred must have the same shape .* y_true.shape=\(6, 5\) and "
            r"y_pred.shape=\(6, 4\)",
        ),
        (
            lambda: losses.categorical_crossentropy(1.0, 1.0),
            ValueError,
            r"y_pred must have rank >= 1, received shape \(\)",
        ),
        (
            lambda: losses.SparseCategoricalCrossentropy()(CLASS_IDS + 0j, PROBABILITIES),
            TypeError,
            r"SparseCategoricalCrossentropy: y_true must be real, received dtype complex64",
        ),
    ],
)
def test_bad_arguments_raise_naming_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()
