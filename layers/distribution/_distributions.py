"""Distributions: where a model's variables and a batch live on a mesh (Keras 3's `DataParallel`, `ModelParallel`).

A distribution answers two questions, each with a `jax.sharding.NamedSharding`: how a batch is
split (its first dimension over the batch axes) and how each variable is laid out. XLA's SPMD
partitioner inserts the collectives that follow from those layouts; nothing here communicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import dtypepolicy as dp
from dtypepolicy._dtypes import is_float
from layers.distribution._layout_map import LayoutMap
from layers.distribution._mesh import DeviceMesh, check_mesh, check_spec_fits, mesh_axes_size

__all__ = ["FSDP", "DataParallel", "Distribution", "ModelParallel"]


def _default_mesh(device_mesh: Mesh | None, devices: Sequence[Any] | None, what: str) -> Mesh:
    if device_mesh is not None:
        if devices is not None:
            raise ValueError(f"{what}: pass device_mesh or devices, not both.")
        return check_mesh(device_mesh, what)
    if devices is None:
        devices = jax.devices()
    elif not isinstance(devices, (list, tuple)) or not all(isinstance(d, jax.Device) for d in devices):
        raise TypeError(f"{what}: devices must be a list of jax devices (jax.devices()), received {devices!r}.")
    return DeviceMesh((len(devices),), ("batch",), devices)


def _batch_axes(mesh: Mesh, batch_dim_name: Any, what: str) -> str | tuple[str, ...]:
    """The mesh axis (or axes) a batch's first dimension is split over; default: the first axis."""
    if batch_dim_name is None:
        return mesh.axis_names[0]
    names = (batch_dim_name,) if isinstance(batch_dim_name, str) else batch_dim_name
    if not isinstance(names, (tuple, list)) or not names or not all(isinstance(n, str) for n in names):
        raise TypeError(
            f"{what}: batch_dim_name must be a mesh axis name or a tuple of them, received {batch_dim_name!r}."
        )
    for name in names:
        if name not in mesh.axis_names:
            raise ValueError(f"{what}: batch_dim_name {name!r} is not an axis of the mesh {dict(mesh.shape)}.")
    return names[0] if len(names) == 1 else tuple(names)


def _is_replicated(spec: PartitionSpec) -> bool:
    return all(entry is None or entry == () for entry in spec)


