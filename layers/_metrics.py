"""Metrics recorded with `Layer.add_metric`: running means (or sums) of reported values."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

AGGREGATIONS = ("mean", "sum")


class Metric:
    """A named running aggregate of the values a layer reports.

    Values are accumulated in float64 on the host when they are concrete. Values reported
    while JAX traces the layer (inside `jax.jit`) are not accumulated; return them as
    outputs of the traced function instead.

    Example:
      >>> metric = Metric("max", "mean")
      >>> metric.update(2.0); metric.update(4.0)
      >>> metric.result()
      3.0
    """

    def __init__(self, name: str, aggregation: str = "mean") -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"Metric aggregation must be one of {AGGREGATIONS}, received {aggregation!r}.")
        self.name = name
        self.aggregation = aggregation
        self.reset_state()

    def update(self, value: Any) -> None:
        """Adds a value (its mean, for arrays); ignored while tracing."""
        if isinstance(value, jax.core.Tracer):
            return
        self._total += float(np.mean(np.asarray(value, np.float64)))
        self._count += 1

    def result(self) -> float:
        """The mean (or sum) of the values seen since the last reset."""
        if self.aggregation == "sum":
            return self._total
        return self._total / self._count if self._count else 0.0

    def reset_state(self) -> None:
        """Forgets every value seen."""
        self._total = 0.0
        self._count = 0

    def __repr__(self) -> str:
        return f"<Metric {self.name!r} {self.aggregation}={self.result()!r}>"
