"""Walking a model: the `summary()` table, and the check for policy-map keys that match no layer."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterable
from typing import Any

_COLUMNS = ("Path", "Class", "Policy", "Variable/compute/output", "Params", "Output")


class UnmatchedPolicyKeyWarning(UserWarning):
    """A `DTypePolicyMap` key matched no layer path of the model holding the map (a typo?)."""


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


def summary_text(layer: Any) -> str:
    """The table `Layer.summary` prints: a header, one line per layer, then the totals."""
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
    return "\n".join(lines)


def warn_unmatched_keys(layer: Any) -> None:
    """Warns (`UnmatchedPolicyKeyWarning`) about keys of the map `layer` holds that match no path."""
    paths = [entry.path for entry in layer._flatten_layers()]
    keys = layer._explicit_dtype.unmatched_keys(paths)
    if not keys:
        return
    hints = []
    for key in keys:
        close = difflib.get_close_matches(key, paths, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    shown = ", ".join(repr(path) for path in paths[:8]) + (", ..." if len(paths) > 8 else "")
    warnings.warn(
        f"DTypePolicyMap keys matched no layer of {layer.path!r} when it was first called: {', '.join(hints)}. "
        f"Layers they were meant for get the map's default policy instead. Layer paths: {shown}.",
        UnmatchedPolicyKeyWarning,
        stacklevel=5,
    )
