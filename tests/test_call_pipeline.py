"""The call pipeline: autocast, build, training/mask scoping, output dtype, transactions, stateless_call."""

import contextlib
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
from dtypepolicy._autocast import current_autocast_dtype
from layers import Embedding, Layer, ops, regularizers
from layers._base._masking import attach_mask, get_mask
from tests._layers_for_tests import Linear, NoTrainingArg, Outer, Recorder, TrainingDefaultTrue

BACKENDS = {"eager": lambda f: f, "jit": jax.jit}

# ---------------------------------------------------------------- mixed precision through the pipeline


def test_mixed_bfloat16_variables_reads_and_outputs():
    dp.set_dtype_policy("mixed_bfloat16")
    layer = Linear(4)
    out = layer(np.ones((2, 3), np.float32))
    assert [w.dtype for w in layer.weights] == ["float32", "float32"]
    assert layer.seen == {"input": jnp.bfloat16, "kernel": jnp.bfloat16}
    assert out.dtype == jnp.bfloat16


def test_mixed_bfloat16_stateless_call_under_jit_matches():
    layer = Linear(4, dtype="mixed_bfloat16")
    x = jnp.ones((2, 3))
    eager = layer(x)
    values = [w.value for w in layer.trainable_variables]
    out, non_trainable = jax.jit(lambda tv, x: layer.stateless_call(tv, [], x))(values, x)
    assert out.dtype == jnp.bfloat16 and non_trainable == []
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(eager, np.float32))


class MixedWithFloat32Head(Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.body = Linear(3)
        self.head = Linear(2, dtype="float32")

    def call(self, x):
        hidden = self.body(x)
        out = self.head(hidden)
        self.scope_after_head = current_autocast_dtype()
        return out


def test_float32_sublayer_inside_a_mixed_layer():
    model = MixedWithFloat32Head(dtype="mixed_bfloat16")
    model.head.dtype_policy = "float32"
    out = model(jnp.ones((1, 4)))
    assert model.body.seen == {"input": jnp.bfloat16, "kernel": jnp.bfloat16}
    assert model.head.seen == {"input": jnp.float32, "kernel": jnp.float32}
    assert out.dtype == jnp.float32
    assert model.scope_after_head == "bfloat16"
    assert current_autocast_dtype() is None


def test_output_dtype_casts_floating_outputs_only():
    class Pair(Layer):
        def call(self, x):
            return {"float": x * 2, "int": jnp.arange(3)}

    out = Pair(dtype="p=f32,c=bf16,o=f32")(jnp.ones(3))
    assert out["float"].dtype == jnp.float32 and out["int"].dtype == jnp.int32
    assert Pair(dtype="mixed_bfloat16")(jnp.ones(3))["float"].dtype == jnp.bfloat16


# ---------------------------------------------------------------- input conversion


class Echo(Layer):
    def call(self, *args, **kwargs):
        return args, kwargs


def test_inputs_autocast_everywhere_ints_and_scalars_untouched():
    layer = Echo(dtype="mixed_float16")
    args, kwargs = layer(
        [np.ones(2, np.float64), {"a": jnp.ones(2, jnp.bfloat16)}],
        np.arange(3),
        other=(jnp.ones(2), 1.5, 2),
        flag="text",
    )
    assert isinstance(args[0][0], jax.Array) and args[0][0].dtype == jnp.float16
    assert args[0][1]["a"].dtype == jnp.float16
    assert isinstance(args[1], jax.Array) and args[1].dtype == jnp.int32
    assert kwargs["other"][0].dtype == jnp.float16
    assert kwargs["other"][1] == 1.5 and isinstance(kwargs["other"][1], float)
    assert kwargs["other"][2] == 2 and kwargs["flag"] == "text"


def test_float32_layer_upcasts_16_bit_inputs():
    (x,), _ = Echo()(jnp.ones(2, jnp.bfloat16))
    assert x.dtype == jnp.float32


def test_autocast_false_casts_nothing_and_keeps_variables_uncast():
    class Reader(Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(2,), initializer="ones")

        def call(self, x):
            self.seen = (x.dtype, self.w.value.dtype, current_autocast_dtype())
            return x

    layer = Reader(dtype="mixed_bfloat16", autocast=False)
    out = layer(np.ones(2, np.float32))
    assert isinstance(out, jax.Array) and layer.seen == (jnp.float32, jnp.float32, None)

    class Outer(Layer):
        def __init__(self):
            super().__init__(dtype="mixed_bfloat16")
            self.inner = Reader(dtype="mixed_bfloat16", autocast=False)

        def call(self, x):
            return self.inner(x)

    outer = Outer()
    outer(jnp.ones(2))
    assert outer.inner.seen == (jnp.bfloat16, jnp.float32, None)  # nested or not, no casting inside


def test_non_array_positional_arguments_are_rejected():
    layer = Echo(name="echo")
    with pytest.raises(TypeError, match=r"layer 'echo'; received 'abc' of type str.*keyword argument"):
        layer(jnp.ones(2), "abc")
    with pytest.raises(TypeError, match="received True of type bool"):
        layer(jnp.ones(2), True)
    with pytest.raises(TypeError, match="received <object"):
        layer([jnp.ones(2), object()])


# ---------------------------------------------------------------- build forms


def test_build_receives_structures_of_shapes():
    class Multi(Layer):
        def build(self, input_shape):
            self.received = input_shape

        def call(self, inputs):
            return inputs

    layer = Multi()
    layer([jnp.ones((2, 3)), jnp.ones((4,))])
    assert layer.received == [(2, 3), (4,)]
    layer = Multi()
    layer({"a": jnp.ones((1, 2))})
    assert layer.received == {"a": (1, 2)}


def test_build_with_one_shape_per_call_argument():
    class TwoInputs(Layer):
        def build(self, x_shape, y_shape):
            self.received = (x_shape, y_shape)

        def call(self, x, y):
            return x + y

    layer = TwoInputs()
    layer(jnp.ones((2, 3)), y=jnp.ones((1, 3)))
    assert layer.received == ((2, 3), (1, 3))

    class NamedByArgument(Layer):
        def build(self, y_shape):
            self.received = y_shape

        def call(self, x, y):
            return x

    layer = NamedByArgument()
    layer(jnp.ones((2,)), jnp.ones((5, 5)))
    assert layer.received == (5, 5)


def test_build_runs_once_and_calling_build_by_hand_marks_the_layer_built():
    class Counting(Linear):
        builds = 0

        def build(self, input_shape):
            type(self).builds += 1
            super().build(input_shape)

    layer = Counting(2)
    layer.build((None, 3))
    assert layer.built and Counting.builds == 1 and len(layer.weights) == 2
    layer(jnp.ones((1, 3)))
    layer(jnp.ones((1, 3)))
    assert Counting.builds == 1 and len(layer.weights) == 2


def test_a_failed_build_is_rolled_back():
    class Broken(Layer):
        attempts = 0

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), name="w")
            type(self).attempts += 1
            if type(self).attempts == 1:
                raise RuntimeError("disk full")

        def call(self, x):
            return x * self.w

    layer = Broken()
    with pytest.raises(RuntimeError, match="disk full"):
        layer(jnp.ones(2))
    assert not layer.built and layer.weights == [] and not hasattr(layer, "w")
    layer(jnp.ones(2))
    assert layer.built and len(layer.weights) == 1


