"""Precision strategies that projection layers delegate to: float8 training and int8 inference.

A layer with a kernel asks `strategy_for(policy)` and hands it the projection (see
`QuantizationStrategy`); a plain policy has no strategy. The float8 state's "gradients" combine
by max across uses (`keep_unless_updated` is the rule optimizers apply to them).

Example:
  >>> import dtypepolicy as dp
  >>> strategy_for(dp.get("float8_from_mixed_bfloat16"))
  Float8Strategy(recipe='delayed', amax_history_length=1024, margin=0)
  >>> strategy_for(dp.get("int8_from_float32")), strategy_for(dp.get("mixed_bfloat16"))
  (Int8Strategy(), None)
"""

from __future__ import annotations

from typing import Any

from dtypepolicy.quantization._contraction import DENSE, Contraction
from dtypepolicy.quantization._float8 import Float8Strategy
from dtypepolicy.quantization._int8 import Int8Strategy, absmax_quantize
from dtypepolicy.quantization._max_combine import keep_unless_updated
from dtypepolicy.quantization._strategy import QuantizationStrategy, WeightSpec

__all__ = [
    "DENSE",
    "Contraction",
    "Float8Strategy",
    "Int8Strategy",
    "QuantizationStrategy",
    "WeightSpec",
    "absmax_quantize",
    "keep_unless_updated",
    "strategy_for",
]

MODES = ("int8", "float8")


def strategy_for(policy: Any) -> QuantizationStrategy | None:
    """The strategy a policy's quantization mode asks for, or None for a plain policy.

    Args:
      policy: a policy (anything with a `quantization_mode`; plain policies have None).

    Returns:
      A `Float8Strategy` with the policy's recipe, history length and margin, an `Int8Strategy`,
      or None.

    Raises:
      ValueError: the mode has no strategy (int4).

    Example:
      >>> import dtypepolicy as dp
      >>> strategy_for(dp.get("float8_current_from_mixed_bfloat16"))
      Float8Strategy(recipe='current', amax_history_length=None, margin=0)
      >>> strategy_for(dp.get("bfloat16")) is None
      True
    """
    mode = getattr(policy, "quantization_mode", None)
    if mode is None:
        return None
    if mode == "float8":
        return Float8Strategy(policy.recipe, policy.amax_history_length, policy.margin)
    if mode == "int8":
        return Int8Strategy()
    raise ValueError(
        f"Quantization mode {mode!r} (policy {policy.name!r}) has no implementation; supported modes are {MODES}."
    )
