"""Copies and pickles: a layer copied without its parent keeps the policy it followed."""

import copy
import gc
import pickle
import weakref

import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
from layers import Layer, Sequential
from tests._layers_for_tests import Linear


class Block(Layer):
    """A dense and a norm, so that a map with a regex key gives them different policies."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = Linear(4, name="dense")
        self.norm = Linear(4, name="norm")

    def call(self, x):
        return self.norm(self.dense(x))


def _pickle_round_trip(layer):
    return pickle.loads(pickle.dumps(layer))


CLONES = pytest.mark.parametrize(
    "clone", [copy.deepcopy, _pickle_round_trip, copy.copy], ids=["deepcopy", "pickle", "copy"]
)
X = np.ones((2, 3), np.float32)


@CLONES
def test_a_sublayer_copied_alone_keeps_the_policy_of_its_parent(clone):
    model = Sequential([Linear(4, name="d")], name="m", dtype="mixed_bfloat16")
    assert model(X).dtype == jnp.bfloat16
    alone = clone(model.layers[0])
    assert alone._parent is None and alone.path == "d"
    assert alone.dtype_policy.name == "mixed_bfloat16"
    out = alone(X)
    assert out.dtype == jnp.bfloat16 and alone.seen == {"input": jnp.bfloat16, "kernel": jnp.bfloat16}
    assert model.layers[0].dtype_policy.name == "mixed_bfloat16" and model.layers[0].path == "m/d"


@CLONES
def test_a_sublayer_copied_alone_keeps_its_entry_of_the_parents_map(clone):
    policy_map = dp.DTypePolicyMap("float32", {"m/d": "mixed_bfloat16", "m/other": "float16"})
    model = Sequential([Linear(4, name="d"), Linear(2, name="other")], name="m", dtype=policy_map)
    model(X)
    alone = clone(model.layers[0])
    assert alone.dtype_policy.name == "mixed_bfloat16"  # its entry, though its path is now "d"
    assert alone(X).dtype == jnp.bfloat16
    assert not isinstance(alone._explicit_dtype, dp.DTypePolicyMap)  # the map stays with the model


@pytest.mark.parametrize("clone", [copy.deepcopy, _pickle_round_trip], ids=["deepcopy", "pickle"])
def test_layers_inside_a_copied_block_keep_the_entries_the_outer_map_gave_them(clone):
    outer = Layer(name="lm", dtype=dp.DTypePolicyMap("mixed_bfloat16", {".*/norm": "float32"}))
    outer.block = Block(name="block")
    assert outer.block.norm.dtype_policy.name == "float32"
    block = clone(outer.block)  # the map holder is left behind
    assert [layer.path for layer in block._flatten_layers()] == ["block", "block/dense", "block/norm"]
    assert block.dtype_policy.name == "mixed_bfloat16"
    assert block.dense.dtype_policy.name == "mixed_bfloat16" and block.norm.dtype_policy.name == "float32"
    out = block(np.ones((2, 3), np.float32))
    assert block.dense.seen["input"] == jnp.bfloat16 and block.norm.seen["input"] == jnp.float32
    assert out.dtype == jnp.float32


@pytest.mark.parametrize("clone", [copy.deepcopy, _pickle_round_trip], ids=["deepcopy", "pickle"])
def test_inside_a_copied_model_the_copied_parent_and_its_map_still_govern(clone):
    policy_map = dp.DTypePolicyMap("mixed_bfloat16", {"m/last": "float32"})
    model = Sequential([Linear(4, name="first"), Linear(2, name="last")], name="m", dtype=policy_map)
    model(X)
    twin = clone(model)
    assert [layer.dtype_policy.name for layer in twin.layers] == ["mixed_bfloat16", "float32"]
    twin.dtype_policy = dp.DTypePolicyMap("float16")  # the copy's map decides, not a stored policy
    assert [layer.dtype_policy.name for layer in twin.layers] == ["float16", "float16"]
    popped = twin.pop()  # leaving the copied model, it gets its own default back, as the original would
    assert popped._parent is None and popped.dtype_policy.name == "float32"
    assert model.pop().dtype_policy.name == "float32"


def test_a_copied_sublayer_that_had_its_own_policy_keeps_it():
    model = Sequential([Linear(4, name="d", dtype="float16")], name="m", dtype="mixed_bfloat16")
    for clone in (copy.deepcopy, _pickle_round_trip, copy.copy):
        assert clone(model.layers[0]).dtype_policy.name == "float16"
    with dp.policy_scope("mixed_float16"):
        top = Linear(2, name="top")  # no parent: its construction default
    assert copy.deepcopy(top).dtype_policy.name == "mixed_float16"


class Comparable(Linear):
    """A layer class defining __eq__ (so unhashable): copies must not put layers in dicts or sets."""

    def __eq__(self, other):
        return isinstance(other, Comparable) and self.units == other.units


@pytest.mark.parametrize("clone", [copy.deepcopy, _pickle_round_trip], ids=["deepcopy", "pickle"])
def test_layers_that_define_eq_copy_and_keep_their_policy(clone):
    model = Sequential([Comparable(4, name="a"), Comparable(4, name="b")], name="m", dtype="mixed_bfloat16")
    model(X)
    twin = clone(model)
    assert [layer.path for layer in twin.layers] == ["m/a", "m/b"] and twin.layers[0] is not twin.layers[1]
    alone = clone(model.layers[1])
    assert alone.dtype_policy.name == "mixed_bfloat16" and alone.path == "b"
    model.layers[0].trainable = False
    holder = Layer(name="holder", trainable=False)
    holder.items = [Comparable(2, name="c"), Comparable(2, name="d")]
    holder.items.remove(holder.items[1])  # equal by __eq__, but `d` is the one removed
    assert [layer.name for layer in holder.sublayers()] == ["c"]


@pytest.mark.parametrize("clone", [copy.deepcopy, _pickle_round_trip], ids=["deepcopy", "pickle"])
def test_a_sublayer_kept_from_a_copied_model_does_not_keep_the_copy_alive(clone):
    model = Sequential([Linear(2, name="inner")], name="model")
    model(jnp.ones((1, 3)))
    twin = clone(model)
    inner, gone = twin.layers[0], weakref.ref(twin)
    assert inner.path == "model/inner"
    del twin
    gc.collect()
    assert gone() is None  # the restored link to the copied model is weak, as the original's
    assert inner.path == "inner" and [v.path for v in inner.weights] == ["inner/kernel", "inner/bias"]
    assert model.layers[0].path == "model/inner"  # the original is untouched


@pytest.mark.parametrize("clone", [copy.deepcopy, _pickle_round_trip], ids=["deepcopy", "pickle"])
def test_a_collected_copy_of_a_frozen_holder_gives_the_flags_back_to_a_sublayer_kept_from_it(clone):
    holder = Layer(name="holder", trainable=False)
    holder.items = [Linear(2, name="dense")]
    holder.items[0].build((None, 3))
    twin = clone(holder)
    kept = twin.items[0]
    keep = Layer(name="keep")
    keep.dense = kept
    assert kept.trainable is False  # the copied holder still freezes it
    del twin
    gc.collect()
    assert kept.trainable is True and [v.trainable for v in kept.variables] == [True, True]
    assert [v.path for v in keep.trainable_weights] == ["keep/dense/kernel", "keep/dense/bias"]


@pytest.mark.parametrize("clone", [copy.deepcopy, _pickle_round_trip], ids=["deepcopy", "pickle"])
def test_a_collected_copy_of_a_frozen_layer_gives_back_the_flag_of_a_variable_kept_from_it(clone):
    holder = Layer(name="holder", trainable=False)
    holder.w = dp.Variable(np.ones(2, np.float32), name="w")
    twin = clone(holder)
    kept = twin.w
    assert kept.trainable is False
    del twin
    gc.collect()
    assert kept.trainable is True


def test_a_shallow_copy_of_a_frozen_layer_collected_leaves_the_shared_variables_frozen():
    holder = Layer(name="holder", trainable=False)
    holder.w = dp.Variable(np.ones(2, np.float32), name="w")
    twin = copy.copy(holder)
    del twin
    gc.collect()
    assert holder.w.trainable is False  # the original still freezes it
