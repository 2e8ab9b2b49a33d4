"""SGD, Adam, AdamW, RMSprop and Lion with Keras 3 names and defaults, built from optax pieces.

Each is `clip -> rule -> decoupled weight decay -> learning rate`: the update applied is
`-lr * (rule(g) + weight_decay * w)`, which is Keras' `w -= lr * weight_decay * w` followed by its
rule. A schedule is called with the count of updates applied so far (`iterations`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from layers.optimizers import _arguments, _rules
from layers.optimizers._base import Optimizer

__all__ = ["SGD", "Adam", "AdamW", "Lion", "RMSprop"]


class _Named(Optimizer):
    def _finish(self, rule: list, learning_rate: Any, weight_decay: Any, common: dict) -> None:
        lr = _arguments.learning_rate(learning_rate)
        self.weight_decay = _arguments.optional_non_negative(weight_decay, "weight_decay")
        pieces = list(rule)
        if self.weight_decay:
            pieces.append(optax.add_decayed_weights(self.weight_decay))
        pieces.append(optax.scale_by_learning_rate(_schedule(lr) if callable(lr) else lr))
        super().__init__(optax.chain(*pieces), **common)
        self._learning_rate = _schedule(lr) if callable(lr) else lr


def _schedule(schedule: Callable) -> Callable:
    """`schedule` called with the int32 step count, its result a float32 scalar.

    optax's own schedules mix their float constants with the int32 count, which JAX's strict
    promotion refuses; the schedule is the user's code, so it runs under standard promotion.
    """

    def rate(count: Any) -> Any:
        with jax.numpy_dtype_promotion("standard"):
            return jnp.asarray(schedule(count), jnp.float32)

    return rate


def _common(clipnorm: Any, clipvalue: Any, global_clipnorm: Any, gradient_accumulation_steps: Any, name: Any) -> dict:
    return {
        "clipnorm": clipnorm,
        "clipvalue": clipvalue,
        "global_clipnorm": global_clipnorm,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "name": name,
    }


class SGD(_Named):
    """Gradient descent, with optional (Nesterov) momentum; Keras 3 defaults.

    `m = momentum * m - lr * g; w += m` (Nesterov: `w += momentum * m - lr * g`); without momentum
    `w -= lr * g`. With a schedule, optax's trace keeps unscaled gradients and the learning rate
    multiplies the trace, which is Keras' rule exactly for a constant learning rate.

    Args:
      learning_rate: a float or a schedule (a callable of the step count, such as an optax schedule).
      momentum: in [0, 1].
      nesterov: Nesterov momentum.
      weight_decay: decoupled decay `w -= lr * weight_decay * w` before the update; None for none.
      clipnorm: as for `Optimizer`.
      clipvalue: as for `Optimizer`.
      global_clipnorm: as for `Optimizer`.
      gradient_accumulation_steps: as for `Optimizer`.
      name: as for `Optimizer`.

    Example:
      >>> from layers import optimizers
      >>> w = dp.Variable(jnp.array([1.0]))
      >>> optimizers.SGD(0.25).apply([jnp.array([2.0])], [w])
      >>> w.numpy().tolist()
      [0.5]
    """

    def __init__(
        self,
        learning_rate: float | Callable = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        gradient_accumulation_steps: int | None = None,
        name: str | None = None,
    ) -> None:
        self.momentum = _arguments.real(momentum, "momentum", low=0.0, high=1.0)
        self.nesterov = _arguments.flag(nesterov, "nesterov")
        rule = [optax.trace(decay=self.momentum, nesterov=self.nesterov)] if self.momentum else []
        self._finish(
            rule,
            learning_rate,
            weight_decay,
            _common(clipnorm, clipvalue, global_clipnorm, gradient_accumulation_steps, name),
        )


class Adam(_Named):
    """Adam with Keras 3's rule and defaults.

    `m += (g - m) * (1 - beta_1); v += (g² - v) * (1 - beta_2);
    w -= lr * m * sqrt(1 - beta_2^t) / (1 - beta_1^t) / (sqrt(v) + epsilon)` with `t` the step
    (from 1). Keras adds epsilon to `sqrt(v)`, not `sqrt(v_hat)` (optax.adam does the latter).

    Args:
      learning_rate: a float or a schedule.
      beta_1: in [0, 1).
      beta_2: in [0, 1).
      epsilon: >= 0.
      amsgrad: divide by the running max of `v`.
      weight_decay: decoupled decay `w -= lr * weight_decay * w`; None for none.
      clipnorm: as for `Optimizer`.
      clipvalue: as for `Optimizer`.
      global_clipnorm: as for `Optimizer`.
      gradient_accumulation_steps: as for `Optimizer`.
      name: as for `Optimizer`.

    Example:
      >>> from layers import optimizers
      >>> w = dp.Variable(jnp.array([1.0]))
      >>> optimizers.Adam(0.1).apply([jnp.array([2.0])], [w])
      >>> round(float(w.numpy()[0]), 4)
      0.9
    """

    def __init__(
        self,
        learning_rate: float | Callable = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        gradient_accumulation_steps: int | None = None,
        name: str | None = None,
    ) -> None:
        self.beta_1 = _arguments.real(beta_1, "beta_1", low=0.0, high=1.0, open_high=True)
        self.beta_2 = _arguments.real(beta_2, "beta_2", low=0.0, high=1.0, open_high=True)
        self.epsilon = _arguments.real(epsilon, "epsilon", low=0.0)
        self.amsgrad = _arguments.flag(amsgrad, "amsgrad")
        rule = [_rules.scale_by_keras_adam(self.beta_1, self.beta_2, self.epsilon, self.amsgrad)]
        self._finish(
            rule,
            learning_rate,
            weight_decay,
            _common(clipnorm, clipvalue, global_clipnorm, gradient_accumulation_steps, name),
        )


class AdamW(Adam):
    """Adam with decoupled weight decay (Keras 3: `weight_decay=0.004` by default).

    Keras decays first, `w -= lr * weight_decay * w`, then applies the Adam update.

    Args:
      learning_rate: as for `Adam`.
      beta_1: as for `Adam`.
      beta_2: as for `Adam`.
      epsilon: as for `Adam`.
      amsgrad: as for `Adam`.
      weight_decay: a number >= 0 (None is refused, as in Keras).
      clipnorm: as for `Optimizer`.
      clipvalue: as for `Optimizer`.
      global_clipnorm: as for `Optimizer`.
      gradient_accumulation_steps: as for `Optimizer`.
      name: as for `Optimizer`.

    Example:
      >>> from layers import optimizers
      >>> optimizers.AdamW().weight_decay
      0.004
    """

    def __init__(
        self,
        learning_rate: float | Callable = 0.001,
        weight_decay: float = 0.004,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        gradient_accumulation_steps: int | None = None,
        name: str | None = None,
    ) -> None:
        if weight_decay is None:
            raise ValueError("AdamW needs weight_decay as a number >= 0, received weight_decay=None.")
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name,
        )


class RMSprop(_Named):
    """RMSprop with Keras 3's rule and defaults.

    `v = rho * v + (1 - rho) * g²; step = lr * g / sqrt(v + epsilon)` (centered: divide by
    `sqrt(v - mean_g² + epsilon)`); with momentum `mom = momentum * mom + step; w -= mom`.

    Args:
      learning_rate: a float or a schedule.
      rho: in [0, 1].
      momentum: in [0, 1].
      epsilon: >= 0.
      centered: subtract the squared running mean of the gradient.
      weight_decay: decoupled decay `w -= lr * weight_decay * w`; None for none.
      clipnorm: as for `Optimizer`.
      clipvalue: as for `Optimizer`.
      global_clipnorm: as for `Optimizer`.
      gradient_accumulation_steps: as for `Optimizer`.
      name: as for `Optimizer`.

    Example:
      >>> from layers import optimizers
      >>> optimizers.RMSprop().rho
      0.9
    """

    def __init__(
        self,
        learning_rate: float | Callable = 0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        gradient_accumulation_steps: int | None = None,
        name: str | None = None,
    ) -> None:
        self.rho = _arguments.real(rho, "rho", low=0.0, high=1.0)
        self.momentum = _arguments.real(momentum, "momentum", low=0.0, high=1.0)
        self.epsilon = _arguments.real(epsilon, "epsilon", low=0.0)
        self.centered = _arguments.flag(centered, "centered")
        scale = optax.scale_by_stddev if self.centered else optax.scale_by_rms
        rule = [scale(decay=self.rho, eps=self.epsilon, initial_scale=0.0, eps_in_sqrt=True)]
        if self.momentum:
            rule.append(optax.trace(decay=self.momentum))
        self._finish(
            rule,
            learning_rate,
            weight_decay,
            _common(clipnorm, clipvalue, global_clipnorm, gradient_accumulation_steps, name),
        )


class Lion(_Named):
    """Lion with Keras 3's rule and defaults.

    `w -= lr * sign(beta_1 * m + (1 - beta_1) * g); m = beta_2 * m + (1 - beta_2) * g`.

    Args:
      learning_rate: a float or a schedule.
      beta_1: in (0, 1].
      beta_2: in [0, 1].
      weight_decay: decoupled decay `w -= lr * weight_decay * w`; None for none.
      clipnorm: as for `Optimizer`.
      clipvalue: as for `Optimizer`.
      global_clipnorm: as for `Optimizer`.
      gradient_accumulation_steps: as for `Optimizer`.
      name: as for `Optimizer`.

    Example:
      >>> from layers import optimizers
      >>> w = dp.Variable(jnp.array([1.0, 1.0]))
      >>> optimizers.Lion(0.5).apply([jnp.array([3.0, -0.1])], [w])
      >>> w.numpy().tolist()
      [0.5, 1.5]
    """

    def __init__(
        self,
        learning_rate: float | Callable = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        gradient_accumulation_steps: int | None = None,
        name: str | None = None,
    ) -> None:
        self.beta_1 = _arguments.real(beta_1, "beta_1", low=0.0, high=1.0, open_low=True)
        self.beta_2 = _arguments.real(beta_2, "beta_2", low=0.0, high=1.0)
        rule = [optax.scale_by_lion(b1=self.beta_1, b2=self.beta_2)]
        self._finish(
            rule,
            learning_rate,
            weight_decay,
            _common(clipnorm, clipvalue, global_clipnorm, gradient_accumulation_steps, name),
        )
