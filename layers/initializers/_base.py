"""The initializer contract: the `Initializer` base, the seeded random base and the argument checks.

An initializer is a callable `(shape, dtype=None) -> jax.Array` whose config is its constructor
arguments. `RandomInitializer` turns a seed into a NumPy generator per call, draws in float32 and
casts once to the requested floating dtype; subclasses only implement `_sample`.

Example:
  >>> class Halves(RandomInitializer):
  ...     def _sample(self, rng, shape):
  ...         return np.full(shape, 0.5, np.float32)
  >>> Halves(seed=0)((2,), "bfloat16")
  Array([0.5, 0.5], dtype=bfloat16)
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dtypepolicy._dtypes import check_representable, is_float, standardize_dtype
from layers import _random
from layers._registry import Configurable

__all__ = ["Initializer", "RandomInitializer", "check_dtype", "check_finite_real", "check_shape"]


def check_finite_real(value: Any, what: str) -> float:
    """Returns `value` as a float; `what` names the argument in errors.

    Raises:
      TypeError: `value` is not an int or a float (bools are not numbers here).
      ValueError: `value` is not finite.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a real number, received {value!r} of type {type(value).__name__}.")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, received {value!r}.")
    return float(value)


def check_shape(shape: Any) -> tuple[int, ...]:
    """Returns `shape` as a tuple of ints.

    Raises:
      TypeError: `shape` is not a tuple or a list.
      ValueError: an entry is not a non-negative int.
    """
    if not isinstance(shape, (tuple, list)):
        raise TypeError(
            f"shape must be a tuple of non-negative ints, received {shape!r} of type {type(shape).__name__}."
        )
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ValueError(f"shape must contain only non-negative ints, received {shape!r}.")
    return tuple(int(d) for d in shape)


def check_dtype(dtype: Any, owner: str, floating: bool) -> str:
    """Returns the name of `dtype` (None means float32); `owner` names the initializer in errors.

    Raises:
      ValueError: the dtype is unknown or not representable (float64 without x64), or it is not
        floating although `floating` is set.
    """
    name = "float32" if dtype is None else standardize_dtype(dtype)
    check_representable(name, f"{owner} output")
    if floating and not is_float(name):
        raise ValueError(f"{owner} produces floating values, so dtype must be floating; received {dtype!r}.")
    return name


class Initializer(Configurable):
    """Base class: a callable `(shape, dtype=None) -> jax.Array` with a JSON-ready config.

    Subclasses implement `__call__` and `get_config`; `from_config` passes the config to the
    constructor.

    Example:
      >>> class Twos(Initializer):
      ...     def __call__(self, shape, dtype=None):
      ...         return jnp.full(shape, 2, dtype or "float32")
      >>> Twos()((2,))
      Array([2., 2.], dtype=float32)
    """

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> jax.Array:
        """Returns an array of `shape` in `dtype` (None means float32)."""
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(shape, dtype=None).")


class RandomInitializer(Initializer):
    """Holds the seed and turns it into a NumPy generator for each call; subclasses implement `_sample`.

    The draw happens on the host (see `layers._random`): no kernel is compiled per shape, and the
    values are the same eagerly and under `jax.jit`.

    Args:
      seed: an int for the same values on every call, or None for a fresh draw each call.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = _random.check_seed(seed, f"{type(self).__name__}(seed)")

    def _rng(self) -> np.random.Generator:
        return _random.GLOBAL_SEEDS.next_rng() if self.seed is None else _random.seeded_rng(self.seed)

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> jax.Array:
        """Returns a float32 draw of `shape` cast to the floating `dtype` (None means float32)."""
        shape = check_shape(shape)
        dtype = check_dtype(dtype, type(self).__name__, floating=True)
        values = self._sample(self._rng(), shape)
        if isinstance(values, (np.ndarray, np.generic)):
            # Rounded on the host (round to nearest even, as XLA's convert) and moved with
            # device_put, which unlike jnp.asarray compiles no copy kernel per shape.
            return jax.device_put(np.asarray(values, np.float32).astype(jnp.dtype(dtype)))
        return jnp.asarray(values).astype(dtype)

    def _sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> Any:
        """Draws float32 values (a NumPy array, or a JAX one) with `rng`; the caller casts them."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"seed": self.seed}
