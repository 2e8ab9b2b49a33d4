"""Layers to and from JSON-ready dicts: `{"class_name": ..., "config": layer.get_config()}`.

Classes are found by name among every imported `Layer` subclass, so custom layers need no
registration; `custom_objects` settles names that two classes share.
"""

from __future__ import annotations

from typing import Any

from layers._base._layer import Layer


def serialize(layer: Layer) -> dict[str, Any]:
    """Returns `{"class_name": ..., "config": ...}` for a layer.

    Example:
      >>> from layers import Layer, serialize
      >>> serialize(Layer(name="x", dtype="mixed_bfloat16"))["config"]["dtype"]["config"]
      {'name': 'mixed_bfloat16'}
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"serialize expects a Layer, received {layer!r} of type {type(layer).__name__}.")
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def _all_layer_classes() -> list[type]:
    found, stack = [], [Layer]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


def _class_named(name: str, custom_objects: dict[str, type] | None) -> type:
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    matches = {cls for cls in _all_layer_classes() if cls.__name__ == name}
    if not matches:
        raise ValueError(
            f"Unknown layer class {name!r}. Import the module that defines it, or pass it in "
            f"custom_objects={{{name!r}: TheClass}}."
        )
    if len(matches) > 1:
        places = ", ".join(sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in matches))
        raise ValueError(f"Layer class name {name!r} is ambiguous ({places}); pass the one you mean in custom_objects.")
    return matches.pop()


def deserialize(config: dict[str, Any], custom_objects: dict[str, type] | None = None) -> Layer:
    """Rebuilds a layer from `serialize` output (weights are not part of it).

    Example:
      >>> from layers import Layer, deserialize, serialize
      >>> deserialize(serialize(Layer(name="copy"))).name
      'copy'
    """
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ValueError(f"A layer config needs a string 'class_name' and a dict 'config', received {config!r}.")
    inner = config.get("config")
    if not isinstance(inner, dict):
        raise ValueError(f"A layer config needs a dict 'config', received {inner!r} in {config!r}.")
    return _class_named(config["class_name"], custom_objects).from_config(inner)
