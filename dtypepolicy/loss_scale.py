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
import reprlib
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


def _describe(value: Any) -> str:
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{reprlib.repr(value)} of type {type(value).__name__}"


def _is_real(value: Any) -> bool:
    """A Python, NumPy or JAX number or array of an integer or floating dtype (not bool, not complex)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number, np.ndarray, jax.Array)):
        return False
    dtype = jnp.result_type(value)
    return bool(jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating))


def _real_number(value: Any, what: str) -> float:
    """A concrete real scalar (Python, NumPy or 0-d JAX) as a Python float."""
    if not _is_real(value):
        raise TypeError(
            f"{what} must be a real number (a Python, NumPy or 0-d JAX scalar), received {_describe(value)}."
        )
    if np.shape(value) != ():
        raise TypeError(f"{what} must be a real number or a 0-d array, received {_describe(value)}.")
    try:
        return float(value)
    except jax.errors.ConcretizationTypeError:
        raise TypeError(
            f"{what} must be a concrete number, received a traced value ({_describe(value)}): hyperparameters are "
            f"checked and kept static, so build the loss scale outside jax.jit (or pass traced state as loss_scale=)."
        ) from None


def _scale_number(value: Any, what: str) -> float:
    """A positive number that float32 holds as a normal, finite value."""
    value = _real_number(value, what)
    if not _FLOAT32.tiny <= value <= _FLOAT32.max:
        raise ValueError(
            f"{what} must be a positive number that float32 represents (between {_FLOAT32.tiny:.3g} and "
            f"{_FLOAT32.max:.3g}), received {value!r}."
        )
    return value


def _as_state(value: Any, dtype: Any, what: str) -> Any:
    """State given to a constructor: a real number or array (traced ones included), in `dtype`."""
    if not _is_real(value):
        raise TypeError(f"{what} must be a real number or array, received {_describe(value)}.")
    return jnp.asarray(value, dtype)


def _finite_flag(value: Any, caller: str) -> Any:
    """`adjust`'s argument: a bool scalar, never a tree whose truthiness would be tested."""
    if isinstance(value, (bool, np.bool_)):
        return value
    if isinstance(value, (np.ndarray, jax.Array)) and value.dtype == np.bool_ and value.shape == ():
        return value
    raise TypeError(
        f"{caller}.adjust expects grads_finite as a bool scalar (a Python bool or a 0-d bool array, traced or not), "
        f"received {_describe(value)}. To check a gradient tree, pass loss_scale.all_finite(grads)."
    )


def _is_integer_scalar(value: Any) -> bool:
    if isinstance(value, jax.core.Tracer):
        return False  # growth_interval is static: it must be concrete
    return _is_real(value) and np.shape(value) == () and bool(jnp.issubdtype(jnp.result_type(value), jnp.integer))


def _static_field() -> Any:
    """Declares a dataclass field as static: pytree metadata (hashable, kept by `jit`), not a leaf."""
    return dataclasses.field(metadata={"static": True})