class Distribution:
    """Where variables and batches live: a mesh, the batch axes, and one layout per variable.

    Subclasses choose the variable layouts (`DataParallel`, `FSDP`, `ModelParallel`). Give one to
    `layers.training.make_train_step(..., distribution=...)`: its state is placed with these
    layouts, its optimizer slots follow their variables, and its jitted step runs under
    `jax.jit` with matching in/out shardings.

    Attributes:
      device_mesh: the `jax.sharding.Mesh`.
      batch_dim_name: the mesh axis (or tuple of axes) a batch's first dimension is split over.
      layout_map: the `LayoutMap` the variable layouts come from, or None.

    Example:
      >>> import layers
      >>> from layers import distribution, optimizers, training
      >>> model = layers.Dense(2)
      >>> _ = model(jnp.ones((1, 3)))
      >>> step = training.make_train_step(model, "mse", optimizers.SGD(0.1), distribution=distribution.DataParallel())
      >>> state = step.init_state()
      >>> n = len(jax.devices())
      >>> state, metrics = step.jitted(state, (np.ones((4 * n, 3)), np.zeros((4 * n, 2))))
      >>> state.trainable[0].sharding.spec, int(state.step)
      (P(), 1)
    """

    layout_map: LayoutMap | None = None

    def __init__(self, device_mesh: Mesh, batch_dim_name: Any = None) -> None:
        self.device_mesh = check_mesh(device_mesh, type(self).__name__)
        self.batch_dim_name = _batch_axes(self.device_mesh, batch_dim_name, type(self).__name__)

    @property
    def batch_size_multiple(self) -> int:
        """A batch's first dimension must be a multiple of this (the devices the batch axes span)."""
        return mesh_axes_size(self.device_mesh, self.batch_dim_name)

    def get_data_layout(self, data_shape: Sequence[int]) -> NamedSharding:
        """The sharding of one batch array of `data_shape`: its first dimension over the batch axes."""
        shape = tuple(data_shape)
        if not shape:
            raise ValueError(
                f"{type(self).__name__}: a batch array must have a batch dimension to split over "
                f"{self.batch_dim_name!r}, received a scalar (shape ()); give a sample_weight one value per sample."
            )
        if shape[0] % self.batch_size_multiple:
            raise ValueError(
                f"{type(self).__name__}: a batch of shape {shape} has {shape[0]} samples, which the batch axis "
                f"{self.batch_dim_name!r} ({self.batch_size_multiple} devices) does not divide; use a batch size "
                f"that is a multiple of {self.batch_size_multiple}."
            )
        return NamedSharding(self.device_mesh, PartitionSpec(self.batch_dim_name))

    def get_variable_layout(self, variable: dp.Variable) -> NamedSharding:
        """The sharding of `variable`'s value (checked against its shape and the mesh)."""
        if not isinstance(variable, dp.Variable):
            raise TypeError(
                f"{type(self).__name__}.get_variable_layout expects a dtypepolicy Variable, received "
                f"{variable!r} of type {type(variable).__name__}."
            )
        spec = self._variable_spec(variable) or PartitionSpec()
        what = f"variable {variable.path or variable.name!r}"
        if variable.overwrite_with_gradient and not _is_replicated(spec):
            raise ValueError(
                f"{what} is overwrite-with-gradient state (a float8 scale or amax history), which stays replicated "
                f"so every device holds the same scale; its layout {spec} would shard it. Narrow the layout regex."
            )
        check_spec_fits(spec, tuple(variable.shape), self.device_mesh, what)
        return NamedSharding(self.device_mesh, spec)

    def variable_layouts(self, variables: Sequence[dp.Variable]) -> list[NamedSharding]:
        """Each variable's layout; with a strict layout map, a key matching none of them is a ValueError."""
        if self.layout_map is not None and self.layout_map.strict:
            paths = [v.path or v.name for v in variables]
            unmatched = self.layout_map.unmatched_keys(paths)
            if unmatched:
                shown = ", ".join(repr(p) for p in paths[:6]) + (", ..." if len(paths) > 6 else "")
                raise ValueError(
                    f"LayoutMap keys {unmatched} match no variable of the model (its paths: {shown}); a key must "
                    f"match a whole path (re.fullmatch: 'dense/kernel' needs a leading '.*' to match "
                    f"'model/dense/kernel'). Fix the regex, or make the map with LayoutMap(mesh, strict=False) to "
                    f"allow keys for other models."
                )
        return [self.get_variable_layout(v) for v in variables]

    def _variable_spec(self, variable: dp.Variable) -> PartitionSpec | None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mesh={dict(self.device_mesh.shape)}, batch_dim_name={self.batch_dim_name!r})"


class DataParallel(Distribution):
    """Data parallelism: every variable replicated, each batch split over the batch axis.

    Args:
      device_mesh: a mesh (default: a 1-D mesh named "batch" over `devices`).
      devices: the devices of the default mesh (default: `jax.devices()`).
      batch_dim_name: the axis a batch is split over (default: the mesh's first axis).

    Example:
      >>> from layers.distribution import DataParallel
      >>> distribution = DataParallel()
      >>> distribution.get_data_layout((8 * len(jax.devices()), 3)).spec
      P('batch',)
    """

    def __init__(
        self, device_mesh: Mesh | None = None, *, devices: Sequence[Any] | None = None, batch_dim_name: Any = None
    ) -> None:
        super().__init__(_default_mesh(device_mesh, devices, "DataParallel"), batch_dim_name)


