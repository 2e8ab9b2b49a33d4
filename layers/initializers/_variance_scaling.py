"""Variance scaling and its named presets: Glorot (Xavier), He and LeCun, normal and uniform.

Each draws with variance `scale / n`, `n` being the fan-in, the fan-out or their mean; the presets
fix `scale`, `mode` and `distribution` and keep only the seed as an argument.

Example:
  >>> compute_fans((3, 3, 16, 32))
  (144, 288)
  >>> GlorotUniform(seed=0).get_config()
  {'seed': 0}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from layers import _random
from layers.initializers._base import RandomInitializer, check_finite_real

__all__ = [
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "LecunNormal",
    "LecunUniform",
    "VarianceScaling",
    "compute_fans",
]

_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("normal", "truncated_normal", "untruncated_normal", "uniform")


def compute_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Fan-in and fan-out; leading dims of a conv kernel form the receptive field."""
    if not shape:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


class VarianceScaling(RandomInitializer):
    """Draws with variance `scale / n`, `n` being the fan-in, the fan-out or their mean.

    For a 2-D shape `(fan_in, fan_out)`; for more dims the leading ones are a receptive field
    multiplying both (`(3, 3, 16, 32)` has fan-in 144 and fan-out 288); a 1-D shape has both fans
    equal to its size and a scalar shape has both equal to 1. `"truncated_normal"` (alias
    `"normal"`) cuts at two standard deviations and widens the normal so the variance stays
    `scale / n`; `"uniform"` draws from `[-sqrt(3 scale / n), sqrt(3 scale / n)]`.

    Args:
      scale: a positive multiplier of the variance.
      mode: `"fan_in"`, `"fan_out"` or `"fan_avg"`.
      distribution: `"truncated_normal"`, `"normal"`, `"untruncated_normal"` or `"uniform"`.
      seed: an int for the same values on every call, or None for a fresh draw each call.

    Example:
      >>> init = VarianceScaling(scale=3.0, mode="fan_in", distribution="uniform", seed=0)
      >>> bool(jnp.max(jnp.abs(init((100, 5)))) <= 0.3)
      True
    """

    def __init__(
        self,
        scale: float = 1.0,
        mode: str = "fan_in",
        distribution: str = "truncated_normal",
        seed: int | None = None,
    ) -> None:
        super().__init__(seed)
        name = type(self).__name__
        self.scale = check_finite_real(scale, f"{name}(scale)")
        if self.scale <= 0:
            raise ValueError(f"{name}(scale) must be > 0, received {scale!r}.")
        if mode not in _MODES:
            raise ValueError(f"{name}(mode) must be one of {_MODES}, received {mode!r}.")
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(f"{name}(distribution) must be one of {_DISTRIBUTIONS}, received {distribution!r}.")
        self.mode = mode
        self.distribution = distribution

    def _sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        # A zero-sized dim gives an empty array; max() only keeps the arithmetic finite.
        variance = self.scale / max(1.0, fan)
        if self.distribution in ("truncated_normal", "normal"):
            return _random.truncated_normal(rng, 0.0, math.sqrt(variance) / _random.TRUNCATED_STDDEV, shape=shape)
        if self.distribution == "untruncated_normal":
            return _random.normal(rng, 0.0, math.sqrt(variance), shape=shape)
        limit = math.sqrt(3.0 * variance)
        return _random.uniform(rng, -limit, limit, shape=shape)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


class _FixedVarianceScaling(VarianceScaling):
    """A VarianceScaling whose scale, mode and distribution are fixed by the subclass."""

    _FIXED: tuple[float, str, str]

    def __init__(self, seed: int | None = None) -> None:
        scale, mode, distribution = self._FIXED
        super().__init__(scale, mode, distribution, seed)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"seed": self.seed}


class GlorotNormal(_FixedVarianceScaling):
    """Truncated normal with variance `2 / (fan_in + fan_out)` (Xavier normal).

    Example:
      >>> GlorotNormal(seed=0)((4, 3)).shape
      (4, 3)
    """

    _FIXED = (1.0, "fan_avg", "truncated_normal")


class GlorotUniform(_FixedVarianceScaling):
    """Uniform in `±sqrt(6 / (fan_in + fan_out))` (Xavier uniform).

    Example:
      >>> bool(jnp.max(jnp.abs(GlorotUniform(seed=0)((4, 2)))) <= 1.0)
      True
    """

    _FIXED = (1.0, "fan_avg", "uniform")


class HeNormal(_FixedVarianceScaling):
    """Truncated normal with variance `2 / fan_in`, for ReLU networks.

    Example:
      >>> HeNormal(seed=0)((4, 3), "float16").dtype
      dtype('float16')
    """

    _FIXED = (2.0, "fan_in", "truncated_normal")


class HeUniform(_FixedVarianceScaling):
    """Uniform in `±sqrt(6 / fan_in)`, for ReLU networks.

    Example:
      >>> bool(jnp.max(jnp.abs(HeUniform(seed=0)((6, 3)))) <= 1.0)
      True
    """

    _FIXED = (2.0, "fan_in", "uniform")


class LecunNormal(_FixedVarianceScaling):
    """Truncated normal with variance `1 / fan_in`, for SELU networks.

    Example:
      >>> LecunNormal(seed=0)((4, 3)).shape
      (4, 3)
    """

    _FIXED = (1.0, "fan_in", "truncated_normal")


class LecunUniform(_FixedVarianceScaling):
    """Uniform in `±sqrt(3 / fan_in)`.

    Example:
      >>> bool(jnp.max(jnp.abs(LecunUniform(seed=0)((3, 3)))) <= 1.0)
      True
    """

    _FIXED = (1.0, "fan_in", "uniform")
