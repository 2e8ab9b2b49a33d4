"""Matmul FLOPs of the benchmark models, counted analytically from their shapes.

Every matrix product `(m, k) @ (k, n)`, repeated `count` times (batch × heads for attention),
costs `2 · m · n · k · count` FLOPs: one multiply and one add per term. Only matrix products
count; elementwise work, norms, softmax and the optimizer update do not (they are a small
fraction at the benchmark sizes, and peak tables quote matmul throughput).

A train step counts, per product, its forward, its input gradient and its second operand's
gradient (the weight gradient, or for the attention products the other activation's gradient),
each as many FLOPs as the forward. The one exception is the convention used here: **an input
gradient that nothing needs is not counted**, which is the first Dense of the MLP (its input is
the batch). The transformer's first products (query, key, value) read the attention LayerNorm's
output, whose gamma and beta train, so their input gradients are needed and counted. So a
train step of the MLP is `3 · forward − first layer's forward`, and of the transformer
classifier exactly `3 · forward`.

These counts come from shapes, never from the dot_generals of a traced gradient: the custom_vjp
products carry both gradient products whether or not one is used, and XLA removes the unused one.

Example:
  >>> forward_flops(mlp_products((4, 8, 3), batch=2)), train_flops(mlp_products((4, 8, 3), batch=2))
  (224, 544)
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class Product:
    """One matrix product `(m, k) @ (k, n)`, `count` times.

    Attributes:
      name: what it is ("dense_0", "query", "scores").
      m, k, n: rows, contracted size, columns.
      count: how many independent products of that shape (batch × heads for attention).
      input_grad: whether a train step needs the gradient of the first operand.
    """

    name: str
    m: int
    k: int
    n: int
    count: int = 1
    input_grad: bool = True

    def __post_init__(self) -> None:
        for field in ("m", "k", "n", "count"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Product {self.name!r}: {field} must be a positive int, received {value!r}.")

    @property
    def flops(self) -> int:
        """Forward FLOPs, `2 · m · n · k · count`."""
        return 2 * self.m * self.n * self.k * self.count

    @property
    def train_flops(self) -> int:
        """Forward, second operand's gradient, and the input gradient when it is needed."""
        return self.flops * (3 if self.input_grad else 2)


def mlp_products(widths: Iterable[int], batch: int) -> list[Product]:
    """The Dense products of an MLP with layer widths `widths` (input first), on `batch` rows.

    The first layer reads the batch itself, so its input gradient is not needed.

    Example:
      >>> [(p.name, p.m, p.k, p.n) for p in mlp_products((4, 8, 3), batch=2)]
      [('dense_0', 2, 4, 8), ('dense_1', 2, 8, 3)]
    """
    widths = list(widths)
    if len(widths) < 2:
        raise ValueError(f"mlp_products needs at least an input and an output width, received {widths!r}.")
    return [
        Product(f"dense_{i}", batch, fan_in, fan_out, input_grad=i > 0)
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths))
    ]


def transformer_products(
    batch: int, time: int, width: int, num_heads: int, key_dim: int, mlp_dim: int, classes: int
) -> list[Product]:
    """The products of the benchmarks' transformer classifier: one TransformerBlock, a mean over time, a head.

    Query, key and value (`width -> heads · key_dim` each), the scores `q · kᵀ` and the context
    `p · v` (per batch and head: `time × key_dim × time`), the attention output
    (`heads · key_dim -> width`), the FFN up (`width -> mlp_dim`) and down (`mlp_dim -> width`)
    on `batch · time` tokens, and the head (`width -> classes`) on `batch` rows.

    Example:
      >>> sum(p.flops for p in transformer_products(2, 3, 4, 2, 2, 8, 5))
      1904
    """
    tokens, inner = batch * time, num_heads * key_dim
    heads = batch * num_heads
    return [
        Product("query", tokens, width, inner),
        Product("key", tokens, width, inner),
        Product("value", tokens, width, inner),
        Product("scores", time, key_dim, time, count=heads),
        Product("context", time, time, key_dim, count=heads),
        Product("attention_output", tokens, inner, width),
        Product("mlp_in", tokens, width, mlp_dim),
        Product("mlp_out", tokens, mlp_dim, width),
        Product("head", batch, width, classes),
    ]


def layer_products(tokens: int, hidden: int, ffn: int) -> list[Product]:
    """The weight products of one transformer layer, as GEMM benchmarks list them: fused QKV, attention-out, FFN.

    Example:
      >>> [(p.name, p.k, p.n) for p in layer_products(8, 4, 16)]
      [('qkv', 4, 12), ('attention_out', 4, 4), ('ffn_up', 4, 16), ('ffn_down', 16, 4)]
    """
    return [
        Product("qkv", tokens, hidden, 3 * hidden),
        Product("attention_out", tokens, hidden, hidden),
        Product("ffn_up", tokens, hidden, ffn),
        Product("ffn_down", tokens, ffn, hidden),
    ]


def forward_flops(products: Iterable[Product]) -> int:
    """Matmul FLOPs of a forward pass."""
    return sum(product.flops for product in products)


def train_flops(products: Iterable[Product]) -> int:
    """Matmul FLOPs of a train step: forward and the gradients it needs (see the module's convention)."""
    return sum(product.train_flops for product in products)