# ---------------------------------------------------------------- training and masks


@pytest.mark.parametrize("training", [True, False])
def test_training_reaches_three_levels_down_through_a_layer_without_a_training_arg(training):
    deepest = Recorder()
    model = NoTrainingArg(NoTrainingArg(deepest))
    model(jnp.ones(2), training=training)
    assert deepest.training_seen is training
    model(jnp.ones(2))
    assert deepest.training_seen is None


def test_a_nested_training_value_never_leaks_into_a_later_sibling():
    outer = Outer()
    outer(jnp.ones(2))
    assert outer.first.training_seen is False and outer.second.training_seen is None
    outer(jnp.ones(2), training=True)
    assert outer.first.training_seen is False and outer.second.training_seen is True


def test_a_signature_default_never_leaks_into_a_sibling():
    class Parent(Layer):
        def __init__(self):
            super().__init__()
            self.defaulted = TrainingDefaultTrue()
            self.after = Recorder()

        def call(self, x):
            self.defaulted(x)
            return self.after(x)

    parent = Parent()
    parent(jnp.ones(2))
    assert parent.defaulted.training_seen is True and parent.after.training_seen is None
    parent(jnp.ones(2), training=False)
    assert parent.defaulted.training_seen is False and parent.after.training_seen is False


class MaskProducer(Layer):
    def compute_mask(self, inputs, mask=None):
        return inputs[..., 0] != 0

    def call(self, inputs):
        return inputs * 2


class MaskConsumer(Layer):
    def call(self, inputs, mask=None):
        self.mask_seen = mask
        return inputs


def test_output_masks_reach_the_next_layer_and_explicit_masks_win():
    producer, consumer = MaskProducer(), MaskConsumer()
    x = jnp.array([[1.0, 5.0], [0.0, 5.0]])
    hidden = producer(x)
    consumer(hidden)
    assert consumer.mask_seen.tolist() == [True, False]
    consumer(hidden, mask=jnp.array([False, False]))
    assert consumer.mask_seen.tolist() == [False, False]
    consumer(jnp.ones((2, 2)))
    assert consumer.mask_seen is None
    assert producer.supports_masking and not consumer.supports_masking


def test_masks_are_scoped_to_their_call():
    class Parent(Layer):
        def __init__(self):
            super().__init__()
            self.a, self.b = MaskConsumer(), MaskConsumer()

        def call(self, x):
            self.a(x, mask=jnp.array([True, False]))
            return self.b(x)

    parent = Parent()
    parent(jnp.ones((2, 2)))
    assert parent.a.mask_seen is not None and parent.b.mask_seen is None


# ---------------------------------------------------------------- failures change nothing


def test_a_failing_call_changes_no_variable_and_no_loss():
    class Flaky(Layer):
        def build(self, shape):
            self.total = self.add_weight(shape=(), initializer="zeros", trainable=False)

        def call(self, x, fail=False):
            self.total.assign_add(jnp.sum(x))
            self.add_loss(jnp.sum(x))
            if fail:
                raise ValueError("bad batch")
            return x

    layer = Flaky()
    layer(jnp.ones(3))
    with pytest.raises(ValueError, match="bad batch") as info:
        layer(jnp.ones(3), fail=True)
    assert float(layer.total.value) == 3.0
    assert [float(loss) for loss in layer.losses] == [3.0]
    assert any("Flaky" in note and "(3,)" in note for note in info.value.__notes__)


