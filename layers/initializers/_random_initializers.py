"""Initializers that draw from a distribution with explicit parameters, and `Orthogonal`.

All draw in float32 and cast once to the requested floating dtype.

Example:
  >>> RandomUniform(2.0, 2.0)((2,), "bfloat16")
  Array([2, 2], dtype=bfloat16)
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from layers import _random
from layers.initializers._base import RandomInitializer, check_finite_real

__all__ = ["Orthogonal", "RandomNormal", "RandomUniform", "TruncatedNormal"]


class RandomNormal(RandomInitializer):
    """Draws from a normal distribution.

    Args:
      mean: the mean.
      stddev: the standard deviation, at least 0.
      seed: an int for the same values on every call, or None for a fresh draw each call.

    Example:
      >>> RandomNormal(stddev=0.0, mean=3.0)((2,))
      Array([3., 3.], dtype=float32)
    """

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        super().__init__(seed)
        self.mean = check_finite_real(mean, "RandomNormal(mean)")
        self.stddev = check_finite_real(stddev, "RandomNormal(stddev)")
        if self.stddev < 0:
            raise ValueError(f"RandomNormal(stddev) must be >= 0, received {stddev!r}.")

    def _sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return _random.normal(rng, self.mean, self.stddev, shape=shape)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class TruncatedNormal(RandomInitializer):
    """Draws from a normal distribution, redrawing values more than 2 `stddev` from the mean.

    `stddev` is that of the normal before truncation, as in Keras.

    Args:
      mean: the mean.
      stddev: the standard deviation before truncation, at least 0.
      seed: an int for the same values on every call, or None for a fresh draw each call.

    Example:
      >>> values = TruncatedNormal(stddev=1.0, seed=0)((1000,))
      >>> bool(jnp.all(jnp.abs(values) <= 2.0))
      True
    """

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        super().__init__(seed)
        self.mean = check_finite_real(mean, "TruncatedNormal(mean)")
        self.stddev = check_finite_real(stddev, "TruncatedNormal(stddev)")
        if self.stddev < 0:
            raise ValueError(f"TruncatedNormal(stddev) must be >= 0, received {stddev!r}.")

    def _sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return _random.truncated_normal(rng, self.mean, self.stddev, shape=shape)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(RandomInitializer):
    """Draws uniformly from `[minval, maxval)`.

    Args:
      minval: the lower bound.
      maxval: the upper bound, at least `minval`.
      seed: an int for the same values on every call, or None for a fresh draw each call.

    Example:
      >>> values = RandomUniform(-1.0, 1.0, seed=0)((100,))
      >>> bool(jnp.all((values >= -1.0) & (values < 1.0)))
      True
    """

    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None) -> None:
        super().__init__(seed)
        self.minval = check_finite_real(minval, "RandomUniform(minval)")
        self.maxval = check_finite_real(maxval, "RandomUniform(maxval)")
        if self.minval > self.maxval:
            raise ValueError(f"RandomUniform needs minval <= maxval, received minval={minval!r}, maxval={maxval!r}.")

    def _sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return _random.uniform(rng, self.minval, self.maxval, shape=shape)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class Orthogonal(RandomInitializer):
    """A random matrix with orthonormal columns (or rows, when wider than tall) times `gain`.

    The shape must have at least 2 dims; the leading ones are flattened into rows, so a conv
    kernel `(3, 3, 8, 16)` is orthogonal as a 72×16 matrix.

    Args:
      gain: the multiplier.
      seed: an int for the same values on every call, or None for a fresh draw each call.

    Example:
      >>> q = Orthogonal(seed=0)((4, 4))
      >>> bool(jnp.allclose(q.T @ q, jnp.eye(4), atol=1e-5))
      True
    """

    def __init__(self, gain: float = 1.0, seed: int | None = None) -> None:
        super().__init__(seed)
        self.gain = check_finite_real(gain, "Orthogonal(gain)")

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> jax.Array:
        """Returns an orthogonal array of `shape` (at least 2 dims) in a floating `dtype`."""
        if isinstance(shape, (tuple, list)) and len(shape) < 2:
            raise ValueError(f"Orthogonal needs a shape with at least 2 dims, received {tuple(shape)!r}.")
        return super().__call__(shape, dtype)

    def _sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return _random.orthogonal(rng, self.gain, shape=shape)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"gain": self.gain, "seed": self.seed}
