"""TransformerBlock: a pre-norm attention + MLP block built only from the built-in layers."""

from __future__ import annotations

from typing import Any

from layers._base._layer import Layer
from layers._builtin._attention import MultiHeadAttention
from layers._builtin._dense import Dense
from layers._builtin._dropout import Dropout
from layers._builtin._normalization import LayerNormalization


def _offset(seed: int | None, offset: int) -> int | None:
    """A distinct seed per dropout, kept in the 32-bit seed range."""
    return None if seed is None else (seed + offset) % 2**32


class TransformerBlock(Layer):
    """`x + attention(norm(x))`, then `h + mlp(norm(h))`, on `(batch, time, features)` inputs.

    Every part is a built-in layer, so the block follows the dtype-policy rules of each:
    matmuls accumulate in float32, the norms and the attention softmax compute in float32, and
    the residual stream is in the compute dtype.

    Args:
      num_heads: attention heads.
      key_dim: size of each head.
      mlp_dim: hidden size of the MLP.
      dropout: dropout rate after the attention and inside the MLP (training only).
      epsilon: the LayerNormalization epsilon.
      causal: whether attention is causal.
      seed: seed of the dropouts.

    Example:
      >>> from layers import TransformerBlock
      >>> block = TransformerBlock(num_heads=2, key_dim=4, mlp_dim=16, dtype="mixed_bfloat16")
      >>> block(jnp.ones((1, 5, 8))).dtype
      dtype(bfloat16)
    """

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        mlp_dim: int,
        dropout: float = 0.0,
        epsilon: float = 1e-6,
        causal: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_heads, self.key_dim, self.mlp_dim = num_heads, key_dim, mlp_dim
        self.dropout, self.epsilon, self.causal, self.seed = dropout, epsilon, causal, seed
        self.attention_norm = LayerNormalization(epsilon=epsilon, name="attention_norm")
        self.attention = MultiHeadAttention(num_heads, key_dim, dropout=dropout, seed=seed, name="attention")
        self.attention_dropout = Dropout(dropout, seed=_offset(seed, 1), name="attention_dropout")
        self.mlp_norm = LayerNormalization(epsilon=epsilon, name="mlp_norm")
        self.mlp_in = Dense(mlp_dim, activation="gelu", name="mlp_in")
        self.mlp_dropout = Dropout(dropout, seed=_offset(seed, 2), name="mlp_dropout")

    def build(self, input_shape: Any) -> None:
        """Creates the MLP's output projection, which needs the feature size."""
        if len(input_shape) != 3:
            raise ValueError(f"TransformerBlock expects (batch, time, features) inputs, received shape {input_shape}.")
        self.mlp_out = Dense(input_shape[-1], name="mlp_out")

    def call(self, inputs: Any, attention_mask: Any = None, training: Any = None) -> Any:
        """Runs attention then the MLP, each with a residual connection."""
        normed = self.attention_norm(inputs)
        attended = self.attention(normed, normed, attention_mask=attention_mask, use_causal_mask=self.causal)
        hidden = inputs + self.attention_dropout(attended)
        mlp = self.mlp_out(self.mlp_dropout(self.mlp_in(self.mlp_norm(hidden))))
        return hidden + mlp
