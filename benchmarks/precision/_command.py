"""The precision regression benchmark: each policy's outputs and gradients against a float64 oracle.

`python -m benchmarks precision [--quick] [--update-baseline]` runs every built-in layer with
numerics worth checking, and the two models of `benchmarks/train_step.py`, under each policy, on
fixed generated data. For each (layer, policy) it measures three quantities, each as a relative
Frobenius error `||got - exact|| / ||exact||` (the absolute norm where `exact` is zero):

- `output`: the layer's output (`stateless_call`, jitted);
- `grad inputs`, `grad weights`: the gradients of `sum(output * cotangent)` with respect to the
  floating inputs and to the float weights (all of them flattened into one vector), for a fixed
  cotangent of multiples of 1/4 in [-2, 2], exact in every 16-bit and float8 type, so no rounding of
  the output gradient enters.

`exact` is the float64 oracle: the same layer's math written out here in plain `jax.numpy`
(independent of the library's code) and run in float64 under `jax.enable_x64`, on the float32
inputs and master weights, gradients by `jax.grad` in float64. A user's model (`check`) has no
hand-written formula: its oracle is the same model built under the `"float64"` policy (no 16-bit
cast, no 16-bit product formulation runs there).

Next to each error is its one-rounding floor: the error that exact math on the inputs rounded to the
compute dtype, rounded once to the result's dtype, has against the same oracle on the unrounded
inputs. It is achievable (it is what a perfect implementation of the policy returns) and no
implementation of the policy does better on average. Which values are rounded, by this library's
rules: floating inputs, when the layer autocasts them (normalization layers do not), and weights
whose name ends in `kernel` or `embeddings` (biases, normalization parameters are read in float32).
Outputs round to the dtype the layer returned; input gradients to the compute dtype (float32
where inputs are not autocast); `kernel`/`embeddings` gradients to the compute dtype, other weight
gradients to float32. Quantized policies report the floor of their source policy (what the
bfloat16 policy could do), so the row shows what quantization costs.

The gate. A row fails when:
- its error exceeds `BOUND_FACTOR` (1.1) x its bound, where a bound applies: bound = floor +
  `FLOAT32_ALLOWANCE` (64 float32 unit roundoffs, 3.8e-6: the float32 accumulation and statistics
  that run before the one rounding; it is what lets a float32 row pass, and it catches a float32
  product run in TF32 or bfloat16). A bound applies to the quantities of the layers whose result
  is one rounding of float32 arithmetic (Dense, EinsumDense, LayerNormalization,
  BatchNormalization, Softmax, Embedding), under the float policies. Attention, the
  TransformerBlock, the models, and every quantized policy round several times in a row: their
  rows are checked against the baseline only;
- or it regresses past the stored baseline: error > `BASELINE_FACTOR` (1.1) x baseline +
  `BASELINE_FLOOR` (2**-24). Errors are deterministic on one device and library version, so the
  10 % is room for a compiler's reordering, not for noise.

Baselines live in `benchmarks/baselines/<device slug>.json` ("cpu.json", "nvidia-h200.json"),
one entry per row, keyed `"<sizes> | <layer> | <policy> | <quantity>"`; `--update-baseline`
rewrites this run's entries (keeping the others). A row with no baseline entry is reported as
`new` and does not fail.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

import dtypepolicy as dp

BASELINES = Path(__file__).resolve().parent.parent / "baselines"  # benchmarks/baselines/
POLICIES = (
    "float32",
    "mixed_bfloat16",
    "mixed_float16",
    "float8_from_mixed_bfloat16",
    "float8_current_from_mixed_bfloat16",
    "int8_from_mixed_bfloat16",
)
QUANTITIES = ("output", "grad inputs", "grad weights")
BOUND_FACTOR = 1.1
FLOAT32_ALLOWANCE = 64 * 2.0**-24
BASELINE_FACTOR = 1.1
BASELINE_FLOOR = 2.0**-24
# Weights read in the compute dtype by the built-in layers; every other weight is read in float32.
COMPUTE_WEIGHTS = ("kernel", "embeddings")
_DTYPES = {"float32": np.float32, "float64": np.float64, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


# --- policies --------------------------------------------------------------------------------------


def _check_policies(policies: Sequence[str] | str) -> tuple[str, ...]:
    """The policy names, each one a valid policy; a clear ValueError naming a bad one."""
    import dtypepolicy as dp

    if isinstance(policies, str):
        policies = [name.strip() for name in policies.split(",") if name.strip()]
    if not policies:
        raise ValueError(f"policies must name at least one policy, received {policies!r}.")
    for name in policies:
        if not isinstance(name, str):
            raise TypeError(
                f"each policy must be a policy name (str), received {name!r} of type {type(name).__name__}."
            )
        try:
            dp.get(name)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"unknown policy {name!r} in policies; expected names such as {POLICIES}. {error}"
            ) from None
    return tuple(policies)


def _quantization(policy: str) -> tuple[str | None, str]:
    """(mode or None, the float source policy name)."""
    import dtypepolicy as dp

    resolved = dp.get(policy)
    mode = getattr(resolved, "quantization_mode", None)
    if mode is None:
        return None, policy
    return mode, resolved.name.split("_from_", 1)[1]


def _compute_dtype(policy: str) -> str:
    import dtypepolicy as dp

    return str(dp.get(_quantization(policy)[1]).compute_dtype)


# --- errors and rounding ---------------------------------------------------------------------------


def relative_error(values: Any, exact: Any) -> float:
    """`||values - exact||_F / ||exact||_F` in float64; the absolute norm when `exact` is all zeros.

    >>> round(relative_error([1.0, 2.0], [1.0, 2.5]), 6)  # 0.5 / sqrt(1 + 6.25)
    0.185695
    """
    values, exact = np.asarray(values, np.float64).ravel(), np.asarray(exact, np.float64).ravel()
    scale = float(np.linalg.norm(exact))
    difference = float(np.linalg.norm(values - exact))
    return difference / scale if scale > 0 else difference


def round_to(values: Any, dtype: str) -> np.ndarray:
    """float64 copies of `values` rounded to `dtype` ("float32", "bfloat16", "float16", "float64").

    From float64 the 16-bit types round through float32 (ml_dtypes' conversion); the two
    roundings differ from one only on values within 2**-29 of a tie, which no norm here sees.

    >>> float(round_to(1 + 2.0**-8 + 2.0**-10, "bfloat16")[()])  # 8 significant bits: rounds up
    1.0078125
    """
    if dtype not in _DTYPES:
        raise ValueError(f"cannot round to {dtype!r}; expected one of {sorted(_DTYPES)}.")
    return np.asarray(values, np.float64).astype(np.float32).astype(_DTYPES[dtype]).astype(np.float64)


def one_rounding_floor(exact_on_rounded: Any, exact: Any, dtype: str) -> float:
    """The relative error of `exact_on_rounded` rounded once to `dtype`, against `exact`.

    >>> round(one_rounding_floor([3.03], [3.03], "bfloat16"), 8)  # 3.03 -> 3.03125: (3.03125 - 3.03) / 3.03
    0.00041254
    """
    return relative_error(round_to(exact_on_rounded, dtype), exact)


# --- cases: the layers, their data and their float64 formulas ---------------------------------------


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


def _cotangent(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Multiples of 1/4 in [-2, 2]: exact in bfloat16, float16 and both float8 types."""
    return (np.random.default_rng(seed).integers(-8, 9, size=shape) / 4).astype(np.float32)


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


def _batch_norm_f64(w: Mapping[str, Any], x: Any, epsilon: float) -> Any:
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    variance = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    return (x - mean) / jnp.sqrt(variance + epsilon) * w["gamma"] + w["beta"]


# --- measuring one (model, policy) ------------------------------------------------------------------


def _float_weights(layer: Any) -> list[Any]:
    """The trainable float weights, in order; float8 scaling state (overwrite_with_gradient) left out."""
    return [
        v
        for v in layer.trainable_variables
        if jnp.issubdtype(np.dtype(v.dtype), jnp.floating) and not v.overwrite_with_gradient
    ]


def _relative_path(variable: Any) -> str:
    return variable.path.split("/", 1)[1] if "/" in variable.path else variable.path


def _assign(layer: Any, values: Sequence[np.ndarray], what: str) -> None:
    variables = _float_weights(layer)
    if len(variables) != len(values):
        raise ValueError(
            f"{what}: the model has {len(variables)} float trainable weights, received {len(values)} values."
        )
    for variable, value in zip(variables, values, strict=True):
        if tuple(variable.shape) != tuple(np.shape(value)):
            raise ValueError(
                f"{what}: weight {variable.path!r} has shape {tuple(variable.shape)}, received a value of shape "
                f"{tuple(np.shape(value))}."
            )
        variable.assign(np.asarray(value, np.float32))


def _built(build: Callable[[str], Any], policy: str, inputs: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    from layers import Layer

    layer = build(policy)
    if not isinstance(layer, Layer):
        raise TypeError(
            f"the model factory must return a layers.Layer for policy {policy!r}, received {layer!r} of type "
            f"{type(layer).__name__}."
        )
    if layer.dtype_policy != dp.get(policy):
        # Every row would measure the same model: errors of 0, a gate that can never fail.
        raise ValueError(
            f"the model factory ignored its policy: build({policy!r}) returned a layer whose policy is "
            f"{layer.dtype_policy.name!r}. Pass the policy on, e.g. `lambda policy: layers.Sequential([...], "
            f"dtype=policy)`."
        )
    # Abstract evaluation builds the layer (initial values are drawn on the host, so they are
    # concrete) without compiling its eager kernels: 0.06 s instead of 1.4 s for a TransformerBlock.
    # Without `training`: a training call would update state (BatchNormalization) inside the trace.
    building = {key: value for key, value in kwargs.items() if key != "training"}
    jax.eval_shape(lambda *args: layer(*args, **building), *inputs)
    return layer


def _is_float(array: Any) -> bool:
    return jnp.issubdtype(np.asarray(array).dtype, jnp.floating)


def _measure(
    build: Callable[[str], Any],
    policy: str,
    inputs: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    cotangent: np.ndarray,
    kwargs: Mapping[str, Any],
    forward_only: bool,
) -> dict[str, Any]:
    """The layer under `policy` with `weights`: its output and gradients (float64 NumPy), and how it rounds."""
    mode, source = _quantization(policy)
    if mode == "int8":  # an int8 layer is made from a float one (its constructor takes no float kernel)
        layer = _built(build, source, inputs, kwargs)
        _assign(layer, weights, policy)
        layer.quantize("int8")
    else:
        layer = _built(build, policy, inputs, kwargs)
        _assign(layer, weights, policy)
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]
    float_weights = {id(v) for v in _float_weights(layer)}
    weight_index = [i for i, v in enumerate(layer.trainable_variables) if id(v) in float_weights]
    input_index = [i for i, x in enumerate(inputs) if _is_float(x)]

    # Everything is an argument, nothing a constant: XLA would constant-fold an embedding's
    # scatter on constant ids, for seconds.
    def forward(values: list[Any], float_inputs: list[Any], others: list[Any]) -> Any:
        arguments = list(others)
        for i, x in zip(input_index, float_inputs, strict=True):
            arguments[i] = x
        out = layer.stateless_call(values, non_trainable, *arguments, **kwargs)[0]
        if not isinstance(out, jax.Array):
            raise TypeError(f"check needs a model that returns one array, received {type(out).__name__}.")
        return out

    def loss(values: list[Any], float_inputs: list[Any], others: list[Any], cot: Any) -> tuple[Any, Any]:
        out = forward(values, float_inputs, others)
        return jnp.sum(out.astype(jnp.float32) * cot), out

    float_inputs = [jnp.asarray(inputs[i]) for i in input_index]
    others = [None if i in input_index else jnp.asarray(x) for i, x in enumerate(inputs)]
    if forward_only:
        out = jax.jit(forward)(trainable, float_inputs, others)
        grads = None
    else:
        (_, out), (d_values, d_inputs) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
            trainable, float_inputs, others, jnp.asarray(cotangent)
        )
        grads = {"inputs": [np.asarray(g, np.float64) for g in d_inputs],
                 "weights": [np.asarray(d_values[i], np.float64) for i in weight_index]}  # fmt: skip
    return {
        "output": np.asarray(out, np.float64),
        "output_dtype": str(np.dtype(out.dtype)),
        "grads": grads,
        "weight_paths": [_relative_path(v) for v in _float_weights(layer)],
    }


