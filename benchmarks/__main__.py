"""`python -m benchmarks {report,throughput,overhead,precision,gemm}`: the benchmark command line.

Each subcommand is a module of this package with `add_arguments(parser)` and `main(args) -> int`.
Every one prints its tables, writes `<out>/<name>.json` (and PNG plots) and returns an exit code;
only `precision` fails (non-zero) by design, when an error passes its bound or its baseline.
With no subcommand, `report` runs: the short report of `make demo`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

COMMANDS = {
    "report": "a short throughput + overhead + precision report (the main job, `make demo`)",
    "throughput": "jitted train steps of an MLP and a TransformerBlock under each policy: time, TFLOP/s, MFU",
    "overhead": "the same models in plain JAX + optax (and Keras 3, Flax if installed), side by side",
    "precision": "each policy's outputs and gradients against a float64 oracle; a regression gate",
    "gemm": "the matrix products of one transformer layer in each policy, with and without quantization",
}


def parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-parser per command."""
    from benchmarks._results import RESULTS

    top = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n", 1)[0])
    commands = top.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    for name, help_text in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--out", type=Path, default=RESULTS, help="where JSON and PNG results go (%(default)s)")
        importlib.import_module(f"benchmarks.{name}").add_arguments(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns its exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (arguments[0].startswith("-") and arguments[0] not in ("-h", "--help")):
        arguments = ["report", *arguments]
    options = parser().parse_args(arguments)
    try:
        return importlib.import_module(f"benchmarks.{options.command}").main(options)
    except ValueError as error:  # bad input the command refused: its message, not a traceback
        print(f"python -m benchmarks {options.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
