"""Measurements that need a fresh process: build + first call, and eager Dense overhead.

Run as a script (`python benchmarks/_probe.py`) it prints one JSON line. It uses only the public
API of `layers`, so `compare_revisions` can run it against an older checkout by putting that
checkout first on PYTHONPATH; `where` in the output says which `layers` was imported.

The build figure is taken first, before anything else in the process has compiled: it is the
wall time from constructing a TransformerBlock(width 64) to the end of its first eager call. JAX's
backend start-up (one tiny op) is excluded, as it is paid once per process by any JAX program.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# Width 64 = 4 heads of 16; the MLP is 4x wide. Inputs (batch 2, time 16, features 64).
BLOCK = {"num_heads": 4, "key_dim": 16, "mlp_dim": 256}
BLOCK_INPUT = (2, 16, 64)


def build_seconds() -> float:
    """Wall seconds for constructing a TransformerBlock(width 64) and its first eager call."""
    import jax
    import jax.numpy as jnp

    import layers

    x = jnp.ones(BLOCK_INPUT, jnp.float32)
    jax.block_until_ready(x + 1)  # backend start-up, not part of the build
    start = time.perf_counter()
    block = layers.TransformerBlock(**BLOCK)
    jax.block_until_ready(block(x))
    return time.perf_counter() - start


def _microseconds_per_call(function: Callable[[], Any], calls: int) -> float:
    import jax

    start = time.perf_counter()
    for _ in range(calls):
        result = function()
    jax.block_until_ready(result)
    return (time.perf_counter() - start) / calls * 1e6


def _alternate(functions: dict[str, Callable[[], Any]], repeats: int, calls: int = 200) -> dict[str, float]:
    """Median microseconds per call of each function, over `repeats` rounds of one block of `calls` each.

    The order of the functions rotates from round to round, so a drift in load hits each alike.
    """
    import jax

    for function in functions.values():
        for _ in range(min(50, calls)):
            jax.block_until_ready(function())
    names = list(functions)
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(_microseconds_per_call(functions[name], calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def dense_overhead(
    policy: str,
    rows: int = 8,
    features: int = 64,
    units: int = 64,
    repeats: int = 15,
    *,
    calls: int = 200,
    extra: dict[str, Callable[..., Callable[[], Any]]] | None = None,
) -> dict:
    """Eager `Dense.__call__` against the same jnp ops called eagerly, alternated in one process.

    `ops_us` is the layer's own formula written with jnp from the same float32 inputs and master
    kernel: under a 16-bit policy cast both to the compute dtype, dot with a float32 accumulator,
    add the float32 bias and round once (float32: `x @ kernel + bias` at `Precision.HIGHEST`, as
    a float32 policy pins). `math_us` (16-bit policies) leaves the two casts out, as if the
    operands were already 16-bit: the cheapest eager form by hand. Medians over `repeats` rotating
    rounds of `calls` calls each.

    `extra` maps a name to `factory(policy, x, kernel, bias) -> call`: another library's layer
    holding the same kernel and bias (the `overhead` command's Keras and Flax), timed in the same
    rounds as `<name>_us`, with `ratio_<name>` over `ops_us`.
    """
    import jax
    import jax.numpy as jnp

    import dtypepolicy as dp
    import layers

    x = jnp.asarray(jax.random.normal(jax.random.key(0), (rows, features)), jnp.float32)
    layer = layers.Dense(units, bias_initializer="random_normal", dtype=policy)
    layer(x)
    kernel, bias = layer.kernel._read_storage(), layer.bias._read_storage()
    compute = dp.get(policy).compute_dtype
    dims = (((1,), (0,)), ((), ()))
    x16, kernel16 = x.astype(compute), kernel.astype(compute)

    def ops() -> Any:
        if compute == "float32":
            return jnp.matmul(x, kernel, precision=jax.lax.Precision.HIGHEST) + bias
        product = jax.lax.dot_general(
            x.astype(compute), kernel.astype(compute), dims, preferred_element_type=jnp.float32
        )
        return (product + bias).astype(compute)

    def math() -> Any:
        product = jax.lax.dot_general(x16, kernel16, dims, preferred_element_type=jnp.float32)
        return (product + bias).astype(compute)

    def call() -> Any:
        return layer(x)

    functions = {"ops_us": ops, "layer_us": call}
    if compute != "float32":
        functions["math_us"] = math
    for name, factory in (extra or {}).items():
        functions[f"{name}_us"] = factory(policy, x, kernel, bias)
    report = _alternate(functions, repeats, calls)
    report["ratio"] = report["layer_us"] / report["ops_us"]
    if "math_us" in report:
        report["ratio_math"] = report["layer_us"] / report["math_us"]
    for name in extra or {}:
        report[f"ratio_{name}"] = report[f"{name}_us"] / report["ops_us"]
    return report


def custom_layer_overhead(rows: int = 8, features: int = 64, units: int = 64, repeats: int = 15) -> dict | None:
    """A user's layer written in plain jnp on its Variables, against the same jnp ops on arrays.

    `call` is `jnp.matmul(x, self.kernel) + self.bias`, so every call hands two Variables to JAX's
    dispatch: this is where the way JAX accepts a Variable costs something. None where the
    checkout cannot run it (before Variables were accepted by jnp).
    """
    import jax.numpy as jnp

    import layers

    class PlainDense(layers.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], units), initializer="glorot_uniform", name="kernel")
            self.bias = self.add_weight(shape=(units,), initializer="zeros", name="bias")

        def call(self, x):
            return jnp.matmul(x, self.kernel) + self.bias

    x = jnp.ones((rows, features), jnp.float32)
    layer = PlainDense()
    try:
        layer(x)
    except Exception:  # an older checkout refuses Variables in jnp
        return None
    kernel, bias = layer.kernel._read_storage(), layer.bias._read_storage()
    report = _alternate({"ops_us": lambda: jnp.matmul(x, kernel) + bias, "layer_us": lambda: layer(x)}, repeats)
    report["ratio"] = report["layer_us"] / report["ops_us"]
    return report


def main(argv: list[str]) -> None:
    """Prints `{"where", "build_s"[, "dense", "custom"]}` as one JSON line; `--build-only` skips the rest."""
    build = build_seconds()
    import layers

    report: dict[str, Any] = {"where": layers.__file__, "build_s": build}
    if "--build-only" not in argv:
        report["dense"] = {policy: dense_overhead(policy) for policy in ("float32", "mixed_bfloat16")}
        report["custom"] = custom_layer_overhead()
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
