"""Checks for optimizer constructor arguments: each names the value received and what was expected."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np


def _is_real(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, float, np.integer, np.floating)):
        return True
    # 0-d NumPy/JAX arrays of a real dtype pass too (a concrete hyperparameter read from a config)
    dtype = getattr(value, "dtype", None)
    return (
        getattr(value, "shape", None) == ()
        and dtype is not None
        and (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating))
    )


def real(
    value: Any,
    what: str,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """`value` as a Python float, checked to be a finite real number within the bounds given."""
    if not _is_real(value):
        raise TypeError(f"{what} must be a real number, received {value!r} of type {type(value).__name__}.")
    try:
        number = float(value)
    except Exception:  # a traced 0-d array: hyperparameters are static
        raise TypeError(f"{what} must be a concrete number (not traced by JAX), received {value!r}.") from None
    below = low is not None and (number <= low if open_low else number < low)
    above = high is not None and (number >= high if open_high else number > high)
    if not math.isfinite(number) or below or above:
        lo = "(-inf" if low is None else f"{'(' if open_low else '['}{low}"
        hi = "inf)" if high is None else f"{high}{')' if open_high else ']'}"
        raise ValueError(f"{what} must be a finite number in {lo}, {hi}, received {value!r}.")
    return number


def optional_positive(value: Any, what: str) -> float | None:
    """None, or a finite number > 0 (a clipping threshold)."""
    if value is None:
        return None
    return real(value, what, low=0.0, open_low=True)


def optional_non_negative(value: Any, what: str) -> float | None:
    """None, or a finite number >= 0 (a weight decay)."""
    if value is None:
        return None
    return real(value, what, low=0.0)


def flag(value: Any, what: str) -> bool:
    """A Python or NumPy bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be a bool, received {value!r} of type {type(value).__name__}.")
    return bool(value)


def accumulation_steps(value: Any) -> int:
    """None (no accumulation, stored as 1) or an int >= 1."""
    if value is None:
        return 1
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"gradient_accumulation_steps must be an int >= 1 or None, received {value!r} of type "
            f"{type(value).__name__}."
        )
    if value < 1:
        raise ValueError(f"gradient_accumulation_steps must be an int >= 1 or None, received {value!r}.")
    return int(value)


def learning_rate(value: Any) -> float | Callable:
    """A finite number >= 0, or a schedule: a callable from the step count to the learning rate."""
    if callable(value) and not _is_real(value):
        return value
    if not _is_real(value):
        raise TypeError(
            "learning_rate must be a number or a schedule (a callable taking the step count, such as an optax "
            f"schedule), received {value!r} of type {type(value).__name__}."
        )
    return real(value, "learning_rate", low=0.0)


def name(value: Any, default: str) -> str:
    """A non-empty string, or the class name when None."""
    if value is None:
        return default
    if not isinstance(value, str) or not value:
        raise TypeError(f"name must be a non-empty string or None, received {value!r}.")
    return value


def one_clipping(clipnorm: Any, clipvalue: Any, global_clipnorm: Any) -> None:
    """Keras allows one of the three clipping arguments at a time."""
    given = {
        k: v
        for k, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue), ("global_clipnorm", global_clipnorm))
        if v is not None
    }
    if len(given) > 1:
        received = ", ".join(f"{k}={v!r}" for k, v in given.items())
        raise ValueError(f"Only one of clipnorm, clipvalue and global_clipnorm can be set, received {received}.")
