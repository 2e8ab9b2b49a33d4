"""Dropout: zero inputs at random while training, with the random state held in a variable.

The state is a non-trainable `uint32` variable holding raw PRNG key data. Every training call
splits the key, draws the mask with one half and writes the other half back, so the layer is
seeded, reproducible and a pure function under `stateless_call`: the new state comes back
among the non-trainable values, ready to be fed to the next step.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from layers import _random
from layers._base._layer import Layer
from layers._builtin._training_flag import check_training

__all__ = ["Dropout"]


@functools.partial(jax.jit, static_argnames=("rate", "noise_shape"))
def _dropout(state: jax.Array, inputs: jax.Array, rate: float, noise_shape: tuple[int, ...]) -> tuple:
    """Returns the dropped-out inputs and the key data of the next state.

    One compiled dispatch per eager call; inside a caller's jit it inlines. `rate` is static so
    the scale is an exact float64 constant rounded once to the input dtype.
    """
    next_key, mask_key = jax.random.split(jax.random.wrap_key_data(state))
    keep = jax.random.bernoulli(mask_key, 1.0 - rate, noise_shape)
    scale = jnp.asarray(1.0 / (1.0 - rate), inputs.dtype)
    # `where`, not a multiply by the mask: dropped entries are exactly 0 even where the input is
    # inf or NaN, and never -0.0.
    outputs = jnp.where(keep, inputs * scale, jnp.zeros((), inputs.dtype))
    return outputs, jax.random.key_data(next_key)


def _check_rate(rate: Any) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise TypeError(f"Dropout rate must be a float in [0, 1), received {rate!r} of type {type(rate).__name__}.")
    if not (math.isfinite(rate) and 0 <= rate < 1):
        raise ValueError(
            f"Dropout rate must be a float in [0, 1), received rate={rate!r}. "
            f"(rate=1 would drop every input and leave nothing to rescale.)"
        )
    return float(rate)


def _check_noise_shape(noise_shape: Any) -> tuple[int | None, ...] | None:
    if noise_shape is None:
        return None
    message = (
        f"Dropout noise_shape must be None or a tuple of positive ints and Nones (None: the input's size "
        f"on that axis), received {noise_shape!r}."
    )
    if not isinstance(noise_shape, (tuple, list)):
        raise TypeError(message)
    for dim in noise_shape:
        if dim is None:
            continue
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise TypeError(message)
        if dim < 1:
            raise ValueError(message)
    return tuple(None if dim is None else int(dim) for dim in noise_shape)


class Dropout(Layer):
    """Sets each input to 0 with probability `rate` while training and scales the rest up.

    Survivors are multiplied by `1 / (1 - rate)`, so the expected value of every entry is
    unchanged. Outside training (or with `rate=0`) the layer returns its input.

    Numerics: the mask multiply runs in the input's dtype (the compute dtype), as every
    elementwise op does: `1 / (1 - rate)` is computed in float64, rounded once to that dtype,
    and the product is rounded once more. Outputs are never upcast.

    Random state: a non-trainable `uint32` variable (`seed_generator_state`, raw PRNG key data,
    `autocast=False`) created in `__init__`. Each training call splits it, uses one half for the
    mask and stores the other, so consecutive calls draw different masks and two layers with the
    same `seed` draw the same sequence. Under `jax.jit`, use `stateless_call`: the new state is
    returned with the non-trainable values, and passing it to the next step advances the
    sequence (passing the old one again repeats the old mask). With `seed=None` the initial key
    comes from the process-wide generator that unseeded initializers use, so
    `layers.initializers.set_random_seed` makes unseeded dropout reproducible too. With
    `rate=0` the layer has no state at all, as in Keras.

    Args:
      rate: the probability of dropping each entry, in `[0, 1)`.
      noise_shape: the shape of the mask, broadcast against the input: `(batch, 1, features)`
        drops whole feature vectors across time. `None` entries take the input's size on that
        axis. Each entry must be 1 or the input's size.
      seed: an int in `[0, 2**32)` for a reproducible sequence of masks, or None.
      **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`, ...).

    `training` must be a Python bool, `np.bool_` or None (static under `jax.jit`); anything else,
    a string such as `"false"` included, is a `TypeError`. Masks pass through unchanged.

    Example:
      >>> layer = Dropout(0.5, seed=0, dtype="mixed_bfloat16")
      >>> x = jnp.ones((2, 4), jnp.bfloat16)
      >>> bool(jnp.all(layer(x) == x))  # not training: identity
      True
      >>> y = layer(x, training=True)
      >>> y.dtype, sorted(set(np.asarray(y, np.float32).ravel().tolist()))
      (dtype(bfloat16), [0.0, 2.0])
    """

    def __init__(
        self,
        rate: float,
        noise_shape: tuple[int | None, ...] | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rate = _check_rate(rate)
        self.noise_shape = _check_noise_shape(noise_shape)
        self.seed = _random.check_seed(seed, "Dropout seed")
        self.supports_masking = True
        self.seed_generator_state = None
        if self.rate > 0:
            key = _random.GLOBAL_SEEDS.next_key() if self.seed is None else jax.random.key(self.seed)
            key_data = jax.random.key_data(key)
            self.seed_generator_state = self.add_state(
                lambda shape, dtype: key_data, key_data.shape, key_data.dtype, "seed_generator_state"
            )
        # Nothing depends on the input shape: built now, so stateless_call works before a call.
        self.build(None)

    def call(self, inputs: jax.Array, training: bool = False) -> jax.Array:
        """Returns `inputs`, or when training, `inputs` with entries dropped and survivors scaled."""
        training = check_training(training, f"Dropout {self.name!r}")
        if not training or self.rate == 0:
            return inputs
        inputs = jnp.asarray(inputs)
        if not jnp.issubdtype(inputs.dtype, jnp.floating):
            raise TypeError(
                f"Dropout {self.name!r} needs floating inputs when training, received dtype {inputs.dtype}."
            )
        outputs, state = _dropout(
            self.seed_generator_state.value, inputs, rate=self.rate, noise_shape=self._resolve_noise_shape(inputs.shape)
        )
        self.seed_generator_state.assign(state)
        return outputs

    def _resolve_noise_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.noise_shape is None:
            return tuple(input_shape)
        if len(self.noise_shape) != len(input_shape):
            raise ValueError(
                f"Dropout {self.name!r}: noise_shape {self.noise_shape} has {len(self.noise_shape)} entries, but the "
                f"input has shape {tuple(input_shape)} ({len(input_shape)} axes)."
            )
        resolved = tuple(size if dim is None else dim for dim, size in zip(self.noise_shape, input_shape, strict=True))
        if any(dim not in (1, size) for dim, size in zip(resolved, input_shape, strict=True)):
            raise ValueError(
                f"Dropout {self.name!r}: noise_shape {self.noise_shape} does not broadcast to the input shape "
                f"{tuple(input_shape)}; each entry must be None, 1 or the input's size on that axis."
            )
        return resolved

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments: `rate`, `noise_shape` and `seed`, plus the base config."""
        noise_shape = None if self.noise_shape is None else list(self.noise_shape)
        return {**super().get_config(), "rate": self.rate, "noise_shape": noise_shape, "seed": self.seed}
