"""The one tolerance table: compute dtype -> (rtol, atol) against a float64 reference."""

import numpy as np

TOLERANCES = {
    "float64": (1e-12, 1e-12),
    "float32": (1e-5, 1e-5),  # atol covers cancellation in float32 sums over hundreds of terms
    "float16": (5e-3, 5e-3),
    "bfloat16": (2e-2, 2e-2),
    "float8_e4m3fn": (1.25e-1, 1e-2),
    "float8_e5m2": (2.5e-1, 1e-2),
}


def tolerance(dtype):
    """(rtol, atol) for results computed in `dtype`."""
    return TOLERANCES[np.dtype(dtype).name]


def assert_close(actual, expected, dtype):
    """Compares in float64 with the tolerance of `dtype`."""
    rtol, atol = tolerance(dtype)
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), rtol=rtol, atol=atol)
