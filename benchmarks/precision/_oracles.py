"""The float64 formulas of the built-in layers and models, in plain `jax.numpy` (none of the library's code).

Each takes a dict of weights keyed by path below the layer ("kernel", "block/mlp_in/bias"); run
under `jax.enable_x64` on float64 values, they are the oracle the layers are measured against.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp


def _dense_f64(w: Mapping[str, Any], x: Any, prefix: str = "") -> Any:
    return jnp.einsum("...i,io->...o", x, w[f"{prefix}kernel"]) + w[f"{prefix}bias"]


def _layer_norm_f64(w: Mapping[str, Any], x: Any, epsilon: float, prefix: str = "") -> Any:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(variance + epsilon) * w[f"{prefix}gamma"] + w[f"{prefix}beta"]


def _softmax_f64(x: Any) -> Any:
    shifted = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))
    return shifted / jnp.sum(shifted, axis=-1, keepdims=True)


def _attention_f64(w: Mapping[str, Any], query: Any, value: Any, key_dim: int, prefix: str = "") -> Any:
    def project(name: str, x: Any) -> Any:
        return jnp.einsum("abc,cde->abde", x, w[f"{prefix}{name}/kernel"]) + w[f"{prefix}{name}/bias"]

    q = project("query", query) / math.sqrt(key_dim)
    k, v = project("key", value), project("value", value)
    probabilities = _softmax_f64(jnp.einsum("aecd,abcd->acbe", k, q))
    context = jnp.einsum("acbe,aecd->abcd", probabilities, v)
    out = jnp.einsum("abcd,cde->abe", context, w[f"{prefix}attention_output/kernel"])
    return out + w[f"{prefix}attention_output/bias"]


def _gelu_f64(x: Any) -> Any:
    return 0.5 * x * (1.0 + jax.scipy.special.erf(x / math.sqrt(2.0)))


def _block_f64(w: Mapping[str, Any], x: Any, key_dim: int, prefix: str = "") -> Any:
    epsilon = 1e-6  # TransformerBlock's default
    normed = _layer_norm_f64(w, x, epsilon, f"{prefix}attention_norm/")
    hidden = x + _attention_f64(w, normed, normed, key_dim, f"{prefix}attention/")
    inner = _gelu_f64(_dense_f64(w, _layer_norm_f64(w, hidden, epsilon, f"{prefix}mlp_norm/"), f"{prefix}mlp_in/"))
    return hidden + _dense_f64(w, inner, f"{prefix}mlp_out/")


def _mlp_f64(w: Mapping[str, Any], x: Any, depth: int) -> Any:
    for i in range(depth):
        x = _dense_f64(w, x, f"dense_{i}/")
        if i < depth - 1:
            x = jnp.maximum(x, 0.0)
    return x


def _batch_norm_f64(w: Mapping[str, Any], x: Any, epsilon: float) -> Any:
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    variance = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    return (x - mean) / jnp.sqrt(variance + epsilon) * w["gamma"] + w["beta"]
