"""A jitted train step for any layer, loss and optimizer: `TrainState` and `make_train_step`.

The step is a pure function of a `TrainState` and a batch. It runs the model through
`stateless_call` (so BatchNormalization statistics and Dropout keys come back as new
non-trainable values), adds the model's regularization losses to the loss, takes gradients
with respect to the trainable values, and hands them to the optimizer's `stateless_apply`.
Loss scaling is turned on automatically when any layer of the model computes in float16.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from layers import losses as _losses
from layers._base._layer import Layer
from layers.distribution._state import check_distribution, init_sharded_state, shard_train_state
from layers.distribution._step import ShardedStep
from layers.losses._base import reduce_weighted
from layers.optimizers import LossScaleOptimizer, Optimizer
from layers.optimizers._loss_scale import gradients_finite
from layers.training._checkpoint import restore_checkpoint, save_checkpoint


@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a train step reads and returns, as a pytree.

    Attributes:
      trainable: the values of `model.trainable_variables`, in that order (storage dtypes).
      non_trainable: the values of `model.non_trainable_variables` (statistics, RNG state).
      optimizer: the optimizer's state (the loss scale's too, when loss scaling is on).
      step: the number of steps taken, an int32 scalar.

    Example:
      >>> import numpy as np, layers
      >>> from layers import training
      >>> model = layers.Dense(2, dtype="mixed_bfloat16")
      >>> _ = model(np.ones((1, 3), np.float32))
      >>> step = training.make_train_step(model, "mse", layers.optimizers.Adam(1e-3))
      >>> state = step.init_state()
      >>> [value.dtype.name for value in state.trainable], int(state.step)  # float32 master weights
      (['float32', 'float32'], 0)
    """

    trainable: list
    non_trainable: list
    optimizer: Any
    step: jax.Array


jax.tree_util.register_dataclass(
    TrainState, data_fields=[field.name for field in dataclasses.fields(TrainState)], meta_fields=[]
)


def computes_in_float16(model: Layer) -> bool:
    """Whether any layer in `model` (itself included) computes in float16 (then loss scaling is on by default).

    Example:
      >>> import layers
      >>> computes_in_float16(layers.Sequential([layers.Dense(2, dtype="mixed_float16"), layers.Dense(1)]))
      True
      >>> computes_in_float16(layers.Dense(2, dtype="mixed_bfloat16"))
      False
    """
    return any(layer.compute_dtype == "float16" for layer in [model, *model.sublayers()])


