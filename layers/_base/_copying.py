"""Copies and pickles of layers: `copy.copy`, `copy.deepcopy` and `pickle` (see docs/layer.md).

A copy leaves behind the links to the layers tracking the original (they are weak references,
and a copied sublayer must not drag its parents along); owners in the copy re-link their
sublayers when they are restored.

A layer that follows an explicit policy above it (a parent's policy, or its entry in a parent's
`DTypePolicyMap`) keeps that policy when it is copied without that parent: the copy's default
becomes the policy it had. When the parent is copied too, the parent governs again in the copy,
and the layer's own default (the one current at its construction) comes back.
"""

from __future__ import annotations

import weakref
from typing import Any

from layers._base import _ownership, _tracking

# Not part of a pickled or deep-copied layer: links to the layers tracking it, flags that
# only mean something during a call or build, and the record of frozen variables (rebuilt).
NOT_COPIED = frozenset({"_parent_ref", "_owners", "_building", "_frozen_record"})
# Sets of ids of own variables or layers: stored as positions in those lists when pickled.
_ID_SETS = {"_state_ids": "_own_variables", "_frozen_ids": "_own_variables", "_frozen_layer_ids": "_own_layers"}
# Restored layers whose policy came from a layer above them, until that layer is restored too:
# id(layer) -> (weak reference to it, id of the original governing layer, its own default policy).
# Keyed by id: a layer class that defines __eq__ is unhashable.
_inherited: dict[int, tuple[weakref.ref, int, Any]] = {}


def new_layer(cls: type) -> Any:
    """An empty instance for pickle and deepcopy; `set_state` fills it."""
    return object.__new__(cls)


def policy_holder(layer: Any) -> Any:
    """The layer whose explicit policy `layer` follows (itself, a layer above it), or None."""
    entry = layer
    while entry is not None and entry._explicit_dtype is None:
        entry = entry._parent
    return entry


def shallow_copy(layer: Any) -> Any:
    """A new layer object sharing `layer`'s variables and sublayers, with its own attributes and lists."""
    twin = object.__new__(type(layer))
    state = {key: _tracking.rewrap(value, twin) for key, value in layer.__dict__.items()}
    state.update(
        _parent_ref=None,
        _own_variables=list(layer._own_variables),
        _own_layers=list(layer._own_layers),
        _losses=list(layer._losses),
        _metrics_by_name=dict(layer._metrics_by_name),
        _state_ids=set(layer._state_ids),
    )
    state.pop("_owners", None)
    state.pop("_frozen_record", None)  # the copy froze nothing: its collection gives no flags back
    holder = policy_holder(layer)
    if holder is not None and holder is not layer:
        state["_default_policy"] = layer.dtype_policy  # the copy has no parent: it keeps the policy it had
    object.__getattribute__(twin, "__dict__").update(state)
    return twin


def get_state(layer: Any) -> dict[str, Any]:
    """The state pickled or deep-copied for `layer` (sublayers are pickled through it)."""
    state = {key: value for key, value in layer.__dict__.items() if key not in NOT_COPIED}
    for key, source in _ID_SETS.items():
        positions = {id(item): index for index, item in enumerate(getattr(layer, source))}
        state[key] = sorted(positions[i] for i in getattr(layer, key) if i in positions)
    state["_owned_since"] = [
        next((number for number, ref in sublayer._owners if ref() is layer), None) for sublayer in layer._own_layers
    ]
    state["_copied_from"] = id(layer)
    holder = policy_holder(layer)
    if holder is not None and holder is not layer:
        state["_inherited_policy"] = (id(holder), layer.dtype_policy)
    return state


def set_state(layer: Any, state: dict[str, Any]) -> None:
    """Fills an empty `layer` from `get_state`'s output, re-linking its sublayers."""
    state = dict(state)
    owned_since = state.pop("_owned_since", [])
    original = state.pop("_copied_from", None)
    inherited = state.pop("_inherited_policy", None)
    for key, source in _ID_SETS.items():
        items = state.get(source, [])
        ids = {id(items[index]) for index in state.get(key, ())}
        state[key] = ids if key == "_state_ids" else frozenset(ids)
    if inherited is not None:
        governor, policy = inherited
        key = id(layer)
        _inherited[key] = (
            weakref.ref(layer, lambda _, key=key: _inherited.pop(key, None)),
            governor,
            state["_default_policy"],
        )
        state["_default_policy"] = policy
    state["_parent_ref"] = None
    object.__getattribute__(layer, "__dict__").update(state)
    for sublayer, number in zip(layer._own_layers, owned_since, strict=False):
        number = _tracking.next_sequence() if number is None else number
        _tracking.observe_sequence(number)
        ref = _ownership.add_owner(sublayer, layer, number)
        ref.froze = id(sublayer) in layer._frozen_layer_ids  # the copy's freezing, if any, is undone as the original's
    if original is not None:
        # Restored layers below that followed this layer's original follow this copy again.
        for sublayer in layer._flatten_layers(include_self=False):
            entry = _inherited.get(id(sublayer))
            if entry is not None and entry[0]() is sublayer and entry[1] == original:
                object.__setattr__(sublayer, "_default_policy", entry[2])
                del _inherited[id(sublayer)]
    _ownership.sync_frozen_record(layer)
    _ownership.refresh_parents(layer)
