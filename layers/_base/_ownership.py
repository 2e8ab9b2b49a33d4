"""Ownership: the layers tracking a layer, its parent among them, and the flags that follow.

`Layer._track` and `Layer._untrack` come here. A layer records each layer that starts
tracking it, with a sequence number (`_owners`); its parent is chosen from those owners (see
"Paths" in docs/layer.md), and the paths of its variables follow the parent. Links upwards (to
owners and to the parent) are weak references: a sublayer never keeps the layer that took it
alive. When an owner is collected, a callback on its reference re-derives the parent and paths of
the layers it held, so they fall back to the owners still alive. A non-trainable
layer freezes what it takes in, and records exactly which variables and direct sublayers it
switched off, so that removing them (or unfreezing) switches those back and nothing else. A
sublayer's reference to an owner also says whether that owner's freezing switched it off, so an
owner that is collected hands the sublayer over, or thaws it, exactly as removing it would. The
variables a layer switched off are also kept in a record apart from it (`FrozenVariables`), so
they get their flag back when the layer is collected, as when they are removed from it.

The collector may run those callbacks at any allocation, also in the middle of another step that
reads `_owners` or a frozen set and writes it back; such writes go through `_update`, which
retries when a callback changed the value in between, so a callback's change is never undone.
"""

from __future__ import annotations

import functools
import sys
import weakref
from typing import Any

from layers._base import _tracking


def track(holder: Any, value: Any) -> None:
    """Records every new Variable and layer in `value` as `holder`'s own state.

    Everything is checked before anything changes: a locked holder, or a layer that would
    contain its holder (a cycle), raises and leaves the tracking as it was.
    """
    new = [
        item
        for item in _tracking.unique(_tracking.iter_state(value))
        if item is not holder
        and not any(entry is item for entry in (holder._own_layers if is_layer(item) else holder._own_variables))
    ]
    if not new:
        return
    if holder._locked:
        raise ValueError(
            f"Layer {holder.name!r} is already built; it cannot take new state "
            f"({', '.join(getattr(item, 'path', repr(item)) for item in new)}). Create variables and "
            f"sublayers in __init__ or build()."
        )
    for item in new:
        if is_layer(item):
            item._check_initialized()
            check_no_cycle(holder, item)
    for item in new:
        if is_layer(item):
            holder._own_layers.append(item)
            add_owner(item, holder)
            if not holder._trainable and item._trainable:
                mark_frozen(holder, item)
                freeze(item)
            item._refresh_parents()
        else:
            holder._own_variables.append(item)
            if item.path == item.name:
                item._set_path(f"{holder.path}/{item.name}")
            if not holder._trainable and item.trainable:
                item.trainable = False
                change_frozen_ids(holder, lambda ids, item=item: ids | {id(item)})


def check_no_cycle(holder: Any, layer: Any) -> None:
    """Raises if `layer` already contains `holder`: tracking it would make a cycle."""
    if any(entry is holder for entry in layer._flatten_layers()):
        raise ValueError(
            f"Layer {holder.name!r} cannot track layer {layer.name!r}: {layer.name!r} already contains "
            f"{holder.name!r} (as {holder.path!r}), so tracking it would make a cycle. A layer cannot hold "
            f"a layer that holds it; keep such a reference outside the layers (or pass it to call())."
        )


def held_state_ids(holder: Any, untracked: frozenset[str]) -> set[int]:
    """Ids of the Variables and layers `holder`'s attributes hold right now."""
    held: set[int] = set()
    for key, value in holder.__dict__.items():
        if key not in untracked and _tracking.may_hold_state(value):
            held.update(id(item) for item in _tracking.iter_state(value))
    return held


def untrack(holder: Any, value: Any, untracked: frozenset[str]) -> None:
    """Forgets the state in `value` that no attribute of `holder` holds any more.

    A removed layer leaves the holder's owners (it may get another parent, or none); what the
    holder's freezing switched off is switched back on, unless another frozen owner still holds it.
    """
    removed = [item for item in _tracking.unique(_tracking.iter_state(value)) if item is not holder]
    if not removed:
        return
    held = held_state_ids(holder, untracked)
    for item in removed:
        if id(item) in held:
            continue  # still held elsewhere, or added back
        if is_layer(item):
            if any(entry is item for entry in holder._own_layers):
                holder._own_layers[:] = [entry for entry in holder._own_layers if entry is not item]
                _update(
                    item, "_owners", lambda owners, holder=holder: _alive(e for e in owners if e[1]() is not holder)
                )
                if id(item) in holder._frozen_layer_ids:
                    _update(holder, "_frozen_layer_ids", lambda ids, item=item: ids - {id(item)})
                    _hand_over_or_thaw(item)
                item._refresh_parents()
        elif any(entry is item for entry in holder._own_variables):
            holder._own_variables[:] = [entry for entry in holder._own_variables if entry is not item]
            holder._state_ids.discard(id(item))
            if id(item) in holder._frozen_ids:  # it leaves the frozen layer: its own flag comes back
                item.trainable = True
                change_frozen_ids(holder, lambda ids, item=item: ids - {id(item)})
            if item.path == f"{holder.path}/{item.name}":
                item._set_path(item.name)


