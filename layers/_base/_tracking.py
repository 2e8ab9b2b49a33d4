"""Tracking: finding the variables and sublayers a layer owns, in the order it got them.

A layer records state when it is assigned as an attribute, directly or inside lists,
tuples and dicts. Lists and dicts are replaced by tracked copies so that state added later
is recorded too, and state removed from them (or from an attribute) is forgotten unless the
layer still holds it somewhere else. Once a layer is built its tracker is locked: new state
is an error (removing state is allowed).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

from dtypepolicy import Variable

_MISSING = object()


class Trackable:
    """Base of objects whose attributes are tracked (the Layer class)."""

    __slots__ = ()

    def _track(self, value: Any) -> None:  # pragma: no cover - Layer implements it
        raise NotImplementedError

    def _untrack(self, value: Any) -> None:  # pragma: no cover - Layer implements it
        raise NotImplementedError


# --- tracking order across layers ----------------------------------------------------------
# Every "layer A starts tracking layer B" event gets a number, so that a layer tracked by
# several owners knows which came last. Restored pickles bump the counter past their numbers.

_sequence_lock = threading.Lock()
_next_sequence = 0


def next_sequence() -> int:
    """A number larger than every number handed out or restored so far."""
    global _next_sequence
    with _sequence_lock:
        number = _next_sequence
        _next_sequence += 1
    return number


def observe_sequence(number: int) -> None:
    """Records a number restored from a pickle: later events get larger numbers."""
    global _next_sequence
    with _sequence_lock:
        _next_sequence = max(_next_sequence, number + 1)


# --- walking values --------------------------------------------------------------------------


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


def may_hold_state(value: Any) -> bool:
    """A cheap test: only these kinds of values can hold tracked state once assigned."""
    return isinstance(value, (Variable, Trackable, TrackedList, TrackedDict, tuple))


# --- finding an item -------------------------------------------------------------------------
# A Variable's `==` is elementwise (an array, or a broadcasting error), so `list.index` would
# take any zero scalar for any other: state is found by identity, other values by `==`.


def is_state(value: Any) -> bool:
    """Whether `value` is a Variable or a Trackable (compared by identity when searched for)."""
    return isinstance(value, (Variable, Trackable))


def same_item(item: Any, value: Any) -> bool:
    """Whether a container `item` is `value` for `remove`, `index`, `count` and `in`.

    Variables and layers match only themselves; tuples, lists and dicts holding them match
    item by item under the same rule; everything else compares with `==`, as a list does.
    """
    if item is value:
        return True
    if is_state(item) or is_state(value):
        return False
    if isinstance(item, (list, tuple, dict)) and (contains_state(item) or contains_state(value)):
        if isinstance(item, dict):
            return (
                isinstance(value, dict)
                and item.keys() == value.keys()
                and all(same_item(item[key], value[key]) for key in item)
            )
        return (
            isinstance(value, (list, tuple))
            and isinstance(value, tuple) == isinstance(item, tuple)
            and len(item) == len(value)
            and all(same_item(a, b) for a, b in zip(item, value, strict=True))
        )
    return bool(item == value)


def describe(value: Any) -> str:
    """`variable 'dense/kernel'`, `layer 'dense'`, or the repr of any other value, for messages."""
    if isinstance(value, Variable):
        return f"variable {value.path!r}"
    if isinstance(value, Trackable):
        return f"layer {value.path!r}"
    return repr(value)


# --- tracked containers ------------------------------------------------------------------------


class TrackedList(list):
    """A list that reports state added to it, and removed from it, to its owning layer."""

    def __init__(self, items: Any, owner: Trackable) -> None:
        super().__init__(wrap(item, owner) for item in items)
        self._owner = owner

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Rebuilt in one step: pickle's default would append items before `_owner` is set.
        return (_restore_list, (type(self), list(self), self._owner))

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
        """Extends and tracks every value (all are checked before any is added)."""
        values = list(values)
        self._owner._track(values)
        super().extend([wrap(value, self._owner) for value in values])

    def __iadd__(self, values: Any) -> TrackedList:
        self.extend(values)
        return self

    def __imul__(self, count: Any) -> TrackedList:
        removed = list(self)
        super().__imul__(count)
        self._owner._untrack(removed)
        return self

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            value = list(value)
            list.__setitem__(list(self), index, value)  # index and length errors before any change
        removed = self[index]
        self._owner._track(value)
        wrapped = [wrap(item, self._owner) for item in value] if isinstance(index, slice) else wrap(value, self._owner)
        super().__setitem__(index, wrapped)
        self._owner._untrack(removed)

    def __delitem__(self, index: Any) -> None:
        removed = self[index]
        super().__delitem__(index)
        self._owner._untrack(removed)

    def pop(self, index: Any = -1) -> Any:
        """Removes and returns an item; state no longer held by the layer is untracked."""
        value = super().pop(index)
        self._owner._untrack(value)
        return value

    def index(self, value: Any, start: Any = 0, stop: Any = sys.maxsize) -> int:
        """The position of the first item that is `value` (state by identity, others by `==`)."""
        for position in range(*slice(start, stop).indices(len(self))):
            if same_item(list.__getitem__(self, position), value):
                return position
        raise ValueError(f"{describe(value)} is not in the list (variables and layers are found by identity).")

    def count(self, value: Any) -> int:
        """How many items are `value` (state by identity, others by `==`)."""
        return sum(same_item(item, value) for item in list.__iter__(self))

    def __contains__(self, value: Any) -> bool:
        return any(same_item(item, value) for item in list.__iter__(self))

    def remove(self, value: Any) -> None:
        """Removes the first item that is `value` (state by identity, others by `==`); untracks what left."""
        del self[self.index(value)]

    def clear(self) -> None:
        """Removes every item; state no longer held by the layer is untracked."""
        removed = list(self)
        super().clear()
        self._owner._untrack(removed)


class TrackedDict(dict):
    """A dict that reports state added to it, and removed from it, to its owning layer."""

    def __init__(self, items: Any, owner: Trackable) -> None:
        super().__init__((key, wrap(value, owner)) for key, value in dict(items).items())
        self._owner = owner

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (_restore_dict, (type(self), dict(self), self._owner))

    def __setitem__(self, key: Any, value: Any) -> None:
        self._owner._track(value)
        removed = self.get(key, _MISSING)
        super().__setitem__(key, wrap(value, self._owner))
        if removed is not _MISSING:
            self._owner._untrack(removed)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Updates and tracks every value (all are checked before any is added)."""
        items = dict(*args, **kwargs)
        self._owner._track(list(items.values()))
        removed = [self[key] for key in items if key in self]
        for key, value in items.items():
            super().__setitem__(key, wrap(value, self._owner))
        self._owner._untrack(removed)

    def __ior__(self, other: Any) -> TrackedDict:
        self.update(other)
        return self

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """Tracks `default` when it is inserted."""
        if key not in self:
            self[key] = default
        return self[key]

    def __delitem__(self, key: Any) -> None:
        removed = self[key]
        super().__delitem__(key)
        self._owner._untrack(removed)

    def pop(self, key: Any, *default: Any) -> Any:
        """Removes `key` and returns its value; state no longer held by the layer is untracked."""
        if key not in self:
            return super().pop(key, *default)
        value = super().pop(key)
        self._owner._untrack(value)
        return value

    def popitem(self) -> tuple[Any, Any]:
        """Removes the last item; state no longer held by the layer is untracked."""
        key, value = super().popitem()
        self._owner._untrack(value)
        return key, value

    def clear(self) -> None:
        """Removes every item; state no longer held by the layer is untracked."""
        removed = list(self.values())
        super().clear()
        self._owner._untrack(removed)


