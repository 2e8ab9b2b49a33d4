"""MultiHeadAttention: scaled dot-product attention with float32 scores and a safe mask."""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from dtypepolicy import _numerics
from layers._base import _shapes
from layers._base._layer import Layer
from layers._base._masking import get_mask
from layers._builtin._arguments import check_bool, check_positive_int, set_weight_arguments, weight_arguments_config
from layers._builtin._dense import algorithm_for
from layers._builtin._dropout import Dropout
from layers._builtin._einsum_dense import EinsumDense
from layers._builtin._training_flag import check_training


def _compatible(a: tuple, b: tuple) -> bool:
    """Whether two shapes agree wherever both dimensions are known."""
    return all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


class MultiHeadAttention(Layer):
    """Multi-head attention over the sequence axis of `(batch, time, features)` inputs.

    The query/key/value/output projections are `EinsumDense` layers (float32 accumulation,
    one rounding). Scores `q·k / sqrt(key_dim)` accumulate in float32 and the softmax runs in
    float32; masked positions get probability 0 without inf or NaN in any compute dtype.
    The probabilities are cast to the compute dtype before they weight the values.

    Args:
      num_heads: number of attention heads.
      key_dim: size of each head for query and key.
      value_dim: size of each head for value; defaults to `key_dim`.
      dropout: dropout rate on the attention probabilities (training only).
      use_bias: whether the projections have biases.
      output_shape: the last dimension of the output; defaults to the query's.
      kernel_initializer: the initializer of every projection's kernel.
      bias_initializer: the initializer of every projection's bias.
      kernel_regularizer: the regularizer of every projection's kernel.
      bias_regularizer: the regularizer of every projection's bias.
      kernel_constraint: the constraint of every projection's kernel.
      bias_constraint: the constraint of every projection's bias.
      seed: seed of the dropout.

    Call arguments: `query`, `value`, `key=None` (defaults to `value`), `attention_mask=None`
    (`(batch, T_query, T_key)` or `(T_query, T_key)`), `query_mask`/`value_mask`/`key_mask`
    (`(batch, T)`; taken from the inputs' attached masks when not given),
    `use_causal_mask=False`, `return_attention_scores=False`, `training=None` (a Python bool or
    None). Masks may have any numeric or bool dtype: non-zero attends, as in Keras. Shapes that
    do not fit raise a `ValueError` naming the layer and the shapes.

    Example:
      >>> from layers import MultiHeadAttention
      >>> attention = MultiHeadAttention(num_heads=2, key_dim=4, dtype="mixed_bfloat16")
      >>> x = jnp.ones((1, 3, 8))
      >>> attention(x, x).dtype, attention(x, x).shape
      (dtype(bfloat16), (1, 3, 8))
    """

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        value_dim: int | None = None,
        dropout: float = 0.0,
        use_bias: bool = True,
        output_shape: int | None = None,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_heads = check_positive_int(num_heads, "MultiHeadAttention num_heads")
        self.key_dim = check_positive_int(key_dim, "MultiHeadAttention key_dim")
        self.value_dim = (
            self.key_dim if value_dim is None else check_positive_int(value_dim, "MultiHeadAttention value_dim")
        )
        if output_shape is not None:
            output_shape = check_positive_int(output_shape, "MultiHeadAttention output_shape")
        self.output_dim = output_shape
        self.use_bias = check_bool(use_bias, "MultiHeadAttention use_bias")
        set_weight_arguments(self, "kernel", kernel_initializer, kernel_regularizer, kernel_constraint)
        set_weight_arguments(self, "bias", bias_initializer, bias_regularizer, bias_constraint)
        self.seed = seed
        self.dropout_layer = Dropout(dropout, seed=seed, name="attention_dropout")
        self.dropout = self.dropout_layer.rate

    def _projection(self, name: str, equation: str, output_shape: tuple, bias_axes: str) -> EinsumDense:
        return EinsumDense(
            equation,
            output_shape=output_shape,
            bias_axes=bias_axes if self.use_bias else None,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
            name=name,
        )

    def _check_shapes(self, query_shape: Any, value_shape: Any, key_shape: Any) -> tuple[tuple, tuple, tuple]:
        """Validated query/value/key shapes (value defaults to query, key to value), before any weight exists."""
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        owner = f"MultiHeadAttention {self.name!r}"
        shapes = {}
        for what, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            if not _shapes.is_shape(shape):
                raise ValueError(f"{owner} expects a shape tuple (ints or None) for {what}, received {shape!r}.")
            shape = tuple(shape)
            if len(shape) != 3:
                raise ValueError(f"{owner} expects rank-3 (batch, time, features) {what}, received {shape}.")
            shapes[what] = shape
        query_shape, value_shape, key_shape = shapes["query"], shapes["value"], shapes["key"]
        if not _compatible(query_shape[:1], value_shape[:1]):
            raise ValueError(f"{owner}: query {query_shape} and value {value_shape} must have the same batch size.")
        if not _compatible(value_shape[:-1], key_shape[:-1]):
            raise ValueError(
                f"{owner}: value {value_shape} and key {key_shape} must have the same batch and time dimensions "
                f"(every axis but the last)."
            )
        if self.built:
            for what, shape, dense in (
                ("query", query_shape, self.query_dense),
                ("value", value_shape, self.value_dense),
                ("key", key_shape, self.key_dense),
            ):
                features = dense.kernel.shape[0]
                if shape[-1] is not None and shape[-1] != features:
                    raise ValueError(
                        f"{owner} was built for {what} features {features}, received {what} of shape {shape}."
                    )
        return query_shape, value_shape, key_shape

    def build(self, query_shape: Any, value_shape: Any = None, key_shape: Any = None) -> None:
        """Creates the four projections from the feature sizes of query, key and value."""
        query_shape, value_shape, key_shape = self._check_shapes(query_shape, value_shape, key_shape)
        heads = self.num_heads
        self.query_dense = self._projection("query", "abc,cde->abde", (None, heads, self.key_dim), "de")
        self.key_dense = self._projection("key", "abc,cde->abde", (None, heads, self.key_dim), "de")
        self.value_dense = self._projection("value", "abc,cde->abde", (None, heads, self.value_dim), "de")
        output_dim = self.output_dim or query_shape[-1]
        self.output_dense = self._projection("attention_output", "abcd,cde->abe", (None, output_dim), "e")
        self.query_dense.build(query_shape)
        self.key_dense.build(key_shape)
        self.value_dense.build(value_shape)
        self.output_dense.build((query_shape[0], query_shape[1], heads, self.value_dim))

    def compute_output_shape(self, query_shape: Any, value_shape: Any = None, key_shape: Any = None) -> tuple:
        """The query's shape with the last axis `output_shape` (default: the query's); builds nothing.

        As in Keras, `value_shape` and `key_shape` must agree on every axis but the last
        (`value_shape` defaults to `query_shape`, `key_shape` to `value_shape`).
        """
        query_shape, _, _ = self._check_shapes(query_shape, value_shape, key_shape)
        return (*query_shape[:-1], self.output_dim or query_shape[-1])

    def _mask(self, name: str, mask: Any, expected: tuple) -> Any:
        """`mask` as bool, non-zero meaning "attend"; raises unless it broadcasts to `expected`."""
        if isinstance(mask, (list, tuple)):
            mask = np.asarray(mask)
        dtype = getattr(mask, "dtype", None)
        if dtype is None or not (jnp.issubdtype(dtype, jnp.bool_) or jnp.issubdtype(dtype, jnp.number)):
            raise TypeError(
                f"MultiHeadAttention {self.name!r}: {name} must be an array of a numeric or bool dtype "
                f"(non-zero = attend), received {mask!r}."
            )
        shape = tuple(np.shape(mask))
        # A padding mask needs its batch axis; the attention mask may leave the batch axis out.
        ranks = (len(expected),) if len(expected) == 2 else (2, 3)
        padded = (1,) * (len(expected) - len(shape)) + shape
        if len(shape) not in ranks or any(m not in (1, e) for m, e in zip(padded, expected, strict=True)):
            axes = "(batch, T_query)" if name == "query_mask" else "(batch, T_key)"
            if len(expected) == 3:
                axes = "(batch, T_query, T_key)"
            raise ValueError(
                f"MultiHeadAttention {self.name!r}: {name} of shape {shape} does not fit the inputs; expected "
                f"{axes} = {expected} (or 1 on any axis, to broadcast)."
            )
        mask = jnp.asarray(mask)
        return mask if mask.dtype == jnp.bool_ else mask != 0

    def _attention_mask(self, query: Any, value: Any, masks: dict[str, Any], use_causal_mask: bool) -> Any:
        """Combines the padding, explicit and causal masks into one bool `(batch, T_q, T_k)` mask.

        Every mask may have any numeric or bool dtype: non-zero attends, as in Keras. Each is
        turned into bool before the masks are combined with `&`, so a mask of 2s masks nothing.
        """
        query_mask = masks["query"] if masks["query"] is not None else get_mask(query)
        value_mask = masks["value"] if masks["value"] is not None else get_mask(value)
        batch, t_query, t_key = query.shape[0], query.shape[1], value.shape[1]
        pieces = []
        if query_mask is not None:
            pieces.append(self._mask("query_mask", query_mask, (batch, t_query))[:, :, None])
        for name, padding in (("value_mask", value_mask), ("key_mask", masks["key"])):
            if padding is not None:
                pieces.append(self._mask(name, padding, (batch, t_key))[:, None, :])
        if use_causal_mask:
            pieces.append(jnp.tril(jnp.ones((t_query, t_key), bool))[None])
        if masks["attention"] is not None:
            attention = self._mask("attention_mask", masks["attention"], (batch, t_query, t_key))
            pieces.append(attention if attention.ndim == 3 else attention[None])
        mask = None
        for piece in pieces:
            mask = piece if mask is None else mask & piece
        return None if mask is None else jnp.broadcast_to(mask, (batch, t_query, t_key))

    def call(
        self,
        query: Any,
        value: Any,
        key: Any = None,
        query_mask: Any = None,
        value_mask: Any = None,
        key_mask: Any = None,
        attention_mask: Any = None,
        return_attention_scores: bool = False,
        training: Any = None,
        use_causal_mask: bool = False,
    ) -> Any:
        """Attends from `query` to `key`/`value`; returns `(batch, T_query, output_dim)`."""
        training = check_training(training, f"MultiHeadAttention {self.name!r}")
        self._check_shapes(tuple(query.shape), tuple(value.shape), None if key is None else tuple(key.shape))
        key = value if key is None else key
        masks = {"query": query_mask, "value": value_mask, "key": key_mask, "attention": attention_mask}
        mask = self._attention_mask(query, value, masks, use_causal_mask)
        q = self.query_dense(query)
        k = self.key_dense(key)
        v = self.value_dense(value)
        q = q * jnp.asarray(1.0 / math.sqrt(self.key_dim), q.dtype)
        # Scores stay in the float32 accumulator straight into the float32 softmax.
        algorithm = algorithm_for(self.dtype_policy, q.dtype.name)
        scores = _numerics.product_accumulated("aecd,abcd->acbe", k, q, algorithm)
        if mask is not None:
            mask = mask[:, None, :, :]  # broadcast over heads
        probabilities = _numerics.softmax(scores, axis=-1, mask=mask).astype(q.dtype)
        dropped = self.dropout_layer(probabilities, training=training)
        context = _numerics.einsum("acbe,aecd->abcd", dropped, v, algorithm=algorithm)
        output = self.output_dense(context)
        return (output, probabilities) if return_attention_scores else output

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, with initializers, regularizers and constraints serialized."""
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "output_shape": self.output_dim,
            **weight_arguments_config(self, "kernel", "bias"),
            "seed": self.seed,
        }
