"""The gate: a row's status against its bound and its baseline, and the baseline files."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# benchmarks/baselines/, next to this package (one file per device kind).
BASELINES = Path(__file__).resolve().parent.parent / "baselines"
BOUND_FACTOR = 1.1
# 64 float32 unit roundoffs: the float32 accumulation and statistics that run before the one rounding.
FLOAT32_ALLOWANCE = 64 * 2.0**-24
BASELINE_FACTOR = 1.1
BASELINE_FLOOR = 2.0**-24


def _status(error: float, bound: float | None, baseline: float | None) -> str:
    if bound is not None and error > BOUND_FACTOR * bound:
        return "FAIL bound"
    if baseline is not None and error > BASELINE_FACTOR * baseline + BASELINE_FLOOR:
        return "FAIL baseline"
    return "ok" if baseline is not None or bound is not None else "new"


def _gate(rows: list[dict[str, Any]], baseline: Mapping[str, float] | None) -> None:
    for row in rows:
        row["baseline"] = None if baseline is None else baseline.get(row["key"])
        row["status"] = _status(row["error"], row["bound"], row["baseline"])
        if row["status"] == "ok" and row["baseline"] is None:
            row["status"] = "ok (new)"


def load_baseline(path: str | Path) -> dict[str, float]:
    """The `errors` of a baseline file; a FileNotFoundError / ValueError naming the path when unusable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"baseline file {str(path)!r} does not exist; write it with `python -m benchmarks precision "
            f"--update-baseline` (or write_baseline), or pass baseline=None."
        )
    try:
        data = json.loads(path.read_text())
        errors = data["errors"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(
            f"baseline file {str(path)!r} is not a precision baseline (an 'errors' object): {error}"
        ) from None
    if not isinstance(errors, dict) or not all(isinstance(v, int | float) for v in errors.values()):
        raise ValueError(f"baseline file {str(path)!r}: 'errors' must map row keys to numbers.")
    return {str(k): float(v) for k, v in errors.items()}


def write_baseline(rows: Sequence[Mapping[str, Any]], path: str | Path, device: str | None = None) -> Path:
    """Writes (merges) the rows' errors into the baseline file at `path`; other entries are kept."""
    path = Path(path)
    errors = load_baseline(path) if path.is_file() else {}
    errors.update({row["key"]: float(row["error"]) for row in rows})
    payload = {
        "about": "precision baseline: relative Frobenius errors against a float64 oracle (benchmarks/precision/)",
        "device": device,
        "gate": {"baseline_factor": BASELINE_FACTOR, "baseline_floor": BASELINE_FLOOR},
        "errors": dict(sorted(errors.items())),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def _check_baseline_matches(rows: Sequence[Mapping[str, Any]], baseline: Mapping[str, float] | None, what: str) -> None:
    """A baseline that holds none of the rows' keys is the wrong file or a renamed model, not a pass."""
    if not baseline or any(row["key"] in baseline for row in rows):
        return
    sample = next(iter(baseline))
    raise ValueError(
        f"the baseline holds none of the {len(rows)} rows of {what} (their keys look like {rows[0]['key']!r}, "
        f"the baseline's like {sample!r}): a renamed model (name=), other sizes, or the wrong baseline file?"
    )


def baseline_path(device: Any) -> Path:
    """`benchmarks/baselines/<device slug>.json`."""
    return BASELINES / f"{device.slug}.json"
