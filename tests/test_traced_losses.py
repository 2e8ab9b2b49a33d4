"""Losses of a top-level call traced by the user's jax.jit/grad: shown inside the trace, gone after."""

import gc
import threading
import weakref

import jax
import jax.numpy as jnp
import pytest

from layers import Layer
from layers._base import _traced_losses


class CallableInCall(Layer):
    def call(self, x):
        self.add_loss(lambda: jnp.sum(x))
        return x


class PenaltyInBuild(Layer):
    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")
        self.add_loss(lambda: 0.5 * jnp.sum(self.w.value**2))

    def call(self, x):
        self.add_loss(lambda: jnp.sum(x))
        return x * self.w.value


class ValueLoss(Layer):
    def call(self, x):
        self.add_loss(jnp.sum(x))
        return x


def _jitted_losses(layer, x):
    return jax.jit(lambda x: (layer(x), layer.losses)[1])(x)


# ---------------------------------------------------------------- callables added during a traced call


def test_a_callable_loss_added_in_a_jitted_call_is_seen_inside_the_trace_and_gone_after():
    layer = CallableInCall()
    assert [float(loss) for loss in _jitted_losses(layer, jnp.full(2, 3.0))] == [6.0]
    assert layer.losses == [] and layer._callable_losses == ()  # no tracer kept in the layer
    assert [float(loss) for loss in _jitted_losses(layer, jnp.ones(2))] == [2.0]  # the layer still works
    grads = jax.grad(lambda x: (layer(x), sum(layer.losses))[1])(jnp.ones(2))
    assert grads.tolist() == [1.0, 1.0]  # d/dx sum(x)
    assert layer.losses == []


def test_a_weight_penalty_added_by_a_build_under_jit_stays_and_the_calls_callable_goes():
    layer = PenaltyInBuild()
    # build runs concretely: its penalty 0.5 * sum(ones(2)**2) = 1 stays; the call's sum(x) = 4 is the trace's.
    assert [float(loss) for loss in _jitted_losses(layer, jnp.full(2, 2.0))] == [1.0, 4.0]
    assert [float(loss) for loss in layer.losses] == [1.0]
    layer.w.assign(jnp.full(2, 2.0))
    assert [float(loss) for loss in layer.losses] == [4.0]  # still evaluated on each read


def test_a_callable_added_by_a_sublayer_in_a_jitted_call_belongs_to_that_call():
    class Parent(Layer):
        def __init__(self):
            super().__init__()
            self.child = CallableInCall()

        def call(self, x):
            return self.child(x) * 2

    parent = Parent()
    assert [float(loss) for loss in _jitted_losses(parent, jnp.ones(3))] == [3.0]
    assert parent.losses == [] and parent.child._callable_losses == ()


def test_a_callable_added_under_a_trace_inside_an_eager_call_is_gone_after_the_call():
    class JitsItsChild(Layer):
        def __init__(self):
            super().__init__()
            self.child = CallableInCall()

        def call(self, x):
            return jax.jit(self.child)(x)

    layer = JitsItsChild()
    layer(jnp.ones(2))
    assert layer.losses == [] and layer.child._callable_losses == ()


def test_a_callable_loss_added_under_a_trace_outside_any_layer_call_is_refused():
    layer = Layer(name="plain")

    def add(x):
        layer.add_loss(lambda: jnp.sum(x))
        return x

    with pytest.raises(RuntimeError, match=r"layer 'plain'.*while JAX was tracing.*outside any layer call"):
        jax.jit(add)(jnp.ones(2))
    assert layer._callable_losses == () and layer.losses == []


def test_eager_callables_of_calls_still_pile_up_as_documented():
    layer = CallableInCall()
    layer(jnp.ones(2))
    layer(jnp.full(2, 2.0))
    assert [float(loss) for loss in layer.losses] == [2.0, 4.0]


# ---------------------------------------------------------------- the table: garbage collection and threads


def test_a_collection_during_the_purge_that_drops_an_entry_breaks_nothing(monkeypatch):
    survivor = ValueLoss()
    survivor(jnp.ones(2))
    gc.disable()
    try:
        doomed = ValueLoss()
        _jitted_losses(doomed, jnp.ones(2))
        object.__setattr__(doomed, "_cycle", [doomed])  # freed only by the collector
        del doomed
        running = _traced_losses._trace_running

        def collecting(trace):
            gc.collect()  # what any allocation inside the loop may trigger
            return running(trace)

        monkeypatch.setattr(_traced_losses, "_trace_running", collecting)
        assert [float(loss) for loss in _jitted_losses(survivor, jnp.full(2, 2.0))] == [4.0]
    finally:
        gc.enable()
    assert [float(loss) for loss in survivor.losses] == [2.0]


def test_an_entry_dropped_between_the_check_and_the_removal_is_no_error(monkeypatch):
    layer = ValueLoss()
    _jitted_losses(layer, jnp.ones(2))
    key = id(layer)

    def dropped_meanwhile(trace):
        _traced_losses._table.pop(key, None)  # what the layer's weakref callback does
        return False

    monkeypatch.setattr(_traced_losses, "_trace_running", dropped_meanwhile)
    assert layer.losses == []
    _jitted_losses(layer, jnp.ones(2))
    other = ValueLoss()
    other(jnp.ones(2))  # an eager call purges finished entries
    assert key not in _traced_losses._table


def test_a_traced_call_in_one_thread_keeps_another_threads_running_trace():
    inside, other_done = threading.Event(), threading.Event()
    layer, results = ValueLoss(), {}

    def traced_in_thread():
        def step(x):
            layer(x)
            inside.set()
            assert other_done.wait(10)
            return layer.losses

        results["losses"] = [float(loss) for loss in jax.jit(step)(jnp.full(2, 5.0))]

    thread = threading.Thread(target=traced_in_thread)
    thread.start()
    assert inside.wait(10)
    _jitted_losses(ValueLoss(), jnp.ones(2))  # purges finished traces, not the other thread's running one
    ValueLoss()(jnp.ones(2))
    other_done.set()
    thread.join(10)
    assert results["losses"] == [10.0]


def test_the_finished_trace_goes_at_the_next_eager_call():
    layer = ValueLoss()
    _jitted_losses(layer, jnp.ones(3))
    trace = weakref.ref(_traced_losses._table[id(layer)].trace())  # kept alive by the stored tracers
    ValueLoss()(jnp.ones(1))  # any layer's eager call drops the finished entries
    gc.collect()
    assert id(layer) not in _traced_losses._table
    assert trace() is None