def _restore_list(cls: type, items: list, owner: Trackable) -> TrackedList:
    restored = list.__new__(cls)
    list.extend(restored, items)
    restored._owner = owner
    return restored


def _restore_dict(cls: type, items: dict, owner: Trackable) -> TrackedDict:
    restored = dict.__new__(cls)
    dict.update(restored, items)
    restored._owner = owner
    return restored


def wrap(value: Any, owner: Trackable) -> Any:
    """Replaces plain lists and dicts (at any depth) by tracked ones owned by `owner`."""
    if type(value) is list:
        return TrackedList(value, owner)
    if type(value) is dict:
        return TrackedDict(value, owner)
    if type(value) is tuple and any(isinstance(item, (list, dict)) for item in value):
        return tuple(wrap(item, owner) for item in value)
    return value


def rewrap(value: Any, owner: Trackable) -> Any:
    """A shallow copy of `value` whose tracked containers (at any depth) belong to `owner`."""
    if isinstance(value, TrackedList):
        return TrackedList([rewrap(item, owner) for item in value], owner)
    if isinstance(value, TrackedDict):
        return TrackedDict({key: rewrap(item, owner) for key, item in value.items()}, owner)
    if type(value) is tuple and any(isinstance(item, (TrackedList, TrackedDict, tuple)) for item in value):
        return tuple(rewrap(item, owner) for item in value)
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
