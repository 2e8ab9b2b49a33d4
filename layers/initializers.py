"""Weight initializers: callables `(shape, dtype=None) -> jax.Array` with Keras 3 semantics.

Random initializers draw in float32 and cast once to the requested dtype, so a bfloat16 weight is
the rounded float32 draw, never a draw made with 8 bits of mantissa.

Seeds: an initializer built with an int `seed` is stateless and returns the same values on every
call with the same shape. One built with `seed=None` takes a fresh key from a process-wide
generator on every call, so two layers sharing it still get different weights;
`set_random_seed` resets that generator to make a whole run reproducible. The generator's state
is a Python counter, advanced when the initializer runs in Python: inside `jax.jit` that is at
trace time, so a compiled function replays the values it drew then.

Example:
  >>> from layers import initializers
  >>> init = initializers.get("glorot_uniform")
  >>> init((3, 4), "bfloat16").dtype
  dtype(bfloat16)
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dtypepolicy._dtypes import check_representable, is_float, standardize_dtype
from layers import _random
from layers._registry import Configurable, Registry

__all__ = [
    "Constant",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "Initializer",
    "LecunNormal",
    "LecunUniform",
    "Ones",
    "Orthogonal",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "Zeros",
    "get",
    "serialize",
    "set_random_seed",
]

_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("normal", "truncated_normal", "untruncated_normal", "uniform")


def set_random_seed(seed: int) -> None:
    """Resets the generator that unseeded initializers draw from, making later draws reproducible.

    Only the initializers' generator is reset; NumPy's and Python's are left alone.

    Args:
      seed: an int in `[0, 2**32)`.

    Example:
      >>> set_random_seed(7)
      >>> first = RandomNormal()((2,))
      >>> set_random_seed(7)
      >>> bool(jnp.all(RandomNormal()((2,)) == first))
      True
    """
    seed = _random.check_seed(seed, "set_random_seed(seed)")
    if seed is None:
        raise TypeError("set_random_seed(seed) must be an int, received None.")
    _random.GLOBAL_SEEDS.reset(seed)


# --- argument checks -------------------------------------------------------------------------


def _check_real(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a real number, received {value!r} of type {type(value).__name__}.")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, received {value!r}.")
    return float(value)


def _check_shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list)):
        raise TypeError(
            f"shape must be a tuple of non-negative ints, received {shape!r} of type {type(shape).__name__}."
        )
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ValueError(f"shape must contain only non-negative ints, received {shape!r}.")
    return tuple(int(d) for d in shape)


def _check_dtype(dtype: Any, owner: str, floating: bool) -> str:
    name = "float32" if dtype is None else standardize_dtype(dtype)
    check_representable(name, f"{owner} output")
    if floating and not is_float(name):
        raise ValueError(f"{owner} produces floating values, so dtype must be floating; received {dtype!r}.")
    return name


def _compute_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Fan-in and fan-out; leading dims of a conv kernel form the receptive field."""
    if not shape:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


# --- base classes -----------------------------------------------------------------------------


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


