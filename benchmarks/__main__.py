"""Main job: a short report of what the policy engine does, measured on this machine.

The "Benchmarks" issue replaces this with throughput and precision reports; until then it
shows policies, autocast and float8/loss-scale state, with the one precision number the
engine already determines (master weights in float32 vs bfloat16 under many small updates).
"""

from __future__ import annotations

import platform

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
    _loss_scale()


if __name__ == "__main__":
    main()
