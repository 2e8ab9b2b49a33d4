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
from contextvars import ContextVar
from typing import Any

import jax

import dtypepolicy as dp
from dtypepolicy._context import scoped
from layers._base import _metrics, _traced_losses
from layers._base._arrays import is_jax_array

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
      traced_callables: `(layer, callable)` losses added while JAX traced the call (also in
        `losses`): they belong to that trace, never to the layer (see `settle_traced_callables`).
    """

    __slots__ = ("builds", "losses", "metrics", "parent", "scope", "traced_callables", "unnamed", "_token")

    def __init__(self) -> None:
        self.parent = _current.get()
        self.scope = dp.StatelessScope()
        self.losses: list[tuple[Any, Any]] = []
        self.metrics: list[tuple[Any, str, str, float]] = []
        self.builds: list[BuildRecord] = []
        self.unnamed: dict[int, int] | None = None  # created by the first unnamed report
        self.traced_callables: list[tuple[Any, Any]] | None = None  # created by the first one
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
        if is_jax_array(outputs) and not self.losses:  # the common case, kept cheap
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
            if self.traced_callables:
                parent.traced_callables = (parent.traced_callables or []) + self.traced_callables
            return
        if apply_reports:
            for report in self.metrics:
                _metrics.apply_report(*report)

    def rollback(self) -> None:
        """Undoes the losses and builds of the call; its variable writes are simply dropped."""
        for layer, loss in reversed(self.losses):
            if callable(loss):
                remove_callable(layer, loss)
            else:
                remove_last(layer._losses, loss)
        for record in reversed(self.builds):
            record.undo()


def remove_last(items: list, item: Any) -> None:
    """Deletes the last entry of `items` that `is` `item` (an array loss has no usable `==`)."""
    for index in range(len(items) - 1, -1, -1):
        if items[index] is item:
            del items[index]
            return


def remove_callable(layer: Any, loss: Any) -> None:
    """Takes a callable loss back out of `layer`: its tuple is replaced, never mutated."""
    kept = list(layer._callable_losses)
    remove_last(kept, loss)
    object.__setattr__(layer, "_callable_losses", tuple(kept))


def restore_losses(saved: list) -> None:
    """Gives each layer back the loss values it had: `saved` as returned by `Layer._clear_losses`."""
    for owner, losses in saved:
        object.__setattr__(owner, "_losses", losses)


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

    A callable added while JAX traces the call (in `call` under the user's jax.jit/grad; `build`
    runs concretely) may close over tracers: it belongs to that trace, shown by `losses` while
    the trace runs and gone after (`settle_traced_callables`). Outside any layer call there is
    no call to tie it to, so it is refused.
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
    transaction = _current.get()
    traced = _traced_losses.under_trace()
    if traced and transaction is None:
        raise RuntimeError(
            f"add_loss on layer {layer.name!r} received the callable {loss!r} while JAX was tracing, outside any "
            f"layer call: it could hold tracers for good. Add it in build (or outside the transformed function), "
            f"or add the loss value instead."
        )
    object.__setattr__(layer, "_callable_losses", (*layer._callable_losses, loss))
    if transaction is not None:
        transaction.losses.append((layer, loss))
        if traced:
            transaction.traced_callables = (transaction.traced_callables or []) + [(layer, loss)]


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


def keep_traced_losses(transaction: CallTransaction, saved: list) -> None:
    """After a top-level call traced by the user: the losses it added move out of the layers.

    They go to `_traced_losses`, tied to the trace, and the layers get back the losses they had.

    Args:
      transaction: the committed transaction of the call.
      saved: `(layer, losses before the call)` for the layers the call cleared (`_clear_losses`).
    """
    cleared = {id(layer) for layer, _ in saved}
    added = [(layer, layer._losses) for layer, _ in saved]
    # Layers outside the cleared tree (called through an untracked reference) got the losses
    # appended to their own lists: those are taken back out.
    others = {id(layer): layer for layer, _ in transaction.losses if id(layer) not in cleared}
    other_added = [(layer, list(layer._losses)) for layer in others.values()]
    callables = transaction.traced_callables or []
    _traced_losses.keep(added, other_added, callables)
    restore_losses(saved)
    for layer, loss in reversed(transaction.losses):
        if id(layer) in others and not callable(loss):
            remove_last(layer._losses, loss)
    settle_traced_callables(transaction)


def settle_traced_callables(transaction: CallTransaction) -> None:
    """Takes the callables added under a trace out of their layers, once the call is over.

    After a traced top-level call they are in `_traced_losses`; after an eager one they came
    from a trace inside the call (a `jax.jit` in `call`), which has ended.
    """
    for layer, loss in reversed(transaction.traced_callables or ()):
        remove_callable(layer, loss)