class _RandomInitializer(Initializer):
    """Holds the seed and turns it into a key for each call."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = _random.check_seed(seed, f"{type(self).__name__}(seed)")

    def _key(self) -> jax.Array:
        return _random.GLOBAL_SEEDS.next_key() if self.seed is None else jax.random.key(self.seed)

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> jax.Array:
        """Returns a float32 draw of `shape` cast to the floating `dtype` (None means float32)."""
        shape = _check_shape(shape)
        dtype = _check_dtype(dtype, type(self).__name__, floating=True)
        return self._sample(self._key(), shape).astype(dtype)

    def _sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Draws float32 values; the caller casts them."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"seed": self.seed}


# --- constant initializers ---------------------------------------------------------------------


class Zeros(Initializer):
    """Fills with 0 in any dtype.

    Example:
      >>> Zeros()((2,), "int32")
      Array([0, 0], dtype=int32)
    """

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> jax.Array:
        """Returns zeros of `shape` in `dtype` (None means float32)."""
        return jnp.zeros(_check_shape(shape), _check_dtype(dtype, "Zeros", floating=False))


class Ones(Initializer):
    """Fills with 1 in any dtype.

    Example:
      >>> Ones()((2,), "bfloat16")
      Array([1, 1], dtype=bfloat16)
    """

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> jax.Array:
        """Returns ones of `shape` in `dtype` (None means float32)."""
        return jnp.ones(_check_shape(shape), _check_dtype(dtype, "Ones", floating=False))


class Constant(Initializer):
    """Fills with `value`, a number or an array that broadcasts to the requested shape.

    Args:
      value: a real number, or an array-like of real numbers.

    Example:
      >>> Constant(0.5)((3,))
      Array([0.5, 0.5, 0.5], dtype=float32)
    """

    def __init__(self, value: Any = 0.0) -> None:
        if isinstance(value, (bool, int, float, np.integer, np.floating)):
            self.value = _check_real(value, "Constant(value)")
            return
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):
            array = None
        if array is None or array.dtype == object or not np.issubdtype(array.dtype, np.number):
            raise TypeError(
                f"Constant(value) must be a real number or an array-like of numbers, "
                f"received {value!r} of type {type(value).__name__}."
            )
        self.value = array.tolist()

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> jax.Array:
        """Returns `value` broadcast to `shape`, in `dtype` (None means float32)."""
        shape = _check_shape(shape)
        dtype = _check_dtype(dtype, "Constant", floating=False)
        value = np.asarray(self.value)
        try:
            np.broadcast_shapes(value.shape, shape)
        except ValueError:
            raise ValueError(
                f"Constant value of shape {value.shape} cannot be broadcast to the requested shape {shape}."
            ) from None
        return jnp.broadcast_to(jnp.asarray(value, dtype), shape)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"value": self.value}


# --- random initializers -----------------------------------------------------------------------


class RandomNormal(_RandomInitializer):
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
        self.mean = _check_real(mean, "RandomNormal(mean)")
        self.stddev = _check_real(stddev, "RandomNormal(stddev)")
        if self.stddev < 0:
            raise ValueError(f"RandomNormal(stddev) must be >= 0, received {stddev!r}.")

    def _sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        return _random.normal(key, self.mean, self.stddev, shape=shape)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class TruncatedNormal(_RandomInitializer):
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
        self.mean = _check_real(mean, "TruncatedNormal(mean)")
        self.stddev = _check_real(stddev, "TruncatedNormal(stddev)")
        if self.stddev < 0:
            raise ValueError(f"TruncatedNormal(stddev) must be >= 0, received {stddev!r}.")

    def _sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        return _random.truncated_normal(key, self.mean, self.stddev, shape=shape)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(_RandomInitializer):
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
        self.minval = _check_real(minval, "RandomUniform(minval)")
        self.maxval = _check_real(maxval, "RandomUniform(maxval)")
        if self.minval > self.maxval:
            raise ValueError(f"RandomUniform needs minval <= maxval, received minval={minval!r}, maxval={maxval!r}.")

    def _sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        return _random.uniform(key, self.minval, self.maxval, shape=shape)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class VarianceScaling(_RandomInitializer):
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
        self.scale = _check_real(scale, f"{name}(scale)")
        if self.scale <= 0:
            raise ValueError(f"{name}(scale) must be > 0, received {scale!r}.")
        if mode not in _MODES:
            raise ValueError(f"{name}(mode) must be one of {_MODES}, received {mode!r}.")
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(f"{name}(distribution) must be one of {_DISTRIBUTIONS}, received {distribution!r}.")
        self.mode = mode
        self.distribution = distribution

    def _sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        fan_in, fan_out = _compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        # A zero-sized dim gives an empty array; max() only keeps the arithmetic finite.
        variance = self.scale / max(1.0, fan)
        if self.distribution in ("truncated_normal", "normal"):
            return _random.truncated_normal(key, 0.0, math.sqrt(variance) / _random.TRUNCATED_STDDEV, shape=shape)
        if self.distribution == "untruncated_normal":
            return _random.normal(key, 0.0, math.sqrt(variance), shape=shape)
        limit = math.sqrt(3.0 * variance)
        return _random.uniform(key, -limit, limit, shape=shape)

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


class Orthogonal(_RandomInitializer):
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
        self.gain = _check_real(gain, "Orthogonal(gain)")

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> jax.Array:
        """Returns an orthogonal array of `shape` (at least 2 dims) in a floating `dtype`."""
        if isinstance(shape, (tuple, list)) and len(shape) < 2:
            raise ValueError(f"Orthogonal needs a shape with at least 2 dims, received {tuple(shape)!r}.")
        return super().__call__(shape, dtype)

    def _sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        return _random.orthogonal(key, self.gain, shape=shape)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {"gain": self.gain, "seed": self.seed}


# --- lookup ------------------------------------------------------------------------------------

_REGISTRY = Registry(
    "initializer",
    Initializer,
    {
        "zeros": Zeros,
        "ones": Ones,
        "constant": Constant,
        "random_normal": RandomNormal,
        "random_uniform": RandomUniform,
        "truncated_normal": TruncatedNormal,
        "glorot_normal": GlorotNormal,
        "glorot_uniform": GlorotUniform,
        "he_normal": HeNormal,
        "he_uniform": HeUniform,
        "lecun_normal": LecunNormal,
        "lecun_uniform": LecunUniform,
        "orthogonal": Orthogonal,
        "variance_scaling": VarianceScaling,
        # Keras's short aliases, with the classes' defaults (+-0.05 and stddev 0.05).
        "uniform": RandomUniform,
        "normal": RandomNormal,
    },
    example="glorot_uniform",
    article="an",
)


def serialize(initializer: Initializer) -> dict[str, Any]:
    """Returns `{"class_name": ..., "config": ...}` for an initializer, ready for JSON.

    Example:
      >>> from layers import initializers
      >>> initializers.serialize(GlorotUniform(seed=3))
      {'class_name': 'GlorotUniform', 'config': {'seed': 3}}
    """
    return _REGISTRY.serialize(initializer)


def get(identifier: Any) -> Any:
    """Returns the initializer an identifier stands for.

    Args:
      identifier: None (returned as None), a name (`"he_normal"`, `"HeNormal"`), an
        `Initializer` (returned as is), a dict from `serialize`, an `Initializer` subclass
        (instantiated with its defaults), or any other callable (returned as is).

    Raises:
      ValueError: an unknown name or a malformed config dict.
      TypeError: anything else.

    Example:
      >>> from layers import initializers
      >>> initializers.get({"class_name": "HeNormal", "config": {"seed": 1}})
      HeNormal(seed=1)
    """
    return _REGISTRY.get(identifier)
