"""What a layer's `call` and `build` accept, read once per class from their signatures."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

_EMPTY = inspect.Parameter.empty
_NAMED = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)

# The build parameter that receives the first input's shape (`build(self, input_shape)`).
FIRST_INPUT = "<first input>"


@dataclasses.dataclass(frozen=True)
class CallSignature:
    """The parts of a `call` signature the call pipeline needs.

    Attributes:
      mask_arguments: `(argument, "<argument>_mask")` pairs: call parameters that receive the
        mask of another call argument, as in Keras 3 (`call(self, x1, x2, x1_mask=None)`).
    """

    signature: inspect.Signature
    accepts_training: bool
    training_default: Any
    accepts_mask: bool
    accepts_var_keyword: bool
    mask_arguments: tuple[tuple[str, str], ...] = ()

    def bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        """Maps the given arguments to parameter names (no defaults filled in).

        Keyword arguments collected by a `**kwargs` parameter are listed by their own names.
        """
        arguments = self.signature.bind_partial(*args, **kwargs).arguments
        bound: dict[str, Any] = {}
        for name, value in arguments.items():
            if self.signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                bound.update(value)
            else:
                bound[name] = value
        return bound

    @property
    def argument_names(self) -> tuple[str, ...]:
        """The named parameters of `call` (`*args` and `**kwargs` excluded)."""
        return tuple(name for name, p in self.signature.parameters.items() if p.kind in _NAMED)


def _without_self(function: Callable) -> inspect.Signature:
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    return signature.replace(parameters=parameters[1:])


@functools.cache
def call_signature(call: Callable) -> CallSignature:
    """The signature facts for an unbound `call` function."""
    signature = _without_self(call)
    parameters = signature.parameters
    training = parameters.get("training")
    named = [name for name, p in parameters.items() if p.kind in _NAMED]
    return CallSignature(
        signature=signature,
        accepts_training=training is not None,
        training_default=None if training is None or training.default is _EMPTY else training.default,
        accepts_mask="mask" in parameters,
        accepts_var_keyword=any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()),
        mask_arguments=tuple(
            (name, f"{name}_mask") for name in named if f"{name}_mask" in named and name not in ("mask", "training")
        ),
    )


@functools.cache
def build_parameters(build: Callable) -> tuple[str, ...]:
    """Names of an unbound `build` function's parameters after `self` (`*args` excluded)."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in _without_self(build).parameters.values() if p.kind in kinds)


def _var_positional(function: Callable) -> str | None:
    """The name of a function's `*args` parameter, or None."""
    kind = inspect.Parameter.VAR_POSITIONAL
    return next((p.name for p in inspect.signature(function).parameters.values() if p.kind is kind), None)


@functools.cache
def build_plan(build: Callable, call: Callable) -> tuple[str, ...]:
    """For each `build` parameter, the call argument whose shape it receives (Keras 3's rule).

    The same rule matches the parameters of `compute_output_shape`.

    One parameter named `<argument>_shape` after a call argument gets that argument's shape;
    one parameter of any other name (`input_shape`) gets the first input's (`FIRST_INPUT`).
    With several parameters each must be `<argument>_shape` for an argument of `call` (or
    for a keyword that `**kwargs` may collect); anything else is a `ValueError`, never a
    silent match by position. A `*rest` parameter next to named ones would receive nothing
    and is a `ValueError` too; a `build(self, *args)` with no named parameter (a wrapper that
    forwards to `super().build`) receives the first input's shape, as one `input_shape` would.
    """
    parameters = build_parameters(build)
    facts = call_signature(call)
    names = facts.argument_names
    what = "compute_output_shape" if getattr(build, "__name__", "") == "compute_output_shape" else "build"
    inputs = [name for name in names if name not in ("training", "mask") and not name.endswith("_mask")]
    example = f"{what}(self, {', '.join(f'{name}_shape' for name in (inputs[:2] or ['x', 'y']))})"
    rest = _var_positional(build)
    if rest is not None:
        if not parameters:
            return (FIRST_INPUT,)
        raise ValueError(
            f"{what}() parameter '*{rest}' after {parameters} would receive nothing: {what}() receives shapes "
            f"by name, never by position, one '<call argument>_shape' parameter per call argument (e.g. {example}), "
            f"or the first input's shape in a single parameter ({what}(self, input_shape)). Name each shape "
            f"{what}() needs instead of '*{rest}'."
        )

    def argument_of(parameter: str) -> str | None:
        if not parameter.endswith("_shape"):
            return None
        argument = parameter[: -len("_shape")]
        return argument if argument in names or facts.accepts_var_keyword else None

    if len(parameters) == 1:
        (parameter,) = parameters
        argument = parameter[: -len("_shape")] if parameter.endswith("_shape") else None
        return (argument if argument in names else FIRST_INPUT,)
    plan = []
    for parameter in parameters:
        argument = argument_of(parameter)
        if argument is None:
            reason = (
                f"{parameter!r} does not end in _shape"
                if not parameter.endswith("_shape")
                else f"{parameter!r} names no call() argument {parameter[: -len('_shape')]!r}"
            )
            raise ValueError(
                f"{what}() parameters {parameters} do not match call() arguments {names}: {reason}. A {what}() "
                f"with more than one parameter receives each call argument's shape by name, so every parameter "
                f"must be '<call argument>_shape'{f' (e.g. {example})' if inputs else ''}, as in Keras 3; "
                f"{_one_parameter_form(what, inputs, _var_positional(call))}."
            )
        plan.append(argument)
    return tuple(plan)


def _one_parameter_form(what: str, inputs: list[str], var_positional: str | None) -> str:
    """How a one-parameter `build` / `compute_output_shape` would receive the inputs of this `call`."""
    if var_positional is not None and not inputs:
        return (
            f"call() takes its inputs as *{var_positional}, which have no names to match: use "
            f"{what}(self, input_shape) with one parameter, which receives a tuple with one shape per "
            f"positional input"
        )
    note = f" (the inputs in call()'s *{var_positional} have no names to match)" if var_positional else ""
    return f"a {what}(self, input_shape) with one parameter receives the first input's shape{note}"