def _oracle_from_float64_model(build: Callable[[str], Any], inputs: Sequence[np.ndarray], kwargs: Mapping[str, Any]):
    """The model under the float64 policy as a function (weights list, inputs) -> output; call inside enable_x64."""
    layer = _built(build, "float64", [np.asarray(x, np.float64) if _is_float(x) else x for x in inputs], kwargs)
    variables = layer.trainable_variables
    float_ids = [i for i, v in enumerate(variables) if id(v) in {id(f) for f in _float_weights(layer)}]
    values = [v.value for v in variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def oracle(weights: Sequence[Any], *arguments: Any) -> Any:
        full = list(values)
        for i, w in zip(float_ids, weights, strict=True):
            full[i] = w
        return layer.stateless_call(full, non_trainable, *arguments, **kwargs)[0]

    return oracle


def _exact_function(oracle: Callable[..., Any], inputs: Sequence[np.ndarray]) -> Callable[..., dict[str, Any]]:
    """`exact(weights, inputs, cotangent)`: the oracle's output and gradients in float64, compiled once.

    Call it inside `jax.enable_x64`; the floor's call on rounded values reuses the compilation.
    """
    input_index = [i for i, x in enumerate(inputs) if _is_float(x)]

    def loss(w: list[Any], float_inputs: list[Any], others: list[Any], cot: Any) -> tuple[Any, Any]:
        arguments = list(others)
        for i, x in zip(input_index, float_inputs, strict=True):
            arguments[i] = x
        out = oracle(w, *arguments)
        return jnp.sum(out * cot), out

    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))

    def exact(weights: Sequence[np.ndarray], values: Sequence[np.ndarray], cotangent: np.ndarray) -> dict[str, Any]:
        w64 = [jnp.asarray(np.asarray(w, np.float64)) for w in weights]
        x64 = [jnp.asarray(np.asarray(x, np.float64)) if _is_float(x) else jnp.asarray(x) for x in values]
        floats = [x64[i] for i in input_index]
        others = [None if i in input_index else x for i, x in enumerate(x64)]
        (_, out), (d_w, d_x) = compiled(w64, floats, others, jnp.asarray(np.asarray(cotangent, np.float64)))
        return {
            "output": np.asarray(out, np.float64),
            "grads": {"inputs": [np.asarray(g) for g in d_x], "weights": [np.asarray(g) for g in d_w]},
        }

    return exact


