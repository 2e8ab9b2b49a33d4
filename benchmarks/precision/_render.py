"""Showing a result: the table, the exit code, the report's summary lines and the plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.precision._gate import BASELINE_FACTOR, BASELINE_FLOOR, BOUND_FACTOR, FLOAT32_ALLOWANCE
from benchmarks.precision._metric import QUANTITIES
from benchmarks.precision._policies import _quantization


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
