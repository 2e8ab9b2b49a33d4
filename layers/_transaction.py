"""Call transactions: what one layer call changed, kept together or undone together.

Every `Layer.__call__` runs inside a `CallTransaction`. It holds the variable writes (in a
`StatelessScope`), the losses and metric values reported, and the layers built during the
call. When the call returns, a nested transaction hands all of it to its parent; the outermost
one applies it. When the call raises, all of it is undone, so a sublayer call that fails and
is caught by its parent leaves no trace either (SPEC §9: a failed call changes nothing).
"""

from __future__ import annotations

import dataclasses
import inspect
import weakref
from contextvars import ContextVar
from typing import Any

import jax

import dtypepolicy as dp

try:  # where JAX keeps its current trace; only read, and only to know whether a trace still runs
    from jax._src import core as _jax_core
except ImportError:  # pragma: no cover - another JAX layout: traced losses are never shown
    _jax_core = None
from dtypepolicy._context import scoped
from layers import _metrics

_current: ContextVar[CallTransaction | None] = ContextVar("layers_call_transaction", default=None)


def current() -> CallTransaction | None:
    """The transaction of the innermost layer call running here, or None."""
    return _current.get()


@dataclasses.dataclass
class BuildRecord:
    """A layer's state just before a `build` that succeeded inside a call."""

    layer: Any
    snapshot: dict
    own_variables: list
    own_layers: list

    def undo(self) -> None:
        """Puts the layer back as it was before `build`: unbuilt, without the new state."""
        restore(self.layer, self.snapshot, self.own_variables, self.own_layers)


def restore(layer: Any, snapshot: dict, own_variables: list, own_layers: list) -> None:
    """Restores a layer's attributes and tracked state from a snapshot taken by `build`."""
    layer.__dict__.clear()
    layer.__dict__.update(snapshot)
    layer._own_variables[:] = own_variables
    layer._own_layers[:] = own_layers


class CallTransaction:
    """The changes of one layer call (see the module docstring).

    Attributes:
      scope: the `StatelessScope` recording variable writes.
      losses: `(layer, loss)` pairs appended to `layer._losses` during the call.
      metrics: `(layer, name, aggregation, value)` reports, applied by the outermost call.
      builds: layers built during the call, undone if it fails.
      unnamed: per layer (by id), how many unnamed metric reports it made in this call so far.
    """

    __slots__ = ("builds", "losses", "metrics", "parent", "scope", "unnamed", "_token")

    def __init__(self) -> None:
        self.parent = _current.get()
        self.scope = dp.StatelessScope()
        self.losses: list[tuple[Any, Any]] = []
        self.metrics: list[tuple[Any, str, str, float]] = []
        self.builds: list[BuildRecord] = []
        self.unnamed: dict[int, int] | None = None  # created by the first unnamed report
        self._token = None

    def __enter__(self) -> CallTransaction:
        self._token = _current.set(self)
        self.scope.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self.scope.__exit__(*exc_info)
        finally:  # a failing scope exit must not leave this transaction current for later calls
            _current.reset(self._token)

    @property
    def stateless(self) -> bool:
        """Whether the call runs inside an enclosing `StatelessScope` (`stateless_call`, say)."""
        return self.scope._parent is not None

    def traced(self, outputs: Any) -> bool:
        """Whether the call ran under a JAX trace: its outputs or its losses are tracers."""
        tracer = jax.core.Tracer
        if isinstance(outputs, jax.Array) and not self.losses:  # the common case, kept cheap
            return isinstance(outputs, tracer)
        return any(isinstance(leaf, tracer) for leaf in jax.tree.leaves(outputs)) or any(
            isinstance(loss, tracer) for _, loss in self.losses
        )

    def commit(self, apply_reports: bool = True) -> None:
        """Hands the changes to the enclosing call, or applies them when this is the outermost.

        Args:
          apply_reports: for the outermost call, whether metric reports are applied (False
            when the call ran under a JAX trace: traced reports never reach the layer).
        """
        self.scope.commit()
        parent = self.parent
        if parent is not None:
            parent.losses += self.losses
            parent.metrics += self.metrics
            parent.builds += self.builds
            return
        if apply_reports:
            for report in self.metrics:
                _metrics.apply_report(*report)

    def rollback(self) -> None:
        """Undoes the losses and builds of the call; its variable writes are simply dropped."""
        for layer, loss in reversed(self.losses):
            if callable(loss):
                # A persistent callable loss (see `add_callable_loss`): the tuple is replaced, never mutated.
                kept = list(layer._callable_losses)
                for index in range(len(kept) - 1, -1, -1):
                    if kept[index] is loss:
                        del kept[index]
                        break
                object.__setattr__(layer, "_callable_losses", tuple(kept))
                continue
            losses = layer._losses
            for index in range(len(losses) - 1, -1, -1):
                if losses[index] is loss:
                    del losses[index]
                    break
        for record in reversed(self.builds):
            record.undo()