def _rounds_in_compute(path: str) -> bool:
    return path.rsplit("/", 1)[-1] in COMPUTE_WEIGHTS


def _quantities(
    got: dict[str, Any],
    exact: dict[str, Any],
    on_rounded: dict[str, Any],
    compute: str,
    input_dtypes: Sequence[str],
    round_inputs: bool,
) -> dict[str, tuple[float, float]]:
    """quantity -> (error, one-rounding floor)."""
    result = {"output": (relative_error(got["output"], exact["output"]),
                         one_rounding_floor(on_rounded["output"], exact["output"], got["output_dtype"]))}  # fmt: skip
    if got["grads"] is None:
        return result

    def flat(parts: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.ravel(p) for p in parts]) if parts else np.zeros(0)

    if exact["grads"]["inputs"]:
        dtypes = [compute if round_inputs else dtype for dtype in input_dtypes]
        rounded = [round_to(g, d) for g, d in zip(on_rounded["grads"]["inputs"], dtypes, strict=True)]
        result["grad inputs"] = (
            relative_error(flat(got["grads"]["inputs"]), flat(exact["grads"]["inputs"])),
            relative_error(flat(rounded), flat(exact["grads"]["inputs"])),
        )
    if exact["grads"]["weights"]:
        dtypes = [compute if _rounds_in_compute(p) else "float32" for p in got["weight_paths"]]
        rounded = [round_to(g, d) for g, d in zip(on_rounded["grads"]["weights"], dtypes, strict=True)]
        result["grad weights"] = (
            relative_error(flat(got["grads"]["weights"]), flat(exact["grads"]["weights"])),
            relative_error(flat(rounded), flat(exact["grads"]["weights"])),
        )
    return result