def test_a_shape_mismatch_after_build_names_the_layer_and_shapes():
    layer = Linear(2, name="fitted")
    layer(jnp.ones((1, 3)))
    with pytest.raises(TypeError) as info:
        layer(jnp.ones((1, 5)))
    notes = " ".join(info.value.__notes__)
    assert "'fitted'" in notes and "(1, 5)" in notes and "built for input shapes (1, 3)" in notes


# ---------------------------------------------------------------- stateless_call


class Counter(Layer):
    """Trainable scale plus a non-trainable call counter and an add_loss."""

    def build(self, shape):
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")
        self.calls = self.add_weight(shape=(), dtype="int32", trainable=False, name="calls")

    def call(self, x):
        self.calls.assign_add(1)
        self.add_loss(jnp.sum(x * self.scale))
        return x * self.scale


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_stateless_call_returns_updates_and_losses_and_leaves_the_layer_untouched(backend):
    layer = Counter(dtype="mixed_bfloat16")
    layer(jnp.ones(2))
    before = layer.get_weights()
    call = BACKENDS[backend](lambda tv, ntv, x: layer.stateless_call(tv, ntv, x, return_losses=True))
    out, non_trainable, losses = call([jnp.asarray(3.0)], [jnp.asarray(10, jnp.int32)], jnp.ones(2))
    assert out.dtype == jnp.bfloat16 and out.tolist() == [3.0, 3.0]
    assert int(non_trainable[0]) == 11
    assert [float(loss) for loss in losses] == [6.0] and losses[0].dtype == jnp.float32
    for a, b in zip(before, layer.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [float(loss) for loss in layer.losses] == [2.0]  # from the eager call, not the stateless one


def test_stateless_call_under_grad_and_vmap():
    layer = Linear(2, dtype="mixed_bfloat16")
    layer(jnp.ones((1, 3)))
    values = [w.value for w in layer.trainable_variables]
    x = jnp.arange(6.0).reshape(2, 3)

    def loss(values):
        out, _ = layer.stateless_call(values, [], x)
        return jnp.sum(out.astype(jnp.float32))

    grads = jax.grad(loss)(values)
    assert [g.dtype for g in grads] == [jnp.float32, jnp.float32]
    np.testing.assert_allclose(np.asarray(grads[0]), np.repeat(x.sum(0)[:, None], 2, axis=1), rtol=1e-2)
    np.testing.assert_allclose(np.asarray(grads[1]), [2.0, 2.0])
    batched = jax.vmap(lambda row: layer.stateless_call(values, [], row[None])[0][0])(x)
    np.testing.assert_array_equal(np.asarray(batched, np.float32), np.asarray(layer(x), np.float32))


def test_stateless_call_errors():
    layer = Counter(name="counter")
    with pytest.raises(ValueError, match="'counter' must be built before stateless_call"):
        layer.stateless_call([], [], jnp.ones(2))
    layer(jnp.ones(2))
    with pytest.raises(ValueError, match=r"expected 1 trainable_variables.*received 2"):
        layer.stateless_call([1.0, 2.0], [0], jnp.ones(2))
    with pytest.raises(ValueError, match=r"expected 1 non_trainable_variables.*received 0"):
        layer.stateless_call([1.0], [], jnp.ones(2))
    with pytest.raises(TypeError, match="must be a list of arrays, received dict"):
        layer.stateless_call({}, [0], jnp.ones(2))
    with pytest.raises(ValueError, match=r"'counter/scale' has shape \(2,\), expected \(\)"):
        layer.stateless_call([jnp.ones(2)], [0], jnp.ones(2))


def test_ops_accepts_variables():
    kernel = dp.Variable(jnp.ones((2, 3)))
    assert ops.matmul(jnp.ones((1, 2)), kernel).tolist() == [[2.0, 2.0, 2.0]]
    assert ops.concatenate([kernel, kernel]).shape == (4, 3)
    with pytest.raises(AttributeError, match="no function 'not_a_function'"):
        ops.not_a_function  # noqa: B018


def test_sublayers_created_in_build_default_to_the_parent_policy():
    class Lazy(Layer):
        def build(self, shape):
            self.inner = Linear(2)

        def call(self, x):
            return self.inner(x)

    with dp.policy_scope("mixed_bfloat16"):
        lazy = Lazy()
    out = lazy(jnp.ones((1, 3)))  # built outside the scope
    assert lazy.inner.dtype_policy.name == "mixed_bfloat16" and out.dtype == jnp.bfloat16


def test_a_stateful_call_inside_the_users_jit_is_a_clear_error_and_changes_nothing():
    layer = Counter(name="stateful")
    layer(jnp.ones(2))
    with pytest.raises(RuntimeError, match=r"'stateful' updated variable 'stateful/calls' while JAX was tracing"):
        jax.jit(lambda x: layer(x))(jnp.ones(2))
    assert int(layer.calls.value) == 1
    stateless = Linear(2)
    stateless(jnp.ones((1, 2)))
    assert jax.jit(lambda x: stateless(x))(jnp.ones((1, 2))).shape == (1, 2)  # reads alone are fine


def test_add_state_is_threaded_through_stateless_call_but_is_not_a_weight():
    class Stepper(Layer):
        def __init__(self):
            super().__init__(name="stepper")
            self.step = self.add_state(lambda shape, dtype: jnp.zeros(shape, dtype), (), "int32", "step")
            self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

        def call(self, x):
            self.step.assign_add(1)
            return x * self.scale

    layer = Stepper()
    layer(jnp.ones(1))
    assert layer.weights == [layer.scale] and layer.count_params() == 1 and len(layer.get_weights()) == 1
    assert layer.non_trainable_variables == [layer.step] and layer.variables == [layer.step, layer.scale]
    _, (step,) = layer.stateless_call([1.0], [jnp.asarray(5, jnp.int32)], jnp.ones(1))
    assert int(step) == 6 and int(layer.step.value) == 1


def test_a_first_call_under_jit_builds_with_concrete_weights():
    layer = Linear(3)
    out = jax.jit(lambda x: layer(x))(jnp.ones((2, 4)))
    assert out.shape == (2, 3) and not isinstance(layer.kernel.value, jax.core.Tracer)
    np.testing.assert_allclose(np.asarray(layer(jnp.ones((2, 4)))), np.asarray(out), rtol=1e-6)


# ---------------------------------------------------------------- issue 7: masks survive every cast


class MaskRecorder(Layer):
    def call(self, inputs, mask=None):
        self.mask_seen = mask
        return inputs


def test_an_embedding_mask_survives_the_next_layers_input_autocast():
    embedding = Embedding(5, 2, mask_zero=True)
    consumer = MaskRecorder(dtype="mixed_bfloat16")
    hidden = embedding(jnp.array([[1, 0, 3]]))
    assert hidden.dtype == jnp.float32  # so the consumer casts it to bfloat16
    consumer(hidden)
    assert consumer.mask_seen is not None and consumer.mask_seen.tolist() == [[True, False, True]]


def test_masks_survive_numpy_conversion_nested_inputs_and_the_output_dtype_cast():
    mask = jnp.array([True, False])
    x = np.ones((2, 2), np.float64)
    attach_mask(x, mask)
    consumer = MaskRecorder(dtype="mixed_float16")
    consumer(x)
    assert consumer.mask_seen is mask

    # The mask of a nested input reaches `mask` as a list, after the cast of each array.
    a, b = jnp.ones(2), jnp.ones(2)
    attach_mask(a, mask)
    consumer([a, b])
    assert consumer.mask_seen[0] is mask and consumer.mask_seen[1] is None

    # A pass-through layer whose policy casts its output keeps the mask of what it returns.
    passthrough = MaskRecorder(dtype="p=f32,c=f32,o=bf16")
    out = passthrough(a)
    assert out.dtype == jnp.bfloat16 and get_mask(out) is mask


# ---------------------------------------------------------------- issue 7: activity losses per sample


class Identity(Layer):
    def call(self, inputs):
        return inputs


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_activity_regularizer_losses_are_divided_by_the_batch_size(policy):
    layer = Identity(dtype=policy, activity_regularizer=regularizers.L2(0.5))
    x = np.arange(12, dtype=np.float64).reshape(4, 3) / 4
    layer(x)
    (loss,) = layer.losses
    # Keras: regularizer(output) / output.shape[0], in float32.
    expected = 0.5 * np.sum(np.asarray(jnp.asarray(x, policy.replace("mixed_", "")), np.float64) ** 2) / 4
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)


