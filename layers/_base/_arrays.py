"""`is_jax_array`: `isinstance(value, jax.Array)` for the call pipeline's hot path.

`isinstance` against `jax.Array` goes through its metaclass and costs about 0.1 µs; an eager
layer call makes it about ten times. The concrete array class is remembered the first time a
concrete array is seen (importing this module starts no backend) and checked by identity first.
"""

from __future__ import annotations

from typing import Any

import jax

_concrete: list[type] = []  # the concrete array class, once seen


def is_jax_array(value: Any) -> bool:
    """Whether `value` is a `jax.Array` (tracers included), the concrete array class checked first.

    Example:
      >>> import jax.numpy as jnp
      >>> is_jax_array(jnp.ones(2)), is_jax_array([1.0])
      (True, False)
    """
    kind = type(value)
    if _concrete and kind is _concrete[0]:
        return True
    if not isinstance(value, jax.Array):
        return False
    if not _concrete and not isinstance(value, jax.core.Tracer):
        _concrete.append(kind)
    return True
