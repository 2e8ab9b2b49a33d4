"""Layer configs: capturing constructor arguments so simple layers serialize themselves."""

from __future__ import annotations

import inspect
from typing import Any

_JSON_SCALARS = (str, int, float, bool, type(None))


def _is_plain(value: Any) -> bool:
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain(item) for key, item in value.items())
    return False


def capture_arguments(cls: type, args: tuple, kwargs: dict, handled: frozenset[str]) -> dict[str, Any] | None:
    """The constructor arguments by name, or None when some are not plain JSON values.

    Arguments named in `handled` are left out: the base class serializes those itself.
    """
    try:
        bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
    except TypeError:
        return None  # __init__ itself will raise the precise error
    arguments = dict(bound.arguments)
    arguments.pop(next(iter(arguments)))  # self
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD and name in arguments:
            arguments.update(arguments.pop(name))
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL and name in arguments:
            return None
    arguments = {key: value for key, value in arguments.items() if key not in handled}
    return arguments if all(_is_plain(value) for value in arguments.values()) else None


def check_config(cls: type, config: Any) -> dict[str, Any]:
    """Validates a config dict before `cls(**config)`, naming unknown keys."""
    if not isinstance(config, dict):
        raise TypeError(f"{cls.__name__}.from_config expects a dict, received {config!r}.")
    parameters = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return config
    unknown = sorted(set(config) - set(parameters))
    if unknown:
        raise ValueError(
            f"{cls.__name__}.from_config received unknown keys {unknown}; {cls.__name__}.__init__ "
            f"accepts {sorted(set(parameters) - {'self'})}. Override from_config if the config "
            f"keys differ from the constructor arguments."
        )
    return config