def test_activity_regularizer_divides_each_output_by_its_own_batch_and_leaves_scalars_whole():
    class Two(Layer):
        def call(self, x):
            return x, x[:2], jnp.sum(x)

    layer = Two(activity_regularizer="l1")
    layer(jnp.ones((5, 2)))
    losses = [float(loss) for loss in layer.losses]
    np.testing.assert_allclose(losses, [0.01 * 10 / 5, 0.01 * 4 / 2, 0.01 * 10], rtol=1e-6)


# ---------------------------------------------------------------- issue 7: build parameters follow Keras


def test_build_parameters_that_name_no_call_argument_are_a_clear_error():
    class Misnamed(Layer):
        def build(self, foo_shape, baz_shape):
            self.received = (foo_shape, baz_shape)

        def call(self, x, y):
            return x + y

    layer = Misnamed(name="misnamed")
    with pytest.raises(
        ValueError,
        match=r"'misnamed'.*build\(\) parameters \('foo_shape', 'baz_shape'\).*call\(\) arguments \('x', 'y'\)",
    ):
        layer(jnp.ones(2), jnp.ones(2))
    assert not layer.built and not hasattr(layer, "received")

    class NoSuffix(Layer):
        def build(self, first, second):
            pass

        def call(self, x, y):
            return x + y

    with pytest.raises(ValueError, match=r"'first'.*does not end in _shape"):
        NoSuffix()(jnp.ones(2), jnp.ones(2))


def test_build_shapes_map_by_name_and_input_shape_gets_the_first_input():
    class Swapped(Layer):
        def build(self, y_shape, x_shape):
            self.received = (y_shape, x_shape)

        def call(self, x, y=None):
            return x

    layer = Swapped()
    layer(jnp.ones((2, 3)), jnp.ones((4,)))
    assert layer.received == ((4,), (2, 3))
    layer = Swapped()
    layer(jnp.ones((2, 3)))
    assert layer.received == (None, (2, 3))

    class Plain(Layer):
        def build(self, input_shape):
            self.received = input_shape

        def call(self, x, y):
            return x

    layer = Plain()
    layer(jnp.ones((1, 2)), jnp.ones((3,)))
    assert layer.received == (1, 2)

    class ByKeyword(Layer):
        def build(self, x_shape, extra_shape):
            self.received = (x_shape, extra_shape)

        def call(self, x, **kwargs):
            return x

    layer = ByKeyword()
    layer(jnp.ones(2), extra=jnp.ones((3, 3)))
    assert layer.received == ((2,), (3, 3))


