"""Call transactions: a layer call's writes, losses, metric reports and builds, kept or undone together."""

import contextlib

import jax.numpy as jnp
import pytest

import dtypepolicy as dp
from layers import Layer
from layers._base._transaction import CallTransaction, current, note_metric
from tests._layers_for_tests import Linear


def test_a_nested_transaction_hands_its_changes_to_the_parent_and_the_outermost_applies_them():
    layer = Layer(name="owner")
    variable = layer.add_weight(shape=(), initializer="zeros", name="v")
    with CallTransaction() as outer:
        with CallTransaction() as inner:
            assert current() is inner and inner.parent is outer
            variable.assign(2.0)
            layer.add_loss(jnp.asarray(1.0))
            note_metric(layer, 4.0, "m", "mean")
        inner.commit()
        assert float(variable._value) == 0.0 and layer.metrics == []  # not applied yet
        assert len(outer.losses) == 1 and len(outer.metrics) == 1
    outer.commit()
    assert current() is None
    assert float(variable.value) == 2.0 and [m.result() for m in layer.metrics] == [4.0]


def test_rollback_takes_back_losses_and_builds_and_drops_writes():
    layer = Linear(2)
    with CallTransaction() as outer:
        with CallTransaction() as inner:
            layer.build((1, 3))
            layer.kernel.assign(jnp.ones((3, 2)))
            layer.add_loss(jnp.asarray(5.0))
        inner.rollback()
        assert outer.builds == [] and outer.losses == []
    outer.commit()
    assert not layer.built and layer.weights == [] and layer.losses == []


def test_outside_a_call_metric_reports_apply_at_once_and_bad_reports_raise():
    layer = Layer(name="direct")
    note_metric(layer, 1.0, None, "mean")
    note_metric(layer, 3.0, None, "mean")  # each report outside a call is a call of its own: same name
    assert [(m.name, m.result()) for m in layer.metrics] == [("direct_metric", 2.0)]
    with pytest.raises(ValueError, match="received 'median'"):
        note_metric(layer, 1.0, "x", "median")
    with pytest.raises(TypeError, match="add_metric name must be a str or None, received 3"):
        note_metric(layer, 1.0, 3, "mean")


def test_unnamed_metrics_in_one_call_get_distinct_names():
    class TwoReports(Layer):
        def call(self, x):
            self.add_metric(jnp.sum(x))
            self.add_metric(jnp.max(x))
            return x

    layer = TwoReports(name="two")
    layer(jnp.arange(3.0))
    assert [(m.name, m.result()) for m in layer.metrics] == [("two_metric", 3.0), ("two_metric_1", 2.0)]


def test_a_user_stateless_scope_around_a_call_keeps_its_writes_in_the_scope():
    layer = Layer()
    counter = layer.add_weight(shape=(), initializer="zeros", name="n")

    class Bump(Layer):
        def call(self, x):
            counter.assign_add(1.0)
            return x

    bump = Bump()
    with dp.StatelessScope() as scope:
        bump(jnp.ones(1))
        with contextlib.suppress(ValueError), CallTransaction():
            counter.assign_add(10.0)
            raise ValueError
    assert float(scope.get_current_value(counter)) == 1.0 and float(counter.value) == 0.0


def test_unnamed_metrics_are_numbered_within_each_call_so_repeated_calls_accumulate():
    class TwoReports(Layer):
        def call(self, x):
            self.add_metric(jnp.mean(x))
            self.add_metric(jnp.max(x))
            return x

    layer = TwoReports(name="two")
    batches = [[1.0, 2.0, 3.0], [3.0, 5.0, 10.0], [0.0, 0.0, 4.0]]
    for batch in batches:
        layer(jnp.asarray(batch))
    means, maxes = [sum(b) / 3 for b in batches], [max(b) for b in batches]
    assert [(m.name, m._count) for m in layer.metrics] == [("two_metric", 3), ("two_metric_1", 3)]
    assert layer.metrics[0].result() == pytest.approx(sum(means) / 3)
    assert layer.metrics[1].result() == pytest.approx(sum(maxes) / 3)

    class Twice(Layer):  # a shared sublayer called twice in one parent call: two calls, one metric
        def __init__(self):
            super().__init__(name="twice")
            self.inner = TwoReports(name="shared")

        def call(self, x):
            return self.inner(self.inner(x) * 2)

    parent = Twice()
    parent(jnp.asarray([1.0, 2.0]))
    assert [(m.name, m._count) for m in parent.metrics] == [("shared_metric", 2), ("shared_metric_1", 2)]
    assert parent.metrics[0].result() == pytest.approx((1.5 + 3.0) / 2)
    assert parent.metrics[1].result() == pytest.approx((2.0 + 4.0) / 2)


