"""The built-in cases: each layer and model to check, its fixed inputs at each size, and its float64 formula."""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from benchmarks.precision._oracles import (
    _attention_f64,
    _batch_norm_f64,
    _block_f64,
    _dense_f64,
    _layer_norm_f64,
    _mlp_f64,
    _softmax_f64,
)


@dataclasses.dataclass(frozen=True)
class Case:
    """One layer or model to check.

    `build(policy)` returns a fresh unbuilt layer; `inputs` are its fixed call arguments;
    `reference(weights, *inputs)` is its float64 formula on a dict of weights keyed by path below
    the layer ("kernel", "block/mlp_in/bias"), or None to use the layer under the float64 policy.
    `bounded` names the quantities whose one-rounding bound is claimed (under float policies);
    `round_inputs` says whether the layer reads its floating inputs in the compute dtype
    (normalization layers take them as they come).
    """

    name: str
    build: Callable[[str], Any]
    inputs: tuple[np.ndarray, ...]
    reference: Callable[..., Any] | None = None
    call_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    bounded: tuple[str, ...] = ()
    quantizable: bool = False
    round_inputs: bool = True


def _normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return (rng.normal(size=shape) * scale).astype(np.float32)


# The quick run (`make demo`) skips the layers the Transformer classifier already contains
# (EinsumDense, MultiHeadAttention, TransformerBlock) and BatchNormalization: compiling each
# (layer, policy) pair's jitted gradient is what the run's time goes into.
QUICK_LAYERS = ("Dense", "LayerNormalization", "Embedding", "Softmax", "MLP", "Transformer classifier")

SIZES = {
    # quick: what `make demo` runs; full: the default command (CPU-sized contractions of 256-512).
    "quick": {"batch": 16, "features": 64, "units": 32, "time": 8, "heads": 2, "key_dim": 16, "mlp": 64,
              "mlp_widths": (64, 128, 10), "vocabulary": 64},
    "full": {"batch": 64, "features": 512, "units": 256, "time": 32, "heads": 4, "key_dim": 32, "mlp": 512,
             "mlp_widths": (256, 512, 512, 10), "vocabulary": 1000},
}  # fmt: skip


def cases(sizes: str = "quick", seed: int = 0) -> list[Case]:
    """The built-in layers and the two models, with their inputs at `sizes` ("quick" or "full")."""
    import layers
    from benchmarks import train_step

    if sizes not in SIZES:
        raise ValueError(f"sizes must be one of {sorted(SIZES)}, received {sizes!r}.")
    s = SIZES[sizes]
    rng = np.random.default_rng(seed)
    batch, features, time_, key_dim = s["batch"], s["features"], s["time"], s["key_dim"]
    width = s["heads"] * key_dim
    sequence = (max(batch // 4, 2), time_, width)
    ids = rng.integers(0, s["vocabulary"], size=(batch, time_)).astype(np.int32)
    widths = s["mlp_widths"]
    dims = {"num_heads": s["heads"], "key_dim": key_dim, "mlp_dim": s["mlp"], "classes": 10}

    def mlp(policy: str) -> Any:
        *hidden, classes = widths[1:]
        dense = [layers.Dense(n, activation="relu", name=f"dense_{i}") for i, n in enumerate(hidden)]
        return layers.Sequential([*dense, layers.Dense(classes, name=f"dense_{len(hidden)}")], dtype=policy)

    def classifier_f64(w: Mapping[str, Any], x: Any) -> Any:
        return _dense_f64(w, jnp.mean(_block_f64(w, x, key_dim, "block/"), axis=1), "head/")

    everything = ("output", "grad inputs", "grad weights")
    return [
        Case("Dense", lambda p: layers.Dense(s["units"], dtype=p), (_normal(rng, (batch, features)),),
             _dense_f64, bounded=everything, quantizable=True),
        Case("EinsumDense",
             lambda p: layers.EinsumDense("abc,cde->abde", (None, s["heads"], key_dim), bias_axes="de", dtype=p),
             (_normal(rng, sequence),),
             lambda w, x: jnp.einsum("abc,cde->abde", x, w["kernel"]) + w["bias"], bounded=everything,
             quantizable=True),
        Case("LayerNormalization", lambda p: layers.LayerNormalization(dtype=p),
             (_normal(rng, (batch, features), 2.0) + np.float32(1.0),),
             lambda w, x: _layer_norm_f64(w, x, 1e-3), bounded=everything, round_inputs=False),
        Case("BatchNormalization", lambda p: layers.BatchNormalization(dtype=p),
             (_normal(rng, (4 * batch, s["units"]), 2.0) + np.float32(1.0),),
             lambda w, x: _batch_norm_f64(w, x, 1e-3), call_kwargs={"training": True}, bounded=everything,
             round_inputs=False),
        Case("Embedding", lambda p: layers.Embedding(s["vocabulary"], width, dtype=p), (ids,),
             lambda w, i: w["embeddings"][i], bounded=everything),
        Case("Softmax", lambda p: layers.Softmax(dtype=p), (_normal(rng, (batch, 4 * time_), 3.0),),
             lambda w, x: _softmax_f64(x), bounded=everything),
        Case("MultiHeadAttention", lambda p: layers.MultiHeadAttention(s["heads"], key_dim, dtype=p),
             (_normal(rng, sequence), _normal(rng, sequence)),
             lambda w, q, v: _attention_f64(w, q, v, key_dim), quantizable=True),
        Case("TransformerBlock",
             lambda p: layers.TransformerBlock(num_heads=s["heads"], key_dim=key_dim, mlp_dim=s["mlp"], dtype=p),
             (_normal(rng, sequence),), lambda w, x: _block_f64(w, x, key_dim), quantizable=True),
        Case(f"MLP {'-'.join(map(str, widths))}", mlp, (_normal(rng, (batch, widths[0])),),
             lambda w, x: _mlp_f64(w, x, len(widths) - 1), quantizable=True),
        Case("Transformer classifier", lambda p: train_step._transformer_classifier(p, dims),
             (_normal(rng, sequence),), classifier_f64, quantizable=True),
    ]  # fmt: skip


def _name_seed(name: str) -> int:
    """A seed offset fixed by a case's name (not by its place in a selection)."""
    return zlib.crc32(name.encode()) % 1_000_000
