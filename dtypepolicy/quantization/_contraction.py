"""Contraction: how a projection layer multiplies its input by its kernel, as an einsum equation.

A quantization strategy needs the product itself (to run it on quantized operands) and which
axes it sums over (per-row and per-channel scales reduce over exactly those axes).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp


def _split(spec: str) -> tuple[str, str]:
    """The letters before and after the ellipsis (all letters are "before" without one)."""
    before, ellipsis, after = spec.partition("...")
    return (before, after) if ellipsis else (spec, "")


@dataclasses.dataclass(frozen=True)
class Contraction:
    """An einsum product `input, kernel -> output` (`"...i,io->...o"` for Dense).

    Args:
      equation: the einsum equation, input first and kernel second; `...` is allowed in the
        input and output.

    Example:
      >>> dense = Contraction("...i,io->...o")
      >>> dense.input_axes(3), dense.kernel_axes(2)
      ((2,), (0,))
    """

    equation: str

    def __post_init__(self) -> None:
        if not isinstance(self.equation, str) or self.equation.count("->") != 1 or self.equation.count(",") != 1:
            raise ValueError(
                f"Contraction expects an einsum equation 'input,kernel->output' such as '...i,io->...o', "
                f"received {self.equation!r}."
            )

    @functools.cached_property
    def _operands(self) -> tuple[str, str, str]:
        inputs, output = self.equation.replace(" ", "").split("->")
        x, kernel = inputs.split(",")
        return x, kernel, output

    @functools.cached_property
    def _summed(self) -> frozenset[str]:
        # Every letter missing from the output is summed, also one only the input (or only the
        # kernel) has: a per-row scale must be constant over it for the rescale to factor out.
        x, kernel, output = self._operands
        return frozenset((set(x) | set(kernel)) - set(output) - {"."})

    def _axes(self, spec: str, ndim: int) -> tuple[int, ...]:
        before, after = _split(spec)
        letters = len(before) + len(after)
        if ndim < letters or (ndim != letters and "..." not in spec):
            raise ValueError(
                f"An operand of rank {ndim} does not fit {spec!r} in the equation {self.equation!r}: "
                f"expected rank {letters}" + (" or more." if "..." in spec else ".")
            )
        axes = [i for i, letter in enumerate(before) if letter in self._summed]
        axes += [ndim - len(after) + i for i, letter in enumerate(after) if letter in self._summed]
        return tuple(axes)

    def input_axes(self, ndim: int) -> tuple[int, ...]:
        """The axes of an input of rank `ndim` that the product sums over."""
        return self._axes(self._operands[0], ndim)

    def kernel_axes(self, ndim: int) -> tuple[int, ...]:
        """The kernel axes the product sums over."""
        return self._axes(self._operands[1], ndim)

    def __call__(self, x: jax.Array, kernel: jax.Array, accumulation: str, precision: str | None = None) -> jax.Array:
        """The product, accumulated in `accumulation` (`"float32"`, `"int32"`)."""
        return jnp.einsum(self.equation, x, kernel, preferred_element_type=accumulation, precision=precision)


DENSE = Contraction("...i,io->...o")
