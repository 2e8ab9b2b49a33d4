"""Softmax: the softmax activation as a layer, with masks and one or several axes."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from dtypepolicy import _numerics
from layers._base._layer import Layer
from layers._builtin._activation import floating_inputs

__all__ = ["Softmax"]

# One compiled dispatch per eager call (the rule upcasts, masks, normalizes and casts back);
# inside a caller's jit it inlines.
_softmax = jax.jit(_numerics.softmax, static_argnames="axis")


def _check_axis(axis: Any) -> int | tuple[int, ...]:
    message = f"Softmax axis must be an int or a non-empty tuple of distinct ints, received {axis!r}."

    def is_int(value: Any) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    if is_int(axis):
        return int(axis)
    if not isinstance(axis, (tuple, list)) or not axis or not all(map(is_int, axis)):
        raise TypeError(message)
    axes = tuple(int(a) for a in axis)
    if len(set(axes)) != len(axes):
        raise ValueError(message)
    return axes


class Softmax(Layer):
    """Normalizes its input to probabilities along `axis`: `exp(x) / sum(exp(x))`.

    The computation follows the project's numerics rule for softmax
    (`dtypepolicy._numerics.softmax`): float32 inside (float64 stays float64), one rounding back
    to the compute dtype. With a mask, as in Keras, masked positions get probability 0 and the
    others share the whole mass; a row with every position masked is all zeros. Masked logits
    are replaced by a large negative value the float32 computation holds, so float16 inputs at
    any magnitude give no inf or NaN. The mask passes through to the output.

    Args:
      axis: the axis, or a tuple of axes, that sums to 1.
      **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`, ...).

    Call arguments:
      inputs: the logits.
      mask: optional boolean array broadcastable to `inputs`; False marks masked positions.
        Defaults to the mask attached to `inputs` by the layer that produced them.

    Example:
      >>> layer = Softmax(dtype="bfloat16")
      >>> layer(np.zeros((1, 4)), mask=np.array([[True, True, True, False]]))
      Array([[0.333984, 0.333984, 0.333984, 0]], dtype=bfloat16)
      >>> Softmax(axis=(1, 2))(np.zeros((1, 2, 2))).tolist()
      [[[0.25, 0.25], [0.25, 0.25]]]
    """

    def __init__(self, axis: int | tuple[int, ...] = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = _check_axis(axis)
        self.supports_masking = True
        self.build(None)  # no weights: built now, so stateless_call works before a call

    def call(self, inputs: jax.Array, mask: Any = None) -> jax.Array:
        """Returns the softmax of `inputs` along `axis`, with masked positions at 0."""
        inputs = floating_inputs(self, inputs)
        axes = (self.axis,) if isinstance(self.axis, int) else self.axis
        ndim = inputs.ndim
        if any(not -ndim <= a < ndim for a in axes) or len({a % ndim for a in axes}) != len(axes):
            raise ValueError(
                f"Softmax {self.name!r}: axis {self.axis!r} does not name distinct axes of an input of shape "
                f"{inputs.shape}."
            )
        if mask is not None:
            mask_shape = np.shape(mask)
            try:
                fits = np.broadcast_shapes(mask_shape, inputs.shape) == inputs.shape
            except ValueError:
                fits = False
            if not fits:
                raise ValueError(
                    f"Softmax {self.name!r}: the mask of shape {mask_shape} does not broadcast to the input "
                    f"shape {inputs.shape}."
                )
        return _softmax(inputs, axis=self.axis, mask=mask)

    def get_config(self) -> dict[str, Any]:
        """The base config plus `axis` (a list for several axes, as JSON would make it)."""
        return {**super().get_config(), "axis": self.axis if isinstance(self.axis, int) else list(self.axis)}
