"""Sequential: order, policies through the stack, training and masks, add/pop, configs."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
from layers import Layer
from layers._builtin._sequential import Sequential
from tests._layers_for_tests import Linear, Recorder


class AddOne(Layer):
    def call(self, x):
        return x + 1


class Doubler(Layer):
    def call(self, x):
        return x * 2


class MaskMaker(Layer):
    def compute_mask(self, inputs, mask=None):
        return inputs > 0

    def call(self, x):
        return x


class MaskReader(Layer):
    def call(self, x, mask=None):
        self.mask_seen = mask
        return x


def test_layers_run_in_order():
    model = Sequential([AddOne(), Doubler()])
    assert model(np.zeros(2)).tolist() == [2.0, 2.0]
    assert Sequential([Doubler(), AddOne()])(np.zeros(2)).tolist() == [1.0, 1.0]


def test_policy_flows_to_sublayers_and_weights_are_collected():
    model = Sequential([Linear(4), Linear(2)], dtype="mixed_bfloat16", name="stack")
    out = model(np.ones((3, 5)))
    assert out.dtype == jnp.bfloat16
    assert next(w.path for w in model.weights).startswith("stack/linear")
    assert len(model.trainable_weights) == 4 and all(w.dtype == "float32" for w in model.weights)
    policy_map = dp.DTypePolicyMap("mixed_bfloat16", {"mapped/last": "float32"})
    mapped = Sequential([Linear(4), Linear(2, name="last")], dtype=policy_map, name="mapped")
    assert mapped(np.ones((1, 3))).dtype == jnp.float32


def test_training_and_masks_flow_through():
    recorder, reader = Recorder(), MaskReader()
    model = Sequential([MaskMaker(), recorder, Doubler(), reader])
    model(jnp.array([1.0, -1.0]), training=True)
    assert recorder.training_seen is True
    assert reader.mask_seen is None  # Doubler does not support masking: the mask stops there
    model = Sequential([MaskMaker(), reader])
    model(jnp.array([1.0, -1.0]))
    assert reader.mask_seen.tolist() == [True, False]
    explicit = Sequential([reader])
    explicit(jnp.ones(2), mask=jnp.array([False, True]))
    assert reader.mask_seen.tolist() == [False, True]


def test_add_pop_and_build():
    model = Sequential(name="growing")
    model.add(Linear(3))
    model.build((None, 2))
    assert model.built and model.layers[0].kernel.shape == (2, 3)
    model.add(Linear(1))  # allowed after build; the new layer builds on the next call
    assert model(np.ones((1, 2))).shape == (1, 1)
    popped = model.pop()
    assert isinstance(popped, Linear) and len(model.layers) == 1 and len(model.weights) == 2
    with pytest.raises(TypeError, match=r"Sequential\.add expects a Layer, received 'dense'"):
        model.add("dense")
    with pytest.raises(IndexError, match="'empty' has no layers to pop"):
        Sequential(name="empty").pop()


def test_config_round_trip_with_custom_layers():
    model = Sequential([Linear(3, name="a"), AddOne(name="b")], dtype="mixed_float16", name="s")
    model(np.ones((1, 2)))
    config = json.loads(json.dumps(model.get_config()))
    clone = Sequential.from_config(config)
    assert [layer.name for layer in clone.layers] == ["a", "b"] and clone.dtype_policy.name == "mixed_float16"
    clone(np.ones((1, 2)))
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(np.ones((1, 2)))), np.asarray(model(np.ones((1, 2)))))


def test_layers_of_another_model_follow_the_new_container_and_its_policy_map():
    old = Sequential([Linear(3, name="first"), Linear(2, name="last")], name="old")
    old(np.ones((1, 4)))
    assert old(np.ones((1, 4))).dtype == jnp.float32
    policy_map = dp.DTypePolicyMap("float32", {"new/last": "mixed_bfloat16"})
    new = Sequential(old.layers, dtype=policy_map, name="new")
    assert [layer.path for layer in new.layers] == ["new/first", "new/last"]
    assert [v.path for v in new.weights] == ["new/first/kernel", "new/first/bias", "new/last/kernel", "new/last/bias"]
    assert [layer.dtype_policy.name for layer in new.layers] == ["float32", "mixed_bfloat16"]
    assert new(np.ones((1, 4))).dtype == jnp.bfloat16
    assert new.layers[1].seen == {"input": jnp.bfloat16, "kernel": jnp.bfloat16}
    popped = new.pop()  # leaving the new container, it goes back to the one still holding it
    assert popped.path == "old/last" and popped.dtype_policy.name == "float32"


def test_pop_after_build_drops_the_weights_and_count_params():
    model = Sequential([Linear(3, name="a"), Linear(2, name="b")], name="popping")
    model(np.ones((1, 4)))
    assert model.count_params() == (4 * 3 + 3) + (3 * 2 + 2)
    popped = model.pop()
    assert model.count_params() == 4 * 3 + 3 and popped.path == "b"
    assert model.sublayers() == model.layers


def test_the_old_models_paths_change_too_so_checkpoints_come_from_the_owning_model():
    old = Sequential([Linear(3, name="first"), Linear(2, name="last")], name="old")
    old(np.ones((1, 4)))
    before = {v.path: np.asarray(v.value) for v in old.weights}
    assert list(before) == ["old/first/kernel", "old/first/bias", "old/last/kernel", "old/last/bias"]
    new = Sequential(old.layers, name="new")
    # The layers are shared and re-parented: the old model reports the new paths for its weights.
    assert [v.path for v in old.weights] == ["new/first/kernel", "new/first/bias", "new/last/kernel", "new/last/bias"]
    assert [layer.path for layer in old.layers] == ["new/first", "new/last"]
    checkpoint = {v.path: np.asarray(v.value) for v in new.weights}  # keyed by the owner's paths
    assert list(checkpoint) == [path.replace("old/", "new/", 1) for path in before]
    for (_, a), (_, b) in zip(before.items(), checkpoint.items(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(old(np.ones((1, 4)))), np.asarray(new(np.ones((1, 4)))))