def test_per_argument_masks_are_filled_from_each_inputs_mask():
    class TwoMasks(Layer):
        def call(self, x1, x2, x1_mask=None, x2_mask=None):
            self.seen = (x1_mask, x2_mask)
            return x1

    a, b = jnp.ones(3), jnp.zeros(3)
    mask_a, mask_b = jnp.array([True, False, True]), jnp.array([False, True, True])
    attach_mask(a, mask_a)
    attach_mask(b, mask_b)
    layer = TwoMasks(dtype="mixed_bfloat16")
    layer(a, b)
    assert layer.seen[0] is mask_a and layer.seen[1] is mask_b
    explicit = jnp.array([True, True, True])
    layer(a, b, x2_mask=explicit)
    assert layer.seen[0] is mask_a and layer.seen[1] is explicit
    layer(jnp.ones(3), jnp.ones(3))
    assert layer.seen == (None, None)


# ---------------------------------------------------------------- issue 7: nothing traced reaches the layer


class LossAndMetric(Layer):
    def call(self, x):
        self.add_loss(jnp.sum(x))
        self.add_metric(2.0, name="constant")
        return x * 2


def test_losses_and_metrics_added_under_the_users_jit_never_reach_the_layer():
    layer = LossAndMetric()
    layer(jnp.ones(3))
    assert [float(loss) for loss in layer.losses] == [3.0]
    out = jax.jit(lambda x: layer(x))(jnp.ones(3))
    assert out.tolist() == [2.0, 2.0, 2.0]
    assert not any(isinstance(loss, jax.core.Tracer) for loss in layer.losses)
    assert [float(loss) for loss in layer.losses] == [3.0]  # the concrete losses of the last eager call
    assert [(m.name, m._count) for m in layer.metrics] == [("constant", 1)]
    jax.grad(lambda x: jnp.sum(layer(x)))(jnp.ones(3))
    assert [float(loss) for loss in layer.losses] == [3.0] and layer.metrics[0]._count == 1


def test_stateless_call_still_returns_traced_losses_under_jit():
    layer = LossAndMetric()
    layer(jnp.ones(3))
    out, _, losses = jax.jit(lambda x: layer.stateless_call([], [], x, return_losses=True))(jnp.full(3, 2.0))
    assert [float(loss) for loss in losses] == [6.0] and out.tolist() == [4.0, 4.0, 4.0]
    assert [float(loss) for loss in layer.losses] == [3.0] and layer.metrics[0]._count == 1


# ---------------------------------------------------------------- issue 7: a failed call changes nothing


class Tally(Layer):
    """Counts, adds a loss and a metric, then fails when asked to."""

    def build(self, input_shape):
        self.total = self.add_weight(shape=(), initializer="zeros", trainable=False, name="total")

    def call(self, x, fail=False):
        self.total.assign_add(jnp.sum(x))
        self.add_loss(jnp.sum(x))
        self.add_metric(jnp.sum(x), name="sum")
        if fail:
            raise ValueError("bad batch")
        return x


def test_a_failed_call_keeps_no_metric_update():
    layer = Tally()
    layer(jnp.ones(2))
    with pytest.raises(ValueError, match="bad batch"):
        layer(jnp.ones(2), fail=True)
    assert [(m.name, m.result(), m._count) for m in layer.metrics] == [("sum", 2.0, 1)]
    fresh = Tally()
    with pytest.raises(ValueError, match="bad batch"):
        fresh(jnp.ones(2), fail=True)
    assert fresh.metrics == []


def test_a_failed_nested_call_caught_by_its_parent_keeps_no_write_loss_or_metric():
    class Forgiving(Layer):
        def __init__(self):
            super().__init__()
            self.inner = Tally()

        def call(self, x):
            self.inner(x)  # succeeds: kept
            with contextlib.suppress(ValueError):
                self.inner(10 * x, fail=True)
            return x

    outer = Forgiving()
    outer(jnp.ones(2))
    assert float(outer.inner.total.value) == 2.0
    assert [float(loss) for loss in outer.losses] == [2.0]
    assert [(m.name, m.result(), m._count) for m in outer.metrics] == [("sum", 2.0, 1)]


def test_a_failed_first_call_leaves_the_layer_and_its_sublayers_unbuilt():
    class Picky(Layer):
        def __init__(self):
            super().__init__(name="picky")
            self.inner = Linear(2)

        def call(self, x):
            y = self.inner(x)
            if x.shape[-1] != 3:
                raise ValueError("needs 3 features")
            return y

    layer = Picky()
    with pytest.raises(ValueError, match="needs 3 features"):
        layer(jnp.ones((1, 5)))
    assert not layer.built and not layer.inner.built and layer.weights == []
    assert not hasattr(layer.inner, "kernel")
    layer(jnp.ones((1, 3)))
    assert layer.inner.kernel.shape == (3, 2) and layer.count_params() == 3 * 2 + 2

    class FailsAfterBuild(Linear):
        def call(self, inputs):
            raise RuntimeError("boom")

    lone = FailsAfterBuild(2)
    with pytest.raises(RuntimeError, match="boom"):
        lone(jnp.ones((1, 4)))
    assert not lone.built and lone.weights == []


