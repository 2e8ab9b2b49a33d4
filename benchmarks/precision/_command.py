"""The benchmark command: `run` every built-in case under every policy, its arguments and `main`."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import dtypepolicy as dp
from benchmarks.precision._cases import QUICK_LAYERS, _name_seed, cases
from benchmarks.precision._gate import (
    BASELINE_FACTOR,
    BASELINE_FLOOR,
    BOUND_FACTOR,
    FLOAT32_ALLOWANCE,
    _check_baseline_matches,
    _gate,
    baseline_path,
    load_baseline,
    write_baseline,
)
from benchmarks.precision._measure import _measure
from benchmarks.precision._policies import POLICIES, _applies, _check_policies, _forward_only, _quantization
from benchmarks.precision._render import exit_code, plot, render
from benchmarks.precision._rows import _policy_rows, _prepare, _Prepared


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
