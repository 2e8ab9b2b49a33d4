"""Weight initializers: callables `(shape, dtype=None) -> jax.Array` with Keras 3 semantics.

Random initializers draw in float32 and cast once to the requested dtype, so a bfloat16 weight is
the rounded float32 draw, never a draw made with 8 bits of mantissa.

Seeds: an initializer built with an int `seed` is stateless and returns the same values on every
call with the same shape, eagerly and under `jax.jit` alike. One built with `seed=None` takes a
fresh stream from a process-wide generator on every call, so two layers sharing it still get
different weights; `set_random_seed` resets that generator to make a whole run reproducible. The
generator's state is a Python counter, advanced when the initializer runs in Python: inside
`jax.jit` that is at trace time, so a compiled function replays the values it drew then.

Draws are made on the host with NumPy (PCG64), not with `jax.random`: nothing is compiled per
weight shape, which keeps building a model cheap. The values for a given seed therefore differ
from `jax.random`'s and Keras's; the distributions are the same.

Example:
  >>> from layers import initializers
  >>> init = initializers.get("glorot_uniform")
  >>> init((3, 4), "bfloat16").dtype
  dtype(bfloat16)
"""

from __future__ import annotations

from typing import Any

from layers import _random
from layers._registry import Registry
from layers.initializers._base import Initializer
from layers.initializers._constant_initializers import Constant, Ones, Zeros
from layers.initializers._random_initializers import Orthogonal, RandomNormal, RandomUniform, TruncatedNormal
from layers.initializers._variance_scaling import (
    GlorotNormal,
    GlorotUniform,
    HeNormal,
    HeUniform,
    LecunNormal,
    LecunUniform,
    VarianceScaling,
)

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
