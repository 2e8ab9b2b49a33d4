"""Main job: a short report of what the policy engine does, measured on this machine.

The "Benchmarks" issue replaces this with throughput and precision reports; until then it
shows policies, autocast and loss-scale state, and measures side by side in one run: precision
(float32 vs bfloat16 master weights; a mixed_bfloat16 Dense vs rounding twice, both against
float64), the eager overhead of `Dense.__call__` over the same jnp calls, and the build + first
call time of a TransformerBlock(width 64) in a fresh process (SPEC §8 targets: ≤ 1.3× and ≤ 1 s),
and the jitted train step of `make_train_step` against the same step in plain JAX (target ≤ 1.02×).
`python -m benchmarks.compare_revisions` sets these last two figures of two checkouts side by side.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

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


def _dense_overhead() -> None:
    """Eager Dense.__call__ against the same math as eager jnp calls, measured side by side."""
    from benchmarks import _probe

    print("Eager Dense.__call__ vs the same jnp ops (medians of 15 alternating blocks of 200 calls)")
    for rows, features, units in [(8, 64, 64), (64, 512, 256)]:
        shape = f"{rows}x{features}->{units}"
        for policy in ["float32", "mixed_bfloat16"]:
            figures = _probe.dense_overhead(policy, rows, features, units)
            line = (
                f"  {policy:14} {shape:12} layer {figures['layer_us']:7.1f} us, "
                f"same ops {figures['ops_us']:7.1f} us, ratio {figures['ratio']:.2f}"
            )
            if "math_us" in figures:
                line += f"; ops on 16-bit operands {figures['math_us']:7.1f} us, ratio {figures['ratio_math']:.2f}"
            print(line)


def _build_time() -> None:
    """Build + first call of a TransformerBlock(width 64), in a fresh process (nothing compiled yet)."""
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks._probe", "--build-only"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = json.loads(result.stdout.strip().splitlines()[-1])["build_s"]
    print("TransformerBlock(num_heads=4, key_dim=16, mlp_dim=256) on (2, 16, 64), fresh process")
    print(f"  build + first eager call {seconds:.2f} s (target <= 1 s)")


def _train_step() -> None:
    """The jitted train step of make_train_step against the same step in plain JAX, side by side."""
    from benchmarks import train_step

    rounds, steps = 7, 20
    widths = " -> ".join(map(str, train_step.WIDTHS))
    print(
        f"Train step vs plain JAX (MLP {widths}, batch 256, optax.adam; medians of {rounds} interleaved rounds "
        f"of {steps} steps; `python -m benchmarks.train_step` for the full run)"
    )
    print("  " + train_step.describe_machine(train_step.machine()))
    reports = [train_step.compare(policy, rounds=rounds, steps=steps) for policy in ["float32", "mixed_bfloat16"]]
    for line in train_step.table(reports).splitlines():
        print("  " + line)
    print("  same losses over the first 5 steps (checked); target ratio <= 1.02 (a short, noisy run)")


def _bf16_step() -> None:
    """mixed_bfloat16 against float32 in a train step, with each CPU formulation of the bf16 products."""
    from benchmarks import bf16_step

    rounds, steps, width = 3, 5, 1024
    print(
        f"mixed_bfloat16 vs float32 train step (MLP 4 x {width} + 10, batch 256, Adam; medians of {rounds} "
        f"interleaved rounds of {steps} steps; `python -m benchmarks.bf16_step` for the full run)"
    )
    for line in bf16_step.table(bf16_step.compare(rounds, steps, width, 4, 256)).splitlines():
        print("  " + line)


def _float8_step() -> None:
    """The emulated float8 train step against mixed_bfloat16, and the float8 GEMM pattern in its HLO."""
    from benchmarks import float8_step

    rounds, steps, width = 5, 10, 256
    print(
        f"Float8 train step (MLP {width} -> {width} -> {width} -> 10, batch 256, Adam; medians of {rounds} "
        f"interleaved rounds of {steps} steps; `python -m benchmarks.float8_step` for the full run)"
    )
    for line in float8_step.table(float8_step.compare(rounds, steps, width, 256)).splitlines():
        print("  " + line)
    print(
        "  On a CPU float8 is emulated (quantize-dequantize around ordinary products), so it costs time here; on "
        "H100/H200 the dots fed by float8 become float8 matmuls."
    )


def _loss_scale() -> None:
    print("Dynamic loss scale (growth_interval=2)")
    loss_scale = dp.loss_scale.DynamicLossScale(initial_scale=2.0**15, growth_interval=2)
    adjust = jax.jit(lambda scale, finite: scale.adjust(finite))
    for finite in [True, True, False, True]:
        loss_scale = adjust(loss_scale, jnp.asarray(finite))
        scale, counter = float(loss_scale.loss_scale), int(loss_scale.counter)
        print(f"  grads finite={finite!s:5} -> scale={scale:9.1f} counter={counter}")


def add_arguments(parser) -> None:
    """The report takes no options beyond --out."""


def main(options=None) -> int:
    """Prints the report."""
    machine = platform.processor() or platform.machine()
    print(f"dtypepolicy {dp.__version__} | jax {jax.__version__} | {jax.devices()[0].platform} | {machine}")
    _policies()
    _autocast()
    _master_weight_drift()
    _dense_precision()
    _build_time()
    _dense_overhead()
    _train_step()
    _bf16_step()
    _float8_step()
    _loss_scale()
    return 0


if __name__ == "__main__":
    main()