def _draw_weights(layer: Any, seed: int) -> list[np.ndarray]:
    """Seeded values for the float weights, independent of the layer's own (unseeded) initial draw.

    A weight of two or more axes gets normal draws of spread 1/sqrt(its first dimension) (the
    fan-in of an (in, out) kernel); a vector gets its initial mean rounded to 2 decimals (0 for
    biases and beta, 1 for gamma) plus 0.1 x normal draws.
    """
    rng = np.random.default_rng(seed)
    values = []
    for variable in _float_weights(layer):
        shape = tuple(variable.shape)
        if len(shape) >= 2:
            value = rng.normal(size=shape) / math.sqrt(shape[0])
        else:
            value = round(float(np.mean(np.asarray(variable.value, np.float64))), 2) + 0.1 * rng.normal(size=shape)
        values.append(value.astype(np.float32))
    return values


# --- the public check ------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    """What `check` found: one row per (model, policy, quantity), and the failing ones.

    Each row is a dict with `model`, `policy`, `quantity`, `error`, `floor` (the one-rounding
    error), `bound` (floor + allowance, or None where none is claimed), `baseline` (None when
    there is none), `status` ("ok", "new", "FAIL bound", "FAIL baseline") and `key` (its
    baseline key).
    """

    rows: list[dict[str, Any]]

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The rows past their bound or their baseline."""
        return [row for row in self.rows if row["status"].startswith("FAIL")]

    @property
    def ok(self) -> bool:
        """True when no row fails."""
        return not self.failures

    @property
    def exit_code(self) -> int:
        """0 when every row passes, 1 otherwise: what a CI job returns."""
        return 0 if self.ok else 1

    def render(self) -> str:
        """The table of every row, then the failing rows."""
        return render({"rows": self.rows})


def _status(error: float, bound: float | None, baseline: float | None) -> str:
    if bound is not None and error > BOUND_FACTOR * bound:
        return "FAIL bound"
    if baseline is not None and error > BASELINE_FACTOR * baseline + BASELINE_FLOOR:
        return "FAIL baseline"
    return "ok" if baseline is not None or bound is not None else "new"


def _gate(rows: list[dict[str, Any]], baseline: Mapping[str, float] | None) -> None:
    for row in rows:
        row["baseline"] = None if baseline is None else baseline.get(row["key"])
        row["status"] = _status(row["error"], row["bound"], row["baseline"])
        if row["status"] == "ok" and row["baseline"] is None:
            row["status"] = "ok (new)"


