"""Shardings of a whole `TrainState` (values, optimizer slots, loss scale, step) and of a batch.

Optimizer slots take the sharding of the variable they mirror: optax's `tree_map_params` finds
the parameter-shaped subtrees of the transform's state (Adam's moments, momentum traces), and
gradient-accumulation buffers mirror their entries by construction. Everything else in the
state (counters, the loss scale) is replicated.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

import dtypepolicy as dp
from layers.distribution._distributions import Distribution
from layers.distribution._mesh import replicated
from layers.optimizers._base import AccumulationState, Optimizer, OptimizerState
from layers.optimizers._loss_scale import LossScaleOptimizer, LossScaleState

__all__ = ["check_distribution", "init_sharded_state", "shard_batch", "shard_train_state", "train_state_shardings"]


def check_distribution(distribution: Any) -> Distribution:
    """`distribution` if it is a `Distribution`, else a TypeError naming it."""
    if not isinstance(distribution, Distribution):
        raise TypeError(
            f"distribution must be a layers.distribution.Distribution (DataParallel, FSDP, ModelParallel), received "
            f"{distribution!r} of type {type(distribution).__name__}."
        )
    return distribution


@dataclasses.dataclass(frozen=True)
class _Slot:
    """A parameter's sharding and shape, one opaque leaf for `tree_map_params`."""

    sharding: NamedSharding
    shape: tuple[int, ...]


def _slot_shardings(transform: Any, inner: Any, slots: list[_Slot], rep: NamedSharding) -> Any:
    """The shardings of an optax state: parameter-shaped subtrees like their parameters, the rest replicated."""
    import optax  # the train extra; layers.distribution is imported with the training half

    def mirror(leaf: Any, slot: _Slot) -> NamedSharding:
        # A factored or reduced slot (Adafactor) has another shape: it cannot take the parameter's layout.
        return slot.sharding if tuple(np.shape(leaf)) == slot.shape else rep

    try:
        return optax.tree_map_params(transform, mirror, inner, slots, transform_non_params=lambda _: rep)
    except Exception as error:  # a transform whose init cannot take optax's placeholder (optax.masked)
        # Correct, but every device then holds every slot whole: say so rather than use the memory quietly.
        warnings.warn(
            f"layers.distribution: the optimizer's slots could not be matched to their variables "
            f"({type(error).__name__}: {str(error).splitlines()[0]}); every slot is replicated on each device, so "
            "the optimizer's memory is not sharded.",
            stacklevel=2,
        )
        return jax.tree.map(lambda _: rep, inner)


def _optimizer_shardings(
    optimizer: Optimizer, state: Any, variables: Sequence[dp.Variable], layouts: list, rep: NamedSharding
) -> Any:
    if isinstance(optimizer, LossScaleOptimizer) and isinstance(state, LossScaleState):
        inner = _optimizer_shardings(optimizer.inner_optimizer, state.inner, variables, layouts, rep)
        return LossScaleState(inner, jax.tree.map(lambda _: rep, state.loss_scale))
    if not isinstance(state, OptimizerState):
        return jax.tree.map(lambda _: rep, state)
    ordinary = [i for i, v in enumerate(variables) if not v.overwrite_with_gradient]
    overwritten = [i for i, v in enumerate(variables) if v.overwrite_with_gradient]
    slots = [_Slot(layouts[i], tuple(variables[i].shape)) for i in ordinary]
    inner = _slot_shardings(optimizer.transform, state.inner, slots, rep)
    accumulation = None
    if state.accumulation is not None:
        accumulation = AccumulationState(rep, [layouts[i] for i in ordinary], [layouts[i] for i in overwritten])
    return OptimizerState(rep, inner, accumulation)


