"""The add_metric aggregates."""

import jax
import jax.numpy as jnp
import pytest

from layers._base._metrics import Metric


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


def test_host_value_means_in_float64_and_skips_tracers():
    from layers._base._metrics import host_value

    assert host_value(jnp.array([1.0, 2.0], jnp.bfloat16)) == 1.5 and host_value(3) == 3.0
    seen = []
    jax.jit(lambda x: seen.append(host_value(x)) or x)(jnp.ones(()))
    assert seen == [None]
    with pytest.raises(TypeError, match="A metric value must be a number or a numeric array, received 'high'"):
        host_value("high")


def test_default_names_follow_the_order_of_the_report_in_its_call():
    from layers import Layer
    from layers._base._metrics import apply_report, default_name

    layer = Layer(name="probe")
    assert [default_name(layer, index) for index in range(3)] == ["probe_metric", "probe_metric_1", "probe_metric_2"]
    apply_report(layer, "probe_metric", "sum", 2.0)
    assert default_name(layer, 0) == "probe_metric"  # an existing metric is reused, not skipped
    (metric,) = layer._metrics_by_name.values()
    assert metric.aggregation == "sum" and metric.result() == 2.0
