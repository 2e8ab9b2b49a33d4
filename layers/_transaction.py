"""Call transactions: what one layer call changed, kept together or undone together.

Every `Layer.__call__` runs inside a `CallTransaction`. It holds the variable writes (in a
`StatelessScope`), the losses and metric values reported, and the layers built during the
call. When the call returns, a nested transaction hands all of it to its parent; the outermost
one applies it. When the call raises, all of it is undone, so a sublayer call that fails and
is caught by its parent leaves no trace either (SPEC §9: a failed call changes nothing).
"""

from __future__ import annotations

import dataclasses
from contextvars import ContextVar
from typing import Any

import jax

import dtypepolicy as dp
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
    """

    __slots__ = ("builds", "losses", "metrics", "parent", "scope", "_token")

    def __init__(self) -> None:
        self.parent = _current.get()
        self.scope = dp.StatelessScope()
        self.losses: list[tuple[Any, Any]] = []
        self.metrics: list[tuple[Any, str, str, float]] = []
        self.builds: list[BuildRecord] = []
        self._token = None

    def __enter__(self) -> CallTransaction:
        self._token = _current.set(self)
        self.scope.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.scope.__exit__(*exc_info)
        _current.reset(self._token)

    @property
    def stateless(self) -> bool:
        """Whether the call runs inside an enclosing `StatelessScope` (`stateless_call`, say)."""
        return self.scope._parent is not None

    def traced(self, outputs: Any) -> bool:
        """Whether the call ran under a JAX trace: its outputs or its losses are tracers."""
        tracer = jax.core.Tracer
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


def note_build(layer: Any, snapshot: dict, own_variables: list, own_layers: list) -> None:
    """Records a build that succeeded, so that the call around it can undo it if it fails."""
    transaction = _current.get()
    if transaction is not None:
        transaction.builds.append(BuildRecord(layer, snapshot, own_variables, own_layers))


def note_metric(layer: Any, value: Any, name: str | None, aggregation: str) -> None:
    """`Layer.add_metric`: checks the report now, applies it when the outermost call succeeds.

    Outside any call the report is applied at once. Values traced by JAX are dropped.
    """
    if aggregation not in _metrics.AGGREGATIONS:
        raise ValueError(f"Metric aggregation must be one of {_metrics.AGGREGATIONS}, received {aggregation!r}.")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"add_metric name must be a str or None, received {name!r} of type {type(name).__name__}.")
    number = _metrics.host_value(value)
    transaction = _current.get()
    if name is None:
        pending = set()
        link = transaction
        while link is not None:
            pending.update(entry[1] for entry in link.metrics if entry[0] is layer)
            link = link.parent
        name = _metrics.default_name(layer, pending)
    if number is None:
        return
    if transaction is None:
        _metrics.apply_report(layer, name, aggregation, number)
    else:
        transaction.metrics.append((layer, name, aggregation, number))