def _hand_over_or_thaw(layer: Any) -> None:
    # Another owner that is frozen itself keeps the layer frozen, and now owns the record.
    frozen_owner = next((owner for owner in live_owners(layer) if not owner._trainable), None)
    if frozen_owner is not None:
        mark_frozen(frozen_owner, layer)
    else:
        thaw(layer)


def mark_frozen(holder: Any, layer: Any) -> None:
    """Records that `holder`'s freezing switched `layer` off: on the holder, and on `layer`'s reference to it."""
    _update(holder, "_frozen_layer_ids", lambda ids: ids | {id(layer)})
    _set_froze(holder, layer, True)


def _set_froze(holder: Any, layer: Any, value: bool) -> None:
    for _, ref in layer._owners:
        if ref() is holder:
            ref.froze = value


def _update(obj: Any, key: str, change: Any) -> None:
    """Sets `obj.<key>` to `change(obj.<key>)`, again from the new value when a callback changed it meanwhile.

    Computing the new value allocates, so the collector (and `owner_gone`) may run before the write;
    the check and the write allocate nothing, so nothing runs between them.
    """
    while True:
        current = object.__getattribute__(obj, key)
        new = change(current)
        if object.__getattribute__(obj, key) is current:
            object.__setattr__(obj, key, new)
            return


def _alive(entries: Any) -> tuple:
    """The `_owners` entries whose owner is alive (one collected meanwhile is dropped, its callback may still come)."""
    return tuple(entry for entry in entries if entry[1]() is not None)


def is_layer(value: Any) -> bool:
    """Whether `value` is a layer (the only Trackable)."""
    return isinstance(value, _tracking.Trackable)


# --- parents and paths ---------------------------------------------------------------------------


def live_owners(layer: Any) -> list[Any]:
    """The layers tracking `layer`, in tracking order; owners that let go of it (a rolled-back build) excluded."""
    return [
        owner
        for _, ref in sorted(layer._owners, key=lambda entry: entry[0])
        if (owner := ref()) is not None and any(entry is layer for entry in owner._own_layers)
    ]


class OwnerRef(weakref.ref):
    """A weak reference to an owner of a layer; `froze` says whether that owner's freezing switched the layer off.

    The flag lives on the reference, not on the owner, so that it is still there when the owner is gone.
    """

    __slots__ = ("froze",)

    def __init__(self, owner: Any, callback: Any) -> None:
        super().__init__(owner, callback)
        self.froze = False


def owner_ref(holder: Any, layer: Any) -> OwnerRef:
    """A weak reference to `holder`, an owner of `layer`, that re-derives `layer`'s parent when `holder` goes."""
    return OwnerRef(holder, functools.partial(owner_gone, weakref.ref(layer)))


def add_owner(layer: Any, holder: Any, number: int | None = None) -> OwnerRef:
    """Records `holder` as the latest owner of `layer` (or with `number`, a restored one); returns the reference."""
    number = _tracking.next_sequence() if number is None else number
    ref = owner_ref(holder, layer)
    _update(layer, "_owners", lambda owners: (*_alive(owners), (number, ref)))
    return ref


def owner_gone(layer_ref: weakref.ref, dead: OwnerRef) -> None:
    """Weakref callback: an owner of `layer` was collected; it drops the record and re-derives the paths.

    What the owner's freezing switched off is handed over to another frozen owner or switched back on,
    as when the owner lets go of the layer. It only re-derives state from what is alive (it may run
    whenever the collector does, even in the middle of another tracking step).
    """
    layer = layer_ref()
    if layer is None:
        return
    try:
        _update(layer, "_owners", lambda owners: _alive(entry for entry in owners if entry[1] is not dead))
        if getattr(dead, "froze", False):
            dead.froze = False
            _hand_over_or_thaw(layer)
        refresh_parents(layer)
    except Exception:
        if not sys.is_finalizing():  # at interpreter exit, module state may already be torn down
            raise


def current_parent(layer: Any) -> Any:
    """The parent `layer` records now, or None (a parent that is gone reads as None; no side effects)."""
    ref = layer._parent_ref
    return None if ref is None else ref()


def root(layer: Any) -> Any:
    """The outermost layer above `layer` (itself when it has no parent)."""
    while layer._parent is not None:
        layer = layer._parent
    return layer


def choose_parent(layer: Any) -> Any:
    """The latest owner decides the model; within that model the earliest owner is the parent."""
    owners = live_owners(layer)
    if not owners:
        return None
    model = root(owners[-1])
    return next(owner for owner in owners if root(owner) is model)


