"""The policies measured: the default set, checking names, and the float source of a quantized policy."""

from __future__ import annotations

from collections.abc import Sequence

import dtypepolicy as dp

POLICIES = (
    "float32",
    "mixed_bfloat16",
    "mixed_float16",
    "float8_from_mixed_bfloat16",
    "float8_current_from_mixed_bfloat16",
    "int8_from_mixed_bfloat16",
)


def _check_policies(policies: Sequence[str] | str) -> tuple[str, ...]:
    """The policy names, each one a valid policy; a clear ValueError naming a bad one."""
    if isinstance(policies, str):
        policies = [name.strip() for name in policies.split(",") if name.strip()]
    if not policies:
        raise ValueError(f"policies must name at least one policy, received {policies!r}.")
    for name in policies:
        if not isinstance(name, str):
            raise TypeError(
                f"each policy must be a policy name (str), received {name!r} of type {type(name).__name__}."
            )
        try:
            dp.get(name)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"unknown policy {name!r} in policies; expected names such as {POLICIES}. {error}"
            ) from None
    return tuple(policies)


def _quantization(policy: str) -> tuple[str | None, str]:
    """(mode or None, the float source policy name)."""
    resolved = dp.get(policy)
    mode = getattr(resolved, "quantization_mode", None)
    if mode is None:
        return None, policy
    return mode, resolved.name.split("_from_", 1)[1]


def _compute_dtype(policy: str) -> str:
    return str(dp.get(_quantization(policy)[1]).compute_dtype)


def _applies(policy: str, quantizable: bool) -> bool:
    """Whether a policy has rows for a model: quantized ones only for models with a quantized form."""
    return quantizable or _quantization(policy)[0] is None


def _forward_only(policy: str, forward_only: Sequence[str]) -> bool:
    return any(policy.startswith(prefix) for prefix in forward_only)