def train_state_shardings(step: Any, state: Any, distribution: Distribution) -> Any:
    """A `TrainState` of `NamedSharding`s for `state` of `step` (a `make_train_step` result) under `distribution`.

    Trainable and non-trainable values take their variables' layouts, optimizer slots their
    variable's, everything else (iterations, the loss scale, the step counter) is replicated.

    Example:
      >>> import layers
      >>> from layers import distribution, optimizers, training
      >>> layout_map = distribution.LayoutMap(distribution.DeviceMesh((1, len(jax.devices())), ("batch", "model")))
      >>> layout_map["dense/kernel"] = (None, "model")
      >>> model = layers.Dense(8 * len(jax.devices()), name="dense")
      >>> _ = model(jnp.ones((1, 3)))
      >>> step = training.make_train_step(model, "mse", optimizers.Adam(1e-3))  # an unsharded state
      >>> state = step.init_state()
      >>> shardings = distribution.train_state_shardings(step, state, distribution.ModelParallel(layout_map))
      >>> shardings.trainable[0].spec, shardings.optimizer.iterations.spec
      (P(None, 'model'), P())
    """
    check_distribution(distribution)
    model = step.model
    trainable, non_trainable = list(model.trainable_variables), list(model.non_trainable_variables)
    if len(state.trainable) != len(trainable) or len(state.non_trainable) != len(non_trainable):
        raise ValueError(f"This state does not belong to model {model.name!r}: its value counts differ.")
    layouts = distribution.variable_layouts(trainable + non_trainable)
    rep = replicated(distribution.device_mesh)
    optimizer = _optimizer_shardings(step.optimizer, state.optimizer, trainable, layouts[: len(trainable)], rep)
    return dataclasses.replace(
        state,
        trainable=layouts[: len(trainable)],
        non_trainable=layouts[len(trainable) :],
        optimizer=optimizer,
        step=rep,
    )


def init_sharded_state(
    step: Any, make_state: Callable[[list, list], Any], values: tuple[list, list], distribution: Distribution
) -> Any:
    """`make_state(trainable, non_trainable)` (a fresh `TrainState`) computed under `jax.jit` into its shardings.

    The values go in with their variables' shardings and the optimizer's slots are created on their
    shards: Adam's moments of an FSDP model never exist whole on one device.
    """
    shardings = train_state_shardings(step, jax.eval_shape(make_state, *values), distribution)
    jitted = jax.jit(make_state, in_shardings=(shardings.trainable, shardings.non_trainable), out_shardings=shardings)
    # Variables may hold arrays laid out by another distribution (an earlier fit): moved first,
    # since jit refuses committed arguments whose sharding differs from its in_shardings.
    return jitted(*jax.device_put(values, (shardings.trainable, shardings.non_trainable)))


def shard_train_state(step: Any, state: Any, distribution: Distribution) -> Any:
    """`state` placed on `distribution`'s mesh with `train_state_shardings` (from any placement or host arrays).

    Example:
      >>> import layers
      >>> from layers import distribution, optimizers, training
      >>> model = layers.Dense(2)
      >>> _ = model(jnp.ones((1, 3)))
      >>> step = training.make_train_step(model, "mse", optimizers.SGD(0.1))
      >>> state = distribution.shard_train_state(step, step.init_state(), distribution.DataParallel())
      >>> type(state.trainable[0].sharding).__name__
      'NamedSharding'
    """
    return jax.device_put(state, train_state_shardings(step, state, distribution))


def shard_batch(batch: Any, distribution: Distribution) -> Any:
    """Every array of `batch` with its first dimension split over the batch axes.

    With several processes (`jax.distributed.initialize`), each process passes its own slice of
    the global batch (host arrays) and the result is one global array per leaf.

    Example:
      >>> from layers.distribution import DataParallel, shard_batch
      >>> n = len(jax.devices())
      >>> x, y = shard_batch((np.ones((4 * n, 3)), np.zeros(4 * n)), DataParallel())
      >>> x.sharding.spec, x.shape == (4 * n, 3)
      (P('batch',), True)
    """
    check_distribution(distribution)
    processes = jax.process_count()

    def place(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array):
            return jax.device_put(leaf, distribution.get_data_layout(leaf.shape))
        array = np.asarray(leaf)
        if processes == 1:
            return jax.device_put(array, distribution.get_data_layout(array.shape))
        # Each process holds its slice: the global batch is `processes` times larger.
        sharding = distribution.get_data_layout((array.shape[0] * processes, *array.shape[1:]) if array.ndim else ())
        return jax.make_array_from_process_local_data(sharding, array)

    return jax.tree.map(place, batch)
