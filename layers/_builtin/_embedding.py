"""Embedding: rows of a `(input_dim, output_dim)` table looked up by integer indices.

Indices are never autocast: a float index above 256 would not survive a round trip through
bfloat16, so the layer turns input autocast off and casts float indices to int32 itself. The
table is read in its storage dtype (`autocast=False`), the rows are gathered and only the
gathered rows are cast to the compute dtype: the same values as casting the whole table first,
without converting every row of a large vocabulary on every call.

Out-of-range indices: an eager call checks the indices (one small reduction) and raises a
ValueError for an index outside `[0, input_dim)` or a float index that is not a whole number.
Under `jax.jit`, `vmap` or any other tracing the values are unknown, so nothing can be raised:
such an index yields a row of NaN, not a silently clamped row (what plain JAX indexing returns)
or a wrapped one (NumPy-style negative indices), and it gets no gradient.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from layers._base._layer import Layer
from layers._builtin._arguments import check_bool, check_positive_int, set_weight_arguments, weight_arguments_config

__all__ = ["Embedding"]


@jax.jit
def _index_summary(indices: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Smallest and largest index and whether all are whole numbers, in one dispatch."""
    whole = jnp.all(indices == jnp.trunc(indices)) if jnp.issubdtype(indices.dtype, jnp.floating) else True
    return jnp.min(indices), jnp.max(indices), jnp.asarray(whole)


@functools.partial(jax.jit, static_argnames="dtype")
def _lookup(table: jax.Array, indices: jax.Array, dtype: str) -> jax.Array:
    """The rows of `table` at `indices` cast to `dtype`; NaN rows for indices out of range."""
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        indices = indices.astype(jnp.int32)
    fill = jnp.nan if jnp.issubdtype(table.dtype, jnp.inexact) else None
    rows = table.at[indices].get(mode="fill", fill_value=fill, wrap_negative_indices=False)
    return rows.astype(dtype)


class Embedding(Layer):
    """Maps integer indices of any shape to vectors: output shape `(*inputs.shape, output_dim)`.

    The table is stored in the variable dtype (float32 under `mixed_bfloat16`) and the output
    is in the compute dtype. Integer inputs are used as they are; float inputs holding whole
    numbers are cast to int32. Eager calls raise a ValueError for an index outside
    `[0, input_dim)`; traced calls (`jax.jit`) return NaN rows for such indices instead.

    Args:
      input_dim: the vocabulary size (number of rows), a positive int.
      output_dim: the size of each vector, a positive int.
      embeddings_initializer: initializer of the table; the default `"uniform"` is
        `RandomUniform(-0.05, 0.05)`, as in Keras.
      embeddings_regularizer: optional regularizer of the table.
      embeddings_constraint: optional constraint of the table.
      mask_zero: whether index 0 is padding: the output then carries the mask `inputs != 0`,
        which the next layer receives as its `mask` argument. With `mask_zero=True` index 0
        should not be used for a real token.
      **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`, ...).

    Raises:
      ValueError: a non-positive size, an unknown initializer/regularizer/constraint name, or
        (eagerly) an out-of-range or fractional index.
      TypeError: `mask_zero` is not a bool, or the inputs are neither integers nor floats.

    Example:
      >>> from layers import Embedding
      >>> layer = Embedding(10, 4, mask_zero=True, dtype="mixed_bfloat16")
      >>> ids = np.array([[3, 1, 0]])
      >>> y = layer(ids)
      >>> y.shape, y.dtype, layer.embeddings.dtype
      ((1, 3, 4), dtype(bfloat16), 'float32')
      >>> layer.compute_mask(ids).tolist()
      [[True, True, False]]
    """

    # Indices must reach `call` exactly as given; see the module docstring.
    _autocast_inputs = False

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        embeddings_initializer: Any = "uniform",
        embeddings_regularizer: Any = None,
        embeddings_constraint: Any = None,
        mask_zero: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_dim = check_positive_int(input_dim, "Embedding input_dim")
        self.output_dim = check_positive_int(output_dim, "Embedding output_dim")
        set_weight_arguments(self, "embeddings", embeddings_initializer, embeddings_regularizer, embeddings_constraint)
        self.mask_zero = check_bool(mask_zero, "Embedding mask_zero")
        # As in Keras: a layer without padding produces no mask and passes none on.
        self.supports_masking = self.mask_zero

    def build(self, input_shape: Any = None) -> None:
        """Creates the `(input_dim, output_dim)` table `embeddings`; the input shape is not needed."""
        self.embeddings = self.add_weight(
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
            regularizer=self.embeddings_regularizer,
            constraint=self.embeddings_constraint,
            autocast=False,  # cast after the gather, not the whole table
            name="embeddings",
        )

    def _check_indices(self, indices: jax.Array) -> None:
        low, high, whole = jax.device_get(_index_summary(indices))
        if not whole:
            raise ValueError(
                f"Embedding layer {self.name!r} received float indices that are not whole numbers "
                f"(shape {indices.shape}); pass integer indices."
            )
        if low < 0 or high >= self.input_dim:
            bad = low if low < 0 else high
            raise ValueError(
                f"Embedding layer {self.name!r} received index {bad:g}, outside [0, {self.input_dim}) "
                f"(input_dim={self.input_dim}); input shape {indices.shape}."
            )

    def call(self, inputs: jax.Array) -> jax.Array:
        """Returns the rows of the table at `inputs`, in the compute dtype."""
        inputs = jnp.asarray(inputs)  # Python ints and lists are left alone by the pipeline
        if not (jnp.issubdtype(inputs.dtype, jnp.integer) or jnp.issubdtype(inputs.dtype, jnp.floating)):
            raise TypeError(
                f"Embedding layer {self.name!r} expects integer indices (or floats holding whole numbers), "
                f"received an array of dtype {inputs.dtype}."
            )
        if inputs.size and not isinstance(inputs, jax.core.Tracer):
            self._check_indices(inputs)
        return _lookup(self.embeddings.value, inputs, self.compute_dtype)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        """`inputs != 0` when `mask_zero`, else None."""
        if not self.mask_zero:
            return None
        return jnp.not_equal(inputs, 0)

    def get_config(self) -> dict[str, Any]:
        """The base config plus every constructor argument, serialized for JSON."""
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "mask_zero": self.mask_zero,
            **weight_arguments_config(self, "embeddings"),
        }
