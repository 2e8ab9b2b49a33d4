"""EinsumDense: a dense layer whose product is an einsum equation, with Keras 3 semantics.

The equation is parsed once, at construction, into an `_Equation`; `build` then turns the input
shape into the kernel, bias and output shapes. The product accumulates in float32 and the bias
joins the accumulator before the one rounding to the compute dtype (SPEC §5), as in `Dense`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from dtypepolicy.quantization import Contraction
from layers import activations
from layers._base._input_spec import InputSpec
from layers._base._layer import Layer
from layers._builtin._arguments import set_weight_arguments, weight_arguments_config
from layers._builtin._dense import project, projection_forward, restore_input_autocast

__all__ = ["EinsumDense"]

_FORMS = "'ab,bc->ac', '...b,bc->...c' or 'ab...,bc->ac...'"
_OPERAND = re.compile(r"^(\.\.\.)?([a-zA-Z]*)(\.\.\.)?$")


@dataclasses.dataclass(frozen=True)
class _Equation:
    """An equation split into letters; `ellipsis` is "left", "right" or None."""

    inputs: str
    kernel: str
    outputs: str
    ellipsis: str | None

    @property
    def given(self) -> str:
        """The output letters whose sizes `output_shape` lists, in order.

        Without a leading ellipsis the first output letter is the batch axis, which
        `output_shape` leaves out; with one, the batch axis is inside the ellipsis.
        """
        return self.outputs if self.ellipsis == "left" else self.outputs[1:]


@functools.lru_cache(maxsize=256)
def _forward_for(equation: str) -> Any:
    """The jitted projection for one equation (one partial per equation, not one per call)."""
    return functools.partial(projection_forward, equation)


def _split_operand(operand: str, what: str, equation: str) -> tuple[str, str | None]:
    match = _OPERAND.match(operand)
    if match is None or (match.group(1) and match.group(3)):
        raise ValueError(
            f"EinsumDense equation {equation!r}: the {what} {operand!r} must be letters with at most one "
            f"'...' at its start or its end. Expected the form {_FORMS}."
        )
    side = "left" if match.group(1) else "right" if match.group(3) else None
    return match.group(2), side


def _parse_equation(equation: Any) -> _Equation:
    if not isinstance(equation, str):
        raise TypeError(f"EinsumDense equation must be a string such as 'ab,bc->ac', received {equation!r}.")
    left, arrow, outputs = equation.partition("->")
    operands = left.split(",")
    if not arrow or len(operands) != 2:
        raise ValueError(
            f"Invalid EinsumDense equation {equation!r}: expected two operands (the input and the kernel) "
            f"and an output, in the form {_FORMS}."
        )
    inputs, input_side = _split_operand(operands[0], "input", equation)
    kernel, kernel_side = _split_operand(operands[1], "kernel", equation)
    outputs, output_side = _split_operand(outputs, "output", equation)
    if kernel_side is not None or not kernel:
        raise ValueError(f"EinsumDense equation {equation!r}: the kernel {operands[1]!r} must be letters only.")
    if input_side != output_side:
        raise ValueError(
            f"EinsumDense equation {equation!r}: the input and the output must both have '...' at the same end, "
            f"or neither. Expected the form {_FORMS}."
        )
    for what, letters in (("input", inputs), ("kernel", kernel), ("output", outputs)):
        repeated = sorted({letter for letter in letters if letters.count(letter) > 1})
        if repeated:
            raise ValueError(f"EinsumDense equation {equation!r}: the {what} repeats the letter(s) {repeated}.")
    for letter in outputs:
        if letter not in inputs and letter not in kernel:
            raise ValueError(
                f"EinsumDense equation {equation!r}: output letter {letter!r} appears in neither the input "
                f"{inputs!r} nor the kernel {kernel!r}."
            )
    for letter in kernel:
        if letter not in inputs and letter not in outputs:
            raise ValueError(
                f"EinsumDense equation {equation!r}: kernel letter {letter!r} appears in neither the input "
                f"{inputs!r} nor the output {outputs!r}, so its size is unknown."
            )
    if input_side != "left" and not (inputs and outputs and inputs[0] == outputs[0]):
        raise ValueError(
            f"EinsumDense equation {equation!r}: without a leading '...' the first input letter is the batch "
            f"axis and must also be the first output letter (as in 'abc,cd->abd')."
        )
    return _Equation(inputs, kernel, outputs, input_side)


def _parse_output_shape(output_shape: Any, parsed: _Equation) -> tuple[int | None, ...]:
    entries = (output_shape,) if isinstance(output_shape, (int, np.integer)) else output_shape
    if not isinstance(entries, (tuple, list)):
        raise TypeError(
            f"EinsumDense output_shape must be a positive int or a tuple of positive ints and Nones, "
            f"received {output_shape!r} of type {type(output_shape).__name__}."
        )
    valid = all(
        entry is None
        or (isinstance(entry, (int, np.integer)) and not isinstance(entry, (bool, np.bool_)) and entry > 0)
        for entry in entries
    )
    if not valid:
        raise ValueError(
            f"EinsumDense output_shape must be a positive int or a tuple of positive ints and Nones, "
            f"received {output_shape!r}."
        )
    entries = tuple(None if entry is None else int(entry) for entry in entries)
    if len(entries) != len(parsed.given):
        where = "" if parsed.ellipsis == "left" else " (all output letters but the batch letter)"
        raise ValueError(
            f"EinsumDense output_shape {output_shape!r} has {len(entries)} entries, but the output letters "
            f"{parsed.given!r}{where} need {len(parsed.given)}."
        )
    for letter, size in zip(parsed.given, entries, strict=True):
        if size is None and letter not in parsed.inputs:
            raise ValueError(
                f"EinsumDense output_shape {output_shape!r} gives None for output letter {letter!r}, which comes "
                f"from the kernel, not the input; give its size."
            )
    return entries


def _parse_bias_axes(bias_axes: Any, parsed: _Equation) -> str | None:
    if bias_axes is None:
        return None
    if not isinstance(bias_axes, str):
        raise TypeError(
            f"EinsumDense bias_axes must be None or a string of output letters, received {bias_axes!r} "
            f"of type {type(bias_axes).__name__}."
        )
    if not bias_axes:
        raise ValueError("EinsumDense bias_axes must be None or a non-empty string of letters, received ''.")
    for letter in bias_axes:
        if letter not in parsed.outputs:
            raise ValueError(
                f"EinsumDense bias_axes {bias_axes!r}: letter {letter!r} is not in the output {parsed.outputs!r}."
            )
        if bias_axes.count(letter) > 1:
            raise ValueError(f"EinsumDense bias_axes {bias_axes!r} repeats the letter {letter!r}.")
    return bias_axes


class EinsumDense(Layer):
    """A dense layer computing `activation(einsum(equation, inputs, kernel) + bias)`.

    `equation` has the input as its first operand and the kernel as its second:
    `"ab,bc->ac"` (a `Dense`), `"abc,cde->abde"` (a projection to heads) or with an ellipsis
    on the same end of the input and the output, `"...b,bc->...c"` or `"ab...,bc->ac..."`.
    The kernel's shape follows from the equation: each kernel letter takes its size from the
    input, or else from `output_shape`. The product accumulates in float32 and the bias is added
    to the accumulator before the one rounding to the compute dtype.

    Args:
      equation: the einsum equation, input first, kernel second.
      output_shape: the output sizes without the batch axis and the ellipsis axes: an int or
        a tuple with one entry per output letter (all output letters but the first, or all
        of them after a leading `...`). `None` takes the size from the input.
      activation: an activation name, function or None (linear).
      bias_axes: the output letters the bias spans (`"de"`); it broadcasts over the others.
        None means no bias.
      kernel_initializer: initializer of the kernel.
      bias_initializer: initializer of the bias.
      kernel_regularizer: optional regularizer of the kernel.
      bias_regularizer: optional regularizer of the bias.
      kernel_constraint: optional constraint of the kernel.
      bias_constraint: optional constraint of the bias.
      **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`, `autocast`, ...).

    Raises:
      ValueError: a malformed equation, `output_shape` or `bias_axes` (the message says which
        letter or entry is wrong), or, at build, an input shape that does not fit the equation.
      TypeError: an argument of the wrong type.

    Example:
      >>> from layers import EinsumDense
      >>> layer = EinsumDense("abc,cde->abde", output_shape=(None, 2, 8), bias_axes="de",
      ...                     dtype="mixed_bfloat16")
      >>> y = layer(np.ones((4, 5, 16)))
      >>> y.shape, y.dtype, layer.kernel.shape, layer.bias.shape
      ((4, 5, 2, 8), dtype(bfloat16), (16, 2, 8), (2, 8))
    """

    _autocast_inputs = False  # `project` casts inside the jitted forward
    _quantization_modes = ("int8", "float8")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        restore_input_autocast(cls)

    def __init__(
        self,
        equation: str,
        output_shape: int | tuple[int | None, ...],
        activation: str | Callable[..., Any] | None = None,
        bias_axes: str | None = None,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._equation = _parse_equation(equation)
        self.equation = equation
        self.partial_output_shape = _parse_output_shape(output_shape, self._equation)
        self.bias_axes = _parse_bias_axes(bias_axes, self._equation)
        self.activation = activations.get(activation)
        set_weight_arguments(self, "kernel", kernel_initializer, kernel_regularizer, kernel_constraint)
        set_weight_arguments(self, "bias", bias_initializer, bias_regularizer, bias_constraint)

    def _shapes(self, input_shape: tuple) -> tuple[tuple, tuple | None, tuple, dict[int, int]]:
        """Kernel shape, bias shape, full output shape and the input axes the kernel fixes."""
        eq = self._equation
        rank, explicit = len(input_shape), len(eq.inputs)
        elided = rank - explicit
        if elided < 0 or (elided and eq.ellipsis is None):
            expected = f"rank {explicit}" if eq.ellipsis is None else f"rank >= {explicit}"
            raise ValueError(
                f"EinsumDense layer {self.name!r} with equation {self.equation!r} expects inputs of {expected}, "
                f"received input_shape={input_shape}."
            )
        offset = elided if eq.ellipsis == "left" else 0
        axis_of = {letter: offset + i for i, letter in enumerate(eq.inputs)}
        given = dict(zip(eq.given, self.partial_output_shape, strict=True))
        sizes: dict[str, int | None] = {}
        for letter in eq.outputs:
            from_input = input_shape[axis_of[letter]] if letter in axis_of else None
            stated = given.get(letter)
            if from_input is not None and stated is not None and from_input != stated:
                raise ValueError(
                    f"EinsumDense layer {self.name!r}: output_shape gives {stated} for letter {letter!r}, but the "
                    f"input has {from_input} on that axis (input_shape={input_shape}, equation {self.equation!r})."
                )
            sizes[letter] = from_input if from_input is not None else stated
        for letter in eq.kernel:
            if letter in axis_of:
                sizes[letter] = input_shape[axis_of[letter]]
                if sizes[letter] is None:
                    raise ValueError(
                        f"EinsumDense layer {self.name!r} needs the size of input axis {axis_of[letter]} (letter "
                        f"{letter!r}) to create its kernel, received input_shape={input_shape}."
                    )
        kernel_shape = tuple(sizes[letter] for letter in eq.kernel)
        explicit_output = tuple(sizes[letter] for letter in eq.outputs)
        if eq.ellipsis == "left":
            output_shape = tuple(input_shape[:elided]) + explicit_output
        else:
            output_shape = explicit_output + tuple(input_shape[explicit:])
        bias_shape = None
        if self.bias_axes is not None:
            # As Keras: the bias spans the output from its first bias letter to the end, with
            # size 1 on the other letters, so it broadcasts from the right.
            first = min(eq.outputs.index(letter) for letter in self.bias_axes)
            bias_shape = tuple(sizes[letter] if letter in self.bias_axes else 1 for letter in eq.outputs[first:])
            if eq.ellipsis == "right":
                bias_shape += (1,) * elided
            if None in bias_shape:
                raise ValueError(
                    f"EinsumDense layer {self.name!r}: bias_axes {self.bias_axes!r} include an axis whose size is "
                    f"unknown in input_shape={input_shape}; a bias needs fixed sizes."
                )
        fixed_axes = {axis_of[letter]: sizes[letter] for letter in eq.kernel if letter in axis_of}
        return kernel_shape, bias_shape, output_shape, fixed_axes

    def build(self, input_shape: Any) -> None:
        """Creates `kernel` (and `bias` when `bias_axes` is set) from the input shape."""
        input_shape = tuple(input_shape)
        kernel_shape, bias_shape, output_shape, fixed_axes = self._shapes(input_shape)
        self.full_output_shape = output_shape
        self.kernel = self.add_weight(
            shape=kernel_shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            name="kernel",
        )
        self.bias = None
        if bias_shape is not None:
            self.bias = self.add_weight(
                shape=bias_shape,
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                name="bias",
            )
        self.input_spec = InputSpec(ndim=len(input_shape), axes=fixed_axes)

    def call(self, inputs: jax.Array, training: bool | None = None) -> jax.Array:
        """Returns `activation(einsum(equation, inputs, kernel) + bias)` in the compute dtype.

        `training` matters to float8 layers only: their scales advance in training steps.
        """
        return project(self, inputs, _forward_for(self.equation), training)

    def _contraction(self) -> Contraction:
        return Contraction(self.equation)

    def get_config(self) -> dict[str, Any]:
        """The base config plus every constructor argument, serialized for JSON.

        Raises:
          ValueError: the activation is a custom function, which has no name to serialize.
        """
        return {
            **super().get_config(),
            "equation": self.equation,
            "output_shape": list(self.partial_output_shape),
            "activation": activations.serialize(self.activation),
            "bias_axes": self.bias_axes,
            **weight_arguments_config(self, "kernel", "bias"),
        }
