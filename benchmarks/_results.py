"""Where benchmark results go, and the pieces every benchmark shares: JSON files, plots, progress.

Every run writes `benchmarks/results/<name>.json` (or under `--out`): the figures, the device and
the versions, so a result file says where it was measured. Plots are PNGs next to it, drawn with
matplotlib's non-interactive backend. Progress bars are rich's, shown only on a terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (sizes, rounds, steps)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, received {text!r}")
    return value


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): said next to every timing."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def load_text(loads: list[float | None]) -> str:
    """`"1.20 -> 1.68"`: the load averages before and after a run."""
    return " -> ".join("?" if value is None else f"{value:.2f}" for value in loads)


def ms_text(value: float) -> str:
    """Milliseconds to three significant digits, never in exponent form."""
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def environment(device: Any) -> dict[str, Any]:
    """Device, versions and date: the header of every result file."""
    import dtypepolicy

    return {
        "device": device.as_dict(),
        "versions": {"dtypepolicy": dtypepolicy.__version__, "jax": jax.__version__, "numpy": np.__version__},
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average": load_average(),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic | np.ndarray | jax.Array):
        return np.asarray(value).tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def write_json(out: Path, name: str, payload: dict[str, Any]) -> Path:
    """Writes `payload` as `<out>/<name>.json` and returns the path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_plain) + "\n")
    return path


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, out: Path, name: str) -> Path:
    """Saves a matplotlib figure as `<out>/<name>.png`, closes it, returns the path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(figure)
    return path


class _Progress:
    def __init__(self, bar: Any, task: Any) -> None:
        self._bar, self._task = bar, task

    def advance(self, description: str | None = None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, **({"description": description} if description else {}))


@contextlib.contextmanager
def progress(description: str, total: int) -> Iterator[_Progress]:
    """A rich progress bar on a terminal (stderr), nothing otherwise: `with progress("x", n) as p: p.advance()`."""
    if not sys.stderr.isatty() or os.environ.get("DTYPEPOLICY_NO_PROGRESS"):
        yield _Progress(None, None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        yield _Progress(bar, bar.add_task(description, total=total))


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table: columns padded to their widest cell, numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(isinstance(row[i], int | float) or row[i] is None for row in rows) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, numeric, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])]).rstrip()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