def load_baseline(path: str | Path) -> dict[str, float]:
    """The `errors` of a baseline file; a FileNotFoundError / ValueError naming the path when unusable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"baseline file {str(path)!r} does not exist; write it with `python -m benchmarks precision "
            f"--update-baseline` (or write_baseline), or pass baseline=None."
        )
    try:
        data = json.loads(path.read_text())
        errors = data["errors"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(
            f"baseline file {str(path)!r} is not a precision baseline (an 'errors' object): {error}"
        ) from None
    if not isinstance(errors, dict) or not all(isinstance(v, int | float) for v in errors.values()):
        raise ValueError(f"baseline file {str(path)!r}: 'errors' must map row keys to numbers.")
    return {str(k): float(v) for k, v in errors.items()}


def write_baseline(rows: Sequence[Mapping[str, Any]], path: str | Path, device: str | None = None) -> Path:
    """Writes (merges) the rows' errors into the baseline file at `path`; other entries are kept."""
    path = Path(path)
    errors = load_baseline(path) if path.is_file() else {}
    errors.update({row["key"]: float(row["error"]) for row in rows})
    payload = {
        "about": "precision baseline: relative Frobenius errors against a float64 oracle (benchmarks/precision.py)",
        "device": device,
        "gate": {"baseline_factor": BASELINE_FACTOR, "baseline_floor": BASELINE_FLOOR},
        "errors": dict(sorted(errors.items())),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


@dataclasses.dataclass
class _Prepared:
    """One model's fixed data and its float64 oracle: everything the policies' rows share."""

    weights: list[np.ndarray]
    paths: list[str]
    cotangent: np.ndarray
    exact_of: Callable[..., dict[str, Any]]
    exact: dict[str, Any]
    on_rounded: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # by compute dtype


def _prepare(
    name: str,
    build: Callable[[str], Any],
    inputs: tuple[np.ndarray, ...],
    reference: Callable[..., Any] | None,
    weights: Sequence[np.ndarray] | None,
    call_kwargs: Mapping[str, Any],
    seed: int,
) -> _Prepared:
    """Weights (drawn or given), the cotangent, and the oracle's output and gradients."""
    reference_layer = _built(build, "float32", inputs, call_kwargs)
    if weights is None:
        weights = _draw_weights(reference_layer, seed)
    else:
        weights = [np.asarray(w, np.float32) for w in weights]
        _assign(reference_layer, weights, f"{name} weights")
    paths = [_relative_path(v) for v in _float_weights(reference_layer)]
    building = {key: value for key, value in call_kwargs.items() if key != "training"}
    probe = jax.eval_shape(lambda *args: reference_layer(*args, **building), *inputs)
    if not isinstance(probe, jax.ShapeDtypeStruct):
        raise TypeError(f"{name}: check needs a model that returns one array, received {type(probe).__name__}.")
    cotangent = _cotangent(tuple(probe.shape), seed + 1)
    with jax.enable_x64(True):
        if reference is None:
            oracle = _oracle_from_float64_model(build, inputs, call_kwargs)
        else:

            def oracle(w: Sequence[Any], *arguments: Any) -> Any:
                return reference(dict(zip(paths, w, strict=True)), *arguments)

        exact_of = _exact_function(oracle, inputs)
        exact = exact_of(weights, inputs, cotangent)
    return _Prepared(list(weights), paths, cotangent, exact_of, exact)


def _name_seed(name: str) -> int:
    """A seed offset fixed by a case's name (not by its place in a selection)."""
    return zlib.crc32(name.encode()) % 1_000_000


def _applies(policy: str, quantizable: bool) -> bool:
    """Whether a policy has rows for a model: quantized ones only for models with a quantized form."""
    return quantizable or _quantization(policy)[0] is None


def _forward_only(policy: str, forward_only: Sequence[str]) -> bool:
    return any(policy.startswith(prefix) for prefix in forward_only)


def _policy_rows(
    name: str,
    inputs: tuple[np.ndarray, ...],
    prepared: _Prepared,
    policy: str,
    got: dict[str, Any],
    *,
    bounded: Sequence[str],
    round_inputs: bool,
    group: str,
) -> list[dict[str, Any]]:
    """The rows of one (model, policy) from its measurement and the model's oracle and floor."""
    mode, _ = _quantization(policy)
    compute = _compute_dtype(policy)
    if compute not in prepared.on_rounded:
        rounded_w = [
            round_to(w, compute) if _rounds_in_compute(p) else w
            for w, p in zip(prepared.weights, prepared.paths, strict=True)
        ]
        rounded_x = [round_to(x, compute) if _is_float(x) and round_inputs else x for x in inputs]
        with jax.enable_x64(True):
            prepared.on_rounded[compute] = prepared.exact_of(rounded_w, rounded_x, prepared.cotangent)
    input_dtypes = [str(np.asarray(x).dtype) for x in inputs if _is_float(x)]
    measured = _quantities(got, prepared.exact, prepared.on_rounded[compute], compute, input_dtypes, round_inputs)
    rows = []
    for quantity, (error, floor) in measured.items():
        claimed = mode is None and quantity in bounded
        rows.append({
            "model": name, "policy": policy, "quantity": quantity, "error": error, "floor": floor,
            "bound": floor + FLOAT32_ALLOWANCE if claimed else None,
            "key": f"{group} | {name} | {policy} | {quantity}",
        })  # fmt: skip
    return rows


def _rows_for(
    name: str,
    build: Callable[[str], Any],
    inputs: Sequence[np.ndarray],
    policies: Sequence[str],
    *,
    reference: Callable[..., Any] | None,
    weights: Sequence[np.ndarray] | None,
    call_kwargs: Mapping[str, Any],
    bounded: Sequence[str],
    quantizable: bool,
    round_inputs: bool,
    forward_only: Sequence[str],
    seed: int,
    group: str,
) -> list[dict[str, Any]]:
    """Every row of one model, one policy after the other."""
    inputs = tuple(inputs)
    prepared = _prepare(name, build, inputs, reference, weights, call_kwargs, seed)
    rows = []
    for policy in policies:
        if _applies(policy, quantizable):
            only_forward = _forward_only(policy, forward_only)
            got = _measure(build, policy, inputs, prepared.weights, prepared.cotangent, call_kwargs, only_forward)
            rows += _policy_rows(
                name, inputs, prepared, policy, got, bounded=bounded, round_inputs=round_inputs, group=group
            )
    return rows


def check(
    model: Callable[[str], Any],
    inputs: Any,
    policies: Sequence[str] | str = ("float32", "mixed_bfloat16", "mixed_float16"),
    *,
    baseline: str | Path | Mapping[str, float] | None = None,
    weights: Sequence[Any] | None = None,
    call_kwargs: Mapping[str, Any] | None = None,
    bounded: Sequence[str] = (),
    forward_only: Sequence[str] = ("int8",),
    round_inputs: bool = True,
    name: str = "model",
    seed: int = 0,
) -> Result:
    """Checks a model's outputs and gradients under each policy against its float64 self.

    Args:
      model: `build(policy) -> layers.Layer`, a function that returns a fresh, unbuilt model under
        the policy it is given (the policy name, e.g. `lambda p: make_model(dtype=p)`). It is
        called once per policy, once with "float32" (for the weights) and once with "float64"
        (the oracle, inside `jax.enable_x64`).
      inputs: the call's positional arguments: one array, or a tuple or list of arrays (float32 data;
        integer arrays, such as token ids, are passed through and not differentiated).
      policies: policy names (or one comma-separated string).
      baseline: a baseline file (see `write_baseline`), a dict of errors, or None (no baseline).
      weights: values of the float trainable weights, in the model's `trainable_variables` order
        (float8 scaling state excluded), e.g. a trained model's; None draws seeded ones.
      call_kwargs: keyword arguments of every call (`{"training": True}`). The calls must be
        deterministic: a model with Dropout called with `training=True` is refused.
      bounded: the quantities ("output", "grad inputs", "grad weights") whose one-rounding bound
        to enforce. Default none: a whole model rounds many times, so it is gated by its baseline.
      forward_only: policy name prefixes measured without gradients (int8 is inference-only).
      round_inputs: whether the model reads its floating inputs in the compute dtype (True for
        a model whose first layer is a Dense or takes autocast inputs; False if it starts with a
        normalization layer), i.e. whether the one-rounding floor rounds them.
      name: the model's name in the table and in baseline keys.
      seed: the seed of the drawn weights and of the cotangent.

    Returns:
      A `Result`: `.rows`, `.failures`, `.ok`, `.exit_code`, `.render()`.

    Raises:
      ValueError: an unknown policy or quantity name, weights that do not fit the model, a
        baseline file that is not one. FileNotFoundError: a baseline path that does not exist.
    """
    from layers import Layer

    policies = _check_policies(policies)
    bounded = (bounded,) if isinstance(bounded, str) else tuple(bounded)
    for quantity in bounded:
        if quantity not in QUANTITIES:
            raise ValueError(f"bounded names unknown quantity {quantity!r}; expected some of {QUANTITIES}.")
    if isinstance(model, Layer) or (isinstance(model, type) and issubclass(model, Layer)):
        what = f"the layer class {model.__name__}" if isinstance(model, type) else f"a {type(model).__name__} layer"
        raise TypeError(
            f"model must be a function build(policy) -> layers.Layer that builds a fresh model under each policy, "
            f"received {what}; pass e.g. `lambda policy: layers.Dense(4, dtype=policy)`."
        )
    if not callable(model):
        raise TypeError(
            f"model must be a function build(policy) -> layers.Layer, received {model!r} of type "
            f"{type(model).__name__}."
        )
    if isinstance(baseline, str | Path):
        baseline = load_baseline(baseline)
    inputs = tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)
    inputs = tuple(np.asarray(x, np.float32) if _is_float(x) else np.asarray(x) for x in inputs)
    call_kwargs = dict(call_kwargs or {})
    _check_deterministic(model, inputs, call_kwargs)
    rows = _rows_for(
        name, model, inputs, policies, reference=None, weights=weights, call_kwargs=call_kwargs,
        bounded=bounded, quantizable=True, round_inputs=round_inputs, forward_only=forward_only, seed=seed,
        group="check",
    )  # fmt: skip
    _check_baseline_matches(rows, baseline, f"model {name!r}")
    _gate(rows, baseline)
    return Result(rows)


