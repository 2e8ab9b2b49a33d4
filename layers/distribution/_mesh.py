"""Device meshes and `PartitionSpec` checks: the vocabulary every layout is written in.

Everything here is JAX's own (`jax.sharding.Mesh`, `PartitionSpec`, `NamedSharding`); this
module only builds meshes whose axes XLA's partitioner may shard freely (`AxisType.Auto`), and
checks a spec against a mesh and a shape at the boundary, so a mistake is a `ValueError` naming
the value instead of a traceback from inside `jax.jit`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["DeviceMesh", "check_mesh", "check_spec_fits", "mesh_axes_size", "partition_spec", "replicated"]


def _axis_names(axis_names: Any) -> tuple[str, ...]:
    names = (axis_names,) if isinstance(axis_names, str) else axis_names
    try:
        names = tuple(names)
    except TypeError:
        raise TypeError(f"axis_names must be a sequence of str, received {axis_names!r}.") from None
    if not all(isinstance(n, str) and n for n in names):
        raise TypeError(f"axis_names must be non-empty strings, received {axis_names!r}.")
    if len(set(names)) != len(names):
        raise ValueError(f"axis_names must be distinct, received {axis_names!r}.")
    return names


def DeviceMesh(  # Keras' name for the mesh; it returns JAX's own Mesh
    shape: Sequence[int], axis_names: Sequence[str], devices: Sequence[Any] | None = None
) -> Mesh:
    """A `jax.sharding.Mesh` of `devices` laid out as `shape`, with one name per axis.

    The axes are `AxisType.Auto`: XLA's partitioner decides the communication (the GSPMD model
    `jax.jit` with shardings uses), so layers need no sharding-aware code.

    Args:
      shape: the mesh shape, e.g. `(2, 4)`; its product must equal the number of devices.
      axis_names: one name per axis, e.g. `("batch", "model")`.
      devices: the devices (default: `jax.devices()`, every device of every process).

    Example:
      >>> from layers.distribution import DeviceMesh
      >>> mesh = DeviceMesh((len(jax.devices()),), ("batch",))
      >>> mesh.axis_names, mesh.size == len(jax.devices())
      (('batch',), True)
    """
    names = _axis_names(axis_names)
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise TypeError(f"DeviceMesh shape must be a sequence of ints, received {shape!r}.") from None
    if len(dims) != len(names) or any(d < 1 for d in dims):
        raise ValueError(f"DeviceMesh shape {shape!r} must have one positive size per axis name {names!r}.")
    devices = list(jax.devices() if devices is None else devices)
    if math.prod(dims) != len(devices):
        raise ValueError(
            f"DeviceMesh shape {shape!r} holds {math.prod(dims)} devices, but {len(devices)} devices were given "
            f"(jax.devices() unless devices= is passed)."
        )
    grid = np.empty(len(devices), dtype=object)
    grid[:] = devices
    return Mesh(grid.reshape(dims), names, axis_types=(jax.sharding.AxisType.Auto,) * len(names))


_AUTO = jax.sharding.AxisType.Auto


def check_mesh(mesh: Any, what: str) -> Mesh:
    """`mesh` if it is a `jax.sharding.Mesh`, else a TypeError naming it."""
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"{what} expects a jax.sharding.Mesh (layers.distribution.DeviceMesh makes one), received "
            f"{mesh!r} of type {type(mesh).__name__}."
        )
    explicit = [name for name, kind in zip(mesh.axis_names, mesh.axis_types, strict=True) if kind != _AUTO]
    if explicit:
        # jax.make_mesh makes Explicit axes by default; the layers' products need XLA to choose
        # their shardings (a contracting dimension sharded over an Explicit axis is an error there).
        raise ValueError(
            f"{what}: the mesh's axes {explicit} are not AxisType.Auto (jax.make_mesh makes Explicit axes by "
            f"default). Make the mesh with layers.distribution.DeviceMesh(shape, axis_names), or pass "
            f"axis_types=(jax.sharding.AxisType.Auto,) * {len(mesh.axis_names)} to jax.make_mesh."
        )
    return mesh


def _entry_axes(entry: Any) -> tuple[str, ...]:
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def partition_spec(value: Any, mesh: Mesh, what: str) -> PartitionSpec:
    """`value` (a PartitionSpec, a tuple of axis names/None/tuples, or None) as a checked PartitionSpec.

    Every named axis must be an axis of `mesh` and appear once.
    """
    if value is None:
        entries: tuple = ()
    elif isinstance(value, (PartitionSpec, tuple, list)):
        entries = tuple(value)
    else:
        raise TypeError(
            f"{what}: a layout is a jax.sharding.PartitionSpec or a tuple of mesh axis names and None, received "
            f"{value!r} of type {type(value).__name__}."
        )
    used: list[str] = []
    for entry in entries:
        ok = entry is None or isinstance(entry, str)
        ok = ok or (isinstance(entry, (tuple, list)) and all(isinstance(a, str) for a in entry))
        if not ok:
            raise TypeError(
                f"{what}: each entry of a layout is None, a mesh axis name or a tuple of them, received {entry!r} "
                f"in {value!r}."
            )
        for axis in _entry_axes(entry):
            if axis not in mesh.axis_names:
                raise ValueError(
                    f"{what}: the layout {value!r} names mesh axis {axis!r}, which is not an axis of the mesh "
                    f"{dict(mesh.shape)}."
                )
            if axis in used:
                raise ValueError(f"{what}: the layout {value!r} uses mesh axis {axis!r} twice.")
            used.append(axis)
    return PartitionSpec(*(tuple(e) if isinstance(e, list) else e for e in entries))


def mesh_axes_size(mesh: Mesh, axes: Any) -> int:
    """How many devices `axes` (None, a name or a tuple of names) span."""
    return math.prod(mesh.shape[a] for a in _entry_axes(axes))


def check_spec_fits(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh, what: str) -> None:
    """A ValueError naming `what` unless `spec` can shard an array of `shape` on `mesh` evenly."""
    if len(spec) > len(shape):
        raise ValueError(
            f"{what}: the layout {spec} has {len(spec)} entries, more than the {len(shape)} dimensions of its shape "
            f"{tuple(shape)}."
        )
    for dim, (size, entry) in enumerate(zip(shape, spec, strict=False)):
        parts = mesh_axes_size(mesh, entry)
        if size % parts:
            raise ValueError(
                f"{what}: dimension {dim} of shape {tuple(shape)} has size {size}, which mesh axis {entry!r} "
                f"({parts} devices) does not divide; the layout {spec} needs sizes divisible by the axis size."
            )


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that keeps a full copy on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())