def isolated() -> scoped:
    """A block whose layer calls start a new outermost transaction (used by `stateless_call`)."""
    return scoped(_current, None)


def note_loss(layer: Any, loss: Any) -> None:
    """Records a loss just appended to `layer._losses`, so a failed call can take it back."""
    transaction = _current.get()
    if transaction is not None:
        transaction.losses.append((layer, loss))


def add_callable_loss(layer: Any, loss: Any) -> None:
    """`Layer.add_loss` with a callable: a loss evaluated on every read of `losses`.

    Unlike loss values, which count until the next outermost call clears them, a callable
    (a weight penalty added in `build`, as in Keras) stays for good: calls never clear it. It
    is taken back only when the call or the `build` that added it fails. The layer holds its
    callables in a tuple that is replaced, never mutated, so the snapshot a `build` takes
    restores them too.
    """
    try:
        inspect.signature(loss).bind()
    except TypeError:
        raise TypeError(
            f"add_loss on layer {layer.name!r}: a loss must be an array or a zero-argument callable returning "
            f"one, received {loss!r}, which needs arguments. Close over what it reads instead "
            f"(`lambda: jnp.sum(self.w.value ** 2)`)."
        ) from None
    except ValueError:
        pass  # no signature to inspect (some builtins): trusted, checked when `losses` calls it
    object.__setattr__(layer, "_callable_losses", (*layer._callable_losses, loss))
    note_loss(layer, loss)


def note_build(layer: Any, snapshot: dict, own_variables: list, own_layers: list) -> None:
    """Records a build that succeeded, so that the call around it can undo it if it fails."""
    transaction = _current.get()
    if transaction is not None:
        transaction.builds.append(BuildRecord(layer, snapshot, own_variables, own_layers))


def note_metric(layer: Any, value: Any, name: str | None, aggregation: str) -> None:
    """`Layer.add_metric`: checks the report now, applies it when the outermost call succeeds.

    Outside any call the report is applied at once. Values traced by JAX are dropped. An
    unnamed report is named by its order among the layer's unnamed reports of the current
    call (`<layer>_metric`, `<layer>_metric_1`, ...), so that every call feeds the same metrics.
    """
    if aggregation not in _metrics.AGGREGATIONS:
        raise ValueError(f"Metric aggregation must be one of {_metrics.AGGREGATIONS}, received {aggregation!r}.")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"add_metric name must be a str or None, received {name!r} of type {type(name).__name__}.")
    number = _metrics.host_value(value)
    transaction = _current.get()
    unnamed = name is None
    if unnamed:
        # Outside any call each report is a call of its own.
        index = 0 if transaction is None or transaction.unnamed is None else transaction.unnamed.get(id(layer), 0)
        name = _metrics.default_name(layer, index)
    _metrics.check_aggregation(layer, name, aggregation, _pending_reports(transaction))
    if unnamed and transaction is not None:
        if transaction.unnamed is None:
            transaction.unnamed = {}
        transaction.unnamed[id(layer)] = index + 1
    if number is None:
        return
    if transaction is None:
        _metrics.apply_report(layer, name, aggregation, number)
    else:
        transaction.metrics.append((layer, name, aggregation, number))


def _pending_reports(transaction: CallTransaction | None) -> Any:
    """The metric reports not applied yet: those of this call and of the calls around it."""
    while transaction is not None:
        yield from transaction.metrics
        transaction = transaction.parent


