"""The add_metric aggregates."""

import jax
import jax.numpy as jnp
import pytest

from layers._metrics import Metric


def test_mean_and_sum():
    mean, total = Metric("m"), Metric("s", "sum")
    for value in [1.0, jnp.array([2.0, 4.0])]:
        mean.update(value)
        total.update(value)
    assert mean.result() == 2.0 and total.result() == 4.0
    mean.reset_state()
    assert mean.result() == 0.0


def test_traced_values_are_not_accumulated():
    metric = Metric("m")
    jax.jit(lambda x: metric.update(x) or x)(jnp.ones(()))
    assert metric.result() == 0.0 and metric._count == 0


def test_bad_aggregation():
    with pytest.raises(ValueError, match="received 'max'"):
        Metric("m", "max")
