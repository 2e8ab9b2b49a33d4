"""Loss scaling for float16 training, as JAX pytrees with pure updates.

Scale the loss before differentiating, unscale the gradients, check them with
`all_finite`, then `adjust` the loss scale and skip the update when they were not finite.

Example:
  >>> loss_scale = DynamicLossScale(initial_scale=2.0**15, growth_interval=2)
  >>> grads = loss_scale.unscale({"w": jnp.array([65536.0])})
  >>> finite = all_finite(grads)
  >>> loss_scale = loss_scale.adjust(finite)
  >>> float(loss_scale.loss_scale), int(loss_scale.counter)
  (32768.0, 1)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["DynamicLossScale", "NoOpLossScale", "StaticLossScale", "all_finite"]

_UNSET: Any = object()  # "not given", told apart from an explicit None (which is refused)


_FLOAT32 = np.finfo(np.float32)


def _is_inexact_leaf(leaf: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


def _multiply_floats(tree: Any, factor: jnp.ndarray) -> Any:
    # 16-bit leaves are multiplied in float32 and cast back, so every leaf keeps its dtype and
    # wider (float64, complex) leaves keep their precision.
    def multiply(leaf: Any) -> Any:
        if not _is_inexact_leaf(leaf):
            return leaf
        leaf = jnp.asarray(leaf)
        wide = jnp.float32 if leaf.dtype.itemsize < 4 else leaf.dtype
        return (leaf.astype(wide) * factor.astype(wide)).astype(leaf.dtype)

    return jax.tree.map(multiply, tree)


def _scale_number(value: Any, what: str) -> float:
    """A positive number that float32 holds as a normal, finite value."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a Python number, received {value!r} of type {type(value).__name__}.")
    value = float(value)
    if not _FLOAT32.tiny <= value <= _FLOAT32.max:
        raise ValueError(
            f"{what} must be a positive number that float32 represents (between {_FLOAT32.tiny:.3g} and "
            f"{_FLOAT32.max:.3g}), received {value!r}."
        )
    return value


def _as_state(value: Any, dtype: Any, what: str) -> Any:
    # Python and NumPy values become arrays. Tracers and JAX's own placeholder objects pass
    # through untouched, because unflattening inside transformations rebuilds the object with
    # them; only values no transformation produces (text, containers, None) are refused.
    if isinstance(value, (str, bytes, list, tuple, dict)) or value is None:
        raise TypeError(f"{what} must be a number or an array, received {value!r} of type {type(value).__name__}.")
    if isinstance(value, (int, float, np.ndarray, np.generic)):
        return jnp.asarray(value, dtype)
    return value


def all_finite(tree: Any) -> jnp.ndarray:
    """True (as a bool array) when every floating or complex leaf of `tree` is free of inf and NaN.

    Example:
      >>> bool(all_finite({"a": jnp.ones(2), "b": jnp.array([jnp.inf])}))
      False
    """
    checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree) if _is_inexact_leaf(leaf)]
    if not checks:
        return jnp.asarray(True)
    return jnp.all(jnp.stack(checks))


@functools.partial(jax.tree_util.register_dataclass, data_fields=[], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class NoOpLossScale:
    """No loss scaling: `scale` and `unscale` return their input.

    Example:
      >>> float(NoOpLossScale().loss_scale)
      1.0
    """

    @property
    def loss_scale(self) -> jnp.ndarray:
        """Always 1."""
        return jnp.ones((), jnp.float32)

    def scale(self, tree: Any) -> Any:
        """Returns `tree` unchanged."""
        return tree

    def unscale(self, tree: Any) -> Any:
        """Returns `tree` unchanged."""
        return tree

    def adjust(self, grads_finite: Any) -> NoOpLossScale:
        """Returns self."""
        return self


class _Scaling:
    loss_scale: Any

    def scale(self, tree: Any) -> Any:
        """Multiplies every floating leaf by the loss scale."""
        return _multiply_floats(tree, self.loss_scale)

    def unscale(self, tree: Any) -> Any:
        """Divides every floating leaf by the loss scale."""
        return _multiply_floats(tree, 1.0 / self.loss_scale)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["loss_scale"], meta_fields=[])
