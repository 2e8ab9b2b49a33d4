"""Saving and restoring a layer's variables (sublayers and state included), keyed by variable path."""

from __future__ import annotations

import os
from typing import Any

import dtypepolicy as dp

from .._base._layer import Layer
from ._checkpoint import _restore, save_checkpoint


def _variables_by_path(layer: Any, caller: str) -> dict[str, dp.Variable]:
    if not isinstance(layer, Layer):
        raise TypeError(f"{caller}: expected a layers.Layer, received {layer!r} of type {type(layer).__name__}.")
    if not layer.built:
        raise ValueError(
            f"{caller}: layer {layer.name!r} is not built, so it has no variables yet; "
            f"build it (call it once on an input) first."
        )
    by_path: dict[str, dp.Variable] = {}
    for variable in layer.variables:  # state from add_state (BatchNormalization statistics, RNG seeds) included
        if variable.path in by_path:
            raise ValueError(
                f"{caller}: layer {layer.name!r} has two variables with the path {variable.path!r}; "
                f"expected distinct paths (give the layers or variables distinct names)."
            )
        by_path[variable.path] = variable
    return by_path


def save_layer(path: str | os.PathLike, layer: Any, metadata: Any = None) -> None:
    """Saves every variable of a built `layer` (sublayers and state included) under its `path`.

    Values are the variables' storage (float32 master weights under a mixed policy, float8 scales
    and histories, RNG seeds), bits exact; the file is a `save_checkpoint` file keyed by the
    variable paths, written atomically.

    Example:
        >>> import tempfile, os, jax.numpy as jnp, layers
        >>> from layers.training import save_layer, restore_layer
        >>> path = os.path.join(tempfile.mkdtemp(), "dense.ckpt")
        >>> dense = layers.Dense(2, name="head")
        >>> _ = dense(jnp.ones((1, 3)))
        >>> save_layer(path, dense)
        >>> _ = dense.kernel.assign(jnp.zeros((3, 2)))
        >>> restore_layer(path, dense)
        >>> bool((dense.kernel.value != 0).any())
        True
    """
    save_checkpoint(path, _variables_by_path(layer, "save_layer"), metadata)


def restore_layer(path: str | os.PathLike, layer: Any) -> None:
    """Assigns a `save_layer` checkpoint to the variables of a built `layer`, all or nothing.

    Every variable path, shape and storage dtype is checked before any variable changes: a path
    missing from the checkpoint, a path the layer lacks, or a differing shape or dtype is a
    ValueError naming the path(s), and the layer is left untouched. Paths include the top-level
    layer's name, so restore into a layer built the same way (same names) as the saved one.

    Example:
      >>> import tempfile, os, numpy as np, layers
      >>> from layers.training import save_layer
      >>> path = os.path.join(tempfile.mkdtemp(), "dense.ckpt")
      >>> trained = layers.Dense(2, name="head")
      >>> _ = trained(np.ones((1, 3), np.float32))
      >>> save_layer(path, trained)
      >>> fresh = layers.Dense(2, name="head")
      >>> _ = fresh(np.ones((1, 3), np.float32))
      >>> restore_layer(path, fresh)
      >>> bool((fresh.kernel.value == trained.kernel.value).all())
      True
    """
    by_path = _variables_by_path(layer, "restore_layer")
    values = _restore(path, by_path, f"layer {layer.name!r}")
    for name, variable in by_path.items():
        variable.assign(values[name])