def _check_deterministic(build: Callable[[str], Any], inputs: tuple, call_kwargs: Mapping[str, Any]) -> None:
    """Two builds with the same weights must give the same output, or errors measure randomness."""
    first = _built(build, "float32", inputs, call_kwargs)
    second = _built(build, "float32", inputs, call_kwargs)
    weights = [np.asarray(v.value) for v in _float_weights(first)]
    _assign(second, weights, "check")
    outputs = [np.asarray(layer(*inputs, **call_kwargs)) for layer in (first, second)]
    if not np.array_equal(outputs[0], outputs[1], equal_nan=True):
        raise ValueError(
            f"check needs a deterministic model: two builds with the same weights gave different outputs for "
            f"call_kwargs={dict(call_kwargs)!r} (a Dropout or other random layer called with training=True?). "
            "Measure it with training=False, or seed its random layers inside build."
        )


def _check_baseline_matches(rows: Sequence[Mapping[str, Any]], baseline: Mapping[str, float] | None, what: str) -> None:
    """A baseline that holds none of the rows' keys is the wrong file or a renamed model, not a pass."""
    if not baseline or any(row["key"] in baseline for row in rows):
        return
    sample = next(iter(baseline))
    raise ValueError(
        f"the baseline holds none of the {len(rows)} rows of {what} (their keys look like {rows[0]['key']!r}, "
        f"the baseline's like {sample!r}): a renamed model (name=), other sizes, or the wrong baseline file?"
    )


# --- the benchmark command -------------------------------------------------------------------------


def baseline_path(device: Any) -> Path:
    """`benchmarks/baselines/<device slug>.json`."""
    return BASELINES / f"{device.slug}.json"


