"""`jax.numpy` plus the `keras.ops` names it lacks, for layer code, with Variables accepted as arrays.

Every `jax.numpy` function, reading Variables (through autocast) first: `ops.matmul(x, variable)`.
Also the Keras 3 names users reach for, with Keras argument names and defaults: `cast`,
`convert_to_tensor`, `convert_to_numpy`, `is_tensor`, `dtype` (the dtype name of an array,
where `jnp.dtype` is NumPy's constructor), `shape`, `stop_gradient`, the activations (`relu`,
`gelu`, `silu`/`swish`, `sigmoid`, `softmax`, `log_softmax`, ...), `one_hot`, `multi_hot`,
`logsumexp`, `erf`, `erfinv`, `rsqrt`, `moments`, `top_k` (see `layers._keras_ops`), more
activations, `normalize`, `rms_normalization`, `layer_normalization`, `batch_normalization` and
`dot_product_attention` (`layers._keras_nn_ops`), and the control flow, slicing, scatter and
segment functions `cond`, `scan`, `fori_loop`, `while_loop`, `slice`, `slice_update`,
`segment_sum`, ... (`layers._keras_core_ops`), the cross-entropies, `in_top_k`, `psnr` and
`sparsemax` (`layers._keras_loss_ops`).

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
import importlib
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


_KERAS_MODULES = ("layers._keras_ops", "layers._keras_nn_ops", "layers._keras_core_ops", "layers._keras_loss_ops")


@functools.cache
def _keras_names() -> dict[str, Any]:
    # Imported on first use, not at the top: the Keras-named functions use `_read` from this module.
    names = {}
    for module_name in _KERAS_MODULES:
        module = importlib.import_module(module_name)
        names.update((name, getattr(module, name)) for name in module.__all__)
    return names


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    keras = _keras_names()
    if name in keras:
        return keras[name]
    try:
        return _wrap(name)
    except AttributeError:
        raise AttributeError(
            f"layers.ops has no function {name!r} (it mirrors jax.numpy, plus the keras.ops names listed in "
            f"the __all__ of {', '.join(_KERAS_MODULES)})."
        ) from None


def __dir__() -> list[str]:
    return sorted({*dir(jnp), *_keras_names()})
