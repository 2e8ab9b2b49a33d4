"""What a layer's `call` and `build` accept, read once per class from their signatures."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

_EMPTY = inspect.Parameter.empty


@dataclasses.dataclass(frozen=True)
class CallSignature:
    """The parts of a `call` signature the call pipeline needs."""

    signature: inspect.Signature
    accepts_training: bool
    training_default: Any
    accepts_mask: bool
    accepts_var_keyword: bool

    def bind(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        """Maps the given arguments to parameter names (no defaults filled in)."""
        return dict(self.signature.bind_partial(*args, **kwargs).arguments)


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
    return CallSignature(
        signature=signature,
        accepts_training=training is not None,
        training_default=None if training is None or training.default is _EMPTY else training.default,
        accepts_mask="mask" in parameters,
        accepts_var_keyword=any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()),
    )


@functools.cache
def build_parameters(build: Callable) -> tuple[str, ...]:
    """Names of an unbound `build` function's parameters after `self` (`*args` excluded)."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in _without_self(build).parameters.values() if p.kind in kinds)