def test_a_failed_nested_first_call_caught_by_the_parent_unbuilds_the_sublayer():
    class TriesFirst(Layer):
        def __init__(self):
            super().__init__()
            self.inner = Tally()

        def call(self, x):
            with contextlib.suppress(ValueError):
                self.inner(x, fail=True)
            return x

    outer = TriesFirst()
    outer(jnp.ones(2))
    assert not outer.inner.built and outer.weights == [] and outer.metrics == []


# ---------------------------------------------------------------- issue 7: lists of numbers as inputs


def test_a_nested_list_of_numbers_is_converted_to_an_array():
    layer = Linear(2, dtype="mixed_bfloat16")
    out = layer([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert out.shape == (2, 2) and out.dtype == jnp.bfloat16 and layer.kernel.shape == (3, 2)
    kernel = np.arange(6.0).reshape(3, 2) / 4  # exact in bfloat16, and so are the products below
    layer.set_weights([kernel, np.zeros(2)])
    expected = np.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]) @ kernel
    np.testing.assert_array_equal(np.asarray(layer([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), np.float64), expected)
    (ints,), _ = Echo()([[1, 2], [3, 4]])
    assert isinstance(ints, jax.Array) and ints.dtype == jnp.int32 and ints.shape == (2, 2)


def test_a_list_of_arrays_stays_a_list_and_a_ragged_list_is_a_clear_error():
    class Sum(Layer):
        def build(self, input_shape):
            self.received = input_shape

        def call(self, inputs):
            return inputs[0] + inputs[1]

    layer = Sum()
    layer([jnp.ones(2), np.ones(2)])
    assert layer.received == [(2,), (2,)]
    ragged = Linear(2, name="ragged")
    with pytest.raises(ValueError, match=r"'ragged'.*positional argument 0.*\[\[1.0, 2.0\], \[3.0\]\].*rectangular"):
        ragged([[1.0, 2.0], [3.0]])
    assert not ragged.built


def test_a_stateless_call_inside_a_call_reports_nothing_to_the_outer_call():
    class Probe(Layer):
        def __init__(self):
            super().__init__()
            self.inner = LossAndMetric()

        def build(self, input_shape):
            self.inner.build(input_shape)
            self.probe_shape = self.inner.compute_output_shape(input_shape)  # traces a stateless_call

        def call(self, x):
            _, _, losses = self.inner.stateless_call([], [], x * 10, return_losses=True)
            self.add_loss(losses[0])
            return x

    layer = Probe()
    layer(jnp.ones(2))
    assert layer.probe_shape == (2,)
    assert [float(loss) for loss in layer.losses] == [20.0]  # the eager loss survives the traced probe
    assert layer.metrics == []  # the stateless calls' metric values were never applied


# ---------------------------------------------------------------- issue 7 review: losses read inside the user's trace


def _l2_dense(factor):
    from layers import Dense

    return Dense(2, activity_regularizer=regularizers.L2(factor), bias_initializer="ones", name="reg")


def _l2_objective_gradient(layer, x, factor):
    """d/dx [sum(y) + factor * sum(y**2) / batch] for y = x @ kernel + bias, in float64."""
    kernel = np.asarray(layer.kernel.value, np.float64)
    bias = np.asarray(layer.bias.value, np.float64)
    y = np.asarray(x, np.float64) @ kernel + bias
    return (1.0 + 2.0 * factor * y / x.shape[0]) @ kernel.T


@pytest.mark.parametrize("transform", ["grad", "jit_grad", "grad_jit"])
@pytest.mark.parametrize("eager_first", [True, False])
def test_losses_read_inside_the_users_trace_are_the_traced_losses_of_that_call(transform, eager_first):
    factor = 0.25
    layer = _l2_dense(factor)
    eager_x = jnp.ones((4, 3))
    if eager_first:
        layer(eager_x)
        y = np.asarray(layer(eager_x), np.float64)
        eager_losses = [factor * np.sum(y**2) / 4]
        np.testing.assert_allclose([float(loss) for loss in layer.losses], eager_losses, rtol=1e-6)

    def objective(x):
        return jnp.sum(layer(x)) + sum(layer.losses)

    wrap = {
        "grad": jax.grad,
        "jit_grad": lambda f: jax.jit(jax.grad(f)),
        "grad_jit": lambda f: jax.grad(jax.jit(f)),
    }[transform]
    x = jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3) / 4
    grad = wrap(objective)(x)
    np.testing.assert_allclose(np.asarray(grad), _l2_objective_gradient(layer, x, factor), rtol=1e-5)
    # After the trace: the earlier concrete losses again, never a tracer.
    assert not any(isinstance(loss, jax.core.Tracer) for loss in layer.losses)
    if eager_first:
        np.testing.assert_allclose([float(loss) for loss in layer.losses], eager_losses, rtol=1e-6)
    else:
        assert layer.losses == []


