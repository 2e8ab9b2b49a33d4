"""Tracking of variables and sublayers: attributes, containers, order, locking, paths."""

import jax.numpy as jnp
import pytest

import dtypepolicy as dp
from layers import Layer
from layers._tracking import TrackedDict, TrackedList, contains_state, iter_state, unique
from tests._layers_for_tests import Linear


def make_variable(name):
    return dp.Variable(jnp.zeros(()), name=name)


class Holder(Layer):
    def __init__(self):
        super().__init__(name="holder")
        self.first = make_variable("first")
        self.group = [make_variable("in_list"), {"deep": make_variable("in_dict")}]
        self.pair = (make_variable("in_tuple"), Linear(2, name="tuple_layer"))
        self.table = {"sub": Linear(2, name="dict_layer")}
        self.last = make_variable("last")


def test_attributes_and_containers_are_tracked_in_creation_order():
    holder = Holder()
    assert [v.name for v in holder.variables] == ["first", "in_list", "in_dict", "in_tuple", "last"]
    assert [layer.name for layer in holder._flatten_layers(include_self=False)] == ["tuple_layer", "dict_layer"]
    assert [v.path for v in holder.variables][:2] == ["holder/first", "holder/in_list"]


def test_later_appends_and_setitems_are_tracked():
    holder = Holder()
    assert isinstance(holder.group, TrackedList) and isinstance(holder.table, TrackedDict)
    holder.group.append(make_variable("appended"))
    holder.group[1]["deeper"] = make_variable("set_in_nested_dict")
    holder.table["another"] = Linear(2, name="another")
    holder.group.extend([make_variable("extended")])
    names = [v.name for v in holder.variables]
    assert names[-3:] == ["appended", "set_in_nested_dict", "extended"]
    assert holder.table["another"].path == "holder/another"


def test_sublayer_variables_appear_after_building_and_weights_list_trainable_first():
    class Parent(Layer):
        def __init__(self):
            super().__init__(name="parent")
            self.counter = dp.Variable(jnp.zeros((), jnp.int32), trainable=False, name="counter")
            self.dense = Linear(2, name="dense")

        def call(self, x):
            return self.dense(x)

    parent = Parent()
    assert [v.name for v in parent.weights] == ["counter"]
    parent(jnp.ones((1, 3)))
    assert [v.path for v in parent.weights] == ["parent/dense/kernel", "parent/dense/bias", "parent/counter"]
    assert [v.path for v in parent.variables] == ["parent/counter", "parent/dense/kernel", "parent/dense/bias"]


def test_shared_layers_and_variables_count_once_and_keep_their_first_parent():
    shared = Linear(2, name="shared")

    class Twice(Layer):
        def __init__(self):
            super().__init__(name="twice")
            self.a = shared
            self.b = shared
            self.more = [shared]

        def call(self, x):
            return self.b(self.a(x))

    model = Twice()
    model(jnp.ones((1, 2)))
    assert len(model.weights) == 2 and shared.path == "twice/shared"


def test_deleting_an_attribute_untracks_its_state():
    holder = Holder()
    del holder.last
    assert "last" not in [v.name for v in holder.variables]


def test_locked_containers_refuse_new_state():
    class Built(Layer):
        def __init__(self):
            super().__init__(name="built_layer")
            self.items = []

        def call(self, x):
            return x

    layer = Built()
    layer(jnp.ones(1))
    layer.items.append(3)  # plain values are fine
    with pytest.raises(ValueError, match="'built_layer' is already built"):
        layer.items.append(make_variable("late"))
    with pytest.raises(ValueError, match="already built"):
        layer.items.insert(0, Layer())
    assert layer.items == [3]


def test_helpers():
    variable, layer = make_variable("v"), Layer()
    structure = {"a": [variable, (1, layer)], "b": "text"}
    assert list(iter_state(structure)) == [variable, layer]
    assert contains_state(structure) and not contains_state([1, "x", {"k": 2.0}])
    assert unique(iter([variable, layer, variable])) == [variable, layer]
    cyclic = []
    cyclic.append(cyclic)
    assert list(iter_state(cyclic)) == []