def refresh_parents(layer: Any) -> None:
    """Re-derives the parent of `layer` and of everything inside it, then their variables' paths."""
    subtree = layer._flatten_layers()
    for _ in range(len(subtree)):  # parents depend on other parents: repeat until stable
        changed = False
        for entry in subtree:
            parent = choose_parent(entry)
            if parent is not current_parent(entry) or (parent is None and entry._parent_ref is not None):
                object.__setattr__(entry, "_parent_ref", None if parent is None else weakref.ref(parent))
                changed = True
        if not changed:
            break
    update_paths(layer)


def update_paths(layer: Any) -> None:
    """Sets every variable's path inside `layer` to `<its layer's path>/<its name>`."""
    for entry in layer._flatten_layers():
        prefix = entry.path
        for variable in entry._own_variables:
            variable._set_path(f"{prefix}/{variable.name}")


# --- trainable -------------------------------------------------------------------------------------


def set_trainable(layer: Any, value: bool) -> None:
    """The `trainable` setter: applies to every layer inside `layer` and reaches their variables.

    A flag set by hand is the user's: owners that froze `layer` forget it (also one collected whose
    callback has not run yet), so removing it from them later, or their collection, leaves the flag alone.
    """
    for _, ref in layer._owners:
        ref.froze = False
        owner = ref()
        if owner is not None and id(layer) in owner._frozen_layer_ids:
            _update(owner, "_frozen_layer_ids", lambda ids: ids - {id(layer)})
    if not value:
        freeze(layer)
        return
    for entry in layer._flatten_layers():
        object.__setattr__(entry, "_trainable", True)
        for sublayer in entry._own_layers:
            if id(sublayer) in entry._frozen_layer_ids:
                _set_froze(entry, sublayer, False)
        object.__setattr__(entry, "_frozen_layer_ids", frozenset())
        sync_variables(entry)


def freeze(layer: Any, _seen: set[int] | None = None) -> None:
    """Switches `layer` and everything inside it off; each layer records what it switched."""
    seen = set() if _seen is None else _seen
    if id(layer) in seen:
        return
    seen.add(id(layer))
    object.__setattr__(layer, "_trainable", False)
    sync_variables(layer)
    for sublayer in layer._own_layers:
        if sublayer._trainable:
            mark_frozen(layer, sublayer)
        freeze(sublayer, seen)


def thaw(layer: Any) -> None:
    """Switches back on `layer`, and what its freezing switched off inside it (nothing else)."""
    object.__setattr__(layer, "_trainable", True)
    sync_variables(layer)
    recorded = layer._frozen_layer_ids
    object.__setattr__(layer, "_frozen_layer_ids", frozenset())
    for sublayer in layer._own_layers:
        if id(sublayer) in recorded:
            _set_froze(layer, sublayer, False)
            thaw(sublayer)


def sync_variables(layer: Any) -> None:
    """Makes the own variables' `trainable` follow the layer's flag, and undoes exactly that."""
    if not layer._trainable:
        switched = [v for v in layer._own_variables if v.trainable]
        for variable in switched:
            variable.trainable = False
        change_frozen_ids(layer, lambda ids: ids | {id(v) for v in switched})
    elif layer._frozen_ids:
        for variable in layer._own_variables:
            if id(variable) in layer._frozen_ids:
                variable.trainable = True
        change_frozen_ids(layer, lambda ids: frozenset())


class FrozenVariables:
    """Weak references to the variables a layer's freezing switched off, kept apart from the layer.

    A finalizer holds it, so that when the layer is collected the variables still alive (held by
    other layers) get their flag back, as when they are removed from the layer.
    """

    __slots__ = ("refs",)

    def __init__(self) -> None:
        self.refs: tuple[weakref.ref, ...] = ()

    def thaw(self) -> None:
        refs, self.refs = self.refs, ()
        for ref in refs:
            variable = ref()
            if variable is not None and not variable.trainable:
                variable.trainable = True


def change_frozen_ids(layer: Any, change: Any) -> None:
    """Sets `layer._frozen_ids` to `change(layer._frozen_ids)` and updates the record kept apart from it."""
    _update(layer, "_frozen_ids", change)
    sync_frozen_record(layer)


def sync_frozen_record(layer: Any) -> None:
    """Makes `layer`'s `FrozenVariables` list the own variables in `_frozen_ids` (set up on first need)."""
    state = object.__getattribute__(layer, "__dict__")
    record = state.get("_frozen_record")
    frozen = [variable for variable in layer._own_variables if id(variable) in layer._frozen_ids]
    if record is None:
        if not frozen:
            return
        record = FrozenVariables()
        finalizer = weakref.finalize(layer, record.thaw)
        finalizer.atexit = False  # at interpreter exit there is nothing left to train
        object.__setattr__(layer, "_frozen_record", record)
    record.refs = tuple(weakref.ref(variable) for variable in frozen)
