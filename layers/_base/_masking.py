"""Masks attached to arrays, so the next layer can pick up the mask of its input.

JAX arrays take no attributes, so masks live in a side table keyed by the array's identity
and dropped when the array is garbage collected.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import jax

from layers._base._arrays import is_jax_array

_masks: dict[int, tuple[weakref.ref, Any]] = {}
_lock = threading.Lock()


def _forget(key: int) -> None:
    with _lock:
        _masks.pop(key, None)


def attach_mask(array: Any, mask: Any) -> None:
    """Records `mask` as the mask of `array` (None removes it)."""
    key = id(array)
    if mask is None:
        if key in _masks:  # a fresh output has no entry: the common case takes no lock
            _forget(key)
        return
    try:
        # The callback binds dict.pop itself (atomic, no lock needed): it may run at interpreter
        # exit, after this module's globals are gone.
        ref = weakref.ref(array, lambda _, key=key, pop=_masks.pop: pop(key, None))
    except TypeError:
        return  # objects that cannot be weakly referenced (Python scalars) carry no mask
    with _lock:
        _masks[key] = (ref, mask)


def get_mask(array: Any) -> Any:
    """The mask attached to `array`, or None."""
    entry = _masks.get(id(array))
    if entry is None or entry[0]() is not array:
        return None
    return entry[1]


def carry_mask(source: Any, converted: Any) -> Any:
    """Gives `converted` (a cast or converted copy of `source`) the mask of `source`; returns it.

    Every conversion the call pipeline makes goes through this, so a cast never drops a mask.
    """
    if converted is not source and _masks:
        mask = get_mask(source)
        if mask is not None:
            attach_mask(converted, mask)
    return converted


def attach_masks(outputs: Any, masks: Any) -> None:
    """Attaches a mask (or a matching structure of masks) to every array in `outputs`."""
    if is_jax_array(outputs):
        attach_mask(outputs, masks)
        return
    leaves = jax.tree.leaves(outputs)
    if isinstance(masks, (list, tuple)) and len(masks) == len(leaves):
        for leaf, mask in zip(leaves, masks, strict=True):
            attach_mask(leaf, mask)
    else:
        for leaf in leaves:
            attach_mask(leaf, masks)


def mask_of(inputs: Any) -> Any:
    """The mask attached to `inputs`: one mask for one array, a list for a list of arrays."""
    if is_jax_array(inputs):
        return get_mask(inputs)
    leaves = jax.tree.leaves(inputs)
    if not leaves:
        return None
    if len(leaves) == 1:
        return get_mask(leaves[0])
    masks = [get_mask(leaf) for leaf in leaves]
    return None if all(mask is None for mask in masks) else masks
