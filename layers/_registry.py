"""Name lookup and `{"class_name", "config"}` serialization for one kind of configurable object.

Initializers, regularizers and constraints follow one protocol: the constructor arguments are the
config, built-ins are found by a snake-case or a class name, and `get` turns any identifier into
an instance. `Configurable` is the base-class half of that protocol and `Registry` the lookup half;
each kind's module builds one `Registry` and keeps its public `get` and `serialize` as thin
documented functions on top of it.

Example:
  >>> class Shape(Configurable):
  ...     def __init__(self, sides=3):
  ...         self.sides = sides
  ...     def get_config(self):
  ...         return {"sides": self.sides}
  >>> class Circle(Configurable):
  ...     pass
  >>> shapes = Registry("shape", Shape, {"shape": Shape, "circle": Circle}, example="circle")
  >>> shapes.get({"class_name": "Shape", "config": {"sides": 4}})
  Shape(sides=4)
  >>> shapes.get("cirlce")  # doctest: +ELLIPSIS
  Traceback (most recent call last):
  ...
  ValueError: Unknown shape 'cirlce'. Expected one of shape, circle (...). Did you mean 'circle'?
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping
from typing import Any, Generic, Self, TypeVar

__all__ = ["Configurable", "Registry", "did_you_mean"]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Returns `" Did you mean 'x'?"` for the candidate closest to `name`, or `""` if none is close.

    Example:
      >>> did_you_mean("rleu", ["relu", "gelu"])
      " Did you mean 'relu'?"
    """
    hint = difflib.get_close_matches(name, list(candidates), n=1)
    return f" Did you mean {hint[0]!r}?" if hint else ""


class Configurable:
    """Base class for objects whose config is their constructor arguments.

    Subclasses with arguments override `get_config`; `from_config` passes the config back to the
    constructor, and `repr` shows it.

    Example:
      >>> class Scale(Configurable):
      ...     def __init__(self, factor=1.0):
      ...         self.factor = factor
      ...     def get_config(self):
      ...         return {"factor": self.factor}
      >>> Scale.from_config({"factor": 2.0})
      Scale(factor=2.0)
    """

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments as a JSON-ready dict."""
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Self:
        """Rebuilds an instance from the output of `get_config`."""
        if not isinstance(config, dict):
            raise TypeError(f"{cls.__name__}.from_config expects a dict, received {config!r}.")
        accepted = [name for name in inspect.signature(cls).parameters if name != "self"]
        unknown = sorted(set(config) - set(accepted))
        if unknown:
            raise ValueError(
                f"{cls.__name__}.from_config received unknown keys {unknown}; expected keys among {accepted}."
            )
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({args})"


T = TypeVar("T", bound=Configurable)


class Registry(Generic[T]):
    """The built-in classes of one kind, found by snake-case or class name.

    Args:
      noun: the kind in lower case, as error messages name it (`"initializer"`).
      base: the kind's base class; its instances pass through `get` unchanged.
      classes: snake-case name -> class, in the order error messages list them. Each class is
        also found by its `__name__`.
      example: a name error messages offer as an example.
      article: `"a"` or `"an"`, whichever goes before `noun` and `base.__name__`.
    """

    def __init__(
        self, noun: str, base: type[T], classes: Mapping[str, type[T]], example: str, article: str = "a"
    ) -> None:
        self._noun = noun
        self._base = base
        self._snake = dict(classes)
        self._by_name = {**self._snake, **{cls.__name__: cls for cls in self._snake.values()}}
        self._example = example
        self._article = article

    def class_for(self, name: str) -> type[T]:
        """Returns the class named `name`; raises ValueError listing the names otherwise."""
        if name not in self._by_name:
            class_names = ", ".join(cls.__name__ for cls in self._snake.values())
            raise ValueError(
                f"Unknown {self._noun} {name!r}. Expected one of {', '.join(self._snake)} "
                f"(or the class names {class_names}).{did_you_mean(name, self._by_name)}"
            )
        return self._by_name[name]

    def serialize(self, obj: T) -> dict[str, Any]:
        """Returns `{"class_name": ..., "config": ...}` for an instance of the base class."""
        if not isinstance(obj, self._base):
            raise TypeError(
                f"serialize expects {self._article} {self._base.__name__}, "
                f"received {obj!r} of type {type(obj).__name__}."
            )
        return {"class_name": type(obj).__name__, "config": obj.get_config()}

    def deserialize(self, config: dict[str, Any]) -> T:
        """Rebuilds an instance from the output of `serialize`."""
        kind = f"{self._article.capitalize()} {self._noun}"
        class_name = config.get("class_name")
        if not isinstance(class_name, str):
            raise ValueError(f"{kind} config needs a string 'class_name', received {config!r}.")
        inner = config.get("config", {})
        if not isinstance(inner, dict):
            raise ValueError(f"{kind} config needs a dict 'config', received {inner!r} in {config!r}.")
        return self.class_for(class_name).from_config(inner)

    def get(self, identifier: Any) -> Any:
        """Returns the object an identifier stands for.

        None and instances of the base class are returned as they are, a name gives the class
        built with its defaults, a dict is deserialized, a subclass of the base is instantiated
        with its defaults, and any other callable is returned as it is.

        Raises:
          ValueError: an unknown name or a malformed config dict.
          TypeError: anything else.
        """
        if identifier is None or isinstance(identifier, self._base):
            return identifier
        if isinstance(identifier, str):
            return self.class_for(identifier)()
        if isinstance(identifier, dict):
            return self.deserialize(identifier)
        if isinstance(identifier, type) and issubclass(identifier, self._base):
            return identifier()
        if callable(identifier):
            return identifier
        base = f"{self._article} {self._base.__name__}"
        raise TypeError(
            f"Cannot interpret {identifier!r} of type {type(identifier).__name__} as {self._article} {self._noun}. "
            f"Expected None, a name such as {self._example!r}, {base}, a config dict or a callable."
        )
