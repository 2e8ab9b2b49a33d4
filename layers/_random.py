"""Random draws for initializers: the process-wide seed generator and the jitted float32 samplers.

The generator hands out a fresh key for every unseeded draw. Its state is a Python counter behind
a lock, advanced when the caller runs in Python: inside `jax.jit` that is at trace time, so a
compiled function replays the keys it drew then.

There is one jitted sampler per distribution, always drawing float32; the caller casts. Their
parameters are traced and only the shape is static, so every dtype and every instance reuses one
compilation per shape (the threefry bit generator takes most of a second to compile on CPU).

Example:
  >>> generator = SeedGenerator(0)
  >>> a, b = generator.next_key(), generator.next_key()
  >>> bool(jnp.all(jax.random.key_data(a) == jax.random.key_data(b)))
  False
  >>> normal(jax.random.key(0), 3.0, 0.0, shape=(2,))
  Array([3., 3.], dtype=float32)
"""

from __future__ import annotations

import functools
import math
import secrets
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "GLOBAL_SEEDS",
    "SEED_LIMIT",
    "TRUNCATED_STDDEV",
    "SeedGenerator",
    "check_seed",
    "normal",
    "orthogonal",
    "truncated_normal",
    "uniform",
]

SEED_LIMIT = 2**32  # JAX keeps 32 bits of a seed with x64 off, so larger seeds would collide.
# Standard deviation of a standard normal truncated to [-2, 2], the cut `truncated_normal` makes;
# dividing by it restores the requested variance after truncation.
TRUNCATED_STDDEV = 0.87962566103423978


class SeedGenerator:
    """Hands out distinct keys; its state is two Python ints, so jit tracing never captures it.

    Args:
      seed: the seed the keys derive from; key `n` is `fold_in(key(seed), n)`.
    """

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._count = 0

    def reset(self, seed: int) -> None:
        """Starts the sequence of keys again from `seed`."""
        with self._lock:
            self._seed = seed
            self._count = 0

    def next_key(self) -> jax.Array:
        """Returns the next key; no two calls between resets return the same one."""
        with self._lock:
            seed, count = self._seed, self._count
            self._count += 1
        return jax.random.fold_in(jax.random.key(seed), count)


# Unseeded runs differ from each other, as in Keras; `set_random_seed` pins them.
GLOBAL_SEEDS = SeedGenerator(secrets.randbits(32))


def check_seed(seed: Any, what: str) -> int | None:
    """Returns `seed` as an int in `[0, 2**32)`, or None for None; `what` names it in errors."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{what} must be an int or None, received {seed!r} of type {type(seed).__name__}.")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{what} must be in [0, 2**32), received {seed!r}.")
    return int(seed)


@functools.partial(jax.jit, static_argnames="shape")
def normal(key: jax.Array, mean: float, stddev: float, *, shape: tuple[int, ...]) -> jax.Array:
    """Draws float32 values from a normal distribution."""
    return mean + stddev * jax.random.normal(key, shape, jnp.float32)


@functools.partial(jax.jit, static_argnames="shape")
def truncated_normal(key: jax.Array, mean: float, stddev: float, *, shape: tuple[int, ...]) -> jax.Array:
    """Draws float32 values from a normal cut at two `stddev` from the mean (not rescaled)."""
    return mean + stddev * jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)


@functools.partial(jax.jit, static_argnames="shape")
def uniform(key: jax.Array, minval: float, maxval: float, *, shape: tuple[int, ...]) -> jax.Array:
    """Draws float32 values uniformly from `[minval, maxval)`."""
    return jax.random.uniform(key, shape, jnp.float32, minval, maxval)


@functools.partial(jax.jit, static_argnames="shape")
def orthogonal(key: jax.Array, gain: float, *, shape: tuple[int, ...]) -> jax.Array:
    """Draws a float32 `gain` times a Haar-random orthogonal matrix, leading dims flattened."""
    rows, cols = math.prod(shape[:-1]), shape[-1]
    draw = jax.random.normal(key, (max(rows, cols), min(rows, cols)), jnp.float32)
    q, r = jnp.linalg.qr(draw)
    # Fixing the signs of diag(r) makes Q uniformly (Haar) distributed, not just orthogonal.
    q = q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0)
    if rows < cols:
        q = q.T
    return gain * q.reshape(shape)
