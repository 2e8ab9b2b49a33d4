"""Losses added by a top-level call traced by the user's own JAX transformation.

A top-level call traced by the user's jax.jit/grad must leave the layer's losses as the last
concrete call left them, yet custom training code reads `layer.losses` right after the call,
inside the same trace (`jax.grad(lambda x: jnp.sum(layer(x)) + sum(layer.losses))`). The traced
losses (values and callables the call added) are therefore kept in a table here, apart from the
layer's own state (so copies and pickles never see them), with the trace they belong to, and
`losses` shows them only while that trace is still running.

Lifetime: an entry holds its layer and its trace weakly, but its tracers hold their trace, so
an entry keeps a finished trace alive until it is dropped. Entries of finished traces are
dropped at the next top-level layer call of any layer (eager or traced), at the next read of
that layer's `losses`, or when the layer goes. (JAX gives no signal when a trace ends, and its
traces take no attributes, so the losses cannot live on the trace itself.)

Entries are keyed by `id(layer)` (a layer class may define `__eq__`). A lock guards the table
across threads; weakref callbacks may run inside a locked section of the same thread (the
collector runs wherever an allocation triggers it), hence a re-entrant lock, loops over
snapshots and `pop(key, None)` everywhere. A thread only drops the finished entries it made:
`_trace_running` sees the current thread's traces only.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

try:  # where JAX keeps its current trace; only read, and only to know whether a trace still runs
    from jax._src import core as _jax_core
except ImportError:  # pragma: no cover - another JAX layout: traced losses are never shown
    _jax_core = None
try:  # the flag `jax.ensure_compile_time_eval` sets (JAX 0.10 keeps the jit trace current under it)
    from jax._src.config import eager_constant_folding as _compile_time_eval
except ImportError:  # pragma: no cover - another JAX layout
    _compile_time_eval = None


class Entry:
    """What one layer's last traced call added: its loss values and its callables."""

    __slots__ = ("callables", "losses", "owner", "thread", "trace")

    def __init__(self, owner: weakref.ref, trace: weakref.ref, losses: list) -> None:
        self.owner = owner
        self.trace = trace
        self.losses = losses
        self.callables: tuple = ()
        self.thread = threading.get_ident()


_table: dict[int, Entry] = {}
_lock = threading.RLock()


def current_trace() -> Any:
    """JAX's current trace, or None where this JAX does not expose it (then nothing is shown)."""
    return getattr(getattr(_jax_core, "trace_ctx", None), "trace", None)


def under_trace() -> bool:
    """Whether JAX traces right now: a current trace that is not the top-level eager one.

    False under `jax.ensure_compile_time_eval`, so in `build`, which runs concretely under it
    (also the `__init__` of a sublayer created there).
    """
    if getattr(current_trace(), "parent_trace", None) is None:
        return False
    return not getattr(_compile_time_eval, "value", False)


def _trace_running(trace: Any) -> bool:
    """Whether `trace` is the current JAX trace or one it is nested in.

    JAX's own `Trace.is_valid()` (checked by `Primitive.bind`) turns False only for some traces
    once they end (JAX 0.10 never invalidates a jit trace), so the trace must also still be on
    the current chain (`parent_trace` links). Missing attributes in another JAX mean "not running".
    """
    if trace is None or not getattr(trace, "is_valid", lambda: False)():
        return False
    link = current_trace()
    while link is not None:
        if link is trace:
            return True
        link = getattr(link, "parent_trace", None)
    return False


def _finished(entry: Entry, thread: int, alive: set | None) -> bool:
    if entry.thread == thread:
        return not _trace_running(entry.trace())
    return alive is not None and entry.thread not in alive  # its thread ended: its trace did too


def _purge() -> None:
    """Drops the entries of finished traces (and with them their tracers). Call with the lock held."""
    thread = threading.get_ident()
    entries = list(_table.items())
    alive = {t.ident for t in threading.enumerate()} if any(e.thread != thread for _, e in entries) else None
    for key, entry in entries:
        if _finished(entry, thread, alive) and _table.get(key) is entry:
            _table.pop(key, None)


def _drop(key: int, owner: weakref.ref) -> None:
    """The weakref callback of a layer that is gone: its entry goes too (if still its own)."""
    with _lock:
        entry = _table.get(key)
        if entry is not None and entry.owner is owner:
            _table.pop(key, None)


def _entry(layer: Any, trace: weakref.ref, losses: list) -> Entry:
    key = id(layer)
    entry = Entry(weakref.ref(layer, lambda ref, key=key: _drop(key, ref)), trace, losses)
    _table[key] = entry
    return entry


def keep(saved: list, others: list, callables: list) -> None:
    """After a top-level call traced by the user: records what the call added, for its trace.

    Args:
      saved: `(layer, losses the call added)` for the layers the call cleared.
      others: `(layer, its losses as the call left them)` for layers outside the cleared tree.
      callables: `(layer, callable)` added while JAX traced the call (taken out of the layers).
    """
    trace = current_trace()
    # No trace to tie the losses to (or only the top-level eager one, under JAX's
    # ensure_compile_time_eval): they are not kept, hence never shown.
    reference = None if getattr(trace, "parent_trace", None) is None else weakref.ref(trace)
    with _lock:
        _purge()
        if reference is None:
            return
        entries = {id(layer): _entry(layer, reference, losses) for layer, losses in (*saved, *others)}
        for layer, loss in callables:
            entry = entries.get(id(layer))
            if entry is None:
                entry = entries[id(layer)] = _entry(layer, reference, [])
            entry.callables = (*entry.callables, loss)


def shown(layer: Any) -> Entry | None:
    """The entry of `layer`'s last traced call while its trace runs, else None."""
    if not _table:
        return None  # the common case: no traced call is remembered
    with _lock:
        entry = _table.get(id(layer))
        if entry is None or entry.owner() is not layer:
            return None
        if _trace_running(entry.trace()):
            return entry
        _table.pop(id(layer), None)
        return None


def forget(saved: list) -> dict:
    """A new concrete call replaces what a traced call left; returns the removed entries.

    Every top-level call passes here (eager ones for this), so entries of finished traces are
    dropped too: cheaply, as the table is empty but right after a traced call.
    """
    if not _table:
        return {}
    with _lock:
        removed = {id(layer): _table.pop(id(layer), None) for layer, _ in saved}
        _purge()
    return {key: entry for key, entry in removed.items() if entry is not None}


def restore(entries: dict) -> None:
    """Puts back entries removed by `forget` (`stateless_call` changes nothing)."""
    if entries:
        with _lock:
            _table.update(entries)