def run(
    device: Any,
    quick: bool = True,
    *,
    policies: Sequence[str] | str = POLICIES,
    layers: Sequence[str] | None = None,
    baseline: str | Path | None = None,
    seed: int = 0,
    create_baseline: bool = False,
    workers: int = 2,
) -> dict[str, Any]:
    """Every case under every policy: rows gated against bounds and the baseline (the device's by default).

    A `baseline` path that does not exist is an error unless `create_baseline` (the run will write it).
    `workers` (layer, policy) pairs are measured at a time, in threads (1: one after the other).
    """
    import dtypepolicy as dp

    policies = _check_policies(policies)
    group = "quick" if quick else "full"
    selected = cases(group, seed)
    if quick and layers is None:
        selected = [case for case in selected if case.name.split(" ")[0] in QUICK_LAYERS or case.name in QUICK_LAYERS]
    if layers is not None:
        names = {case.name for case in selected}
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise ValueError(f"unknown layer {unknown[0]!r}; expected some of {sorted(names)}.")
        selected = [case for case in selected if case.name in layers]
    path = Path(baseline) if baseline is not None else baseline_path(device)
    if baseline is not None and not path.is_file() and not create_baseline:
        load_baseline(path)  # the clear error
    stored = load_baseline(path) if path.is_file() else None
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    from benchmarks import _results

    forward_only = ("int8",)
    tasks = [
        (i, policy) for i, case in enumerate(selected) for policy in policies if _applies(policy, case.quantizable)
    ]

    def prepare(index: int) -> _Prepared:
        case = selected[index]
        # Seeded by the case's name, so a run of some layers measures the same weights as a run of all.
        return _prepare(
            case.name, case.build, case.inputs, case.reference, None, case.call_kwargs, seed + _name_seed(case.name)
        )

    def measure(index: int, policy: str, prepared: _Prepared) -> dict[str, Any]:
        case = selected[index]
        only_forward = _forward_only(policy, forward_only)
        return _measure(
            case.build, policy, case.inputs, prepared.weights, prepared.cotangent, case.call_kwargs, only_forward
        )

    # The time goes into XLA compiling one jitted gradient per (layer, policy), which releases the
    # GIL: `workers` threads compile side by side (2 use both cores of a 2-core machine). Every
    # (layer, policy) is its own task, the models' first, so no long one runs alone at the end;
    # the floors and rows are then made in order, in this thread.
    prepared: dict[int, _Prepared] = {}
    measured: dict[tuple[int, str], dict[str, Any]] = {}
    with _results.progress("precision", len(tasks)) as bar, ThreadPoolExecutor(max(1, workers)) as pool:
        preparing = {pool.submit(prepare, index): index for index in reversed(range(len(selected)))}
        measuring: dict[Any, tuple[int, str]] = {}
        pending = set(preparing)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                if future in preparing:
                    index = preparing[future]
                    prepared[index] = future.result()
                    for task in (t for t in tasks if t[0] == index):
                        submitted = pool.submit(measure, *task, prepared[index])
                        measuring[submitted] = task
                        pending.add(submitted)
                else:
                    measured[measuring[future]] = future.result()
                    bar.advance(f"{selected[measuring[future][0]].name} {measuring[future][1]}")
    for index, policy in tasks:
        case = selected[index]
        rows += _policy_rows(
            case.name, case.inputs, prepared[index], policy, measured[index, policy], bounded=case.bounded,
            round_inputs=case.round_inputs, group=group,
        )  # fmt: skip
    if not create_baseline:
        _check_baseline_matches(rows, stored, f"the {group} run")
    _gate(rows, stored)
    return {
        "sizes": group,
        "policies": list(policies),
        "baseline": str(path),
        "baseline_found": stored is not None,
        "float8_emulated": not device.accelerated,
        "dot": {p: dp.describe_dot(_quantization(p)[1]) for p in policies},
        "definitions": {
            "metric": "relative Frobenius error ||got - exact|| / ||exact|| against float64",
            "bound": f"one-rounding floor + {FLOAT32_ALLOWANCE:.2e}; fail above {BOUND_FACTOR}x bound",
            "baseline": f"fail above {BASELINE_FACTOR}x baseline + {BASELINE_FLOOR:.2e}",
        },
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }


def render(result: Mapping[str, Any], quantities: Sequence[str] | None = None) -> str:
    """The table of every row (or of those `quantities`), then the failing rows (or a line saying there are none)."""
    from benchmarks._results import table

    headers = ["layer", "policy", "quantity", "error", "one-rounding", "x floor", "bound", "baseline", "status"]

    def line(row: Mapping[str, Any]) -> list[Any]:
        ratio = row["error"] / row["floor"] if row["floor"] > 0 else None
        return [row["model"], row["policy"], row["quantity"], row["error"], row["floor"], ratio, row["bound"],
                row["baseline"], row["status"]]  # fmt: skip

    rows = result["rows"]
    parts = []
    if "sizes" in result:
        parts.append(
            f"Precision against a float64 oracle ({result['sizes']} sizes): relative Frobenius error; one-rounding = "
            f"the error of exact math on inputs rounded to the compute dtype, rounded once; bound = one-rounding + "
            f"{FLOAT32_ALLOWANCE:.1e} where claimed, fail above {BOUND_FACTOR}x; baseline fail above "
            f"{BASELINE_FACTOR}x + {BASELINE_FLOOR:.1e}."
        )
        if result.get("float8_emulated"):
            parts.append(
                "float8 and int8 are emulated on this CPU (quantize-dequantize around float products): the same "
                "quantization roundings as on a GPU, a different accumulation order."
            )
        if not result.get("baseline_found"):
            parts.append(f"no baseline at {result['baseline']}: rows are 'new'; write one with --update-baseline.")
    shown = rows if quantities is None else [row for row in rows if row["quantity"] in quantities]
    if quantities is not None:
        parts.append(f"{', '.join(quantities)} rows only; `python -m benchmarks precision --quick` lists all of them.")
    parts.append(table(headers, [line(row) for row in shown]))
    failing = [row for row in rows if row["status"].startswith("FAIL")]
    if failing:
        parts.append(f"{len(failing)} failing row(s):")
        parts.append(table(headers, [line(row) for row in failing]))
    else:
        parts.append(f"all {len(rows)} rows pass.")
    return "\n".join(parts)


def exit_code(result: Mapping[str, Any]) -> int:
    """1 when a row failed its bound or its baseline, else 0 (what `report` and CI return)."""
    return 1 if any(row["status"].startswith("FAIL") for row in result["rows"]) else 0


