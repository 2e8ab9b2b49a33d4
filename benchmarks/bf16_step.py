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
from typing import Any

import jax

import dtypepolicy as dp
from benchmarks._mlp_steps import cpu_bf16_formulation, mlp_train_step, step_times


def _variant(policy: str, width: int, depth: int, batch: int, formulation: str | None) -> tuple:
    """The MLP step traced under `formulation` (the CPU override), and the formulation's description."""
    with cpu_bf16_formulation(formulation):
        return mlp_train_step(policy, width, depth, batch), dp.describe_dot(policy)


def compare(rounds: int, steps: int, width: int, depth: int, batch: int) -> list[dict[str, Any]]:
    """Interleaved rounds over the variants; one row per variant."""
    specs = [("float32", "float32", None), ("mixed_bfloat16 native", "mixed_bfloat16", "native")]
    if jax.default_backend() == "cpu":
        specs.append(("mixed_bfloat16 upcast", "mixed_bfloat16", "upcast"))
    else:
        specs[1] = ("mixed_bfloat16", "mixed_bfloat16", None)
    built = {name: _variant(policy, width, depth, batch, how) for name, policy, how in specs}
    names = list(built)
    times = step_times({name: variant for name, (variant, _) in built.items()}, rounds, steps)
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
                "formulation": built[name][1],
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
