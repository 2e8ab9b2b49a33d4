"""LossScaleOptimizer: dynamic loss scaling around any optimizer, on `dp.loss_scale.DynamicLossScale`."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from dtypepolicy.loss_scale import DynamicLossScale, all_finite
from layers.optimizers._base import Optimizer, OptimizerState, _describe, _Layout, _wide

__all__ = ["LossScaleOptimizer", "LossScaleState", "gradients_finite"]


def gradients_finite(grads: list, overwrite: Any) -> jax.Array:
    """Whether a step's gradients are finite, counting the new values of overwrite-with-gradient state.

    Float8 state's "gradient" is its new value: an inf or NaN amax there means the step
    overflowed somewhere the saturating float8 casts hid from the ordinary gradients. Its -inf
    ("not updated", a layer that did not run) is not an overflow.
    """
    checked = [
        jnp.where(g == -jnp.inf, 0, g) if owg and jnp.issubdtype(g.dtype, jnp.floating) else g
        for g, owg in zip(grads, overwrite, strict=True)
    ]
    return all_finite(checked)


class LossScaleState(NamedTuple):
    """A `LossScaleOptimizer`'s state: the inner optimizer's state and the loss scale.

    Attributes:
      inner: the wrapped optimizer's `OptimizerState`.
      loss_scale: a `dp.loss_scale.DynamicLossScale` (its scale and counter are leaves).

    Example:
      >>> from layers import optimizers
      >>> opt = optimizers.LossScaleOptimizer(optimizers.SGD(0.1), initial_scale=2.0**10)
      >>> state = opt.init([jnp.ones(2)])
      >>> float(state.loss_scale.loss_scale), type(state.inner).__name__
      (1024.0, 'OptimizerState')
      >>> _, state = opt.stateless_apply(state, [jnp.full(2, jnp.inf)], [jnp.ones(2)])  # skipped
      >>> float(state.loss_scale.loss_scale), int(state.inner.iterations)
      (512.0, 0)
    """

    inner: OptimizerState
    loss_scale: DynamicLossScale


class LossScaleOptimizer(Optimizer):
    """Dynamic loss scaling for float16 training, around any `Optimizer`.

    Multiply the loss by `scale_loss` before differentiating; `apply`/`stateless_apply` then divide
    the gradients by the scale (never the overwrite-with-gradient values) and check them. When every
    gradient is finite the inner optimizer steps and, after `growth_interval` finite steps in a row,
    the scale doubles (up to `max_scale`). When any is inf or NaN the whole update is skipped
    (weights, slots, `iterations`, the schedule's step, accumulation) and the scale halves (down to
    `min_scale`).

    Args:
      inner: the optimizer to wrap (an `Optimizer`, not another LossScaleOptimizer).
      initial_scale: the starting scale.
      growth_interval: finite steps before the scale grows.
      min_scale: the smallest scale (may be below 1).
      max_scale: the largest scale.
      name: a name for messages.

    Example:
      >>> from layers import optimizers
      >>> w = dp.Variable(jnp.array([1.0]))
      >>> opt = optimizers.LossScaleOptimizer(optimizers.SGD(0.5), initial_scale=4.0)
      >>> opt.apply([jnp.array([jnp.inf])], [w])
      >>> w.numpy().tolist(), opt.iterations, float(opt.loss_scale)
      ([1.0], 0, 2.0)
      >>> opt.apply([opt.scale_loss(jnp.array([1.0]))], [w])
      >>> w.numpy().tolist(), opt.iterations
      ([0.5], 1)
    """

    def __init__(
        self,
        inner: Optimizer,
        initial_scale: float = 2.0**15,
        growth_interval: int = 2000,
        min_scale: float = 1.0,
        max_scale: float = 2.0**24,
        name: str | None = None,
    ) -> None:
        if isinstance(inner, LossScaleOptimizer):
            raise TypeError(f"LossScaleOptimizer wraps an optimizer without loss scaling, received {inner.name!r}.")
        if not isinstance(inner, Optimizer):
            raise TypeError(
                f"LossScaleOptimizer expects a layers.optimizers.Optimizer to wrap (wrap an optax transform with "
                f"Optimizer(transform) first), received {_describe(inner)}."
            )
        # DynamicLossScale checks the numbers and names the bad one.
        self._initial = DynamicLossScale(
            initial_scale=initial_scale, growth_interval=growth_interval, min_scale=min_scale, max_scale=max_scale
        )
        self._setup(name)
        self.inner_optimizer = inner
        self.gradient_accumulation_steps = inner.gradient_accumulation_steps
        self._learning_rate = None

    @property
    def initial_scale(self) -> float:
        """The scale a fresh state starts from."""
        return float(self._initial.loss_scale)

    @property
    def growth_interval(self) -> int:
        """Finite steps before the scale grows."""
        return self._initial.growth_interval

    @property
    def min_scale(self) -> float:
        """The smallest scale."""
        return self._initial.min_scale

    @property
    def max_scale(self) -> float:
        """The largest scale."""
        return self._initial.max_scale

    def _check_state(self, state: Any) -> None:
        if not isinstance(state, LossScaleState) or not isinstance(state.loss_scale, DynamicLossScale):
            raise TypeError(f"{self.name} expects the state made by its init(values), received {_describe(state)}.")
        self.inner_optimizer._check_state(state.inner)

    def _initial_state(self, layout: _Layout, values: list) -> LossScaleState:
        return LossScaleState(self.inner_optimizer._initial_state(layout, values), self._initial)

    def _step(self, layout: _Layout, state: LossScaleState, grads: list, values: list) -> tuple[list, LossScaleState]:
        scale = state.loss_scale
        finite = gradients_finite(grads, layout.overwrite)
        unscaled = [
            g if owg else g.astype(_wide(v.dtype)) / scale.loss_scale.astype(_wide(v.dtype))
            for g, v, owg in zip(grads, values, layout.overwrite, strict=True)
        ]

        def step(_: Any) -> tuple[list, OptimizerState]:
            return self.inner_optimizer._step(layout, state.inner, unscaled, values)

        def skip(_: Any) -> tuple[list, OptimizerState]:
            return list(values), state.inner

        new_values, inner = jax.lax.cond(finite, step, skip, None)
        return new_values, LossScaleState(inner, scale.adjust(finite))

    def _iterations_of(self, state: Any) -> jax.Array:
        return state.inner.iterations

    @property
    def loss_scale(self) -> jax.Array:
        """The current scale (float32): of the stateful form's state, or `initial_scale` before it exists."""
        return (self._initial if self._state is None else self._state.loss_scale).loss_scale

    def scale_loss(self, loss: Any, state: LossScaleState | None = None) -> jax.Array:
        """`loss` times the current scale, in float32 (a float16 loss times 2**15 would overflow).

        Args:
          loss: a floating scalar or array.
          state: a `LossScaleState` (in a jitted step); None uses the stateful form's scale.
        """
        if state is not None:
            self._check_state(state)
            scale = state.loss_scale.loss_scale
        else:
            if isinstance(loss, jax.core.Tracer):
                # The stateful scale would be baked into the trace as a constant and go stale.
                raise RuntimeError(
                    f"{self.name}.scale_loss(loss) without a state cannot run inside jax.jit, grad or vmap: the "
                    f"current scale would be frozen into the trace. Pass the state: scale_loss(loss, state)."
                )
            scale = self.loss_scale
        try:
            loss = jnp.asarray(loss)
        except TypeError:
            raise TypeError(f"{self.name}.scale_loss expects a floating array, received {_describe(loss)}.") from None
        if not jnp.issubdtype(loss.dtype, jnp.floating):
            raise TypeError(f"{self.name}.scale_loss expects a floating loss, received {_describe(loss)}.")
        wide = _wide(loss.dtype)
        return loss.astype(wide) * scale.astype(wide)

    @property
    def learning_rate(self) -> Any:
        """The inner optimizer's learning rate at this optimizer's `iterations`."""
        rate = self.inner_optimizer._learning_rate
        return rate(jnp.asarray(self.iterations, jnp.int32)) if callable(rate) else rate
