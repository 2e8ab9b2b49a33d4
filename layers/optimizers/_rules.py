"""The few update rules optax spells differently from Keras 3, as optax GradientTransformations.

Everything else (momentum traces, RMS scaling, Lion, decoupled weight decay, learning-rate
schedules) comes from optax unchanged.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


def _stateless(update: Any) -> optax.GradientTransformation:
    return optax.GradientTransformation(lambda params: optax.EmptyState(), lambda u, s, p=None: (update(u), s))


def _norm(g: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(g)))


def clip_by_norm(clipnorm: float) -> optax.GradientTransformation:
    """Keras' `clipnorm`: each gradient scaled by `clipnorm / max(norm(g), clipnorm)` on its own."""
    return _stateless(lambda grads: jax.tree.map(lambda g: g * (clipnorm / jnp.maximum(_norm(g), clipnorm)), grads))


def clip_by_global_norm(clipnorm: float) -> optax.GradientTransformation:
    """Keras' `global_clipnorm`: every gradient scaled by `clipnorm / max(global_norm, clipnorm)`."""

    def update(grads: Any) -> Any:
        leaves = jax.tree.leaves(grads)
        if not leaves:
            return grads
        total = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in leaves))
        return jax.tree.map(lambda g: g * (clipnorm / jnp.maximum(total, clipnorm)).astype(g.dtype), grads)

    return _stateless(update)


def clip_by_value(clipvalue: float) -> optax.GradientTransformation:
    """Keras' `clipvalue`: each element clipped to `[-clipvalue, clipvalue]`."""
    return _stateless(lambda grads: jax.tree.map(lambda g: jnp.clip(g, -clipvalue, clipvalue), grads))


class KerasAdamState(NamedTuple):
    """Adam's slots: the step count and the first and second moments (and their running max for AMSGrad)."""

    count: jax.Array
    momentums: Any
    velocities: Any
    velocity_hats: Any


def scale_by_keras_adam(beta_1: float, beta_2: float, epsilon: float, amsgrad: bool) -> optax.GradientTransformation:
    """Adam as Keras 3 writes it (before the learning rate is applied).

    `update = m * sqrt(1 - beta_2**t) / (1 - beta_1**t) / (sqrt(v) + epsilon)`: Keras adds epsilon to
    `sqrt(v)`, not to `sqrt(v_hat)` as optax.adam does, so the same epsilon weighs
    `1 / sqrt(1 - beta_2**t)` times more early in training. AMSGrad divides by the running max of `v`.
    """

    def init(params: Any) -> KerasAdamState:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return KerasAdamState(
            count=jnp.zeros((), jnp.int32),
            momentums=zeros,
            velocities=jax.tree.map(jnp.zeros_like, params),
            velocity_hats=jax.tree.map(jnp.zeros_like, params) if amsgrad else None,
        )

    def update(grads: Any, state: KerasAdamState, params: Any = None) -> tuple[Any, KerasAdamState]:
        del params
        count = state.count + 1
        momentums = jax.tree.map(lambda m, g: m + (g - m) * (1 - beta_1), state.momentums, grads)
        velocities = jax.tree.map(lambda v, g: v + (jnp.square(g) - v) * (1 - beta_2), state.velocities, grads)
        velocity_hats = jax.tree.map(jnp.maximum, state.velocity_hats, velocities) if amsgrad else None
        denominators = velocity_hats if amsgrad else velocities

        def step(m: jax.Array, v: jax.Array) -> jax.Array:
            t = count.astype(m.dtype)
            alpha = jnp.sqrt(1 - jnp.power(jnp.asarray(beta_2, m.dtype), t)) / (
                1 - jnp.power(jnp.asarray(beta_1, m.dtype), t)
            )
            return m * alpha / (jnp.sqrt(v) + epsilon)

        updates = jax.tree.map(step, momentums, denominators)
        return updates, KerasAdamState(count, momentums, velocities, velocity_hats)

    return optax.GradientTransformation(init, update)
