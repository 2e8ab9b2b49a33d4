"""layers.losses: the public face, `get`, `serialize` and `deserialize`."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import layers
from layers import losses

CLASSES = [
    losses.MeanSquaredError,
    losses.MeanAbsoluteError,
    losses.Huber,
    losses.BinaryCrossentropy,
    losses.CategoricalCrossentropy,
    losses.SparseCategoricalCrossentropy,
]


def test_public_face_exports_every_name_it_lists():
    for name in losses.__all__:
        assert getattr(losses, name) is not None
    assert layers.losses is losses


@pytest.mark.parametrize(
    ("name", "function"),
    [
        ("mse", losses.mean_squared_error),
        ("MSE", losses.mean_squared_error),
        ("mean_squared_error", losses.mean_squared_error),
        ("mae", losses.mean_absolute_error),
        ("mean_absolute_error", losses.mean_absolute_error),
        ("huber", losses.huber),
        ("bce", losses.binary_crossentropy),
        ("binary_crossentropy", losses.binary_crossentropy),
        ("categorical_crossentropy", losses.categorical_crossentropy),
        ("sparse_categorical_crossentropy", losses.sparse_categorical_crossentropy),
    ],
)
def test_get_a_function_name_gives_the_per_sample_function(name, function):
    assert losses.get(name) is function
    assert losses.mse is losses.MSE is losses.mean_squared_error


@pytest.mark.parametrize("cls", CLASSES)
def test_get_a_class_name_a_class_or_a_config_gives_an_instance(cls):
    by_name = losses.get(cls.__name__)
    assert type(by_name) is cls and by_name.get_config() == cls().get_config()
    assert type(losses.get(cls)) is cls
    instance = cls(reduction="sum")
    assert losses.get(instance) is instance
    config = json.loads(json.dumps(losses.serialize(instance)))
    again = losses.get(config)
    assert type(again) is cls and again.get_config() == instance.get_config()
    assert losses.deserialize(config).get_config() == instance.get_config()


def test_get_passes_none_and_other_callables_through():
    def custom(y_true, y_pred):
        return jnp.zeros(())

    assert losses.get(None) is None
    assert losses.get(custom) is custom


def test_serialize_a_function_gives_its_name_and_deserialize_reads_it():
    assert losses.serialize(losses.mae) == "mean_absolute_error"
    assert losses.deserialize("mean_absolute_error") is losses.mean_absolute_error
    value = losses.get("mse")(np.zeros((2, 3)), np.ones((2, 3)))
    assert value.dtype == jnp.float32 and value.tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: losses.get("mean_sqared_error"),
            ValueError,
            r"Unknown loss 'mean_sqared_error'. Expected a function name \(mean_squared_error, .*\) or a class name "
            r"\(MeanSquaredError, .*\). Did you mean 'mean_squared_error'\?",
        ),
        (
            lambda: losses.get(3),
            TypeError,
            r"Cannot interpret 3 of type int as a loss. Expected None, a name such as 'mse', a Loss",
        ),
        (lambda: losses.get({"class_name": "Hinge"}), ValueError, r"Unknown loss 'Hinge'"),
        (lambda: losses.get({"config": {}}), ValueError, r"needs a string 'class_name'"),
        (
            lambda: losses.get({"class_name": "Huber", "config": {"delta": 1.0, "alpha": 2}}),
            ValueError,
            r"Huber.from_config received unknown keys \['alpha'\]",
        ),
        (lambda: losses.serialize(len), TypeError, r"serialize expects a Loss or a built-in loss function .* received"),
        (lambda: losses.deserialize(3), TypeError, r"deserialize expects a dict from serialize or a name, received 3"),
    ],
)
def test_bad_identifiers_raise_naming_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()