class FSDP(Distribution):
    """Fully sharded data parallelism: large weights split over the batch axis too, batches as in `DataParallel`.

    Every trainable floating variable with at least `min_weight_size` elements is sharded over
    the batch axes along its largest dimension they divide (the first such on a tie); smaller ones,
    non-trainable state and float8 state stay replicated. With a `layout_map` (model parallelism
    on the other axes), a variable the map matches keeps its layout and FSDP adds the batch axes on
    its largest dimension the map leaves unsplit. Optimizer slots follow their variable,
    so the parameters and slots each take `1/n` of the memory. XLA gathers a weight (in the
    compute dtype, after the cast on each shard) where the products use it, and reduces its
    float32 gradient, of which each device keeps its shard.

    Args:
      device_mesh: a mesh (default: a 1-D mesh named "batch" over `devices`).
      devices: the devices of the default mesh.
      batch_dim_name: the axis a batch and the weights are split over (default: the first axis).
      min_weight_size: the smallest weight (in elements) worth sharding.
      layout_map: an optional `LayoutMap` on the same mesh (then `device_mesh` may be omitted).

    Example:
      >>> from layers.distribution import FSDP
      >>> n = len(jax.devices())
      >>> kernel = dp.Variable(jnp.zeros((3, 64 * n)), name="kernel")
      >>> FSDP(min_weight_size=16).get_variable_layout(kernel).spec
      P(None, 'batch')
    """

    def __init__(
        self,
        device_mesh: Mesh | None = None,
        *,
        devices: Sequence[Any] | None = None,
        batch_dim_name: Any = None,
        min_weight_size: int = 1024,
        layout_map: LayoutMap | None = None,
    ) -> None:
        if layout_map is not None:
            if not isinstance(layout_map, LayoutMap):
                raise TypeError(
                    f"FSDP layout_map must be a layers.distribution.LayoutMap, received {layout_map!r} of type "
                    f"{type(layout_map).__name__}."
                )
            if device_mesh is not None and device_mesh != layout_map.device_mesh:
                raise ValueError(
                    f"FSDP: device_mesh {dict(device_mesh.shape)} is not the layout map's mesh "
                    f"{dict(layout_map.device_mesh.shape)}; pass one mesh."
                )
            device_mesh = layout_map.device_mesh
        super().__init__(_default_mesh(device_mesh, devices, "FSDP"), batch_dim_name)
        self.layout_map = layout_map
        if (
            not isinstance(min_weight_size, (int, np.integer))
            or isinstance(min_weight_size, bool)
            or min_weight_size < 0
        ):
            raise ValueError(f"FSDP min_weight_size must be a non-negative int, received {min_weight_size!r}.")
        self.min_weight_size = int(min_weight_size)

    def _variable_spec(self, variable: dp.Variable) -> PartitionSpec | None:
        shape = tuple(variable.shape)
        mapped = None if self.layout_map is None else self.layout_map[variable.path or variable.name]
        entries = [*(mapped or ()), *[None] * (len(shape) - len(mapped or ()))]
        eligible = variable.trainable and not variable.overwrite_with_gradient and is_float(variable.dtype)
        if not eligible or not shape or int(np.prod(shape)) < self.min_weight_size:
            return mapped
        batch = {self.batch_dim_name} if isinstance(self.batch_dim_name, str) else set(self.batch_dim_name)
        used = {a for e in entries if e is not None for a in ((e,) if isinstance(e, str) else e)}
        if batch & used:  # the map already splits this variable over the batch axes
            return mapped
        parts = self.batch_size_multiple
        free = [d for d, size in enumerate(shape[: len(entries)]) if entries[d] is None and size % parts == 0]
        if not free:
            return mapped
        entries[max(free, key=lambda d: (shape[d], -d))] = self.batch_dim_name
        while entries and entries[-1] is None:
            entries.pop()
        return PartitionSpec(*entries)


class ModelParallel(Distribution):
    """Model (tensor) parallelism by a `LayoutMap`, with batches split over the batch axis.

    Variables the layout map matches take its layout; the rest are replicated. On a mesh
    `("batch", "model")` this is data x model parallelism: batches split over "batch", the mapped
    kernels over "model".

    Args:
      layout_map: a `LayoutMap`; its mesh is the distribution's.
      batch_dim_name: the axis a batch is split over (default: the mesh's first axis).

    Example:
      >>> from layers.distribution import DeviceMesh, LayoutMap, ModelParallel
      >>> layout_map = LayoutMap(DeviceMesh((1, len(jax.devices())), ("batch", "model")))
      >>> layout_map[".*kernel"] = (None, "model")
      >>> kernel = dp.Variable(jnp.zeros((3, 8 * len(jax.devices()))), name="kernel")
      >>> ModelParallel(layout_map).get_variable_layout(kernel).spec
      P(None, 'model')
    """

    def __init__(self, layout_map: LayoutMap, batch_dim_name: Any = None) -> None:
        if not isinstance(layout_map, LayoutMap):
            raise TypeError(
                f"ModelParallel expects a layers.distribution.LayoutMap, received {layout_map!r} of type "
                f"{type(layout_map).__name__}."
            )
        self.layout_map = layout_map
        super().__init__(layout_map.device_mesh, batch_dim_name)

    def _variable_spec(self, variable: dp.Variable) -> PartitionSpec | None:
        return self.layout_map[variable.path or variable.name]