def test_losses_returned_from_the_users_jit_are_that_calls_and_a_later_call_in_the_trace_replaces_them():
    layer = LossAndMetric()
    layer(jnp.ones(3))

    def twice(x):
        layer(x)
        first = layer.losses
        layer(10 * x)
        return first, layer.losses

    first, second = jax.jit(twice)(jnp.full(3, 2.0))
    assert [float(loss) for loss in first] == [6.0] and [float(loss) for loss in second] == [60.0]
    assert [float(loss) for loss in layer.losses] == [3.0]
    assert [(m.name, m._count) for m in layer.metrics] == [("constant", 1)]


def test_losses_of_sublayers_read_inside_the_trace_and_stateless_call_inside_it():
    class Holder(Layer):
        def __init__(self):
            super().__init__(name="holder")
            self.inner = LossAndMetric()

        def call(self, x):
            return self.inner(x) + 1

    holder = Holder()
    holder(jnp.ones(3))

    def traced(x):
        holder(x)
        seen = holder.losses
        _, _, stateless = holder.stateless_call([], [], 5 * x, return_losses=True)
        return seen, stateless, holder.losses, holder.inner.losses

    seen, stateless, after_stateless, inner = jax.jit(traced)(jnp.full(3, 2.0))
    assert [float(v) for v in seen] == [6.0] and [float(v) for v in stateless] == [30.0]
    assert [float(v) for v in after_stateless] == [6.0] and [float(v) for v in inner] == [6.0]
    assert [float(v) for v in holder.losses] == [3.0] and [float(v) for v in holder.inner.losses] == [3.0]


# ---------------------------------------------------------------- issue 7 review: the policy-map key check


