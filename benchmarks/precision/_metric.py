"""The metric: relative Frobenius error, rounding to a dtype, and the one-rounding floor of each quantity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_dtypes
import numpy as np

QUANTITIES = ("output", "grad inputs", "grad weights")

# Weights read in the compute dtype by the built-in layers; every other weight is read in float32.
COMPUTE_WEIGHTS = ("kernel", "embeddings")

_DTYPES = {"float32": np.float32, "float64": np.float64, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def relative_error(values: Any, exact: Any) -> float:
    """`||values - exact||_F / ||exact||_F` in float64; the absolute norm when `exact` is all zeros.

    >>> round(relative_error([1.0, 2.0], [1.0, 2.5]), 6)  # 0.5 / sqrt(1 + 6.25)
    0.185695
    """
    values, exact = np.asarray(values, np.float64).ravel(), np.asarray(exact, np.float64).ravel()
    scale = float(np.linalg.norm(exact))
    difference = float(np.linalg.norm(values - exact))
    return difference / scale if scale > 0 else difference


def round_to(values: Any, dtype: str) -> np.ndarray:
    """float64 copies of `values` rounded to `dtype` ("float32", "bfloat16", "float16", "float64").

    From float64 the 16-bit types round through float32 (ml_dtypes' conversion); the two
    roundings differ from one only on values within 2**-29 of a tie, which no norm here sees.

    >>> float(round_to(1 + 2.0**-8 + 2.0**-10, "bfloat16")[()])  # 8 significant bits: rounds up
    1.0078125
    """
    if dtype not in _DTYPES:
        raise ValueError(f"cannot round to {dtype!r}; expected one of {sorted(_DTYPES)}.")
    return np.asarray(values, np.float64).astype(np.float32).astype(_DTYPES[dtype]).astype(np.float64)


def one_rounding_floor(exact_on_rounded: Any, exact: Any, dtype: str) -> float:
    """The relative error of `exact_on_rounded` rounded once to `dtype`, against `exact`.

    >>> round(one_rounding_floor([3.03], [3.03], "bfloat16"), 8)  # 3.03 -> 3.03125: (3.03125 - 3.03) / 3.03
    0.00041254
    """
    return relative_error(round_to(exact_on_rounded, dtype), exact)


def _rounds_in_compute(path: str) -> bool:
    return path.rsplit("/", 1)[-1] in COMPUTE_WEIGHTS


def _quantities(
    got: dict[str, Any],
    exact: dict[str, Any],
    on_rounded: dict[str, Any],
    compute: str,
    input_dtypes: Sequence[str],
    round_inputs: bool,
) -> dict[str, tuple[float, float]]:
    """quantity -> (error, one-rounding floor)."""
    result = {"output": (relative_error(got["output"], exact["output"]),
                         one_rounding_floor(on_rounded["output"], exact["output"], got["output_dtype"]))}  # fmt: skip
    if got["grads"] is None:
        return result

    def flat(parts: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.ravel(p) for p in parts]) if parts else np.zeros(0)

    if exact["grads"]["inputs"]:
        dtypes = [compute if round_inputs else dtype for dtype in input_dtypes]
        rounded = [round_to(g, d) for g, d in zip(on_rounded["grads"]["inputs"], dtypes, strict=True)]
        result["grad inputs"] = (
            relative_error(flat(got["grads"]["inputs"]), flat(exact["grads"]["inputs"])),
            relative_error(flat(rounded), flat(exact["grads"]["inputs"])),
        )
    if exact["grads"]["weights"]:
        dtypes = [compute if _rounds_in_compute(p) else "float32" for p in got["weight_paths"]]
        rounded = [round_to(g, d) for g, d in zip(on_rounded["grads"]["weights"], dtypes, strict=True)]
        result["grad weights"] = (
            relative_error(flat(got["grads"]["weights"]), flat(exact["grads"]["weights"])),
            relative_error(flat(rounded), flat(exact["grads"]["weights"])),
        )
    return result
