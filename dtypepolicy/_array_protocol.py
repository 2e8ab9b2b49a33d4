"""How a Variable passes for an array: operators, array methods, and its place in JAX.

JAX 0.10 no longer calls `__jax_array__` when it abstracts a function argument, so an object
that is merely array-like fails inside every jitted `jax.numpy` function. A Variable is
therefore a registered pytree with one child, the value a read returns (through autocast and
any StatelessScope), and unflattening gives back that child as a plain array: a Variable that
enters `jax.jit`, `grad`, `vmap` or a `jnp` function arrives there as its value. `jax.lax`
primitives bind their arguments without flattening; a hook on JAX's argument canonicalization
reads a Variable there too (see `register`). docs/design.md says why this and not an array
type of JAX's own.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

# Methods of a jax.Array a user reaches for on a weight; each reads the value first.
_ARRAY_METHODS = (
    "all",
    "any",
    "argmax",
    "argmin",
    "clip",
    "conj",
    "cumprod",
    "cumsum",
    "dot",
    "flatten",
    "item",
    "max",
    "mean",
    "min",
    "prod",
    "ravel",
    "repeat",
    "reshape",
    "round",
    "squeeze",
    "std",
    "sum",
    "swapaxes",
    "take",
    "tolist",
    "transpose",
    "var",
)

_BINARY_OPERATORS = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "pow": operator.pow,
    "matmul": operator.matmul,
    "and": operator.and_,
    "or": operator.or_,
    "xor": operator.xor,
    "lshift": operator.lshift,
    "rshift": operator.rshift,
}

# Comparisons are elementwise, as for arrays (and as in Keras); identity stays the hash.
_COMPARISONS = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "eq": operator.eq,
    "ne": operator.ne,
}

_UNARY_OPERATORS = {"neg": operator.neg, "pos": operator.pos, "abs": operator.abs, "invert": operator.invert}


class ArrayBehaviour:
    """Array operators and methods for a class whose `value` property is its array."""

    __slots__ = ()
    # NumPy arrays defer to our reflected operators, so `np_array + variable` reads through autocast.
    __array_priority__ = 100

    value: Any

    @property
    def T(self) -> jax.Array:
        """The value (read like `.value`), transposed."""
        return self.value.T

    @property
    def mT(self) -> jax.Array:
        """The value (read like `.value`) with its last two axes swapped."""
        return self.value.mT

    @property
    def at(self) -> Any:
        """`jax.Array.at` of the value (read like `.value`): functional updates that return arrays."""
        return self.value.at

    def __jax_array__(self) -> jax.Array:
        return self.value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.value, dtype=dtype)

    def __getitem__(self, index: Any) -> jax.Array:
        if isinstance(index, tuple):
            index = tuple(map(_unwrap, index))
        return self.value[_unwrap(index)]

    def __iter__(self):
        return iter(self.value)

    def __bool__(self) -> bool:
        return bool(self.value)

    def __float__(self) -> float:
        return float(self.value)

    def __int__(self) -> int:
        return int(self.value)

    def __index__(self) -> int:
        return operator.index(self.value)


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, ArrayBehaviour) else value


def _binary(op: Callable) -> tuple[Callable, Callable]:
    def forward(self: ArrayBehaviour, other: Any) -> Any:
        return op(self.value, _unwrap(other))

    def reflected(self: ArrayBehaviour, other: Any) -> Any:
        return op(_unwrap(other), self.value)

    return forward, reflected


def _method(name: str) -> Callable:
    def reading(self: ArrayBehaviour, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.value, name)(*map(_unwrap, args), **kwargs)

    reading.__name__ = name
    reading.__doc__ = f"`jax.Array.{name}` of the value (read like `.value`)."
    return reading


for _name, _op in _BINARY_OPERATORS.items():
    _forward, _reflected = _binary(_op)
    setattr(ArrayBehaviour, f"__{_name}__", _forward)
    setattr(ArrayBehaviour, f"__r{_name}__", _reflected)
for _name, _op in _COMPARISONS.items():
    setattr(ArrayBehaviour, f"__{_name}__", _binary(_op)[0])
for _name, _op in _UNARY_OPERATORS.items():
    setattr(ArrayBehaviour, f"__{_name}__", lambda self, _op=_op: _op(self.value))
for _name in _ARRAY_METHODS:
    setattr(ArrayBehaviour, _name, _method(_name))
del _name, _op, _forward, _reflected


def _refuse_abstraction(variable: Any) -> Any:
    raise TypeError(
        f"JAX received Variable {variable.path!r} (shape {variable.shape}, dtype {variable.dtype}) where it needs "
        f"an array and cannot read a Variable. Pass `{variable.name}.value` (the read through autocast)."
    )


def register(cls: type) -> None:
    """Makes `cls` (with `value` and `path`) a pytree whose only leaf is its current read.

    The node carries no auxiliary data, so every Variable of one shape and read dtype gives the
    same tree structure and `jax.jit` reuses its compilation.
    """
    jax.tree_util.register_pytree_with_keys(
        cls,
        lambda variable: (((jax.tree_util.GetAttrKey("value"), variable.value),), None),
        lambda _, children: children[0],
        flatten_func=lambda variable: ((variable.value,), None),
    )
    # jax.lax primitives bind without flattening: their arguments are canonicalized one by one,
    # so a Variable is read there. Anything else that abstracts a raw Variable gets a clear
    # error instead of JAX's "abstractification" one. Both hooks are private: a JAX without
    # them keeps its own behaviour for lax, and the jax.numpy path (the pytree) is unaffected.
    try:
        from jax._src import core, dtypes
    except ImportError:  # pragma: no cover - depends on the JAX release
        return
    register_value = getattr(dtypes, "register_canonicalize_value_handler", None)
    if callable(register_value):
        register_value(cls, lambda variable: variable.value)
    mappings = getattr(core, "pytype_aval_mappings", None)
    if isinstance(mappings, dict):
        mappings[cls] = _refuse_abstraction
