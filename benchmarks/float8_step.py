"""What float8 training costs per step against mixed_bfloat16, and whether XLA sees the float8 GEMM form.

Usage:
  .venv/bin/python -m benchmarks.float8_step [--rounds 7] [--steps 20] [--width 512] [--batch 256]

The same MLP (`width -> width -> width -> 10`, ReLU, Adam) is trained with `make_train_step` under
mixed_bfloat16, float8_from_mixed_bfloat16 (delayed scaling) and float8_current_from_mixed_bfloat16.
Each round runs every variant for `steps` steps back to back, in an order that rotates between
rounds; the table gives the median ms/step and the ratio to mixed_bfloat16.

On a CPU float8 is emulated: every quantize-dequantize is extra elementwise work in front of an
ordinary product, so float8 is slower here and the ratio measures that overhead. On an H100/H200
XLA's GEMM rewriter turns the same pattern into float8 cuBLASLt matmuls. The second part counts,
in the lowered HLO of one step, the float8 converts and the dots whose operands come from them:
the pattern the rewriter needs.
"""

from __future__ import annotations

import argparse
import re
import statistics
from typing import Any

import jax

from benchmarks._mlp_steps import mlp_train_step, step_times

POLICIES = ("mixed_bfloat16", "float8_from_mixed_bfloat16", "float8_current_from_mixed_bfloat16")


_ASSIGNMENT = re.compile(r"^\s*(%[\w#.]+)\s*=\s*(.*)$")
_PASS_THROUGH = ("multiply", "broadcast_in_dim", "convert", "reshape", "transpose")


def fp8_gemm_pattern(hlo: str) -> dict[str, int]:
    """Counts float8 converts, and the dots whose operands both come from float8, in StableHLO text.

    An operand "comes from float8" when walking back through multiplications (the scale),
    broadcasts, converts, reshapes and transposes reaches a convert out of a float8 type: the
    dequantization XLA's GPU GEMM rewriter folds into a float8 matmul.
    """
    converts = fed = total = 0
    for function in re.split(r"\bfunc\.func\b", hlo):  # value names are local to a function
        definitions = {}
        for line in function.splitlines():
            match = _ASSIGNMENT.match(line)
            if match:
                definitions[match.group(1)] = match.group(2)

        def from_float8(name: str, depth: int = 0, definitions: dict = definitions) -> bool:
            text = definitions.get(name)
            if text is None or depth > 6:
                return False
            op, _, rest = text.partition(" ")
            if op == "stablehlo.convert" and "xf8E" in rest.split("->")[0]:
                return True
            if op.removeprefix("stablehlo.") not in _PASS_THROUGH:
                return False
            return any(from_float8(operand, depth + 1) for operand in re.findall(r"%[\w#.]+", rest.split(":")[0]))

        for text in definitions.values():
            if text.startswith("stablehlo.convert") and re.search(r"-> tensor<[^>]*f8E", text):
                converts += 1
            elif text.startswith("stablehlo.dot_general"):
                total += 1
                operands = re.findall(r"%[\w#.]+", text.split("contracting_dims")[0])[:2]
                fed += all(from_float8(operand) for operand in operands)
    dots = [None] * total
    return {"float8_converts": converts, "dots": len(dots), "dots_fed_by_float8": fed}


def compare(rounds: int, steps: int, width: int, batch: int) -> list[dict[str, Any]]:
    """Interleaved rounds over the policies; returns one row per policy."""
    variants = {policy: mlp_train_step(policy, width, 2, batch) for policy in POLICIES}
    times = step_times(variants, rounds, steps)
    base = statistics.median(times[POLICIES[0]])
    rows = []
    for policy, (step, _, batch_data) in variants.items():
        hlo = jax.jit(step).lower(step.init_state(), batch_data).as_text()
        ms = statistics.median(times[policy])
        rows.append(
            {"policy": policy, "ms_per_step": ms, "ratio_to_mixed_bfloat16": ms / base, **fp8_gemm_pattern(hlo)}
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned text."""
    lines = [f"{'policy':<38} {'ms/step':>8} {'vs bf16':>8} {'f8 converts':>12} {'dots fed by f8':>15}"]
    for row in rows:
        lines.append(
            f"{row['policy']:<38} {row['ms_per_step']:8.2f} {row['ratio_to_mixed_bfloat16']:7.2f}x "
            f"{row['float8_converts']:12d} {row['dots_fed_by_float8']:>8d} of {row['dots']:<4d}"
        )
    return "\n".join(lines)


def main() -> None:
    """Runs the comparison and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; MLP width {args.width}, batch {args.batch}")
    print(table(compare(args.rounds, args.steps, args.width, args.batch)))


if __name__ == "__main__":
    main()
