"""The default policy: process-wide `set_dtype_policy` and context-local `policy_scope`."""

from __future__ import annotations

import contextlib
from typing import Any

from dtypepolicy import _state
from dtypepolicy._policy import DTypePolicy, current_default
from dtypepolicy._policy_map import DTypePolicyMap
from dtypepolicy._serialization import get


def _as_default(policy: Any, caller: str) -> DTypePolicy:
    # Checked after conversion: a dict from serialize(map) only becomes a map inside get().
    converted = get(policy)
    if isinstance(converted, DTypePolicyMap):
        received = repr(policy) if policy is converted else f"a serialized one, {policy!r}"
        raise TypeError(
            f"{caller} takes a single policy, received a DTypePolicyMap ({received}). "
            f"Pass the map as a layer's dtype= instead, so sublayers resolve it by path."
        )
    return converted


def dtype_policy() -> DTypePolicy:
    """Returns the default policy here: the innermost `policy_scope`, else the global one.

    Example:
      >>> dtype_policy().name
      'float32'
    """
    return current_default()


def set_dtype_policy(policy: Any) -> None:
    """Sets the process-wide default policy, seen by every thread.

    Args:
      policy: anything `dtypepolicy.get` accepts except a DTypePolicyMap; None restores
        the float32 default.

    Example:
      >>> set_dtype_policy("mixed_bfloat16")
      >>> dtype_policy().compute_dtype
      'bfloat16'
      >>> set_dtype_policy(None)
    """
    _state.set_global(None if policy is None else _as_default(policy, "set_dtype_policy"))


def policy_scope(policy: Any) -> contextlib.AbstractContextManager[DTypePolicy]:
    """Makes `policy` the default inside a `with` block, in this thread or task only.

    Scopes nest, and the previous default comes back when the block exits, also on error.

    Example:
      >>> with policy_scope("mixed_float16") as policy:
      ...     dtype_policy() == policy
      True
      >>> dtype_policy().name
      'float32'
    """
    # Converted before the block opens, so a bad value raises at the call site.
    return _state.scope(_as_default(policy, "policy_scope"))
