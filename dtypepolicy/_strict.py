"""Strict mode: catch layers that silently return a wider float dtype than their policy says.

Off by default. `set_strict(True)` (or `"warn"`) warns with `DtypeUpcastWarning`,
`set_strict("raise")` raises `DtypeUpcastError`. The environment variable
`DTYPEPOLICY_STRICT` (`warn`, `raise`, `1`, `0`) sets the mode at import.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import jax
import jax.numpy as jnp

from dtypepolicy._dtypes import is_float

MODES = ("off", "warn", "raise")
_ENV_VALUES = {
    **dict.fromkeys(["", "0", "off", "false"], "off"),
    **dict.fromkeys(["1", "true", "warn"], "warn"),
    "raise": "raise",
}


class DtypeUpcastWarning(UserWarning):
    """A layer returned a floating output wider than its policy's output or compute dtype.

    Issued in strict mode `"warn"` (`set_strict(True)`) by a layer without sublayers.

    Example:
      >>> import warnings
      >>> from layers import Layer
      >>> class Widens(Layer):
      ...     def call(self, x):
      ...         return x.astype("float32")  # forgets the policy's bfloat16
      >>> previous = strict_mode()
      >>> set_strict("warn")
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     _ = Widens(dtype="mixed_bfloat16")(jnp.ones(2))
      >>> set_strict(previous)
      >>> caught[0].category is DtypeUpcastWarning
      True
    """


class DtypeUpcastError(TypeError):
    """Strict mode "raise": a layer returned a floating output wider than its policy allows.

    A `TypeError`; the message names the layer, the dtype it returned and the one its policy allows.

    Example:
      >>> from layers import Layer
      >>> class Widens(Layer):
      ...     def call(self, x):
      ...         return x.astype("float32")
      >>> previous = strict_mode()
      >>> set_strict("raise")
      >>> try:
      ...     Widens(dtype="mixed_bfloat16")(jnp.ones(2))
      ... except DtypeUpcastError as error:
      ...     print("returned float32 output where its policy allows bfloat16" in str(error))
      ... finally:
      ...     set_strict(previous)
      True
    """


def _mode_from_env() -> str:
    value = os.environ.get("DTYPEPOLICY_STRICT", "").strip().lower()
    if value not in _ENV_VALUES:
        raise ValueError(f"DTYPEPOLICY_STRICT must be one of {sorted(_ENV_VALUES)}, received {value!r}.")
    return _ENV_VALUES[value]


_mode = _mode_from_env()


def set_strict(mode: bool | str) -> None:
    """Turns strict dtype checking of layer outputs on or off, process-wide.

    Args:
      mode: False or `"off"`; True or `"warn"` to warn; `"raise"` to raise.

    Example:
      >>> set_strict("raise")
      >>> strict_mode()
      'raise'
      >>> set_strict(False)
    """
    global _mode
    if mode is True:
        mode = "warn"
    elif mode is False:
        mode = "off"
    if mode not in MODES:
        raise ValueError(f"set_strict expects True, False or one of {MODES}, received {mode!r}.")
    _mode = mode


def strict_mode() -> str:
    """The current strict mode: `"off"`, `"warn"` or `"raise"`.

    Example:
      >>> previous = strict_mode()
      >>> set_strict(True)
      >>> strict_mode()
      'warn'
      >>> set_strict(previous)
    """
    return _mode


def check_outputs(layer_path: str, outputs: Any, allowed_dtype: str) -> None:
    """Warns or raises (per the mode) when a floating output is wider than `allowed_dtype`."""
    if _mode == "off" or not is_float(allowed_dtype):
        return
    limit = jnp.dtype(allowed_dtype).itemsize
    wider = sorted(
        {
            str(leaf.dtype)
            for leaf in jax.tree.leaves(outputs)
            if isinstance(leaf, jax.Array) and is_float(leaf.dtype) and leaf.dtype.itemsize > limit
        }
    )
    if not wider:
        return
    message = (
        f"Layer {layer_path!r} returned {', '.join(wider)} output where its policy allows {allowed_dtype}: "
        f"a silent upcast. Cast the result in call(), or give the layer an output= policy if intended."
    )
    if _mode == "raise":
        raise DtypeUpcastError(message)
    warnings.warn(message, DtypeUpcastWarning, stacklevel=4)
