"""Shardings of a whole TrainState and of batches (layers/distribution/_state.py), on one device.

A (1, 1) mesh still carries the specs, so the slot-follows-variable rule is checked here for each
optimizer; the 8-device runs are in tests/test_distribution_step.py.
"""

import os

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import layers
from layers import optimizers, training
from layers.distribution import DataParallel, DeviceMesh, LayoutMap, ModelParallel, shard_batch, train_state_shardings

KERNEL, REPLICATED = P(None, "model"), P()


def _model(policy="float32"):
    model = layers.Sequential(
        [layers.Dense(8, name="dense"), layers.BatchNormalization(name="norm"), layers.Dense(2, name="head")],
        dtype=policy,
        name="m",
    )
    model(np.ones((2, 3), np.float32))
    return model


def _distribution():
    layout_map = LayoutMap(DeviceMesh((1, 1), ("batch", "model")))
    layout_map[".*dense/kernel"] = (None, "model")
    return ModelParallel(layout_map)


def _specs(tree):
    return [s.spec for s in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, NamedSharding))]


@pytest.mark.parametrize(
    ("optimizer", "slots_per_variable"),
    [
        (optimizers.Adam(1e-3), 2),
        (optimizers.SGD(0.1, momentum=0.9), 1),
        (optimizers.RMSprop(1e-3, momentum=0.9, centered=True), 3),
        (optimizers.Adam(1e-3, clipnorm=1.0), 2),
    ],
    ids=["adam", "sgd_momentum", "rmsprop_centered", "adam_clipnorm"],
)
def test_slots_take_their_variables_sharding(optimizer, slots_per_variable):
    model = _model()
    step = training.make_train_step(model, "mse", optimizer, distribution=_distribution())
    state = step.init_state()
    shardings = train_state_shardings(step, state, step.distribution)
    assert jax.tree.structure(shardings, is_leaf=lambda x: isinstance(x, NamedSharding)) == jax.tree.structure(state)
    assert [s.spec for s in shardings.trainable] == [KERNEL, REPLICATED, REPLICATED, REPLICATED, REPLICATED, REPLICATED]
    # Every slot shaped like the dense kernel is sharded like it; nothing else in the optimizer state is.
    leaves = jax.tree.leaves(state.optimizer)
    kernel_slots = [a for a in leaves if a.shape == (3, 8)]
    assert len(kernel_slots) == slots_per_variable
    assert all(a.sharding.spec == KERNEL for a in kernel_slots)
    assert _specs(shardings.optimizer).count(KERNEL) == slots_per_variable
    assert state.optimizer.iterations.sharding.spec == REPLICATED and state.step.sharding.spec == REPLICATED
    # The placed state holds what the variables hold.
    for variable, value in zip(model.trainable_variables, state.trainable, strict=True):
        np.testing.assert_array_equal(np.asarray(value), variable.numpy())


def test_slots_optax_cannot_map_are_replicated_with_a_warning():
    import optax

    # optax.masked with a partial mask: tree_map_params cannot see through its placeholders.
    model = _model()
    masked = optimizers.Optimizer(optax.masked(optax.adam(1e-3), lambda params: [True] + [False] * (len(params) - 1)))
    step = training.make_train_step(model, "mse", masked, distribution=_distribution())
    with pytest.warns(UserWarning, match=r"slots could not be matched to their variables .*not sharded"):
        state = step.init_state()
    kernel_slots = [a for a in jax.tree.leaves(state.optimizer) if a.shape == (3, 8)]
    assert kernel_slots and all(a.sharding.spec == REPLICATED for a in kernel_slots)


def test_loss_scale_and_accumulation_state():
    model = _model("mixed_float16")
    optimizer = optimizers.SGD(0.1, momentum=0.9, gradient_accumulation_steps=2)
    step = training.make_train_step(model, "mse", optimizer, distribution=_distribution())
    state = step.init_state()
    assert step.loss_scaling
    accumulation = state.optimizer.inner.accumulation
    assert accumulation.gradients[0].sharding.spec == KERNEL and accumulation.micro_step.sharding.spec == REPLICATED
    assert all(a.sharding.spec == REPLICATED for a in jax.tree.leaves(state.optimizer.loss_scale))


def test_one_device_distributed_step_equals_the_plain_step():
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(8, 2)).astype(np.float32)
    model = _model("mixed_bfloat16")
    plain = training.make_train_step(model, "mse", optimizers.Adam(1e-2))
    sharded = training.make_train_step(model, "mse", optimizers.Adam(1e-2), distribution=DataParallel())
    a, b = plain.init_state(), sharded.init_state()
    for _ in range(2):
        a, metrics_a = plain.jitted(a, (x, y))
        b, metrics_b = sharded.jitted(b, (x, y))
    assert float(metrics_a["loss"]) == float(metrics_b["loss"])
    for left, right in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(left), np.asarray(right))
    assert isinstance(b.trainable[0].sharding, NamedSharding)
    # A state committed to a device (restored by hand, made by the plain step) is moved onto the mesh.
    c, _ = sharded.jitted(jax.device_put(plain.init_state(), jax.devices()[0]), (x, y))
    assert isinstance(c.trainable[0].sharding, NamedSharding) and int(c.step) == 1


def test_restore_places_the_state_on_the_steps_mesh(tmp_path):
    model = _model()
    plain = training.make_train_step(model, "mse", optimizers.Adam(1e-2))
    path = os.fspath(tmp_path / "state.ckpt")
    plain.save(path, plain.init_state())  # saved from one device, no distribution
    sharded = training.make_train_step(model, "mse", optimizers.Adam(1e-2), distribution=_distribution())
    restored = sharded.restore(path)
    assert restored.trainable[0].sharding.spec == KERNEL
    assert all(isinstance(a.sharding, NamedSharding) for a in jax.tree.leaves(restored))


def test_shard_batch_splits_the_first_dimension():
    x, y, weight = shard_batch((np.ones((4, 3)), np.zeros(4, np.int32), None), DataParallel())
    assert x.sharding.spec == P("batch") and y.sharding.spec == P("batch") and weight is None
    assert y.dtype == np.int32
    with pytest.raises(ValueError, match=r"a batch array must have a batch dimension"):
        shard_batch((np.ones((4, 3)), np.float32(1.0)), DataParallel())
    with pytest.raises(TypeError, match=r"distribution must be a layers.distribution.Distribution .* received None"):
        shard_batch((np.ones((4, 3)),), None)


def test_state_of_another_model_is_refused():
    step = training.make_train_step(_model(), "mse", optimizers.SGD(0.1), distribution=DataParallel())
    state = step.init_state()
    other = training.make_train_step(layers.Dense(2, name="other"), "mse", optimizers.SGD(0.1))
    other.model(np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"This state does not belong to model 'other'"):
        train_state_shardings(other, state, DataParallel())
