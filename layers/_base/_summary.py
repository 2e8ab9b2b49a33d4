"""Walking a model: the table `Layer.summary()` prints."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# The map-key check lived here first; its names stay importable from this module.
from layers._base._policy_key_check import UnmatchedPolicyKeyWarning, warn_unmatched_keys

__all__ = [
    "UnmatchedPolicyKeyWarning",
    "print_summary",
    "summary_lines",
    "summary_rows",
    "summary_text",
    "warn_unmatched_keys",
]

_COLUMNS = ("Path", "Class", "Policy", "Variable/compute/output", "Params", "Output")


def _describe_output(record: tuple | None) -> str:
    if record is None:
        return "-"  # not called yet
    if not record:
        return "None"
    return ", ".join(f"{shape} {dtype}" if dtype is not None else f"{shape}" for shape, dtype in record)


def summary_rows(layer: Any) -> list[dict[str, Any]]:
    """One dict per layer (the layer itself, then `sublayers()`), with the summary's columns."""
    rows = []
    for entry in [layer, *layer.sublayers()]:
        policy = entry.dtype_policy
        params = sum(variable.size for variable in entry.weights)
        rows.append(
            {
                "path": entry.path,
                "class": type(entry).__name__,
                "policy": policy.name,
                "dtypes": (policy.variable_dtype, policy.compute_dtype, policy.output_dtype or policy.compute_dtype),
                "params": params,
                "built": entry.built,
                "output": entry._last_output,
            }
        )
    return rows


def summary_lines(layer: Any) -> list[str]:
    """The table `Layer.summary` prints, one string per line: a header, one line per layer, then the totals."""
    table = [
        (
            row["path"],
            row["class"],
            row["policy"],
            "/".join(row["dtypes"]),
            f"{row['params']:,}" + ("" if row["built"] else " (unbuilt)"),
            _describe_output(row["output"]),
        )
        for row in summary_rows(layer)
    ]
    widths = [max(len(line[index]) for line in [_COLUMNS, *table]) for index in range(len(_COLUMNS))]

    def format_line(cells: Iterable[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    rule = "-" * len(format_line(["-" * width for width in widths]))
    trainable = sum(variable.size for variable in layer.trainable_weights)
    total = sum(variable.size for variable in layer.weights)
    lines = [format_line(_COLUMNS), rule, *(format_line(line) for line in table), rule]
    lines.append(f"Total params: {total:,} (trainable: {trainable:,}, non-trainable: {total - trainable:,})")
    return lines


def summary_text(layer: Any) -> str:
    """The table as one string (the lines joined with newlines)."""
    return "\n".join(summary_lines(layer))


def print_summary(layer: Any, print_fn: Callable[[str], Any] | None) -> None:
    """Calls `print_fn` (`print` when None, as in Keras) with each line of the table."""
    if print_fn is not None and not callable(print_fn):
        raise TypeError(f"print_fn must be a callable (called with each line) or None, received {print_fn!r}.")
    emit = print if print_fn is None else print_fn
    for line in summary_lines(layer):
        emit(line)