def _split_fields(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names of `cls`'s leaf fields and of its static fields, each in declaration order."""
    fields = dataclasses.fields(cls)
    return (
        tuple(f.name for f in fields if not f.metadata.get("static")),
        tuple(f.name for f in fields if f.metadata.get("static")),
    )


def _from_fields(cls: type, **values: Any) -> Any:
    """An instance holding exactly `cls`'s fields, without running (and validating in) `__init__`.

    Tree utilities rebuild objects with whatever leaves they produce (None, shapes, tracers,
    JAX's placeholder objects), so validation belongs to construction by the user only.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    if set(values) != set(names):
        missing = [name for name in names if name not in values]
        unknown = sorted(set(values) - set(names))
        raise TypeError(f"{cls.__name__} is built from its fields {names}: missing {missing}, unknown {unknown}.")
    instance = object.__new__(cls)
    for name in names:
        object.__setattr__(instance, name, values[name])
    return instance


def _replace(obj: Any, **changes: Any) -> Any:
    """A copy of `obj` with `changes`, every other field carried over, without running `__init__`."""
    return _from_fields(type(obj), **{**{f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, **changes})


def _register(cls: type) -> type:
    """Registers a loss scale dataclass as a pytree derived from its declared fields.

    Fields made with `_static_field()` go into the treedef; every other field is a leaf. The
    lists come from `dataclasses.fields`, so a new field can't be left out of flatten/unflatten.
    """
    data_fields, meta_fields = _split_fields(cls)

    def flatten_with_keys(obj: Any) -> tuple[list, tuple]:
        children = [(jax.tree_util.GetAttrKey(name), getattr(obj, name)) for name in data_fields]
        return children, tuple(getattr(obj, name) for name in meta_fields)

    def flatten(obj: Any) -> tuple[list, tuple]:
        return [getattr(obj, name) for name in data_fields], tuple(getattr(obj, name) for name in meta_fields)

    def unflatten(meta: tuple, children: Any) -> Any:
        return _from_fields(
            cls, **dict(zip(meta_fields, meta, strict=True)), **dict(zip(data_fields, children, strict=True))
        )

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls


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


@_register
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
        """Returns self, after checking that `grads_finite` is a bool scalar."""
        _finite_flag(grads_finite, type(self).__name__)
        return self


class _Scaling:
    loss_scale: Any

    def scale(self, tree: Any) -> Any:
        """Multiplies every floating leaf by the loss scale."""
        return _multiply_floats(tree, self.loss_scale)

    def unscale(self, tree: Any) -> Any:
        """Divides every floating leaf by the loss scale."""
        return _multiply_floats(tree, 1.0 / self.loss_scale)


@_register
@dataclasses.dataclass(frozen=True, init=False, eq=False)
class StaticLossScale(_Scaling):
    """A fixed loss scale.

    Example:
      >>> StaticLossScale(128.0).scale(jnp.array(2.0)).tolist()
      256.0
    """

    loss_scale: Any

    def __init__(self, loss_scale: Any) -> None:
        what = "StaticLossScale loss_scale"
        if isinstance(loss_scale, jax.core.Tracer):  # built inside a jitted function: checked for kind only
            value = _as_state(loss_scale, jnp.float32, what)
        else:
            value = jnp.asarray(_scale_number(loss_scale, what), jnp.float32)
        object.__setattr__(self, "loss_scale", value)

    def adjust(self, grads_finite: Any) -> StaticLossScale:
        """Returns self (a static scale never changes), after checking that `grads_finite` is a bool scalar."""
        _finite_flag(grads_finite, type(self).__name__)
        return self


@_register
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
    growth_interval: int = _static_field()
    factor: float = _static_field()
    min_scale: float = _static_field()
    max_scale: float = _static_field()

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
        if _is_integer_scalar(growth_interval):
            growth_interval = int(growth_interval)
        else:
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

        Args:
          grads_finite: a bool scalar, normally `all_finite(grads)`: a Python bool or a 0-d bool
            array, concrete or traced. Anything else (a gradient tree, an int) is a `TypeError`.

        Works on concrete values and under `jax.jit`/`jax.vmap` alike.
        """
        finite = jnp.asarray(_finite_flag(grads_finite, type(self).__name__))
        counter = self.counter + 1
        grow = finite & (counter >= self.growth_interval)
        grown = jnp.minimum(self.loss_scale * self.factor, self.max_scale)
        # A data-dependent divisor: XLA would turn division by the constant factor into a
        # multiplication by its rounded reciprocal under jit, which differs for factors such as 3.
        shrunk = jnp.maximum(self.loss_scale / jnp.where(finite, 1.0, self.factor), self.min_scale)
        loss_scale = jnp.where(finite, jnp.where(grow, grown, self.loss_scale), shrunk)
        counter = jnp.where(finite & ~grow, counter, 0)
        return _replace(self, loss_scale=loss_scale.astype(jnp.float32), counter=counter.astype(jnp.int32))