def test_exit_resets_the_current_transaction_even_when_the_scope_exit_raises():
    class FailingExit:
        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            raise RuntimeError("scope exit failed")

    transaction = CallTransaction()
    transaction.scope = FailingExit()
    with pytest.raises(RuntimeError, match="scope exit failed"), transaction:
        assert current() is transaction
    assert current() is None


# ---------------------------------------------------------------- issue 7: one aggregation per metric


def test_a_report_with_another_aggregation_than_its_metric_is_a_clear_error_outside_a_call():
    layer = Layer(name="agg")
    note_metric(layer, 2.0, "loss", "mean")
    with pytest.raises(
        ValueError, match=r"metric 'loss' of layer 'agg' aggregates with 'mean'.*received aggregation='sum'"
    ):
        note_metric(layer, 5.0, "loss", "sum")
    layer.add_metric(1.0)  # unnamed: "agg_metric", a mean
    with pytest.raises(ValueError, match=r"metric 'agg_metric' of layer 'agg' aggregates with 'mean'"):
        layer.add_metric(1.0, aggregation="sum")
    assert [(m.name, m.aggregation, m.result(), m._count) for m in layer.metrics] == [
        ("loss", "mean", 2.0, 1),
        ("agg_metric", "mean", 1.0, 1),
    ]


class _Reports(Layer):
    def build(self, input_shape):
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def call(self, x, aggregations=("mean",)):
        self.count.assign_add(1.0)
        for aggregation in aggregations:
            self.add_metric(jnp.sum(x), name="total", aggregation=aggregation)
        return x


def test_a_call_reporting_another_aggregation_fails_and_changes_nothing():
    layer = _Reports(name="reports")
    layer(jnp.ones(2))
    with pytest.raises(
        ValueError, match=r"metric 'total' of layer 'reports' aggregates with 'mean'.*received aggregation='sum'"
    ):
        layer(jnp.ones(2), aggregations=("sum",))
    assert [(m.aggregation, m.result(), m._count) for m in layer.metrics] == [("mean", 2.0, 1)]
    assert float(layer.count.value) == 1.0

    fresh = _Reports(name="fresh")  # two reports of one call disagree: the metric does not exist yet
    with pytest.raises(ValueError, match=r"metric 'total' of layer 'fresh' aggregates with 'sum'.*'mean'"):
        fresh(jnp.ones(2), aggregations=("sum", "mean"))
    assert fresh.metrics == [] and not fresh.built

    with pytest.raises(ValueError, match=r"aggregates with 'mean'.*received aggregation='sum'"):
        layer.stateless_call([], [jnp.asarray(0.0)], jnp.ones(2), aggregations=("sum",))
    assert [(m.aggregation, m.result(), m._count) for m in layer.metrics] == [("mean", 2.0, 1)]


def test_a_shared_sublayer_reporting_two_aggregations_in_one_parent_call_fails():
    class Parent(Layer):
        def __init__(self):
            super().__init__(name="parent")
            self.shared = _Reports(name="shared")

        def call(self, x):
            self.shared(x, aggregations=("mean",))
            return self.shared(x, aggregations=("sum",))

    parent = Parent()
    with pytest.raises(ValueError, match=r"metric 'total' of layer 'shared' aggregates with 'mean'"):
        parent(jnp.ones(2))
    assert parent.metrics == [] and not parent.shared.built