# --- losses added under the user's own JAX trace ---------------------------------------------
#
# A top-level call traced by the user's jax.jit/grad must leave the layer's losses as the last
# concrete call left them, yet custom training code reads `layer.losses` right after the call,
# inside the same trace (`jax.grad(lambda x: jnp.sum(layer(x)) + sum(layer.losses))`). The
# traced losses are therefore kept here, apart from the layer's own state (so copies and pickles
# never see them), with the trace they belong to, and `losses` shows them only while that trace
# is still running. Entries are keyed by `id` (a layer class may define `__eq__`) and hold the
# layer weakly: a layer that is gone takes its entry with it.
_traced_losses: dict[int, tuple[weakref.ref, weakref.ref, list]] = {}


def _current_trace() -> Any:
    """JAX's current trace, or None where this JAX does not expose it (then nothing is shown)."""
    return getattr(getattr(_jax_core, "trace_ctx", None), "trace", None)


def _trace_running(trace: Any) -> bool:
    """Whether `trace` is the current JAX trace or one it is nested in.

    JAX's own `Trace.is_valid()` (checked by `Primitive.bind`) turns False only for some traces
    once they end (JAX 0.10 never invalidates a jit trace), so the trace must also still be on
    the current chain (`parent_trace` links). Missing attributes in another JAX mean "not running".
    """
    if trace is None or not getattr(trace, "is_valid", lambda: False)():
        return False
    link = _current_trace()
    while link is not None:
        if link is trace:
            return True
        link = getattr(link, "parent_trace", None)
    return False


def _keep(layer: Any, trace: weakref.ref, losses: list) -> None:
    key = id(layer)
    owner = weakref.ref(layer, lambda _, key=key: _traced_losses.pop(key, None))
    _traced_losses[key] = (owner, trace, losses)


def keep_traced_losses(transaction: CallTransaction, saved: list) -> None:
    """After a top-level call traced by the user: the losses it added move out of the layers.

    Args:
      transaction: the committed transaction of the call.
      saved: `(layer, losses before the call)` for the layers the call cleared (`_clear_losses`).
    """
    trace = _current_trace()
    # No trace to tie the losses to (or only the top-level eager one, under JAX's
    # ensure_compile_time_eval): they are not kept, hence never shown.
    reference = None if getattr(trace, "parent_trace", None) is None else weakref.ref(trace)
    for key in [key for key, (_, ref, _) in _traced_losses.items() if not _trace_running(ref())]:
        del _traced_losses[key]  # entries of finished traces: drop their tracers
    cleared = {id(layer) for layer, _ in saved}
    for layer, losses in saved:
        if reference is not None:
            _keep(layer, reference, layer._losses)
        object.__setattr__(layer, "_losses", losses)
    # Layers outside the cleared tree (called through an untracked reference) got the losses
    # appended to their own lists: those are taken back out.
    others = {id(layer): layer for layer, _ in transaction.losses if id(layer) not in cleared}
    for layer in others.values():
        if reference is not None:
            _keep(layer, reference, list(layer._losses))
    for layer, loss in reversed(transaction.losses):
        if id(layer) in others:
            losses = layer._losses
            for index in range(len(losses) - 1, -1, -1):
                if losses[index] is loss:
                    del losses[index]
                    break


def traced_losses(layer: Any) -> list | None:
    """The losses of `layer`'s last traced call while its trace runs, else None."""
    if not _traced_losses:
        return None  # the common case: no traced call is remembered
    entry = _traced_losses.get(id(layer))
    if entry is None or entry[0]() is not layer:
        return None
    if _trace_running(entry[1]()):
        return entry[2]
    del _traced_losses[id(layer)]
    return None


def forget_traced_losses(saved: list) -> dict:
    """A new concrete call replaces what a traced call left; returns the removed entries."""
    if not _traced_losses:
        return {}
    return {id(layer): _traced_losses.pop(id(layer)) for layer, _ in saved if id(layer) in _traced_losses}


def restore_traced_losses(entries: dict) -> None:
    """Puts back entries removed by `forget_traced_losses` (`stateless_call` changes nothing)."""
    _traced_losses.update(entries)
