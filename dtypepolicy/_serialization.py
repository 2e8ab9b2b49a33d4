"""Converting identifiers to policies, and policies to and from JSON-ready dicts."""

from __future__ import annotations

from typing import Any

from dtypepolicy._dtypes import standardize_dtype
from dtypepolicy._parse import QuantizedSpec, parse, plain_name
from dtypepolicy._policy import (
    DTypePolicy,
    QuantizedDTypePolicy,
    QuantizedFloat8DTypePolicy,
    current_default,
)

_CLASSES: dict[str, type] = {
    cls.__name__: cls for cls in (DTypePolicy, QuantizedDTypePolicy, QuantizedFloat8DTypePolicy)
}


def register_serializable(cls: type) -> type:
    """Lets `serialize`/`deserialize`/`get` handle another policy-like class by its name."""
    _CLASSES[cls.__name__] = cls
    return cls


def _policy_types() -> tuple[type, ...]:
    return tuple(_CLASSES.values())


def serialize(policy: Any) -> dict[str, Any]:
    """Returns a JSON-ready dict describing `policy`.

    Example:
      >>> serialize(DTypePolicy("mixed_bfloat16"))
      {'class_name': 'DTypePolicy', 'config': {'name': 'mixed_bfloat16'}}
    """
    if not isinstance(policy, _policy_types()):
        raise TypeError(
            f"serialize expects a dtype policy or DTypePolicyMap, received {policy!r} of type {type(policy).__name__}."
        )
    return {"class_name": type(policy).__name__, "config": policy.get_config()}


def deserialize(config: dict[str, Any]) -> Any:
    """Rebuilds a policy from the output of `serialize`.

    Example:
      >>> deserialize({"class_name": "DTypePolicy", "config": {"name": "bfloat16"}})
      <DTypePolicy "bfloat16">
    """
    if not isinstance(config, dict):
        raise TypeError(f"deserialize expects a dict from serialize(), received {config!r}.")
    class_name = config.get("class_name")
    inner = config.get("config")
    if class_name not in _CLASSES:
        raise ValueError(
            f"Cannot deserialize {config!r}: 'class_name' must be one of {sorted(_CLASSES)}, received {class_name!r}."
        )
    if not isinstance(inner, dict):
        raise ValueError(f"Cannot deserialize {config!r}: 'config' must be a dict, received {inner!r}.")
    return _CLASSES[class_name].from_config(inner)


def get(identifier: Any) -> Any:
    """Returns the policy an identifier stands for.

    Args:
      identifier: None (the current default), a policy or DTypePolicyMap (returned as is),
        a dict from `serialize`, a policy name, or a dtype-like (`jnp.bfloat16`, `float`).

    Raises:
      ValueError: a string or dict that names no policy.
      TypeError: any other kind of value.

    Example:
      >>> get("float8_from_mixed_bfloat16")
      <QuantizedFloat8DTypePolicy "float8_from_mixed_bfloat16">
    """
    if identifier is None:
        return current_default()
    if isinstance(identifier, _policy_types()):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        spec = parse(identifier)
        if not isinstance(spec, QuantizedSpec):
            return DTypePolicy(identifier)
        if spec.mode == "float8":
            return QuantizedFloat8DTypePolicy(spec.mode, plain_name(spec.source), recipe=spec.recipe)
        return QuantizedDTypePolicy(spec.mode, plain_name(spec.source))
    try:
        return DTypePolicy(standardize_dtype(identifier))
    except TypeError:
        raise TypeError(
            f"Expected a dtype policy identifier: None, a DTypePolicy, a DTypePolicyMap, a dict from "
            f"serialize(), a policy name such as 'mixed_bfloat16', or a dtype such as jnp.bfloat16; "
            f"received {identifier!r} of type {type(identifier).__name__}."
        ) from None
