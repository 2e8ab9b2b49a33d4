"""StatelessScope: redirect Variable reads and writes to a mapping, for pure functions.

Inside a scope, a variable given a value reads that value, and every write is recorded in
the scope instead of changing the variable. This is what turns a stateful layer call into
a pure function that `jax.jit`, `jax.grad` and `jax.vmap` can trace: the caller passes
values in and reads the written values out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from dtypepolicy._context import stateless_scope_var as _current_scope
from dtypepolicy._variable import Variable
from dtypepolicy.quantization._max_combine import from_max_combined, to_max_combined


def current_scope() -> StatelessScope | None:
    """The innermost active StatelessScope, or None."""
    return _current_scope.get()


class StatelessScope:
    """Reads variables from a mapping and records writes instead of applying them.

    Scopes nest: a read falls back to the enclosing scope, then to the variable itself.

    Args:
      state_mapping: `(variable, value)` pairs or a mapping from variables to values. Values
        are cast to each variable's storage dtype and must have its shape.

    Example:
      >>> v = Variable(jnp.zeros(2))
      >>> with StatelessScope([(v, jnp.ones(2))]) as scope:
      ...     _ = v.assign_add(jnp.ones(2))
      >>> scope.get_current_value(v).tolist(), v.numpy().tolist()
      ([2.0, 2.0], [0.0, 0.0])
    """

    def __init__(self, state_mapping: Mapping | Iterable[tuple[Any, Any]] | None = None) -> None:
        self._values: dict[int, tuple[Any, Any]] = {}
        self._written: dict[int, Any] = {}
        self._token = None
        self._parent: StatelessScope | None = None
        if state_mapping is None:  # every layer call opens one of these: skip the ABC check
            return
        pairs = state_mapping.items() if isinstance(state_mapping, Mapping) else state_mapping
        for variable, value in pairs:
            if not isinstance(variable, Variable):
                raise TypeError(f"StatelessScope keys must be Variables, received {variable!r}.")
            array = jnp.asarray(value)
            if array.shape != variable.shape:
                raise ValueError(
                    f"StatelessScope value for variable {variable.path!r} has shape {array.shape}, "
                    f"expected {variable.shape}."
                )
            self._values[id(variable)] = (variable, array.astype(variable.dtype))

    def combine_gradients_by_max(self, variables: Iterable[Any]) -> list:
        """Holds these variables' given values so that their cotangents combine by max, not sum.

        For `overwrite_with_gradient` state under `jax.grad`: when a layer runs twice (weight
        sharing, `lax.scan`) the two new values must combine by max. Returns the held values.
        """
        held = []
        for variable in variables:
            entry = self._values.get(id(variable))
            if (
                entry is not None
                and isinstance(entry[1], jax.core.Tracer)
                and jnp.issubdtype(entry[1].dtype, jnp.floating)
            ):
                self._values[id(variable)] = (variable, to_max_combined(entry[1]))
                held.append(self._values[id(variable)][1])
        return held

    def __enter__(self) -> StatelessScope:
        self._parent = _current_scope.get()
        self._token = _current_scope.set(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        _current_scope.reset(self._token)
        self._token = None

    def get_current_value(self, variable: Any) -> Any:
        """The value `variable` has in this scope (written or given), or None."""
        entry = self._values.get(id(variable))
        return None if entry is None else entry[1]

    def read(self, variable: Any) -> Any:
        """The value a read of `variable` sees here."""
        entry = self._values.get(id(variable))
        if entry is not None:
            # Float8 state held for max-combined cotangents: each read is a float32 view of it.
            return from_max_combined(entry[1])
        if self._parent is not None:
            return self._parent.read(variable)
        return variable._value

    def write(self, variable: Any, value: Any) -> None:
        """Records a write; the variable itself is not changed."""
        self._values[id(variable)] = (variable, value)
        self._written[id(variable)] = variable

    @property
    def written(self) -> list[Any]:
        """The variables written inside the scope, in first-write order."""
        return list(self._written.values())

    def commit(self) -> None:
        """Applies every recorded write to the enclosing scope, or to the variables themselves."""
        for key, variable in self._written.items():
            value = self._values[key][1]
            if self._parent is not None:
                self._parent.write(variable, value)
            else:
                object.__setattr__(variable, "_value", value)
