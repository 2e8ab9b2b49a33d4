"""mixed_bfloat16 against float32 for one MLP train step, with each CPU formulation of the bf16 products.

Usage:
  .venv/bin/python -m benchmarks.bf16_step [--rounds 7] [--steps 10] [--width 1024] [--depth 4] [--batch 256]

The MLP is `depth` Dense layers of `width` units with ReLU and a Dense(10) head, trained with
`make_train_step` (Adam, sparse categorical cross-entropy). The variants:

- `float32`: full float32 products (`F32_F32_F32`, `Precision.HIGHEST`);
- `mixed_bfloat16 native`: bf16 operands in a native bf16 dot accumulated in float32;
- `mixed_bfloat16 upcast`: bf16 operands converted to float32 for a float32 dot (the same
  products; what a CPU without fast bf16 units runs).

On a CPU, the two bf16 formulations are chosen with `DTYPEPOLICY_CPU_BF16_DOT`, set while each
variant is traced; elsewhere only the preset runs, and `upcast` is left out. Each round runs every
variant for `steps` steps, in an order that rotates between rounds; the table gives the median
ms/step and the ratio to float32 (below 1: faster than float32).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import jax
import numpy as np

import dtypepolicy as dp

_OVERRIDE = "DTYPEPOLICY_CPU_BF16_DOT"


def _variant(policy: str, width: int, depth: int, batch: int, formulation: str | None) -> tuple[Any, Any, Any]:
    import layers
    from layers import losses, optimizers, training

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, width)).astype(np.float32)
    y = rng.integers(0, 10, size=(batch,)).astype(np.int32)
    hidden = [layers.Dense(width, activation="relu", name=f"dense_{i}") for i in range(depth)]
    model = layers.Sequential([*hidden, layers.Dense(10, name="head")], dtype=policy)
    step = training.make_train_step(
        model, losses.SparseCategoricalCrossentropy(from_logits=True), optimizers.Adam(1e-3)
    )
    previous = os.environ.get(_OVERRIDE)
    try:
        if formulation is not None:
            os.environ[_OVERRIDE] = formulation
        model(x[:1])
        state = step.init_state()
        state, _ = step.jitted(state, (x, y))  # traced (and compiled) under this formulation
        jax.block_until_ready(state)
        description = dp.describe_dot(policy)
    finally:
        if previous is None:
            os.environ.pop(_OVERRIDE, None)
        else:
            os.environ[_OVERRIDE] = previous
    return step, state, (x, y), description


def compare(rounds: int, steps: int, width: int, depth: int, batch: int) -> list[dict[str, Any]]:
    """Interleaved rounds over the variants; one row per variant."""
    specs = [("float32", "float32", None), ("mixed_bfloat16 native", "mixed_bfloat16", "native")]
    if jax.default_backend() == "cpu":
        specs.append(("mixed_bfloat16 upcast", "mixed_bfloat16", "upcast"))
    else:
        specs[1] = ("mixed_bfloat16", "mixed_bfloat16", None)
    variants = {name: _variant(policy, width, depth, batch, how) for name, policy, how in specs}
    states = {name: variant[1] for name, variant in variants.items()}
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            step, _, batch_data, _ = variants[name]
            state = states[name]
            start = time.perf_counter()
            for _ in range(steps):
                state, _ = step.jitted(state, batch_data)
            jax.block_until_ready(state)
            times[name].append((time.perf_counter() - start) / steps * 1e3)
            states[name] = state
    base = statistics.median(times["float32"])
    flops = 6 * batch * (width * width * depth + width * 10)  # forward + two backward products
    rows = []
    for name in names:
        ms = statistics.median(times[name])
        rows.append(
            {
                "variant": name,
                "ms_per_step": ms,
                "ratio_to_float32": ms / base,
                "gflops": flops / (ms * 1e-3) / 1e9,
                "formulation": variants[name][3],
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned text, then each variant's formulation."""
    lines = [f"{'variant':<24} {'ms/step':>8} {'vs float32':>10} {'GFLOP/s':>8}"]
    lines += [
        f"{r['variant']:<24} {r['ms_per_step']:8.2f} {r['ratio_to_float32']:9.2f}x {r['gflops']:8.1f}" for r in rows
    ]
    lines += [f"  {r['variant']}: {r['formulation']}" for r in rows]
    return "\n".join(lines)


def main() -> None:
    """Runs the comparison and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; MLP {args.depth} x {args.width} + 10, "
        f"batch {args.batch}; load average {os.getloadavg()[0]:.1f}"
    )
    print(table(compare(args.rounds, args.steps, args.width, args.depth, args.batch)))


if __name__ == "__main__":
    main()