class _MapModel(Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = Linear(2)

    def call(self, x):
        return self.first(x)


def test_a_map_key_warning_made_an_error_leaves_the_call_undone_and_points_at_the_users_line():
    import warnings

    from layers import UnmatchedPolicyKeyWarning

    model = _MapModel(name="mm", dtype=dp.DTypePolicyMap("float32", {"mm/frist": "bfloat16"}))
    x = jnp.ones((1, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnmatchedPolicyKeyWarning)
        with pytest.raises(UnmatchedPolicyKeyWarning, match="'mm/frist'"):
            model(x)
    assert not model.built and not model.first.built and model.weights == []
    assert "_last_output" not in model.__dict__
    with pytest.warns(UnmatchedPolicyKeyWarning, match="'mm/frist'") as record:
        line = sys._getframe().f_lineno + 1
        model(x)
    assert record[0].filename == __file__ and record[0].lineno == line
    assert model.built

    class User(Layer):
        def __init__(self):
            super().__init__(name="user")
            self.model = _MapModel(name="inner", dtype=dp.DTypePolicyMap("float32", {"inner/frist": "bfloat16"}))

        def call(self, x):
            return self.model(x)

    with pytest.warns(UnmatchedPolicyKeyWarning, match="'inner/frist'") as record:
        User()(x)
    assert record[0].filename == __file__ and record[0].lineno == User.call.__code__.co_firstlineno + 1


def test_traced_losses_are_kept_for_layers_that_define_eq_and_go_with_the_layer_or_the_next_call():
    import gc

    from layers._base import _traced_losses

    class Comparable(LossAndMetric):
        def __eq__(self, other):  # makes the class unhashable
            return isinstance(other, Comparable)

    def traced_losses(layer, x):
        return jax.jit(lambda x: (layer(x), layer.losses)[1])(x)

    layer = Comparable()
    losses = traced_losses(layer, jnp.full(3, 2.0))
    assert [float(loss) for loss in losses] == [6.0]
    key = id(layer)
    assert key in _traced_losses._table  # JAX says nothing when a trace ends: kept until the next call or read
    del layer
    gc.collect()
    assert key not in _traced_losses._table  # the layer went
    again = Comparable()
    traced_losses(again, jnp.ones(3))
    assert again.losses == [] and id(again) not in _traced_losses._table  # a read after the trace drops it
    traced_losses(again, jnp.ones(3))
    LossAndMetric()(jnp.ones(1))  # so does any top-level eager call, of any layer
    assert id(again) not in _traced_losses._table


# ---------------------------------------------------------------- issue 7: a failed call restores the global policy


class _SetsGlobalPolicy(Layer):
    def call(self, x, fail=True):
        dp.set_dtype_policy("mixed_float16")
        if fail:
            raise ValueError("failed after setting the policy")
        return x


def test_a_failed_call_restores_the_global_default_policy():
    with pytest.raises(ValueError, match="failed after setting"):
        _SetsGlobalPolicy()(jnp.ones(2))
    assert dp.dtype_policy() == dp.DTypePolicy("float32")
    dp.set_dtype_policy("mixed_bfloat16")
    with pytest.raises(ValueError, match="failed after setting"):
        _SetsGlobalPolicy()(jnp.ones(2))
    assert dp.dtype_policy() == dp.DTypePolicy("mixed_bfloat16")


def test_a_failed_nested_call_caught_by_its_parent_restores_the_global_default_policy():
    class Parent(Layer):
        def __init__(self):
            super().__init__()
            self.child = _SetsGlobalPolicy()

        def call(self, x):
            with contextlib.suppress(ValueError):
                self.child(x)
            return x

    Parent()(jnp.ones(2))
    assert dp.dtype_policy() == dp.DTypePolicy("float32")


def test_a_successful_call_that_sets_the_global_default_policy_keeps_it():
    _SetsGlobalPolicy()(jnp.ones(2), fail=False)
    assert dp.dtype_policy() == dp.DTypePolicy("mixed_float16")


def test_a_failed_call_never_undoes_another_threads_global_default():
    started, other_done = threading.Event(), threading.Event()

    class Slow(Layer):
        def call(self, x):
            started.set()
            assert other_done.wait(5)
            raise ValueError("failed while another thread set the default")

    def other_thread():
        assert started.wait(5)
        dp.set_dtype_policy("mixed_bfloat16")
        other_done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with pytest.raises(ValueError, match="failed while another thread"):
        Slow()(jnp.ones(2))
    thread.join(5)
    assert dp.dtype_policy() == dp.DTypePolicy("mixed_bfloat16")


def test_a_failed_call_that_wrote_after_another_thread_puts_back_that_threads_value():
    # Another thread writes between this call's start and its own write: undoing this call's
    # write puts back the other thread's value, not the one from before the call.
    class WritesAfterOther(Layer):
        def call(self, x):
            thread = threading.Thread(target=dp.set_dtype_policy, args=("mixed_bfloat16",))
            thread.start()
            thread.join(5)
            dp.set_dtype_policy("mixed_float16")
            raise ValueError("failed after both writes")

    with pytest.raises(ValueError, match="failed after both writes"):
        WritesAfterOther()(jnp.ones(2))
    assert dp.dtype_policy() == dp.DTypePolicy("mixed_bfloat16")


# ---------------------------------------------------------------- issue 7: var-positional call and build signatures


def test_a_build_for_a_var_positional_call_receives_one_shape_per_positional_input():
    class Sum(Layer):
        def build(self, input_shape):
            self.received = input_shape

        def call(self, *inputs):
            return sum(inputs)

    layer = Sum()
    layer(jnp.ones((2, 3)), jnp.ones((2, 3)))
    assert layer.received == ((2, 3), (2, 3))  # Keras 3 would pass None here
    single = Sum()
    single(jnp.ones((2, 3)))
    assert single.received == ((2, 3),)

    class Named(Layer):
        def build(self, x_shape, y_shape):
            pass

        def call(self, *args):
            return args[0]

    named = Named(name="named")
    with pytest.raises(ValueError, match=r"'named'.*call\(\) takes its inputs as \*args.*build\(self, input_shape\)"):
        named(jnp.ones(2), jnp.ones(3))
    assert not named.built


def test_a_var_positional_build_parameter_next_to_named_ones_is_a_clear_error():
    class Rest(Layer):
        def build(self, x_shape, *rest):
            self.received = (x_shape, rest)

        def call(self, x, y):
            return x

    layer = Rest(name="rest")
    with pytest.raises(ValueError, match=r"'rest'.*build\(\) parameter '\*rest'.*receives shapes by name"):
        layer(jnp.ones(2), jnp.ones(3))
    assert not layer.built and not hasattr(layer, "received")

    class Forwarding(Layer):
        def build(self, *args, **kwargs):
            self.received = args

        def call(self, x, y):
            return x

    forwarding = Forwarding()
    forwarding(jnp.ones(2), jnp.ones(3))
    assert forwarding.received == ((2,),)


def test_a_scope_left_open_by_call_is_closed_and_reported_and_nothing_stays_changed():
    class Leaky(Layer):
        def call(self, x):
            dp.autocast_scope("float16").__enter__()  # a user bug: never exited
            return x

    layer = Leaky(dtype="mixed_bfloat16", name="leaky")
    with dp.policy_scope("float32"):
        with pytest.raises(RuntimeError, match=r"Layer 'leaky''s call left 1 scope\(s\) open \(setting dtypepolicy_au"):
            layer(jnp.ones(2))
        assert current_autocast_dtype() is None
        assert dp.dtype_policy() == dp.DTypePolicy("float32")
    assert current_autocast_dtype() is None and dp.dtype_policy() == dp.DTypePolicy("float32")
    with dp.autocast_scope("bfloat16"):  # scopes work normally afterwards
        assert current_autocast_dtype() == "bfloat16"
    assert current_autocast_dtype() is None


def test_a_failing_call_that_leaked_a_scope_reports_its_own_error_and_restores_everything():
    class LeakyFailing(Layer):
        def call(self, x):
            dp.policy_scope("mixed_float16").__enter__()
            raise KeyError("the call's own error")

    with pytest.raises(KeyError, match="the call's own error"):
        LeakyFailing(dtype="mixed_bfloat16")(jnp.ones(2))
    assert dp.dtype_policy() == dp.DTypePolicy("float32") and current_autocast_dtype() is None


# ---------------------------------------------------------------- issue 7: a failing commit is rolled back too


def test_a_call_whose_commit_fails_restores_the_losses_of_the_previous_call(monkeypatch):
    from layers._base import _metrics

    layer = LossAndMetric()
    layer(jnp.ones(3))

    def failing_report(*report):
        raise RuntimeError("report failed")

    monkeypatch.setattr(_metrics, "apply_report", failing_report)
    with pytest.raises(RuntimeError, match="report failed") as raised:
        layer(jnp.full(3, 2.0))
    assert [float(loss) for loss in layer.losses] == [3.0]  # the previous call's sum(ones(3)), not 6
    assert any("Raised while calling layer" in note for note in raised.value.__notes__)
