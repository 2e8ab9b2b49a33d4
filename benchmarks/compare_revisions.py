"""Build and eager-overhead figures of several checkouts, measured side by side in one run.

Usage:
  git worktree add /tmp/base <commit>
  .venv/bin/python -m benchmarks.compare_revisions base=/tmp/base new=. --rounds 5

Each round runs `benchmarks/_probe.py` (from this checkout) once per revision in a fresh
subprocess with that revision first on PYTHONPATH, alternating the order between rounds so that
a drift in machine load hits every revision alike. It prints each round, then per revision the
median over rounds of: build + first call of a TransformerBlock(width 64), and eager Dense
(8,64)->64 against the same jnp ops in float32 and mixed_bfloat16.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).with_name("_probe.py")


def _run_probe(path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(path)}
    result = subprocess.run(
        [sys.executable, str(PROBE)], cwd=path, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"probe failed for {path}:\n{result.stderr[-4000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if not Path(report["where"]).resolve().is_relative_to(path.resolve()):
        raise RuntimeError(f"probe for {path} imported layers from {report['where']}")
    return report


def _describe_dense(policy: str, figures: dict) -> str:
    text = f"{policy} layer {figures['layer_us']:.1f} us, ops {figures['ops_us']:.1f} us = {figures['ratio']:.2f}x"
    if "math_us" in figures:
        text += f", math {figures['math_us']:.1f} us = {figures['ratio_math']:.2f}x"
    return text


def _describe_custom(figures: dict | None) -> str:
    if figures is None:
        return "plain-jnp layer: not supported"
    return f"plain-jnp layer {figures['layer_us']:.1f} us, ops {figures['ops_us']:.1f} us = {figures['ratio']:.2f}x"


def _machine() -> str:
    from benchmarks._device import cpu_model

    return f"{os.cpu_count()} CPUs, {cpu_model()}, {platform.machine()}, python {platform.python_version()}"


def _parse_revisions(items: list[str]) -> dict[str, Path]:
    revisions = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"revision must be NAME=PATH, received {item!r}")
        revisions[name] = Path(path).resolve()
    return revisions


def main() -> None:
    """Runs the rounds and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="+", help="NAME=PATH of each checkout")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    revisions = _parse_revisions(args.revisions)
    print(f"machine: {_machine()}; load average before: {os.getloadavg()}")
    results: dict[str, list[dict]] = {name: [] for name in revisions}
    for round_index in range(args.rounds):
        order = list(revisions) if round_index % 2 == 0 else list(reversed(revisions))
        for name in order:
            report = _run_probe(revisions[name])
            results[name].append(report)
            dense = report["dense"]
            print(
                f"round {round_index + 1} {name:8} build+first call {report['build_s']:6.2f} s | dense 8x64->64 "
                + " | ".join(_describe_dense(policy, d) for policy, d in dense.items())
                + " | "
                + _describe_custom(report.get("custom")),
                flush=True,
            )
    print(f"load average after: {os.getloadavg()}")
    print(f"median over {args.rounds} rounds")
    for name, reports in results.items():
        build = statistics.median(r["build_s"] for r in reports)
        parts = []
        for policy in reports[0]["dense"]:
            medians = {
                key: statistics.median(r["dense"][policy][key] for r in reports) for key in reports[0]["dense"][policy]
            }
            parts.append(_describe_dense(policy, medians))
        customs = [r.get("custom") for r in reports]
        if all(custom is not None for custom in customs):
            medians = {key: statistics.median(c[key] for c in customs) for key in customs[0]}
            parts.append(_describe_custom(medians))
        else:
            parts.append(_describe_custom(None))
        print(f"  {name:8} build+first call {build:.2f} s | " + " | ".join(parts))


if __name__ == "__main__":
    main()
