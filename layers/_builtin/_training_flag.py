"""The `training` call argument of built-in layers: a Python bool or None, never a string or a tracer."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def check_training(training: Any, owner: str) -> bool | None:
    """`training` as a Python bool (or None); raises TypeError for anything else.

    `np.bool_` counts as a bool. A string such as `"false"`, an int or an array would
    otherwise be taken by its truthiness (`"false"` is true); a traced value cannot choose a
    Python branch at all, so under `jax.jit` it must be a static argument.

    Args:
      training: the value the layer's `call` received.
      owner: names the layer in the message, e.g. `"Dropout 'dropout'"`.
    """
    if training is None or isinstance(training, bool):
        return training
    if isinstance(training, np.bool_):
        return bool(training)
    if isinstance(training, jax.core.Tracer):
        raise TypeError(
            f"{owner}: training must be a Python bool, received a traced value {training!r}. "
            f"Pass it as a static argument under jax.jit."
        )
    raise TypeError(
        f"{owner}: training must be a Python bool or None, received {training!r} of type {type(training).__name__}."
    )
