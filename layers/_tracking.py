"""Tracking: finding the variables and sublayers a layer owns, in the order it got them.

A layer records state when it is assigned as an attribute, directly or inside lists,
tuples and dicts. Lists and dicts are replaced by tracked copies so that state appended
later is recorded too. Once a layer is built its tracker is locked: new state is an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dtypepolicy import Variable


class Trackable:
    """Base of objects whose attributes are tracked (the Layer class)."""

    __slots__ = ()

    def _track(self, value: Any) -> None:  # pragma: no cover - Layer implements it
        raise NotImplementedError


def iter_state(value: Any, _seen: set[int] | None = None) -> Iterator[Any]:
    """Yields the Variables and Trackables in `value`, looking inside lists, tuples and dicts."""
    if isinstance(value, (Variable, Trackable)):
        yield value
        return
    if isinstance(value, (list, tuple, dict)):
        seen = set() if _seen is None else _seen
        if id(value) in seen:
            return
        seen.add(id(value))
        items = value.values() if isinstance(value, dict) else value
        for item in items:
            yield from iter_state(item, seen)


def contains_state(value: Any) -> bool:
    """Whether `value` holds any Variable or Trackable."""
    return next(iter_state(value), None) is not None


class TrackedList(list):
    """A list that reports state added to it to its owning layer."""

    def __init__(self, items: Any, owner: Trackable) -> None:
        super().__init__(wrap(item, owner) for item in items)
        self._owner = owner

    def _add(self, value: Any) -> Any:
        self._owner._track(value)
        return wrap(value, self._owner)

    def append(self, value: Any) -> None:
        """Appends and tracks `value`."""
        super().append(self._add(value))

    def insert(self, index: int, value: Any) -> None:
        """Inserts and tracks `value`."""
        super().insert(index, self._add(value))

    def extend(self, values: Any) -> None:
        """Extends and tracks every value."""
        super().extend([self._add(value) for value in values])

    def __iadd__(self, values: Any) -> TrackedList:
        self.extend(values)
        return self

    def __setitem__(self, index: Any, value: Any) -> None:
        value = [self._add(item) for item in value] if isinstance(index, slice) else self._add(value)
        super().__setitem__(index, value)


class TrackedDict(dict):
    """A dict that reports state added to it to its owning layer."""

    def __init__(self, items: Any, owner: Trackable) -> None:
        super().__init__((key, wrap(value, owner)) for key, value in dict(items).items())
        self._owner = owner

    def __setitem__(self, key: Any, value: Any) -> None:
        self._owner._track(value)
        super().__setitem__(key, wrap(value, self._owner))

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Updates and tracks every value."""
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """Tracks `default` when it is inserted."""
        if key not in self:
            self[key] = default
        return self[key]


def wrap(value: Any, owner: Trackable) -> Any:
    """Replaces plain lists and dicts (at any depth) by tracked ones owned by `owner`."""
    if type(value) is list:
        return TrackedList(value, owner)
    if type(value) is dict:
        return TrackedDict(value, owner)
    if type(value) is tuple and any(isinstance(item, (list, dict)) for item in value):
        return tuple(wrap(item, owner) for item in value)
    return value


def unique(items: Iterator[Any]) -> list[Any]:
    """Items in first-seen order, each once (compared by identity)."""
    seen: set[int] = set()
    result = []
    for item in items:
        if id(item) not in seen:
            seen.add(id(item))
            result.append(item)
    return result
