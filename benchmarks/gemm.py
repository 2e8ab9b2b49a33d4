"""Placeholder: being written (issue 11)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options yet."""


def main(options: argparse.Namespace) -> int:
    """Not built yet."""
    raise SystemExit("python -m benchmarks gemm: not built yet")
