"""Random draws for initializers: the process-wide seed generator and the float32 samplers.

The generator hands out a fresh stream for every unseeded draw. Its state is a Python counter
behind a lock, advanced when the caller runs in Python: inside `jax.jit` that is at trace time,
so a compiled function replays the values it drew then.

The samplers draw with NumPy on the host, in float32, and the caller casts. Drawing with JAX
compiled the bit generator once per distinct weight shape (a few hundred ms each on CPU, most of
a model's build time); NumPy compiles nothing, and its values depend only on the seed (and the
generator's counter), not on whether the caller is traced, so a seeded draw is the same eagerly
and under `jax.jit`. Each draw gets its own `numpy.random.Generator` (PCG64) seeded from a
`SeedSequence` of three words: a stream tag (0 for an initializer's int seed, 1 for the
process-wide generator), the seed, and the counter (0 for an int seed).

Example:
  >>> generator = SeedGenerator(0)
  >>> a, b = generator.next_key(), generator.next_key()
  >>> bool(jnp.all(jax.random.key_data(a) == jax.random.key_data(b)))
  False
  >>> normal(seeded_rng(0), 3.0, 0.0, shape=(2,))
  array([3., 3.], dtype=float32)
"""

from __future__ import annotations

import math
import secrets
import threading
from typing import Any

import jax
import numpy as np

__all__ = [
    "GLOBAL_SEEDS",
    "SEED_LIMIT",
    "TRUNCATED_STDDEV",
    "SeedGenerator",
    "check_seed",
    "normal",
    "orthogonal",
    "seeded_rng",
    "truncated_normal",
    "uniform",
]

SEED_LIMIT = 2**32  # JAX keeps 32 bits of a seed with x64 off, so larger seeds would collide.
# Standard deviation of a standard normal truncated to [-2, 2], the cut `truncated_normal` makes;
# dividing by it restores the requested variance after truncation.
TRUNCATED_STDDEV = 0.87962566103423978
# The first word of a draw's SeedSequence, so that an int seed and the process-wide generator
# never share a stream (SeedSequence pads short entropy with zeros, so a fixed length matters too).
_SEEDED_STREAM, _GLOBAL_STREAM = 0, 1


def _rng(stream: int, seed: int, count: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([stream, seed, count])))


def seeded_rng(seed: int) -> np.random.Generator:
    """The NumPy generator of an initializer built with the int `seed`: the same one every call."""
    return _rng(_SEEDED_STREAM, seed, 0)


class SeedGenerator:
    """Hands out distinct keys and NumPy generators; its state is two Python ints, never traced.

    Args:
      seed: the seed they derive from; draw `n` gets `fold_in(key(seed), n)` from `next_key` or
        the generator of `SeedSequence([1, seed, n])` from `next_rng`.
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

    def _advance(self) -> tuple[int, int]:
        with self._lock:
            seed, count = self._seed, self._count
            self._count += 1
        return seed, count

    def next_key(self) -> jax.Array:
        """Returns the next JAX key (for dropout); no two calls between resets return the same one."""
        seed, count = self._advance()
        return jax.random.fold_in(jax.random.key(seed), count)

    def next_rng(self) -> np.random.Generator:
        """Returns a NumPy generator for the next draw; keys and generators share one counter."""
        seed, count = self._advance()
        return _rng(_GLOBAL_STREAM, seed, count)


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


def normal(rng: np.random.Generator, mean: float, stddev: float, *, shape: tuple[int, ...]) -> np.ndarray:
    """Draws float32 values from a normal distribution."""
    draw = rng.standard_normal(shape, dtype=np.float32)
    return np.float32(mean) + np.float32(stddev) * draw


def truncated_normal(rng: np.random.Generator, mean: float, stddev: float, *, shape: tuple[int, ...]) -> np.ndarray:
    """Draws float32 values from a normal cut at two `stddev` from the mean (not rescaled).

    Values beyond the cut are redrawn, not clipped, so the result is the truncated distribution.
    """
    draw = rng.standard_normal(math.prod(shape), dtype=np.float32)
    outside = np.flatnonzero(np.abs(draw) > 2.0)
    while outside.size:  # about 4.6% per round, so a handful of rounds
        draw[outside] = rng.standard_normal(outside.size, dtype=np.float32)
        outside = outside[np.abs(draw[outside]) > 2.0]
    return np.float32(mean) + np.float32(stddev) * draw.reshape(shape)


def uniform(rng: np.random.Generator, minval: float, maxval: float, *, shape: tuple[int, ...]) -> np.ndarray:
    """Draws float32 values uniformly from `[minval, maxval)` (bounds taken in float32)."""
    low, high = np.float32(minval), np.float32(maxval)
    values = low + np.float32(maxval - minval) * rng.random(shape, dtype=np.float32)
    # Rounding `low + width * u` can reach `high`; the largest float32 below it is the true top.
    top = max(low, np.nextafter(high, np.float32(-np.inf)))
    return np.clip(values, low, top)


def orthogonal(rng: np.random.Generator, gain: float, *, shape: tuple[int, ...]) -> np.ndarray:
    """Draws a float32 `gain` times a Haar-random orthogonal matrix, leading dims flattened."""
    rows, cols = math.prod(shape[:-1]), shape[-1]
    if rows == 0 or cols == 0:
        return np.zeros(shape, np.float32)
    draw = rng.standard_normal((max(rows, cols), min(rows, cols)))  # float64: QR loses less
    q, r = np.linalg.qr(draw)
    # Fixing the signs of diag(r) makes Q uniformly (Haar) distributed, not just orthogonal.
    q = q * np.where(np.diagonal(r) < 0, -1.0, 1.0)
    if rows < cols:
        q = q.T
    return (gain * q).reshape(shape).astype(np.float32)
