"""Dtype names: turning user input into the canonical strings the library reports."""

from __future__ import annotations

import difflib
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Short spellings accepted wherever a dtype name is parsed from text.
SHORT_NAMES = {
    "f16": "float16",
    "bf16": "bfloat16",
    "f32": "float32",
    "f64": "float64",
}

# Python scalar types follow JAX's default-width convention, as `float` does in Keras.
_PYTHON_TYPES = {bool: "bool", int: "int32", float: "float32", complex: "complex64"}


def _is_supported(dtype: np.dtype) -> bool:
    return dtype == np.bool_ or jnp.issubdtype(dtype, jnp.number)


def _collect_known_names() -> tuple[str, ...]:
    names = set()
    for candidate in (
        "bool",
        "int2",
        "int4",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint2",
        "uint4",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "bfloat16",
        "float32",
        "float64",
        "complex64",
        "complex128",
        "float8_e3m4",
        "float8_e4m3",
        "float8_e4m3fn",
        "float8_e4m3fnuz",
        "float8_e4m3b11fnuz",
        "float8_e5m2",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
        "float4_e2m1fn",
    ):
        try:
            if jnp.dtype(candidate).name == candidate:
                names.add(candidate)
        except TypeError:
            continue  # an older ml_dtypes without this format
    return tuple(sorted(names))


KNOWN_DTYPE_NAMES: tuple[str, ...] = _collect_known_names()


def closest(name: str, choices: tuple[str, ...] | list[str]) -> str | None:
    """Returns the choice most similar to `name`, or None when none is close."""
    matches = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


def dtype_from_name(text: str) -> str | None:
    """Returns the canonical dtype name for `text`, or None when it names no dtype.

    Only canonical names (`"float32"`) and the short forms in `SHORT_NAMES` count:
    NumPy type codes such as `"f4"` or `"float"` are not dtype policy names.
    """
    key = text.strip().lower()
    key = SHORT_NAMES.get(key, key)
    return key if key in KNOWN_DTYPE_NAMES else None


def standardize_dtype(value: Any) -> str:
    """Returns the canonical name of a dtype-like value.

    Args:
      value: a dtype name (`"bfloat16"`, `"bf16"`), a NumPy/JAX dtype or scalar type
        (`jnp.bfloat16`, `np.dtype("float16")`), or a Python type (`float`).

    Raises:
      ValueError: a string that names no dtype.
      TypeError: anything that is not dtype-like.

    Example:
      >>> standardize_dtype(jnp.bfloat16)
      'bfloat16'
    """
    if isinstance(value, str):
        name = dtype_from_name(value)
        if name is None:
            hint = closest(value.strip().lower(), list(KNOWN_DTYPE_NAMES) + list(SHORT_NAMES))
            suggestion = f" Did you mean {hint!r}?" if hint else ""
            raise ValueError(
                f"Unknown dtype {value!r}. Expected one of {', '.join(KNOWN_DTYPE_NAMES)} "
                f"or a short name ({', '.join(SHORT_NAMES)}).{suggestion}"
            )
        return name
    if isinstance(value, type) and value in _PYTHON_TYPES:
        return _PYTHON_TYPES[value]
    if value is None or isinstance(value, (bool, int, float, complex)):
        raise TypeError(f"Expected a dtype-like value, received {value!r} of type {type(value).__name__}.")
    try:
        dtype = np.dtype(value)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Expected a dtype-like value (a dtype name, a NumPy/JAX dtype or scalar type), "
            f"received {value!r} of type {type(value).__name__}."
        ) from error
    if not _is_supported(dtype) or dtype.name not in KNOWN_DTYPE_NAMES:
        raise TypeError(f"Expected a numeric or bool dtype, received {value!r} (dtype {dtype}).")
    return dtype.name


@functools.lru_cache(maxsize=256)
def _is_float_cached(dtype: Any) -> bool:
    return bool(jnp.issubdtype(jnp.dtype(dtype), jnp.floating))


def is_float(dtype: Any) -> bool:
    """True for floating dtypes, 8-bit and 16-bit formats included."""
    try:
        return _is_float_cached(dtype)
    except TypeError:  # an unhashable dtype-like
        return bool(jnp.issubdtype(jnp.dtype(dtype), jnp.floating))


def check_representable(dtype_name: str, what: str) -> None:
    """Raises when JAX would silently narrow the dtype (64-bit types with x64 disabled)."""
    dtype = jnp.dtype(dtype_name)
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise ValueError(
            f"{what} has dtype {dtype_name!r}, which JAX stores only with 64-bit mode on. "
            f"Call jax.config.update('jax_enable_x64', True) first or use a 32-bit dtype."
        )
