"""serialize / deserialize of layers by class name."""

import pytest

from layers import Layer
from layers._base._layer_serialization import deserialize, serialize
from tests._layers_for_tests import Linear


def test_round_trip_finds_classes_by_name():
    layer = Linear(7, name="seven", dtype="mixed_bfloat16")
    clone = deserialize(serialize(layer))
    assert isinstance(clone, Linear) and clone.units == 7 and clone.dtype_policy == layer.dtype_policy


def test_ambiguous_and_unknown_names():
    class Twin(Layer):
        pass

    first = Twin

    class Twin(Layer):
        pass

    config = serialize(Twin())
    with pytest.raises(ValueError, match="'Twin' is ambiguous"):
        deserialize(config)
    assert isinstance(deserialize(config, custom_objects={"Twin": first}), first)
    with pytest.raises(ValueError, match="Unknown layer class 'Nowhere'"):
        deserialize({"class_name": "Nowhere", "config": {}})


def test_bad_inputs():
    with pytest.raises(TypeError, match="received 3"):
        serialize(3)
    with pytest.raises(ValueError, match="needs a string 'class_name'"):
        deserialize({"config": {}})
    with pytest.raises(ValueError, match="needs a dict 'config'"):
        deserialize({"class_name": "Linear", "config": 3})