@dataclasses.dataclass(frozen=True, init=False, eq=False)
class StaticLossScale(_Scaling):
    """A fixed loss scale.

    Example:
      >>> StaticLossScale(128.0).scale(jnp.array(2.0)).tolist()
      256.0
    """

    loss_scale: Any

    def __init__(self, loss_scale: Any) -> None:
        if isinstance(loss_scale, (int, float, np.generic)):
            loss_scale = _scale_number(loss_scale, "StaticLossScale loss_scale")
        object.__setattr__(self, "loss_scale", _as_state(loss_scale, jnp.float32, "StaticLossScale loss_scale"))

    def adjust(self, grads_finite: Any) -> StaticLossScale:
        """Returns self: a static scale never changes."""
        return self


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["loss_scale", "counter"],
    meta_fields=["growth_interval", "factor", "min_scale", "max_scale"],
)
@dataclasses.dataclass(frozen=True, init=False, eq=False)
class DynamicLossScale(_Scaling):
    """A loss scale that grows while gradients stay finite and shrinks when they do not.

    After `growth_interval` consecutive finite steps the scale is multiplied by `factor`
    (never past `max_scale`); a non-finite step divides it by `factor` (never below
    `min_scale`, which may be below 1) and resets the count. `loss_scale` and `counter`
    are pytree leaves; the other fields are static, so every field survives `jax.jit`,
    `jax.vmap` and flatten/unflatten.

    Args:
      initial_scale: the starting scale.
      growth_interval: finite steps needed before the scale grows.
      factor: the growth and shrink factor.
      min_scale: the smallest scale.
      max_scale: the largest scale.
      loss_scale: the current scale (state; normally left to `adjust`).
      counter: finite steps since the last change (state; normally left to `adjust`).

    Example:
      >>> scale = DynamicLossScale(initial_scale=4.0, min_scale=0.5)
      >>> float(scale.adjust(jnp.array(False)).loss_scale)
      2.0
    """

    loss_scale: Any
    counter: Any
    growth_interval: int
    factor: float
    min_scale: float
    max_scale: float

    def __init__(
        self,
        initial_scale: float = 2.0**15,
        growth_interval: int = 2000,
        factor: float = 2.0,
        min_scale: float = 1.0,
        max_scale: float = 2.0**24,
        *,
        loss_scale: Any = _UNSET,
        counter: Any = _UNSET,
    ) -> None:
        if isinstance(growth_interval, bool) or not isinstance(growth_interval, (int, np.integer)):
            raise TypeError(f"growth_interval must be an int, received {growth_interval!r}.")
        if growth_interval < 1:
            raise ValueError(f"growth_interval must be at least 1, received {growth_interval}.")
        factor = _scale_number(factor, "factor")
        if factor < 1:
            raise ValueError(f"factor must be >= 1, received {factor}.")
        min_scale = _scale_number(min_scale, "min_scale")
        max_scale = _scale_number(max_scale, "max_scale")
        if max_scale < min_scale:
            raise ValueError(f"max_scale ({max_scale}) must be >= min_scale ({min_scale}).")
        if loss_scale is _UNSET:
            initial_scale = _scale_number(initial_scale, "initial_scale")
            if not min_scale <= initial_scale <= max_scale:
                raise ValueError(
                    f"initial_scale must lie in [min_scale, max_scale] = [{min_scale}, {max_scale}], "
                    f"received {initial_scale}."
                )
            loss_scale = initial_scale
        set_ = object.__setattr__
        set_(self, "loss_scale", _as_state(loss_scale, jnp.float32, "loss_scale"))
        set_(self, "counter", _as_state(0 if counter is _UNSET else counter, jnp.int32, "counter"))
        set_(self, "growth_interval", int(growth_interval))
        set_(self, "factor", factor)
        set_(self, "min_scale", min_scale)
        set_(self, "max_scale", max_scale)

    def adjust(self, grads_finite: Any) -> DynamicLossScale:
        """Returns the loss scale for the next step, given whether this step's grads were finite.

        Works on concrete values and under `jax.jit`/`jax.vmap` alike.
        """
        finite = jnp.asarray(grads_finite, dtype=bool)
        counter = self.counter + 1
        grow = finite & (counter >= self.growth_interval)
        grown = jnp.minimum(self.loss_scale * self.factor, self.max_scale)
        # A data-dependent divisor: XLA would turn division by the constant factor into a
        # multiplication by its rounded reciprocal under jit, which differs for factors such as 3.
        shrunk = jnp.maximum(self.loss_scale / jnp.where(finite, 1.0, self.factor), self.min_scale)
        loss_scale = jnp.where(finite, jnp.where(grow, grown, self.loss_scale), shrunk)
        counter = jnp.where(finite & ~grow, counter, 0)
        return dataclasses.replace(self, loss_scale=loss_scale.astype(jnp.float32), counter=counter.astype(jnp.int32))
