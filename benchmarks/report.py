"""The main job (`make demo`, `python -m benchmarks`): how fast each policy trains, and how right it is.

It runs the quick form of three benchmarks on whatever device JAX finds:
- `throughput`: jitted train steps of an MLP and a TransformerBlock classifier under each policy;
- `overhead`: the same steps and an eager Dense call against plain JAX, with the project's targets;
- `precision`: each policy's outputs and gradients against a float64 oracle, with the regression gate.

It then prints the recommendations that follow from those figures. JSON and PNGs go to `--out`
(`benchmarks/results/` by default): one file per benchmark and `report.json` with all of them.
Each part also runs alone, at full size: `python -m benchmarks <part> --help`.
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path
from typing import Any

from benchmarks import _device, _results

PARTS = ("throughput", "overhead", "precision")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the report."""
    parser.add_argument(
        "--quick", action="store_true", help="accepted for symmetry with the parts: the report is always the quick run"
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="comma-separated parts to run, in order (default: %(default)s)",
    )


def _parts(text: str) -> list[str]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise SystemExit(f"--parts: expected a comma-separated subset of {', '.join(PARTS)}, received {text!r}")
    return parts


def recommendations(results: dict[str, dict[str, Any]], device: _device.Device) -> list[str]:
    """What to use on this device, from the measured figures of each part that ran."""
    from benchmarks import overhead, precision

    lines = []
    if "throughput" in results:
        lines += results["throughput"]["closing"]
    if "precision" in results:
        lines += precision.summary_lines(results["precision"])
    if "overhead" in results:
        lines += [
            "Overhead targets:",
            *("  " + line for line in overhead.summary(overhead.targets(results["overhead"]))),
        ]
    if not device.accelerated:
        lines.append(
            "This run is on a CPU: its bf16 and float8 figures say how the library behaves here, not how fast those "
            "policies are on a GPU (float8 is emulated). On the GPU itself run `python -m benchmarks throughput` "
            "and `python -m benchmarks gemm`."
        )
    return lines


def main(options: argparse.Namespace) -> int:
    """Runs the quick parts, prints their tables and the recommendations; non-zero if the precision gate fails."""
    parts = _parts(options.parts)
    device = _device.detect()
    out: Path = options.out
    print(f"dtypepolicy report on {device.kind} ({device.platform}, {device.count} device(s)), host {device.host}")
    results: dict[str, dict[str, Any]] = {}
    written: list[Path] = []
    exit_code = 0
    for name in parts:
        module = importlib.import_module(f"benchmarks.{name}")
        start = time.perf_counter()
        # Keras and Flax (the optional `compare` extra) belong to the full overhead run, not the short report.
        result = module.run(device, quick=True, **({"compare": False} if name == "overhead" else {}))
        seconds = time.perf_counter() - start
        results[name] = result
        print(f"\n== {name} ({seconds:.0f} s; full run: python -m benchmarks {name}) ==")
        # The report shows the precision outputs; the gradient rows are in its JSON and full table.
        print(module.render(result, quantities=("output",)) if name == "precision" else module.render(result))
        written.append(_results.write_json(out, name, {**_results.environment(device), **result}))
        written.extend(module.plot(result, out))
        code = getattr(module, "exit_code", None)
        if code is not None:
            exit_code = max(exit_code, code(result))
    print("\n== recommendations ==")
    for line in recommendations(results, device):
        print(line if line.startswith("  ") else f"- {line}")
    written.append(_results.write_json(out, "report", {**_results.environment(device), "parts": results}))
    print("\nwrote " + ", ".join(str(path) for path in written))
    return exit_code