def _batch_parts(batch: Any) -> tuple[Any, Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise TypeError(
            f"A batch must be a tuple (x, y) or (x, y, sample_weight), received {type(batch).__name__}"
            + (f" of length {len(batch)}." if isinstance(batch, (tuple, list)) else ".")
        )
    x, y, *rest = batch
    return x, y, rest[0] if rest else None


class TrainStep:
    """The pure train step of one model, loss and optimizer; made by `make_train_step`.

    Call it as `state, metrics = step(state, batch)`: a pure function, meant for `jax.jit`
    (`step.jitted` is one, donating the old state's buffers). `init_state()` reads the model's
    variables into a first `TrainState`; `write_back(state)` assigns a state's values to them.

    Attributes:
      model: the layer being trained (built on the first `init_state` call if needed).
      loss: the loss function, `loss(y_true, y_pred, sample_weight) -> float32 scalar`.
      optimizer: the optimizer the step applies; a `LossScaleOptimizer` around the one given
        when loss scaling was turned on.
      loss_scaling: whether gradients are loss-scaled.
      distribution: the `layers.distribution.Distribution` the state and batches are sharded by, or None.

    Example:
      >>> import numpy as np, layers
      >>> from layers import training
      >>> model = layers.Dense(1)
      >>> _ = model(np.ones((1, 2), np.float32))
      >>> step = training.make_train_step(model, "mse", layers.optimizers.SGD(0.1))
      >>> x, y = np.ones((4, 2), np.float32), np.full((4, 1), 3.0, np.float32)
      >>> state = step.init_state()
      >>> state, first = step.jitted(state, (x, y))
      >>> state, second = step.jitted(state, (x, y))
      >>> bool(second["loss"] < first["loss"]), int(state.step)
      (True, 2)
      >>> step.write_back(state)  # the model's variables now hold the trained values
    """

    def __init__(
        self, model: Layer, loss: Callable[..., Any], optimizer: Optimizer, loss_scaling: bool, distribution: Any = None
    ) -> None:
        self.model = model
        self.loss = loss
        # An optimizer that unscales gradients needs a scaled loss: scaling is on with one.
        self.loss_scaling = loss_scaling or isinstance(optimizer, LossScaleOptimizer)
        if self.loss_scaling and not isinstance(optimizer, LossScaleOptimizer):
            optimizer = LossScaleOptimizer(optimizer)
        self.optimizer = optimizer
        self.distribution = distribution
        # Under a distribution: jax.jit with the state's and the batch's shardings.
        self.jitted = (
            jax.jit(self.__call__, donate_argnums=0) if distribution is None else ShardedStep(self, distribution)
        )

    def _check_built(self) -> None:
        if not self.model.built:
            raise ValueError(
                f"Model {self.model.name!r} is not built: call it once on example inputs (or call build) "
                f"before making its train state."
            )

    def init_state(self) -> TrainState:
        """A first state from the model's variables (raw storage, never the autocast read)."""
        self._check_built()
        # Copies: `jitted` donates the state's buffers, which must never be the variables' own.
        trainable = [jnp.array(v._read_storage(), copy=True) for v in self.model.trainable_variables]
        non_trainable = [jnp.array(v._read_storage(), copy=True) for v in self.model.non_trainable_variables]
        self.optimizer.build(self.model.trainable_variables)

        def fresh(trainable: list, non_trainable: list) -> TrainState:
            return TrainState(trainable, non_trainable, self.optimizer.init(trainable), jnp.zeros((), jnp.int32))

        if self.distribution is not None:  # made under jit into its shardings: slots created on their shards
            return init_sharded_state(self, fresh, (trainable, non_trainable), self.distribution)
        return fresh(trainable, non_trainable)

    def _placed(self, state: TrainState) -> TrainState:
        return state if self.distribution is None else shard_train_state(self, state, self.distribution)

    def write_back(self, state: TrainState) -> None:
        """Assigns the state's trainable and non-trainable values to the model's variables."""
        variables = self.model.trainable_variables + self.model.non_trainable_variables
        values = list(state.trainable) + list(state.non_trainable)
        if len(values) != len(variables):
            raise ValueError(
                f"This state holds {len(values)} values but model {self.model.name!r} has {len(variables)} "
                f"trainable and non-trainable variables."
            )
        for variable, value in zip(variables, values, strict=True):
            # A copy: the state's buffers may be donated to a later step, which would free them.
            variable.assign(jnp.array(value, copy=True))

    def save(self, path: Any, state: TrainState, metadata: Any = None) -> None:
        """Saves `state` as a checkpoint, each value keyed by its variable's path (bits exact).

        The optimizer's state (slots, iterations, the loss scale) and the step counter go with it;
        `restore` gives back a state whose next step is bit-identical to this run's.
        """
        self._check_built()
        save_checkpoint(path, self._by_path(state), metadata)

    def restore(self, path: Any) -> TrainState:
        """The state saved by `save`, checked against this model: every path, shape and dtype."""
        fresh = self.init_state()
        keyed = restore_checkpoint(path, like=self._by_path(fresh))
        # Under a distribution the host arrays go straight onto this step's mesh, each device taking
        # its shard, whatever mesh saved them.
        array = jnp.asarray if self.distribution is None else (lambda host: host)
        trainable = [array(keyed["trainable"][v.path]) for v in self.model.trainable_variables]
        non_trainable = [array(keyed["non_trainable"][v.path]) for v in self.model.non_trainable_variables]
        optimizer = jax.tree.map(array, keyed["optimizer"])
        return self._placed(TrainState(trainable, non_trainable, optimizer, array(keyed["step"])))

    def _by_path(self, state: TrainState) -> dict[str, Any]:
        trainable, non_trainable = self.model.trainable_variables, self.model.non_trainable_variables
        if len(state.trainable) != len(trainable) or len(state.non_trainable) != len(non_trainable):
            raise ValueError(f"This state does not belong to model {self.model.name!r}: its value counts differ.")
        return {
            "trainable": {v.path: value for v, value in zip(trainable, state.trainable, strict=True)},
            "non_trainable": {v.path: value for v, value in zip(non_trainable, state.non_trainable, strict=True)},
            "optimizer": state.optimizer,
            "step": state.step,
        }

    def __call__(self, state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        # A state from elsewhere (an earlier fit's, a hand-made one) may reach an optimizer that
        # init_state never built; building again with the same variables does nothing.
        self.optimizer.build(self.model.trainable_variables)
        parts = _batch_parts(batch)

        def scaled(trainable: list) -> tuple[Any, Any]:
            total, aux = _objective(self.model, self.loss, trainable, state, parts, training=True)
            if self.loss_scaling:
                return self.optimizer.scale_loss(total, state.optimizer), (total, aux)
            return total, (total, aux)

        grads, (total, (value, non_trainable)) = jax.grad(scaled, has_aux=True)(list(state.trainable))
        trainable, optimizer_state = self.optimizer.stateless_apply(state.optimizer, grads, list(state.trainable))
        if self.loss_scaling:
            # A step the loss scale skips (non-finite gradients) keeps the old statistics too:
            # overflowed activations must not reach BatchNormalization's moving averages.
            overwrite = [v.overwrite_with_gradient for v in self.model.trainable_variables]
            finite = gradients_finite(grads, overwrite)
            non_trainable = jax.tree.map(
                lambda new, old: jnp.where(finite, new, old), non_trainable, state.non_trainable
            )
        metrics = {"loss": total, "data_loss": value}
        if self.loss_scaling:
            metrics["loss_scale"] = optimizer_state.loss_scale.loss_scale
        return TrainState(trainable, non_trainable, optimizer_state, state.step + 1), metrics

    def evaluate(self, state: TrainState, batch: Any) -> dict[str, jax.Array]:
        """The loss of `batch` in inference mode (`training=False`); changes nothing."""
        return _evaluate(self.model, self.loss, state, batch)


def _objective(
    model: Layer, loss: Callable, trainable: list, state: TrainState, parts: tuple, training: bool
) -> tuple[jax.Array, tuple[jax.Array, list]]:
    """The loss plus the regularization losses, and (the loss alone, the new non-trainable values)."""
    x, y, weight = parts
    outputs, non_trainable, extra = model.stateless_call(
        trainable, state.non_trainable, x, training=training, return_losses=True
    )
    value = jnp.asarray(loss(y, outputs, weight), jnp.float32)
    regularization = sum((jnp.asarray(term, jnp.float32) for term in extra), jnp.zeros((), jnp.float32))
    return value + regularization, (value, non_trainable)


def _evaluate(model: Layer, loss: Callable, state: TrainState, batch: Any) -> dict[str, jax.Array]:
    total, (value, _) = _objective(model, loss, list(state.trainable), state, _batch_parts(batch), training=False)
    return {"loss": total, "data_loss": value}


def make_train_step(
    model: Layer, loss: Any, optimizer: Optimizer, *, loss_scaling: bool | str = "auto", distribution: Any = None
) -> TrainStep:
    """Builds the pure train step of `model` with `loss` and `optimizer`.

    Args:
      model: a built layer (any `Layer`, a `Sequential`, a custom model).
      loss: a loss from `layers.losses`, its name (`"mse"`), or any `loss(y_true, y_pred,
        sample_weight)` callable returning a scalar.
      optimizer: an optimizer from `layers.optimizers` (not yet built for another model).
      loss_scaling: `"auto"` (on when any layer of the model computes in float16, whatever the
        model's own policy), True or False. A `LossScaleOptimizer` always scales; False with one
        is a ValueError.
      distribution: a `layers.distribution` `DataParallel`, `FSDP` or `ModelParallel`: `init_state`
        and `restore` place the state on its mesh (slots sharded like their variables) and
        `step.jitted` runs with its in/out shardings, batches split over its batch axis.

    Returns:
      A `TrainStep`: `state, metrics = step(state, batch)`, pure and jit-able.

    Example:
      >>> import layers
      >>> from layers import optimizers, training
      >>> model = layers.Dense(1)
      >>> _ = model(jnp.ones((4, 2)))
      >>> step = training.make_train_step(model, "mse", optimizers.SGD(0.1))
      >>> state = step.init_state()
      >>> state, metrics = step.jitted(state, (jnp.ones((4, 2)), jnp.zeros((4, 1))))
      >>> int(state.step), metrics["loss"].dtype
      (1, dtype('float32'))
    """
    if not isinstance(model, Layer):
        raise TypeError(f"make_train_step expects a Layer as the model, received {type(model).__name__}.")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"make_train_step expects an optimizer from layers.optimizers, received {type(optimizer).__name__}; "
            f"wrap an optax transform as layers.optimizers.Optimizer(transform)."
        )
    if loss_scaling == "auto":
        scaling = computes_in_float16(model)
    elif isinstance(loss_scaling, bool):
        scaling = loss_scaling
        if not scaling and isinstance(optimizer, LossScaleOptimizer):
            raise ValueError(
                "loss_scaling=False with a LossScaleOptimizer: it divides the gradients by its scale, so the loss "
                "must be scaled. Pass its inner optimizer instead, or leave loss_scaling='auto'."
            )
    else:
        raise ValueError(f"loss_scaling must be 'auto', True or False, received {loss_scaling!r}.")
    if distribution is not None:
        check_distribution(distribution)
    return TrainStep(model, scalar_loss(loss), optimizer, scaling, distribution)


def make_eval_step(model: Layer, loss: Any) -> Callable[[TrainState, Any], dict[str, jax.Array]]:
    """A pure `eval_step(state, batch) -> metrics` in inference mode, for states of `make_train_step`.

    Example:
      >>> import jax, numpy as np, layers
      >>> from layers import training
      >>> model = layers.Dense(1, kernel_initializer="zeros")
      >>> _ = model(np.ones((1, 2), np.float32))
      >>> state = training.make_train_step(model, "mse", layers.optimizers.SGD(0.1)).init_state()
      >>> evaluate = jax.jit(make_eval_step(model, "mse"))
      >>> float(evaluate(state, (np.ones((4, 2), np.float32), np.full((4, 1), 2.0, np.float32)))["loss"])
      4.0
    """
    if not isinstance(model, Layer):
        raise TypeError(f"make_eval_step expects a Layer as the model, received {type(model).__name__}.")
    loss_function = scalar_loss(loss)
    return functools.partial(_evaluate, model, loss_function)


def scalar_loss(loss: Any) -> Callable[[Any, Any, Any], jax.Array]:
    """`loss(y_true, y_pred, sample_weight) -> float32 scalar` for a loss, its name or a function.

    A `Loss` reduces itself; a function giving per-sample values (`layers.losses.mse`, or the
    user's own) is weighted and averaged over the batch, as Keras does with a function loss.
    """
    resolved = _losses.get(loss) if isinstance(loss, (str, dict)) else loss
    if isinstance(resolved, _losses.Loss):
        return lambda y_true, y_pred, weight: resolved(y_true, y_pred, sample_weight=weight)
    if not callable(resolved):
        raise TypeError(f"loss must be a loss from layers.losses, its name or a callable, received {loss!r}.")

    def reduced(y_true: Any, y_pred: Any, weight: Any) -> jax.Array:
        values = jnp.asarray(resolved(y_true, y_pred))
        values = values.astype(jnp.float32) if values.dtype != jnp.float64 else values
        return reduce_weighted(values, weight, where="the train step's loss")

    return reduced