def _span(ratios: Sequence[float]) -> str:
    """`1.17-1.42x`, or `1.00x` when every ratio rounds to the same figure."""
    low, high = f"{min(ratios):.2f}", f"{max(ratios):.2f}"
    return f"{low}x" if low == high else f"{low}-{high}x"


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """The report's recommendation lines: the gate's verdict and what each policy costs in accuracy."""
    rows = result["rows"]
    failing = [row for row in rows if row["status"].startswith("FAIL")]
    lines = [
        f"Precision gate: {len(failing)} of {len(rows)} rows fail ({', '.join(sorted({r['key'] for r in failing}))})."
        if failing
        else f"Precision gate: all {len(rows)} rows pass (1.1x the one-rounding bound where one is claimed"
        + (", 1.1x the stored baseline)." if result.get("baseline_found", True) else "; no baseline for this device).")
    ]

    def ratios(policy: str, bounded: bool | None = None) -> list[float]:
        return [
            row["error"] / row["floor"]
            for row in rows
            if row["policy"] == policy
            and row["quantity"] == "output"
            and row["floor"] > 0
            and (bounded is None or (row["bound"] is not None) == bounded)
        ]

    for policy in ("mixed_bfloat16", "mixed_float16"):
        one, chained = ratios(policy, True), ratios(policy, False)
        if one or chained:
            parts = []
            if one:
                parts.append(f"one-rounding layers at {_span(one)} their floor")
            if chained:
                parts.append(f"attention and models at {_span(chained)}")
            lines.append(f"{policy} outputs: " + "; ".join(parts) + ".")
    quantized = [p for p in dict.fromkeys(row["policy"] for row in rows) if _quantization(p)[0] is not None]
    if quantized:
        costs = [f"{p} {min(ratios(p)):.0f}-{max(ratios(p)):.0f}x" for p in quantized if ratios(p)]
        lines.append("Quantized outputs against the bfloat16 floor: " + ", ".join(costs) + ".")
    return lines


def plot(result: Mapping[str, Any], out: Path) -> list[Path]:
    """One panel per quantity: error per layer and policy (log scale), the one-rounding floor as ticks."""
    from benchmarks import _results

    plt = _results.pyplot()
    rows = result["rows"]
    models = list(dict.fromkeys(row["model"] for row in rows))
    policies = list(dict.fromkeys(row["policy"] for row in rows))
    quantities = [q for q in QUANTITIES if any(row["quantity"] == q for row in rows)]
    figure, axes = plt.subplots(len(quantities), 1, figsize=(max(8, 1.2 * len(models)), 3.2 * len(quantities)))
    axes = np.atleast_1d(axes)
    width = 0.8 / max(len(policies), 1)
    for axis, quantity in zip(axes, quantities, strict=True):
        for j, policy in enumerate(policies):
            xs, errors, floors = [], [], []
            for i, model in enumerate(models):
                match = [r for r in rows if r["model"] == model and r["policy"] == policy and r["quantity"] == quantity]
                if match and match[0]["error"] > 0:  # an exact (zero) error has no bar on a log scale
                    xs.append(i + (j - (len(policies) - 1) / 2) * width)
                    errors.append(match[0]["error"])
                    floors.append(match[0]["floor"] if match[0]["floor"] > 0 else np.nan)
            if xs:
                axis.bar(xs, errors, width, label=policy)
                axis.scatter(xs, floors, marker="_", color="black", s=60, zorder=3)
        axis.set_yscale("log")
        axis.set_title(f"{quantity}: relative error vs float64 (ticks: one-rounding floor; no bar: 0 or n/a)")
        axis.set_xticks(range(len(models)))
        axis.set_xticklabels(models, rotation=20, ha="right", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=min(len(policies), 3), fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.15 / len(quantities)))
    return [_results.save_figure(figure, out, "precision")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--quick, --policies, --layers, --baseline, --update-baseline, --seed, --workers."""
    parser.add_argument("--quick", action="store_true", help="small sizes (what `make demo` runs)")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated policy names (%(default)s)")
    parser.add_argument("--layers", default=None, help="comma-separated layer names (default: all)")
    parser.add_argument(
        "--baseline", type=Path, default=None, help="baseline file (default: benchmarks/baselines/<device>.json)"
    )
    parser.add_argument("--update-baseline", action="store_true", help="rewrite this run's baseline entries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workers", type=int, default=2, help="(layer, policy) pairs measured at a time, in threads (%(default)s)"
    )


def main(options: argparse.Namespace) -> int:
    """Runs, prints the table, writes JSON + PNG, updates the baseline on request; 1 when a row fails."""
    from benchmarks import _device, _results

    device = _device.detect()
    chosen = None if options.layers is None else [name.strip() for name in options.layers.split(",")]
    result = run(device, options.quick, policies=options.policies, layers=chosen, baseline=options.baseline,
                 seed=options.seed, create_baseline=options.update_baseline,
                 workers=getattr(options, "workers", 2))  # fmt: skip
    if options.update_baseline:
        path = write_baseline(result["rows"], result["baseline"], device.slug)
        _gate(result["rows"], load_baseline(path))
        result["baseline_found"] = True
        print(f"baseline updated: {path}")
    print(render(result))
    print(f"precision: {len(result['rows'])} rows in {result['seconds']:.1f} s")
    written = [_results.write_json(options.out, "precision", {**_results.environment(device), **result})]
    written += plot(result, options.out)
    for path in written:
        print(f"wrote {path}")
    return exit_code(result)
