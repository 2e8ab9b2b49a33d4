"""set_weights conversion and the add_weight argument check."""

import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
from layers import Layer
from layers._base._weights import check_set_weights
from tests._layers_for_tests import Linear


def _built(**kwargs):
    layer = Linear(2, name="lin", **kwargs)
    layer(jnp.ones((1, 3)))
    return layer


def test_values_are_converted_to_storage_dtypes_and_variables_are_read_raw():
    layer = _built(dtype="mixed_bfloat16")
    source = dp.Variable(jnp.full((2,), 0.1, jnp.float32))
    with dp.autocast_scope("bfloat16"):  # a Variable is read in its storage dtype, never autocast
        kernel, bias = check_set_weights(layer, layer.weights, [np.ones((3, 2), np.float64), source])
    assert kernel.dtype == jnp.float32 and bias.dtype == jnp.float32
    assert bias.tolist() == np.asarray(source._value).tolist()


@pytest.mark.parametrize(
    ("value", "error", "fragment"),
    [
        ([[1.0, 2.0], [3.0]], ValueError, r"index 1 of set_weights \(for weight 'lin/bias'\) is a ragged nested list"),
        (np.array(["a", "b"]), TypeError, r"holds str_ values \(dtype <U1\).*expected numeric values"),
        (np.array([None, None]), TypeError, r"holds object_ values"),
        (np.zeros(3), ValueError, r"weight 'lin/bias' has shape \(2,\), but the value given for it has shape \(3,\)"),
    ],
)
def test_bad_values_name_the_index_the_variable_and_what_was_expected(value, error, fragment):
    layer = _built()
    with pytest.raises(error, match=fragment):
        check_set_weights(layer, layer.weights, [np.zeros((3, 2)), value])


def test_unbuilt_and_wrong_count_messages():
    with pytest.raises(ValueError, match=r"'lin' is not built yet, so its weights do not exist \(it has 0, received 1"):
        check_set_weights(Linear(2, name="lin"), [], [np.zeros(2)])
    layer = _built()
    with pytest.raises(ValueError, match="'lin' expects 2 weight arrays, received 3"):
        check_set_weights(layer, layer.weights, [0, 0, 0])
    empty = Layer()
    assert check_set_weights(empty, [], []) == []


def test_add_weight_keeps_its_signature_for_introspection():
    import inspect

    assert list(inspect.signature(Layer.add_weight).parameters)[:3] == ["self", "shape", "initializer"]
    with pytest.raises(TypeError, match=r"received the string 'kernel' as the shape"):
        Layer().add_weight(shape="kernel")


def test_one_short_repr_serves_the_weight_and_input_messages():
    from layers._base import _inputs, _weights

    assert not hasattr(_weights, "_short_repr") and _weights.short_repr is _inputs.short_repr
    assert _inputs.short_repr("x" * 200).endswith("...") and len(_inputs.short_repr("x" * 200)) == 123
