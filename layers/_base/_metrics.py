"""Metrics recorded with `Layer.add_metric`: running means (or sums) of reported values."""

from __future__ import annotations

from collections.abc import Iterable
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
        number = host_value(value)
        if number is not None:
            self._total += number
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


def host_value(value: Any) -> float | None:
    """The mean of a reported value as a Python float (float64), or None for a traced value."""
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return float(np.mean(np.asarray(value, np.float64)))
    except (TypeError, ValueError):
        raise TypeError(
            f"A metric value must be a number or a numeric array, received {value!r} of type {type(value).__name__}."
        ) from None


def default_name(layer: Any, index: int) -> str:
    """The name of the layer's `index`-th unnamed report in one call: `"<layer name>_metric[_<index>]"`."""
    return f"{layer.name}_metric_{index}" if index else f"{layer.name}_metric"


def apply_report(layer: Any, name: str, aggregation: str, number: float) -> None:
    """Adds a checked value to the layer's metric `name`, creating the metric on first use."""
    metric = layer._metrics_by_name.get(name)
    if metric is None:
        metric = layer._metrics_by_name[name] = Metric(name, aggregation)
    metric._total += number
    metric._count += 1


def check_aggregation(layer: Any, name: str, aggregation: str, pending: Iterable[tuple]) -> None:
    """A metric keeps the aggregation of its first report: another one is a `ValueError`.

    Args:
      layer: the reporting layer.
      name: the metric's name.
      aggregation: the aggregation of the new report.
      pending: `(layer, name, aggregation, value)` reports of the running calls, not applied yet.
    """
    metric = layer._metrics_by_name.get(name)
    existing = None if metric is None else metric.aggregation
    if existing is None:
        existing = next((a for owner, n, a, _ in pending if owner is layer and n == name), None)
    if existing is not None and existing != aggregation:
        raise ValueError(
            f"add_metric: the metric {name!r} of layer {layer.name!r} aggregates with {existing!r}, received "
            f"aggregation={aggregation!r}. A metric keeps the aggregation of its first report; report the "
            f"{aggregation!r} value under another name."
        )
