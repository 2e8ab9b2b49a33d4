"""Embedding: lookups in the compute dtype, index handling, masks through the pipeline, errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
from layers import initializers, regularizers
from layers._base._layer import Layer
from layers._base._masking import get_mask
from layers._builtin._dense import Dense
from layers._builtin._embedding import Embedding
from tests._conformance import Case, check_layer
from tests._tolerances import assert_close

POLICIES = ["float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16"]
MODES = ["eager", "jit"]
IDS = np.array([[1, 0, 7, 3], [9, 9, 0, 2]], np.int32)


def _run(layer, x, mode):
    if mode == "eager":
        return layer(x)
    values = [v.value for v in layer.trainable_variables]
    return jax.jit(lambda values, x: layer.stateless_call(values, [], x)[0])(values, x)


def lookup_reference(ids, weights):
    return np.asarray(weights[0], np.float64)[np.asarray(ids)]


CASE = Case(
    "embedding",
    lambda **kw: Embedding(10, 3, mask_zero=True, embeddings_initializer="random_normal", **kw),
    lambda: (IDS,),
    lookup_reference,
)


# Every policy gets the cheap sweep below; the full conformance run (several compilations)
# covers the mixed policy, where the table and the output dtypes differ.
def test_conformance():
    check_layer(CASE, "mixed_bfloat16")


@pytest.mark.parametrize("policy", POLICIES)
def test_policy_sweep(policy):
    p = dp.get(policy)
    layer = Embedding(10, 3, dtype=policy)
    y = layer(IDS)
    assert layer.embeddings.dtype == p.variable_dtype and layer.embeddings.shape == (10, 3)
    assert not layer.embeddings.autocast  # rows are cast after the gather
    assert y.dtype == jnp.dtype(p.compute_dtype) and y.shape == (2, 4, 3)
    # The gathered rows are the table's rows rounded once to the compute dtype.
    expected = jnp.asarray(layer.get_weights()[0]).astype(p.compute_dtype)[IDS]
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(expected, np.float32))


def test_default_initializer_is_keras_uniform():
    layer = Embedding(10, 3)
    layer(IDS)
    table = layer.get_weights()[0]
    assert np.all(np.abs(table) <= 0.05) and table.std() > 0.015  # uniform(-0.05, 0.05): std 0.029
    config = layer.get_config()["embeddings_initializer"]
    assert config["class_name"] == "RandomUniform"
    assert config["config"]["minval"] == -0.05 and config["config"]["maxval"] == 0.05


# --- indices ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_float_indices_are_not_autocast_to_the_compute_dtype(mode):
    # 257 and 1001 are not bfloat16 numbers: an autocast input would look up rows 256 and 1000.
    layer = Embedding(1024, 2, embeddings_initializer="random_normal", dtype="mixed_bfloat16")
    ids = np.array([257, 1001, 3], np.int32)
    by_int = layer(ids)
    by_float = _run(layer, ids.astype(np.float32), mode)
    np.testing.assert_array_equal(np.asarray(by_float, np.float32), np.asarray(by_int, np.float32))
    table = layer.get_weights()[0]
    assert_close(by_float, table[ids], "bfloat16")


@pytest.mark.parametrize("dtype", ["int8", "uint32"])
def test_any_integer_index_dtype(dtype):
    layer = Embedding(10, 2, embeddings_initializer="random_normal")
    ids = np.array([0, 5, 9], dtype)
    np.testing.assert_array_equal(np.asarray(layer(ids)), layer.get_weights()[0][ids.astype(np.int64)])


@pytest.mark.parametrize(
    ("ids", "fragment"),
    [
        (np.array([1, 10]), r"received index 10, outside \[0, 10\)"),
        (np.array([[-1, 2]]), r"received index -1, outside \[0, 10\)"),
        (np.array([1.0, 2.5], np.float32), r"not whole numbers"),
        (np.array([np.nan], np.float32), r"not whole numbers"),
    ],
)
def test_eager_calls_reject_bad_indices(ids, fragment):
    layer = Embedding(10, 2, name="tokens")
    with pytest.raises(ValueError, match=rf"Embedding layer 'tokens' .*{fragment}"):
        layer(ids)


def test_bool_indices_are_a_type_error():
    with pytest.raises(TypeError, match=r"expects integer indices.*dtype bool"):
        Embedding(10, 2)(np.array([True, False]))


def test_traced_out_of_range_indices_give_nan_rows_not_clamped_rows():
    layer = Embedding(4, 2, embeddings_initializer="random_normal")
    layer(np.array([0]))
    y = np.asarray(_run(layer, np.array([3, 4, -1, 100], np.int32), "jit"))
    np.testing.assert_array_equal(y[0], layer.get_weights()[0][3])
    assert np.isnan(y[1:]).all()


def test_python_ints_and_lists_are_indices():
    layer = Embedding(4, 2, embeddings_initializer="random_normal")
    assert layer(3).shape == (2,)
    np.testing.assert_array_equal(np.asarray(layer([[1, 3]])), layer.get_weights()[0][[[1, 3]]])


def test_empty_index_array():
    assert Embedding(4, 2)(np.zeros((0, 3), np.int32)).shape == (0, 3, 2)


def test_compute_output_shape():
    assert Embedding(10, 4).compute_output_shape((None, 7)) == (None, 7, 4)


def test_gradient_accumulates_into_the_looked_up_rows_in_float32():
    layer = Embedding(5, 2, dtype="mixed_bfloat16")
    ids = np.array([1, 1, 3], np.int32)
    layer(ids)

    def loss(values):
        y, _ = layer.stateless_call(values, [], ids)
        return jnp.sum(y.astype(jnp.float32))

    (grad,) = jax.jit(jax.grad(loss))([v.value for v in layer.trainable_variables])
    assert grad.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(grad), [[0, 0], [2, 2], [0, 0], [1, 1], [0, 0]])


# --- masks --------------------------------------------------------------------------------------------


class MaskRecorder(Layer):
    """Returns its input and records the mask the pipeline passed it."""

    def call(self, inputs, mask=None):
        self.mask_seen = mask
        return inputs


def test_compute_mask():
    ids = jnp.asarray(IDS)
    np.testing.assert_array_equal(Embedding(10, 2, mask_zero=True).compute_mask(ids), IDS != 0)
    assert Embedding(10, 2).compute_mask(ids) is None
    assert Embedding(10, 2, mask_zero=True).supports_masking
    assert not Embedding(10, 2).supports_masking


def test_mask_reaches_the_next_layer_and_passes_through_dense():
    embedding, dense, recorder = Embedding(10, 4, mask_zero=True), Dense(3), MaskRecorder()
    recorder(dense(embedding(IDS)))
    np.testing.assert_array_equal(recorder.mask_seen, IDS != 0)


def test_no_mask_without_mask_zero():
    embedding, recorder = Embedding(10, 4), MaskRecorder()
    y = embedding(IDS)
    assert get_mask(y) is None
    recorder(y)
    assert recorder.mask_seen is None


def test_mask_propagates_inside_a_jitted_composite_layer():
    class Model(Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.embedding = Embedding(10, 4, mask_zero=True)
            self.recorder = MaskRecorder()

        def call(self, ids):
            hidden = self.recorder(self.embedding(ids))
            # Masked positions summed out, using the mask the sublayer received.
            return jnp.sum(jnp.where(self.recorder.mask_seen[..., None], hidden, 0), axis=1)

    model = Model(dtype="mixed_bfloat16")
    eager = model(IDS)
    jitted = _run(model, IDS, "jit")
    table = jnp.asarray(model.get_weights()[0]).astype(jnp.bfloat16).astype(jnp.float32)
    expected = np.asarray(table)[IDS] * (IDS != 0)[..., None]
    for y in (eager, jitted):
        assert y.dtype == jnp.bfloat16
        assert_close(y, expected.sum(axis=1), "bfloat16")


# --- configs and errors -------------------------------------------------------------------------------


def test_config_round_trip_with_objects_through_json():
    layer = Embedding(
        12,
        5,
        embeddings_initializer=initializers.RandomNormal(stddev=0.1, seed=4),
        embeddings_regularizer=regularizers.L2(0.01),
        embeddings_constraint="non_neg",
        mask_zero=True,
        dtype="mixed_float16",
    )
    config = json.loads(json.dumps(layer.get_config()))
    assert config["input_dim"] == 12 and config["output_dim"] == 5 and config["mask_zero"] is True
    clone = Embedding.from_config(config)
    assert clone.get_config() == config
    np.testing.assert_array_equal(np.asarray(clone(IDS)), np.asarray(layer(IDS)))


def test_regularizer_loss_is_float32():
    layer = Embedding(4, 2, embeddings_regularizer=regularizers.L1(0.5), dtype="mixed_bfloat16")
    layer(np.array([0]))
    (loss,) = layer.losses
    assert loss.dtype == jnp.float32
    assert_close(loss, 0.5 * np.abs(np.asarray(layer.get_weights()[0], np.float64)).sum(), "float32")


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"input_dim": 0, "output_dim": 2}, ValueError, r"Embedding input_dim must be a positive int, received 0"),
        ({"input_dim": 10, "output_dim": -1}, ValueError, r"Embedding output_dim must be a positive int, received -1"),
        ({"input_dim": 10.0, "output_dim": 2}, ValueError, r"received 10.0"),
        ({"input_dim": 10, "output_dim": 2, "mask_zero": 1}, TypeError, r"mask_zero must be a bool, received 1"),
        (
            {"input_dim": 10, "output_dim": 2, "embeddings_initializer": "unifrom"},
            ValueError,
            r"Unknown initializer 'unifrom'",
        ),
        ({"input_dim": 10, "output_dim": 2, "embeddings_regularizer": "l3"}, ValueError, r"'l3'"),
        ({"input_dim": 10, "output_dim": 2, "input_length": 5}, TypeError, r"Unrecognized keyword arguments"),
    ],
)
def test_constructor_errors(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        Embedding(**kwargs)
