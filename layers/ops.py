"""`jax.numpy` plus the `keras.ops` names it lacks, for layer code, with Variables accepted as arrays.

Every `jax.numpy` function, reading Variables (through autocast) first: `ops.matmul(x, variable)`.
Also the Keras 3 names users reach for, with Keras argument names and defaults: `cast`,
`convert_to_tensor`, `convert_to_numpy`, `is_tensor`, `dtype` (the dtype name of an array,
where `jnp.dtype` is NumPy's constructor), `shape`, `stop_gradient`, the activations (`relu`,
`gelu`, `silu`/`swish`, `sigmoid`, `softmax`, `log_softmax`, ...), `one_hot`, `multi_hot`,
`logsumexp`, `erf`, `erfinv`, `rsqrt`, `moments` and `top_k` (see `layers._keras_ops`).

Example:
  >>> from layers import ops
  >>> kernel = dp.Variable(jnp.ones((2, 3)))
  >>> ops.matmul(ops.ones((1, 2)), kernel).tolist()
  [[2.0, 2.0, 2.0]]
  >>> with dp.autocast_scope("bfloat16"):
  ...     ops.softmax(kernel).dtype
  dtype(bfloat16)
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp

from dtypepolicy import Variable


def _read(value: Any) -> Any:
    if isinstance(value, Variable):
        return value.value
    if isinstance(value, (list, tuple)) and any(isinstance(item, Variable) for item in value):
        return type(value)(_read(item) for item in value)
    return value


@functools.cache
def _wrap(name: str) -> Any:
    function = getattr(jnp, name)
    if not callable(function) or isinstance(function, type):
        return function

    @functools.wraps(function)
    def reading_variables(*args: Any, **kwargs: Any) -> Any:
        return function(*map(_read, args), **{key: _read(value) for key, value in kwargs.items()})

    return reading_variables


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    # Imported here, not at the top: the Keras-named functions use `_read` from this module.
    from layers import _keras_ops

    if name in _keras_ops.__all__:
        return getattr(_keras_ops, name)
    try:
        return _wrap(name)
    except AttributeError:
        raise AttributeError(
            f"layers.ops has no function {name!r} (it mirrors jax.numpy, plus the keras.ops names listed in "
            f"layers._keras_ops.__all__)."
        ) from None


def __dir__() -> list[str]:
    from layers import _keras_ops

    return sorted({*dir(jnp), *_keras_ops.__all__})
