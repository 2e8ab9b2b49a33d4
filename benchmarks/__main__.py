"""Main job: a short report of what the policy engine does, measured on this machine.

The "Benchmarks" issue replaces this with throughput and precision reports; until then it
shows policies, autocast and loss-scale state, and measures two things side by side in one
run: precision (float32 vs bfloat16 master weights; a mixed_bfloat16 Dense vs rounding twice,
both against float64) and the eager overhead of `Dense.__call__` over plain jnp calls.
"""

from __future__ import annotations

import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import dtypepolicy as dp


def _policies() -> None:
    print("Policies")
    for name in ["float32", "mixed_bfloat16", "mixed_float16", "p=f32,c=bf16,o=f32", "float8_from_mixed_bfloat16"]:
        policy = dp.get(name)
        print(
            f"  {name!r:32} -> {policy.name:48} variables={policy.variable_dtype:9} "
            f"compute={policy.compute_dtype:9} output={policy.output_dtype}"
        )


def _autocast() -> None:
    print("Autocast")
    weight = dp.Variable(jnp.full((4,), 1.0009766), name="kernel")
    with dp.autocast_scope("bfloat16"):
        read = weight.value
    stored = float(weight._read_storage()[0])
    print(f"  stored {weight.dtype} {stored:.7f}; read in bf16 scope {read.dtype} {float(read[0]):.7f}")


def _master_weight_drift(steps: int = 1000, update: float = 1e-4) -> None:
    """Applies many small updates to float32 and to bfloat16 storage; reports drift vs float64."""
    print(f"Master weights: {steps} updates of {update:g} starting from 1.0 (float64 oracle)")
    exact = 1.0 + steps * update
    for storage in ["float32", "bfloat16"]:
        weight = dp.Variable(jnp.ones(()), dtype=storage, autocast=False)
        for _ in range(steps):
            weight.assign_add(update)
        value = float(np.asarray(weight._read_storage(), np.float64))
        print(f"  {storage:9} final={value:.6f} relative error={abs(value - exact) / exact:.2e}")


def _relative_error(values: object, exact: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(values, np.float64) - exact) / np.linalg.norm(exact))


def _dense_precision() -> None:
    """A mixed_bfloat16 Dense (one rounding) against a bf16 matmul then a bf16 bias add."""
    import layers

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 512)), jnp.float32)
    layer = layers.Dense(256, bias_initializer="random_normal", dtype="mixed_bfloat16")
    out = layer(x)
    x16, k16 = x.astype(jnp.bfloat16), layer.kernel.value.astype(jnp.bfloat16)
    bias = np.asarray(layer.bias.value, np.float64)
    exact = np.asarray(x16, np.float64) @ np.asarray(k16, np.float64) + bias
    twice = jnp.matmul(x16, k16) + layer.bias.value.astype(jnp.bfloat16)
    best = exact.astype(np.float32).astype(jnp.bfloat16)
    print("Dense 64x512 @ 512x256, mixed_bfloat16, relative error vs float64 (same bf16 inputs)")
    print(f"  layer (float32 accumulate, bias, one rounding) {_relative_error(out, exact):.3e}")
    print(f"  bf16 matmul then bf16 bias (two roundings)     {_relative_error(twice, exact):.3e}")
    print(f"  exact result rounded once to bf16 (the floor)  {_relative_error(best, exact):.3e}")


def _median_microseconds(function: object, calls: int = 200, repeats: int = 7) -> float:
    for _ in range(20):
        jax.block_until_ready(function())
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            result = function()
        jax.block_until_ready(result)
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def _overhead_case(rows: int, features: int, units: int) -> tuple[float, float]:
    import layers

    x = jnp.ones((rows, features), jnp.float32)
    layer = layers.Dense(units)
    layer(x)
    kernel, bias = layer.kernel.value, layer.bias.value
    plain = _median_microseconds(lambda: jnp.matmul(x, kernel) + bias)
    return plain, _median_microseconds(lambda: layer(x))


def _dense_overhead() -> None:
    """Eager Dense.__call__ against the same math as plain jnp calls, measured side by side."""
    print("Eager Dense.__call__ vs plain jnp (median of 7 x 200 calls, same process)")
    for rows, features, units in [(8, 64, 64), (64, 512, 256)]:
        plain, layer = _overhead_case(rows, features, units)
        shape = f"{rows}x{features}->{units}"
        print(f"  float32 {shape:12} plain {plain:7.1f} us, layer {layer:7.1f} us, ratio {layer / plain:.2f}")


def _loss_scale() -> None:
    print("Dynamic loss scale (growth_interval=2)")
    loss_scale = dp.loss_scale.DynamicLossScale(initial_scale=2.0**15, growth_interval=2)
    adjust = jax.jit(lambda scale, finite: scale.adjust(finite))
    for finite in [True, True, False, True]:
        loss_scale = adjust(loss_scale, jnp.asarray(finite))
        scale, counter = float(loss_scale.loss_scale), int(loss_scale.counter)
        print(f"  grads finite={finite!s:5} -> scale={scale:9.1f} counter={counter}")


def main() -> None:
    """Prints the report."""
    machine = platform.processor() or platform.machine()
    print(f"dtypepolicy {dp.__version__} | jax {jax.__version__} | {jax.devices()[0].platform} | {machine}")
    _policies()
    _autocast()
    _master_weight_drift()
    _dense_precision()
    _dense_overhead()
    _loss_scale()


if __name__ == "__main__":
    main()
