"""InputSpec: declared constraints on a layer's inputs, checked before each call."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from dtypepolicy._dtypes import standardize_dtype
from layers._base._arrays import is_jax_array


def _optional_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"InputSpec {what} must be a non-negative int or None, received {value!r}.")
    return int(value)


class InputSpec:
    """The rank, dtype, shape or axis sizes a layer accepts.

    Args:
      dtype: the expected dtype, or None for any.
      shape: the expected shape; `None` entries match any size. Sets `ndim`.
      ndim: the expected rank.
      max_ndim: the largest rank accepted.
      min_ndim: the smallest rank accepted.
      axes: `{axis: size}` for axes whose size is fixed (negative axes count from the end).
      allow_last_axis_squeeze: accept an input whose last axis of size 1 is missing, or added.
      name: a name for messages.
      optional: whether the input may be None.

    Example:
      >>> spec = InputSpec(min_ndim=2, axes={-1: 4})
      >>> spec.axes
      {-1: 4}
    """

    def __init__(
        self,
        dtype: Any = None,
        shape: Any = None,
        ndim: int | None = None,
        max_ndim: int | None = None,
        min_ndim: int | None = None,
        axes: dict[int, int | None] | None = None,
        allow_last_axis_squeeze: bool = False,
        name: str | None = None,
        optional: bool = False,
    ) -> None:
        self.dtype = None if dtype is None else standardize_dtype(dtype)
        if shape is not None:
            try:
                shape = tuple(None if dim is None else _optional_int(dim, "shape entry") for dim in shape)
            except TypeError:
                raise ValueError(f"InputSpec shape must be a tuple of ints or None, received {shape!r}.") from None
            ndim = len(shape)
        self.shape = shape
        self.ndim = _optional_int(ndim, "ndim")
        self.max_ndim = _optional_int(max_ndim, "max_ndim")
        self.min_ndim = _optional_int(min_ndim, "min_ndim")
        if axes is not None and not isinstance(axes, dict):
            raise ValueError(f"InputSpec axes must be a dict {{axis: size}}, received {axes!r}.")
        self.axes = {int(axis): size for axis, size in (axes or {}).items()}
        rank = self.ndim if self.ndim is not None else self.max_ndim
        if rank is not None and self.axes:
            largest = max(self.axes)
            if largest >= rank:
                raise ValueError(f"InputSpec axes {self.axes} refer to axis {largest}, beyond the rank {rank}.")
        self.allow_last_axis_squeeze = bool(allow_last_axis_squeeze)
        self.name = name
        self.optional = bool(optional)

    def __repr__(self) -> str:
        fields = ("dtype", "shape", "ndim", "max_ndim", "min_ndim", "axes", "name")
        shown = [f"{key}={getattr(self, key)!r}" for key in fields if getattr(self, key) not in (None, {})]
        return f"InputSpec({', '.join(shown)})"

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments."""
        return {
            "dtype": self.dtype,
            "shape": self.shape,
            "ndim": self.ndim,
            "max_ndim": self.max_ndim,
            "min_ndim": self.min_ndim,
            "axes": self.axes,
            "allow_last_axis_squeeze": self.allow_last_axis_squeeze,
            "name": self.name,
            "optional": self.optional,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> InputSpec:
        """Rebuilds an InputSpec from `get_config`."""
        return cls(**config)


def _squeezed(shape: tuple, spec: InputSpec) -> tuple:
    if not spec.allow_last_axis_squeeze or spec.ndim is None:
        return shape
    if len(shape) == spec.ndim + 1 and shape[-1] == 1:
        return shape[:-1]
    if len(shape) == spec.ndim - 1:
        return (*shape, 1)
    return shape


def _mismatch(index: int, layer_name: str, detail: str) -> ValueError:
    """The error for an input that does not fit its spec (built only when one is raised)."""
    return ValueError(f"Input {index} of layer {layer_name!r} is incompatible with the layer: {detail}")


def _check_one(spec: InputSpec, x: Any, index: int, layer_name: str) -> None:
    shape = x.shape if is_jax_array(x) else tuple(np.shape(x))
    if spec.allow_last_axis_squeeze:
        shape = _squeezed(shape, spec)
    rank = len(shape)
    if spec.ndim is not None and rank != spec.ndim:
        raise _mismatch(
            index, layer_name, f"expected ndim={spec.ndim}, found ndim={rank}. Full shape received: {shape}"
        )
    if spec.max_ndim is not None and rank > spec.max_ndim:
        raise _mismatch(
            index, layer_name, f"expected max_ndim={spec.max_ndim}, found ndim={rank}. Full shape received: {shape}"
        )
    if spec.min_ndim is not None and rank < spec.min_ndim:
        raise _mismatch(
            index, layer_name, f"expected min_ndim={spec.min_ndim}, found ndim={rank}. Full shape received: {shape}"
        )
    if spec.dtype is not None:
        dtype = standardize_dtype(x.dtype if is_jax_array(x) else jax.numpy.result_type(x))
        if dtype != spec.dtype:
            raise _mismatch(index, layer_name, f"expected dtype={spec.dtype}, found dtype={dtype}.")
    for axis, size in spec.axes.items():
        if size is None:
            continue
        if not -rank <= axis < rank or shape[axis] != size:
            found = shape[axis] if -rank <= axis < rank else "nothing"
            raise _mismatch(
                index,
                layer_name,
                f"expected axis {axis} of the input shape to have value {size}, but received "
                f"input with shape {shape} (axis {axis} is {found}).",
            )
    if spec.shape is not None:
        for expected, actual in zip(spec.shape, shape, strict=False):
            if expected is not None and expected != actual:
                raise _mismatch(index, layer_name, f"expected shape={spec.shape}, found shape={shape}.")


def _is_number_list(value: Any) -> bool:
    """A nested Python list of numbers is one array-like input, not a list of scalar inputs."""
    if not isinstance(value, (list, tuple)):
        return False
    leaves = jax.tree.leaves(value)
    return bool(leaves) and all(isinstance(leaf, (int, float)) for leaf in leaves)


def checked_input_spec(value: Any, layer_name: str | None) -> Any:
    """`value` if it is a valid `Layer.input_spec` (copied into a plain list/tuple/dict), else a TypeError."""
    if value is None or isinstance(value, InputSpec):
        return value
    is_spec = lambda item: item is None or isinstance(item, InputSpec)  # noqa: E731
    if isinstance(value, (list, tuple)) and all(map(is_spec, value)):
        return tuple(value) if isinstance(value, tuple) else list(value)
    if isinstance(value, dict) and all(isinstance(key, str) and is_spec(item) for key, item in value.items()):
        return dict(value)
    raise TypeError(
        f"input_spec of layer {layer_name!r} must be an InputSpec, a list/tuple/dict of them (None entries "
        f"allowed) or None, received {value!r} of type {type(value).__name__}."
    )


def check_input_spec(input_spec: Any, inputs: Any, layer_name: str) -> None:
    """Raises a ValueError naming the layer and the shapes when `inputs` do not fit the spec.

    A dict of specs matches a dict input by key (a missing key is a None input), any other
    input in the order of the dict.
    """
    if input_spec is None:
        return
    if isinstance(input_spec, InputSpec) and is_jax_array(inputs):  # the common case, kept cheap
        _check_one(input_spec, inputs, 0, layer_name)
        return
    if isinstance(input_spec, dict):
        specs = list(input_spec.values())
        if isinstance(inputs, dict):
            inputs = [inputs.get(key) for key in input_spec]
    else:
        specs = list(input_spec) if isinstance(input_spec, (list, tuple)) else [input_spec]
    leaves = jax.tree.leaves(inputs, is_leaf=lambda leaf: leaf is None or _is_number_list(leaf))
    if len(leaves) != len(specs):
        raise ValueError(
            f"Layer {layer_name!r} expects {len(specs)} input(s), but it received {len(leaves)} input arrays."
        )
    for index, (spec, x) in enumerate(zip(specs, leaves, strict=True)):
        if spec is None:
            continue
        if x is None:
            if spec.optional:
                continue
            raise ValueError(f"Input {index} of layer {layer_name!r} is None, but the input is not optional.")
        _check_one(spec, x, index, layer_name)
