"""Cotangents that combine by max, for state whose "gradient" is its new value.

JAX adds up the cotangents of a value that is used more than once: two calls of a shared layer,
the iterations of a `lax.scan` closing over it. For float8 state (SPEC §6) the "gradient" is the
new scale or amax history, and two uses must combine by max, never sum. JAX chooses how to add
cotangents by dtype, so the value is converted once per traced call into `max_combined`, an
extended dtype whose addition is `max` and whose zero is -inf, and every read converts it back
to float32. A use that did not run (the untaken branch of a `lax.cond`) then contributes -inf,
which optimizers read as "no new value, keep the old one" (`keep_unless_updated`).

The extended-dtype hooks are JAX internals (Flax's fp8 ops use the same ones). When they are
missing, `AVAILABLE` is False and the values stay float32: a single use per step still works,
but shared uses sum, and a layer skipped in a step gets a zero (its scale would become 0).
Tests pin the hooks on the supported JAX, so an upgrade that drops them fails there first.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

NOT_UPDATED = -np.inf  # the cotangent of a use that did not run; never a real scale or amax

try:  # JAX internals, guarded: see the module docstring
    from jax._src import ad_util, core, dtypes, earray
    from jax._src.interpreters import pxla

    _ExtendedBase = dtypes.ExtendedDType
    _extended = dtypes.extended
    AVAILABLE = all(
        hasattr(module, name)
        for module, name in (
            (ad_util, "raw_jaxval_adders"),
            (core, "ShapedArray"),
            (core, "physical_aval"),
            (earray, "EArray"),
            (pxla, "global_result_handlers"),
        )
    )
except (ImportError, AttributeError):  # pragma: no cover - depends on the JAX version
    AVAILABLE = False


_FLOAT32 = np.dtype("float32")

if AVAILABLE:

    class _MaxCombinedRules:
        """How JAX lowers, converts and adds `max_combined` values."""

        @staticmethod
        def physical_element_aval(dtype: Any) -> Any:
            return core.ShapedArray((), dtype.float_dtype)

        @staticmethod
        def convert_from(dtype: Any, other: Any) -> bool:
            return dtype.float_dtype == other

        @staticmethod
        def convert_to(other: Any, dtype: Any) -> bool:
            return dtype.float_dtype == other

        @staticmethod
        def add(dtype: Any, x: Any, y: Any) -> Any:
            wide = functools.partial(lax.convert_element_type, new_dtype=dtype.float_dtype)
            return lax.convert_element_type(lax.max(wide(x), wide(y)), dtype)

        @staticmethod
        def zero(dtype: Any) -> Any:
            return lax.convert_element_type(np.array(NOT_UPDATED, dtype.float_dtype), dtype)

        @staticmethod
        def tangent_dtype(dtype: Any) -> Any:
            return dtype

        @staticmethod
        def full(shape: Any, fill_value: Any, dtype: Any) -> Any:
            fill = lax.convert_element_type(fill_value, dtype.float_dtype)
            return lax.convert_element_type(lax.full(shape, fill, dtype.float_dtype), dtype)

        @staticmethod
        def global_sharded_result_handler(aval: Any, out_sharding: Any, committed: bool) -> Any:
            # Eager jax.grad materializes these values between primitives.
            physical = pxla.global_result_handlers[core.ShapedArray](core.physical_aval(aval), out_sharding, committed)
            return lambda buffers: earray.EArray(aval, physical(buffers))

    class _max_combined_type(_extended):  # the scalar type of the dtype, as in JAX
        pass

    @dataclasses.dataclass(frozen=True)
    class _MaxCombinedDType(_ExtendedBase):
        float_dtype: Any = _FLOAT32
        _rules: type = _MaxCombinedRules
        type: type = _max_combined_type
        name = "max_combined_float32"

        def __repr__(self) -> str:
            return self.name

    MAX_COMBINED = _MaxCombinedDType()

    def _add_eager(x: Any, y: Any) -> Any:
        # Cotangents met outside jit (eager jax.grad, vmap of grad) are added by this table.
        return earray.EArray(x.aval, jnp.maximum(x._data, y._data))

    ad_util.raw_jaxval_adders.setdefault(earray.EArray, _add_eager)

    @jax.custom_vjp
    def _enter(value: jax.Array) -> jax.Array:
        return lax.convert_element_type(value, MAX_COMBINED)

    # JAX's own transpose of a conversion to an extended dtype fails in this JAX version, hence
    # explicit rules for both directions.
    _enter.defvjp(
        lambda value: (_enter(value), None),
        lambda _, cotangent: (lax.convert_element_type(cotangent, jnp.float32),),
    )

    @jax.custom_vjp
    def _leave(value: jax.Array) -> jax.Array:
        return lax.convert_element_type(value, jnp.float32)

    _leave.defvjp(
        lambda value: (_leave(value), None),
        lambda _, cotangent: (lax.convert_element_type(cotangent, MAX_COMBINED),),
    )
else:  # pragma: no cover - depends on the JAX version
    MAX_COMBINED = None


def is_max_combined(value: Any) -> bool:
    """Whether `value` is held in the max-combining dtype (a traced float8 state value)."""
    # isinstance, not ==: NumPy's dtype equality with a foreign object costs ~0.7 µs, on every read.
    return AVAILABLE and isinstance(getattr(value, "dtype", None), _MaxCombinedDType)


def to_max_combined(value: Any) -> Any:
    """`value` (float32) in the max-combining dtype; do this once per traced call."""
    if not AVAILABLE:  # pragma: no cover
        return value
    return _enter(jnp.asarray(value, jnp.float32))


def from_max_combined(value: Any) -> jax.Array:
    """A float32 read of a max-combining value; do this at every read."""
    return _leave(value) if is_max_combined(value) else value


@functools.lru_cache(maxsize=64)
def _toucher(shapes: tuple[tuple[int, ...], ...]) -> Any:
    @jax.custom_vjp
    def touch(output: jax.Array, *values: Any) -> jax.Array:
        return output

    def forward(output: jax.Array, *values: Any) -> tuple[jax.Array, None]:
        return output, None

    def backward(_: None, cotangent: jax.Array) -> tuple:
        unused = tuple(
            lax.convert_element_type(jnp.full(shape, NOT_UPDATED, jnp.float32), MAX_COMBINED) for shape in shapes
        )
        return (cotangent, *unused)

    touch.defvjp(forward, backward)
    return touch


def touch(output: jax.Array, values: list) -> jax.Array:
    """Returns `output` unchanged, giving every max-combining value a -inf cotangent through it.

    A value nothing read (its layer skipped by Python control flow) then still gets -inf, "not
    updated", instead of the zero JAX gives an unused input, which an optimizer would assign.
    """
    values = [v for v in values if is_max_combined(v)]
    if not values:
        return output
    return _toucher(tuple(tuple(v.shape) for v in values))(output, *values)


def keep_unless_updated(old: jax.Array, new: jax.Array) -> jax.Array:
    """The value an overwrite-with-gradient variable takes: `new`, or `old` where `new` is -inf.

    Example:
      >>> keep_unless_updated(jnp.array([1.0, 2.0]), jnp.array([-jnp.inf, 5.0])).tolist()
      [1.0, 5.0]
    """
    new = jnp.asarray(new)
    if not jnp.issubdtype(new.dtype, jnp.floating):
        return new
    return jnp.where(new == NOT_UPDATED, jnp.asarray(old).astype(new.dtype), new)
