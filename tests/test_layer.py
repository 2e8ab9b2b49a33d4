"""Layer: constructor, names and paths, policies, weights, losses, metrics, configs, errors."""

import copy
import json
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
import layers
from layers import InputSpec, Layer
from tests._layers_for_tests import Linear

# ---------------------------------------------------------------- constructor and names


def test_defaults():
    layer = Layer()
    assert layer.trainable and layer.autocast and not layer.built
    assert layer.activity_regularizer is None and layer.input_spec is None
    assert layer.dtype_policy == dp.DTypePolicy("float32")
    assert layer.dynamic is False and layer.supports_masking is False


def test_unique_default_names_from_the_class_name():
    class MyDense(Layer):
        pass

    names = [MyDense().name for _ in range(3)]
    assert names[0] == "my_dense" or names[0].startswith("my_dense_")
    base = names[0]
    suffixes = [int(name.rsplit("_", 1)[1]) if name != "my_dense" else 0 for name in names]
    assert suffixes == sorted(suffixes) and len(set(names)) == 3, (base, names)


def test_unknown_constructor_kwargs_are_rejected():
    with pytest.raises(TypeError, match=r"Unrecognized keyword arguments passed to Linear: \{'unit': 3\}"):
        Linear(unit=3)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"name": "a/b"}, ValueError, "received 'a/b'"),
        ({"name": ""}, ValueError, "received ''"),
        ({"trainable": "yes"}, TypeError, "received 'yes'"),
        ({"autocast": 1}, TypeError, "received 1"),
        ({"dtype": "mixed_bfloat61"}, ValueError, "Did you mean 'mixed_bfloat16'"),
        ({"dtype": 3}, TypeError, "received 3"),
        ({"activity_regularizer": "l3"}, ValueError, "'l3'"),
    ],
)
def test_constructor_argument_errors(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        Layer(**kwargs)


def test_missing_super_init_is_a_clear_runtime_error():
    class Forgetful(Layer):
        def __init__(self):
            self.units = 3  # plain values are fine
            self.w = dp.Variable(jnp.zeros(2))

        def call(self, x):
            return x

    with pytest.raises(RuntimeError, match=r"Forgetful.__init__ must call super\(\).__init__\(\)"):
        Forgetful()

    class Lazy(Layer):
        def __init__(self):
            pass

        def call(self, x):
            return x

    with pytest.raises(RuntimeError, match="must call super"):
        Lazy()(jnp.ones(2))


def test_paths_follow_the_tracking_parent():
    class Block(Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = Linear(2, name="dense")

    class Encoder(Layer):
        def __init__(self):
            super().__init__(name="encoder")
            self.blocks = [Block(name="block_0"), Block(name="block_1")]

    encoder = Encoder()
    assert encoder.blocks[1].dense.path == "encoder/block_1/dense"
    for block in encoder.blocks:
        block.dense(jnp.ones((1, 4)))
    assert [v.path for v in encoder.weights] == [
        "encoder/block_0/dense/kernel",
        "encoder/block_0/dense/bias",
        "encoder/block_1/dense/kernel",
        "encoder/block_1/dense/bias",
    ]


# ---------------------------------------------------------------- policies


def test_layer_dtype_accepts_string_policy_dtype_like_and_dict():
    for dtype in ["mixed_bfloat16", dp.DTypePolicy("mixed_bfloat16"), dp.serialize(dp.get("mixed_bfloat16"))]:
        layer = Layer(dtype=dtype)
        assert (layer.dtype, layer.variable_dtype, layer.compute_dtype) == ("float32", "float32", "bfloat16")
    layer = Layer(dtype=jnp.float16)
    assert layer.dtype_policy.name == "float16" and layer.input_dtype == "float16"
    assert layer.quantization_mode is None
    assert Layer(dtype="int8_from_mixed_bfloat16").quantization_mode == "int8"


def test_default_policy_is_the_one_current_at_construction():
    dp.set_dtype_policy("mixed_bfloat16")
    layer = Layer()
    dp.set_dtype_policy("float16")
    assert layer.dtype_policy.name == "mixed_bfloat16"
    with dp.policy_scope("mixed_float16"):
        scoped = Layer()
    assert scoped.dtype_policy.name == "mixed_float16"


def test_dtype_policy_is_settable():
    layer = Layer()
    layer.dtype_policy = "mixed_float16"
    assert layer.compute_dtype == "float16"
    with pytest.raises(ValueError, match="'bf17'"):
        layer.dtype_policy = "bf17"
    assert layer.compute_dtype == "float16"


class Block(Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = Linear(2, name="dense")
        self.norm = Linear(2, name="norm", dtype="float32")


class Model(Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.block = Block(name="block_0")
        self.head = Linear(2, name="head")

    def call(self, x):
        return self.head(self.block.norm(self.block.dense(x)))


def test_sublayers_follow_an_explicit_parent_policy():
    model = Model(name="model", dtype="mixed_bfloat16")
    assert model.block.dtype_policy.name == "mixed_bfloat16"
    assert model.block.dense.dtype_policy.name == "mixed_bfloat16"
    assert model.head.dtype_policy.name == "mixed_bfloat16"
    assert model.block.norm.dtype_policy.name == "float32"  # its own explicit dtype wins


def test_sublayers_of_an_implicit_parent_keep_their_construction_default():
    with dp.policy_scope("mixed_float16"):
        model = Model(name="model")
    assert model.block.dense.dtype_policy.name == "mixed_float16"
    assert model.block.norm.dtype_policy.name == "float32"


def test_a_policy_map_on_the_outer_layer_governs_every_layer_by_path():
    policy_map = dp.DTypePolicyMap("mixed_bfloat16", {"model/block_0/dense": "mixed_float16", "model/head": "float32"})
    model = Model(name="model", dtype=policy_map)
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert model.block.dtype_policy.name == "mixed_bfloat16"
    assert model.block.dense.dtype_policy.name == "mixed_float16"
    assert model.block.norm.dtype_policy.name == "float32"
    assert model.head.dtype_policy.name == "float32"
    out = model(np.ones((1, 3), np.float32))
    assert out.dtype == jnp.float32
    assert model.block.dense.seen == {"input": jnp.float16, "kernel": jnp.float16}
    assert model.head.kernel.dtype == "float32"


# ---------------------------------------------------------------- weights


def test_add_weight_defaults_and_signature():
    layer = Layer(dtype="mixed_bfloat16")
    kernel = layer.add_weight(shape=(64, 64))
    count = layer.add_weight(shape=(), dtype="int32", trainable=False, name="count")
    scalar = layer.add_weight()
    assert kernel.dtype == "float32" and kernel.shape == (64, 64) and scalar.shape == ()
    assert count.dtype == "int32" and int(count.value) == 0  # zeros for non-floats
    limit = np.sqrt(6 / 128)  # glorot_uniform for floats
    values = np.asarray(kernel.value)
    assert values.std() > 0 and np.abs(values).max() <= limit
    ones = layer.add_weight(shape=(2,), initializer="ones", autocast=False, aggregation="mean", name="o")
    assert ones.autocast is False and ones.aggregation == "mean" and ones.numpy().tolist() == [1.0, 1.0]
    state = layer.add_weight(shape=(4,), initializer="zeros", overwrite_with_gradient=True, name="amax")
    assert state.overwrite_with_gradient
    constrained = layer.add_weight(shape=(2,), constraint="non_neg", regularizer="l2", name="c")
    assert callable(constrained.constraint) and callable(constrained.regularizer)
    assert constrained.path == f"{layer.name}/c"


def test_add_weight_errors():
    layer = Layer()
    with pytest.raises(ValueError, match="'glorot_unifrom'"):
        layer.add_weight(shape=(2,), initializer="glorot_unifrom")
    with pytest.raises(ValueError, match=r"received \(-1,\)"):
        layer.add_weight(shape=(-1,))
    with pytest.raises(ValueError, match="'float33'"):
        layer.add_weight(shape=(2,), dtype="float33")
    assert layer.weights == []


def test_weights_order_and_trainable_split():
    layer = Linear(3)
    layer(jnp.ones((1, 2)))
    assert [w.name for w in layer.weights] == ["kernel", "bias"]
    assert layer.trainable_variables == layer.trainable_weights == layer.weights
    assert layer.non_trainable_variables == []
    assert layer.variables == layer.weights


def test_recursive_trainable_setter():
    model = Model()
    model(jnp.ones((1, 2)))
    model.trainable = False
    assert model.trainable_weights == [] and len(model.non_trainable_weights) == 6
    assert model.block.dense.trainable is False and model.block.dense.trainable_weights == []
    assert not any(w.trainable for w in model.weights)  # the flag reaches the variables
    model.block.trainable = True
    assert len(model.trainable_weights) == 0  # an untrainable parent hides its sublayers' weights
    assert len(model.block.trainable_weights) == 4
    with pytest.raises(TypeError, match="received 'no'"):
        model.trainable = "no"


def test_get_and_set_weights_round_trip_in_storage_dtypes():
    source, target = Linear(2, dtype="mixed_bfloat16"), Linear(2, dtype="mixed_bfloat16")
    source(jnp.ones((1, 3)))
    target(jnp.ones((1, 3)))
    weights = source.get_weights()
    assert [w.dtype for w in weights] == [np.float32, np.float32] and isinstance(weights[0], np.ndarray)
    target.set_weights(weights)
    for a, b in zip(source.get_weights(), target.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_set_weights_errors_change_nothing():
    layer = Linear(2, name="lin")
    layer(jnp.ones((1, 3)))
    before = layer.get_weights()
    with pytest.raises(ValueError, match=r"Layer 'lin' expects 2 weight arrays, received 1"):
        layer.set_weights([np.zeros((3, 2))])
    with pytest.raises(
        ValueError, match=r"weight 'lin/bias' has shape \(2,\), but the value given for it has shape \(3,\)"
    ):
        layer.set_weights([np.zeros((3, 2)), np.zeros(3)])
    with pytest.raises(TypeError, match="expects a list of arrays, received ndarray"):
        layer.set_weights(np.zeros(3))
    for a, b in zip(before, layer.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_count_params():
    layer = Linear(4, name="lin4")
    with pytest.raises(ValueError, match=r"count_params.*'lin4'.*not built"):
        layer.count_params()
    layer(jnp.ones((2, 3)))
    assert layer.count_params() == 3 * 4 + 4


def test_state_cannot_be_added_after_build():
    layer = Linear(2, name="locked")
    layer(jnp.ones((1, 2)))
    with pytest.raises(ValueError, match=r"Layer 'locked' is already built; it cannot take new state"):
        layer.add_weight(shape=(2,), name="late")
    with pytest.raises(ValueError, match="already built"):
        layer.extra = dp.Variable(jnp.zeros(2))
    with pytest.raises(ValueError, match="already built"):
        layer.sub = Layer()
    assert [w.name for w in layer.weights] == ["kernel", "bias"]
    layer.units_note = "plain attributes are fine"


# ---------------------------------------------------------------- losses and metrics


class Lossy(Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = Linear(2, name="d")

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones", regularizer=layers.regularizers.L2(0.5), name="s")

    def call(self, x):
        self.add_loss(jnp.sum(x))
        self.add_metric(jnp.max(x), name="max")
        return self.dense(x) * self.scale


def test_losses_are_cleared_per_top_level_call_and_collected_from_sublayers():
    layer = Lossy(dtype="mixed_bfloat16", activity_regularizer="l1")
    layer.dense.activity_regularizer = layers.regularizers.L2(1.0)
    x = jnp.ones((2, 3))
    out = layer(x)
    losses = layer.losses
    assert all(loss.dtype == jnp.float32 for loss in losses)
    # own add_loss, own weight regularizer (0.5 * 1^2), sublayer activity loss, own activity loss;
    # activity losses are divided by the batch size (2), as in Keras
    values = sorted(float(loss) for loss in losses)
    dense_out = np.asarray(layer.dense(x).astype(jnp.float32), np.float64)  # top-level call: resets dense's losses
    expected_activity_l2 = float(np.sum(dense_out**2)) / 2
    own_activity_l1 = 0.01 * float(np.sum(np.abs(np.asarray(out, np.float64)))) / 2
    expected = sorted([6.0, 0.5, expected_activity_l2, own_activity_l1])
    np.testing.assert_allclose(values, expected, rtol=2e-2)
    layer(x)
    assert len(layer.losses) == 4  # not 8: each top-level call starts afresh


def test_add_loss_accepts_callables_and_keeps_float32():
    layer = Layer()
    layer.add_loss(lambda: jnp.asarray(2.0, jnp.bfloat16))
    layer.add_loss(jnp.asarray(1.0, jnp.float16))
    assert [(float(loss), loss.dtype) for loss in layer.losses] == [(2.0, jnp.float32), (1.0, jnp.float32)]


def test_metrics():
    layer = Lossy()
    layer(jnp.ones((1, 3)))
    layer(2 * jnp.ones((1, 3)))
    layer.add_metric(jnp.asarray(7.0))
    assert [m.name for m in layer.metrics] == ["max", f"{layer.name}_metric"]
    assert layer.metrics[0].result() == 1.5
    with pytest.raises(ValueError, match="received 'median'"):
        layer.add_metric(1.0, name="other", aggregation="median")


# ---------------------------------------------------------------- configs


def test_config_round_trip_with_captured_arguments_and_policy():
    layer = Linear(5, name="head", dtype="p=f32,c=bf16,o=f32", trainable=False, activity_regularizer="l2")
    config = layer.get_config()
    assert config["units"] == 5 and config["name"] == "head" and config["trainable"] is False
    assert config["dtype"] == dp.serialize(dp.get("p=f32,c=bf16,o=f32"))
    restored = Linear.from_config(json.loads(json.dumps(config)))
    assert restored.dtype_policy == layer.dtype_policy and restored.units == 5 and not restored.trainable
    assert restored.get_config() == config


def test_config_keeps_a_policy_map():
    policy_map = dp.DTypePolicyMap("mixed_bfloat16", {"m/head": "float32"})
    model = Model(name="m", dtype=policy_map)
    config = json.loads(json.dumps(model.get_config()))
    restored = Model.from_config(config)
    assert restored.head.dtype_policy.name == "float32"
    assert restored._explicit_dtype == policy_map


def test_config_errors():
    class Opaque(Layer):
        def __init__(self, fn, **kwargs):
            super().__init__(**kwargs)
            self.fn = fn

    with pytest.raises(NotImplementedError, match="override get_config"):
        Opaque(lambda x: x).get_config()
    with pytest.raises(TypeError, match="Unrecognized keyword arguments"):
        Linear.from_config({"units": 2, "colour": "red"})
    with pytest.raises(TypeError, match="expects a dict, received 3"):
        Linear.from_config(3)


# ---------------------------------------------------------------- everything else on the seed pages


def test_input_output_and_quantize_are_clear():
    layer = Linear(2, name="lin")
    with pytest.raises(AttributeError, match="no symbolic input"):
        layer.input  # noqa: B018
    with pytest.raises(AttributeError, match="no symbolic output"):
        layer.output  # noqa: B018
    with pytest.raises(ValueError, match="received 'int3'"):
        layer.quantize("int3")
    with pytest.raises(ValueError, match=r"'lin' must be built before quantize\('int8'\)"):
        layer.quantize("int8")
    layer(jnp.ones((1, 3)))
    with pytest.raises(ValueError, match=r"Layer 'lin' \(Linear\) has no int8 form"):
        layer.quantize("int8")


def test_input_spec_attribute_is_checked():
    layer = Linear(2, name="lin")
    layer.input_spec = InputSpec(ndim=2, axes={-1: 3})
    with pytest.raises(ValueError, match=r"Input 0 of layer 'lin' is incompatible.*expected ndim=2, found ndim=3"):
        layer(jnp.ones((1, 1, 3)))
    assert not layer.built
    with pytest.raises(ValueError, match=r"expected axis -1 of the input shape to have value 3.*\(1, 4\)"):
        layer(jnp.ones((1, 4)))
    assert layer(jnp.ones((1, 3))).shape == (1, 2)


# ---------------------------------------------------------------- issue 7 (H3): weights, add_weight, input_spec


def test_set_weights_validates_every_value_before_it_assigns_any():
    layer = Linear(2, name="lin")
    layer(jnp.ones((1, 3)))
    before = layer.get_weights()
    with pytest.raises(TypeError, match=r"'lin'.*index 1.*'lin/bias'.*str.*numeric"):
        layer.set_weights([np.zeros((3, 2)), np.array(["a", "b"])])
    with pytest.raises(TypeError, match=r"index 1.*'lin/bias'.*object"):
        layer.set_weights([np.zeros((3, 2)), np.array([object(), object()])])
    with pytest.raises(ValueError, match=r"'lin'.*index 0.*'lin/kernel'.*ragged.*\[\[1.0, 2.0\], \[3.0\]\]"):
        layer.set_weights([[[1.0, 2.0], [3.0]], np.zeros(2)])
    for a, b in zip(before, layer.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    layer.set_weights([[[1, 2], [3, 4], [5, 6]], (7.0, 8.0)])  # nested lists and ints are converted
    assert layer.get_weights()[0].dtype == np.float32 and layer.get_weights()[1].tolist() == [7.0, 8.0]


def test_set_weights_on_an_unbuilt_layer_says_it_is_not_built():
    layer = Linear(2, name="fresh")
    with pytest.raises(ValueError, match=r"Layer 'fresh' is not built yet.*build\(input_shape\).*call it"):
        layer.set_weights([np.zeros((3, 2)), np.zeros(2)])
    assert not layer.built and layer.weights == []


def test_add_weight_with_the_name_first_is_a_clear_type_error():
    layer = Layer(name="plain")
    with pytest.raises(TypeError, match=r"add_weight\(\) takes the shape first.*'matrix'.*name='matrix'"):
        layer.add_weight("matrix", shape=(2, 3))
    with pytest.raises(TypeError, match=r"received the string 'matrix'"):
        layer.add_weight("matrix")
    assert layer.weights == []
    assert layer.add_weight((2,), name="ok").shape == (2,)


@pytest.mark.parametrize("bad", ["x", 3, [InputSpec(), "y"], {"a": 1}])
def test_input_spec_setter_rejects_what_is_not_a_spec(bad):
    layer = Linear(2, name="lin")
    with pytest.raises(TypeError, match=r"input_spec of layer 'lin' must be an InputSpec, a list/tuple/dict of them"):
        layer.input_spec = bad
    assert layer.input_spec is None


def test_input_spec_accepts_specs_lists_dicts_and_none():
    layer = Layer()
    spec = InputSpec(ndim=2)
    layer.input_spec = spec
    assert layer.input_spec is spec
    layer.input_spec = [spec, None]
    assert layer.input_spec == [spec, None]
    layer.input_spec = {"a": spec}
    assert layer.input_spec == {"a": spec}
    layer.input_spec = None
    assert layer.input_spec is None


# ---------------------------------------------------------------- trainable reaches the variables


class WithStats(Layer):
    """A trainable kernel and a non-trainable statistic, like BatchNormalization's moving mean."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="kernel")
        self.moving = self.add_weight(shape=(input_shape[-1],), initializer="zeros", trainable=False, name="moving")

    def call(self, x):
        return x * self.kernel + self.moving


def test_trainable_false_switches_the_variables_off_and_true_restores_them():
    model = layers.Sequential([Linear(2, name="dense"), WithStats(name="stats")], name="seq")
    model(jnp.ones((1, 3)))
    manual = model.layers[0].bias
    manual.trainable = False  # switched off by hand before freezing: stays off afterwards
    model.trainable = False
    assert [v.path for v in model.variables if v.trainable] == []
    model.trainable = True
    assert [v.path for v in model.variables if v.trainable] == ["seq/dense/kernel", "seq/stats/kernel"]
    assert not model.layers[1].moving.trainable and not manual.trainable


def test_variables_created_in_a_frozen_layer_are_frozen_too():
    layer = WithStats(name="frozen_stats", trainable=False)
    layer(jnp.ones((1, 2)))
    assert [v.trainable for v in layer.variables] == [False, False]
    layer.trainable = True
    assert [v.trainable for v in layer.variables] == [True, False]
    model = Model(name="frozen_model", trainable=False)  # sublayers made in __init__ follow
    model(jnp.ones((1, 2)))
    assert model.block.trainable is False and not any(v.trainable for v in model.variables)


def test_a_variable_leaving_a_frozen_layer_gets_its_flag_back():
    layer = Layer(name="holder", trainable=False)
    layer.items = [dp.Variable(jnp.zeros(2), name="w")]
    variable = layer.items[0]
    assert variable.trainable is False
    layer.items.pop()
    assert variable.trainable is True


# ---------------------------------------------------------------- setting a policy under a map


def test_setting_the_policy_of_a_map_holder_changes_its_own_entry_only():
    policy_map = dp.DTypePolicyMap("mixed_bfloat16", {"model/head": "float32"})
    model = Model(name="model", dtype=policy_map)
    model.dtype_policy = "mixed_float16"
    assert model.dtype_policy.name == "mixed_float16"
    assert model.block.dtype_policy.name == "mixed_bfloat16" and model.block.dense.dtype_policy.name == "mixed_bfloat16"
    assert model.head.dtype_policy.name == "float32"
    assert isinstance(model._explicit_dtype, dp.DTypePolicyMap)
    assert dict(model._explicit_dtype.policy_map) == {"model/head": dp.get("float32"), "model": dp.get("mixed_float16")}
    assert policy_map.policy_map == {"model/head": dp.get("float32")}  # the user's map is untouched
    out = model(np.ones((1, 3), np.float32))
    assert out.dtype == jnp.float32 and model.block.dense.seen["input"] == jnp.bfloat16


def test_setting_the_policy_of_a_mapped_sublayer_changes_its_entry_not_its_sublayers():
    model = Model(name="model", dtype=dp.DTypePolicyMap("mixed_bfloat16"))
    model.block.dtype_policy = "float32"
    assert model.block.dtype_policy.name == "float32"
    assert model.block.dense.dtype_policy.name == "mixed_bfloat16"  # its own entry: the default
    assert model.block.norm.dtype_policy.name == "float32"  # its own explicit dtype
    with pytest.raises(ValueError, match="'bf17'"):
        model.block.dtype_policy = "bf17"
    assert set(model._explicit_dtype) == {"model/block_0"}
    replacement = dp.DTypePolicyMap("float16")
    model.dtype_policy = replacement  # a whole map replaces the map
    assert model._explicit_dtype is replacement and model.block.dtype_policy.name == "float16"


# ---------------------------------------------------------------- copy, deepcopy and pickle


def _pickle_round_trip(layer):
    return pickle.loads(pickle.dumps(layer))


@pytest.mark.parametrize("clone", [copy.deepcopy, _pickle_round_trip], ids=["deepcopy", "pickle"])
def test_deepcopy_and_pickle_give_an_independent_equal_layer(clone):
    policy_map = dp.DTypePolicyMap("mixed_bfloat16", {"model/head": "float32"})
    model = Model(name="model", dtype=policy_map)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    expected = np.asarray(model(x))
    twin = clone(model)
    assert twin is not model and twin.built and twin.name == "model"
    np.testing.assert_array_equal(np.asarray(twin(x)), expected)
    assert [v.path for v in twin.weights] == [v.path for v in model.weights]
    assert all(a is not b for a, b in zip(twin.weights, model.weights, strict=True))
    assert twin.block.dense.path == "model/block_0/dense" and twin.block._parent is twin
    assert twin.head.dtype_policy.name == "float32"
    for variable in twin.weights:
        variable.assign(np.zeros(variable.shape))
    np.testing.assert_array_equal(np.asarray(model(x)), expected)  # the original is untouched
    assert float(np.abs(np.asarray(twin(x), np.float32)).sum()) == 0.0


@pytest.mark.parametrize("clone", [copy.deepcopy, _pickle_round_trip], ids=["deepcopy", "pickle"])
def test_copies_keep_tracking_flags_and_state_and_leave_parents_behind(clone):
    model = layers.Sequential([Linear(2, name="dense"), layers.Dropout(0.5, seed=3, name="drop")], name="seq")
    x = np.ones((4, 3), np.float32)
    model(x)
    model.trainable = False
    twin = clone(model)
    assert [v.trainable for v in twin.variables] == [False, False, False]
    twin.trainable = True
    assert [v.trainable for v in twin.variables] == [True, True, False]  # the seed state stays off
    assert [v.path for v in twin.weights] == ["seq/dense/kernel", "seq/dense/bias"]  # add_state excluded
    np.testing.assert_array_equal(np.asarray(twin(x, training=True)), np.asarray(model(x, training=True)))
    twin.pop()
    assert len(twin.layers) == 1 and len(model.layers) == 2  # the copy's containers are its own
    alone = clone(model.layers[0])  # a sublayer alone: the parent is not copied along
    assert alone._parent is None and [v.path for v in alone.weights] == ["dense/kernel", "dense/bias"]
    assert model.layers[0].path == "seq/dense"


def test_unbuilt_layers_copy_and_pickle():
    model = Model(name="fresh")
    for twin in (copy.deepcopy(model), _pickle_round_trip(model)):
        twin(np.ones((1, 3), np.float32))
        assert twin.built and len(twin.weights) == 6
    assert not model.built and model.weights == []


def test_copy_copy_shares_variables_and_sublayers():
    model = Model(name="model")
    x = np.ones((1, 3), np.float32)
    model(x)
    shallow = copy.copy(model)
    assert all(a is b for a, b in zip(shallow.weights, model.weights, strict=True))
    assert shallow.block is model.block and model.block.path == "model/block_0"  # still the original's
    np.testing.assert_array_equal(np.asarray(shallow(x)), np.asarray(model(x)))
    shallow.head = None  # its attributes and tracking lists are its own
    assert model.head is not None and len(model.weights) == 6 and len(shallow.weights) == 4


# ---------------------------------------------------------------- freezing through a container is undone on removal


def test_a_sublayer_leaving_a_frozen_layer_gets_its_flags_back():
    holder = Layer(name="frozen_holder", trainable=False)
    holder.items = []
    dense = Linear(2, name="dense")
    dense.build((None, 3))
    holder.items.append(dense)
    assert dense.trainable is False and [v.trainable for v in dense.variables] == [False, False]
    holder.items.pop()
    assert dense.trainable is True and [v.trainable for v in dense.variables] == [True, True]
    assert [v.path for v in dense.trainable_weights] == ["dense/kernel", "dense/bias"]


def test_a_sublayer_frozen_by_a_later_trainable_false_gets_its_flags_back_when_removed():
    holder = Layer(name="holder")
    holder.items = [Linear(2, name="dense")]
    holder.items[0].build((None, 3))
    holder.trainable = False
    removed = holder.items.pop()
    assert removed.trainable is True and [v.trainable for v in removed.variables] == [True, True]


def test_removal_switches_back_only_what_the_freezing_switched_off():
    inner_block = Model(name="block_model")  # block (a Linear and a frozen Linear inside) and head
    inner_block.block.norm.trainable = False  # by hand: it stays off
    inner_block(np.ones((1, 3), np.float32))
    holder = Layer(name="holder", trainable=False)
    holder.items = [inner_block]
    assert not any(layer.trainable for layer in inner_block._flatten_layers())
    del holder.items[0]
    assert [(layer.path, layer.trainable) for layer in inner_block._flatten_layers()] == [
        ("block_model", True),
        ("block_model/block_0", True),
        ("block_model/block_0/dense", True),
        ("block_model/block_0/norm", False),
        ("block_model/head", True),
    ]
    assert [v.path for v in inner_block.variables if not v.trainable] == [
        "block_model/block_0/norm/kernel",
        "block_model/block_0/norm/bias",
    ]


def test_a_flag_set_by_hand_inside_a_frozen_layer_is_kept_on_removal():
    holder = Layer(name="holder", trainable=False)
    holder.items = [Linear(2, name="dense")]
    dense = holder.items[0]
    dense.trainable = False  # the user's decision now, not the holder's
    holder.items.pop()
    assert dense.trainable is False


def test_a_sublayer_still_held_by_another_frozen_layer_stays_frozen():
    first, second = Layer(name="first", trainable=False), Layer(name="second", trainable=False)
    dense = Linear(2, name="dense")
    first.dense = dense
    second.dense = dense
    del first.dense
    assert dense.trainable is False  # second still freezes it
    del second.dense
    assert dense.trainable is True


@pytest.mark.parametrize("clone", [copy.deepcopy, _pickle_round_trip], ids=["deepcopy", "pickle"])
def test_a_copied_frozen_holder_still_gives_its_sublayers_flags_back(clone):
    holder = Layer(name="holder", trainable=False)
    holder.items = [Linear(2, name="dense")]
    twin = clone(holder)
    dense = twin.items.pop()
    assert dense.trainable is True


def test_get_weights_returns_writable_copies_as_keras_does():
    layer = layers.Dense(2)
    layer(np.ones((1, 3), np.float32))
    kernel = layer.get_weights()[0]
    kernel[0, 0] = 5.0  # a NumPy copy of its own: editing it leaves the layer alone
    assert float(layer.kernel.numpy()[0, 0]) != 5.0
    layer.set_weights([kernel, np.zeros(2, np.float32)])
    assert float(layer.kernel.numpy()[0, 0]) == 5.0


# ---------------------------------------------------------------- issue 7: callable losses persist


class _Penalized(Layer):
    """A Keras-style weight penalty: a zero-argument callable loss added once, in build."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")
        self.add_loss(lambda: 0.5 * jnp.sum(self.w.value**2))

    def call(self, x):
        self.add_loss(jnp.sum(x))  # a per-call loss, cleared by the next outermost call
        return x * self.w.value


def test_a_callable_loss_added_in_build_stays_for_every_call_and_is_evaluated_on_each_read():
    layer = _Penalized()
    for step in range(3):
        layer(jnp.full((3,), float(step)))
        # hand-derived: 0.5 * sum(ones(3) ** 2) = 1.5, and this call's sum(x) = 3 * step
        assert [float(loss) for loss in layer.losses] == [1.5, 3.0 * step]
    layer.w.assign(jnp.asarray([1.0, 2.0, 3.0]))
    assert [float(loss) for loss in layer.losses] == [7.0, 6.0]  # fresh: 0.5 * (1 + 4 + 9)
    layer(jnp.zeros(3))
    assert [float(loss) for loss in layer.losses] == [7.0, 0.0]


def test_a_callable_loss_counts_under_stateless_call_and_jax_grad():
    layer = _Penalized()
    layer(jnp.zeros(3))
    w = jnp.asarray([2.0, -1.0, 3.0])
    x = jnp.asarray([1.0, 1.0, 1.0])
    _, _, losses = layer.stateless_call([w], [], x, return_losses=True)
    assert sorted(float(loss) for loss in losses) == [3.0, 7.0]  # sum(x) = 3; 0.5 * (4 + 1 + 9) = 7

    def objective(w):
        outputs, _, losses = layer.stateless_call([w], [], x, return_losses=True)
        return jnp.sum(outputs) + sum(losses)

    for transform in (lambda f: f, jax.jit):
        value, grad = transform(jax.value_and_grad(objective))(w)
        # sum(x * w) + sum(x) + 0.5 * sum(w ** 2): d/dw = x + w
        assert float(value) == 4.0 + 3.0 + 7.0
        np.testing.assert_array_equal(np.asarray(grad), np.asarray([3.0, 0.0, 4.0]))
    assert [float(loss) for loss in layer.losses] == [1.5, 0.0]  # the layer is untouched

    # A call traced by the user's jax.grad sees the penalty of the stored weights; after it, the
    # callable is still there.
    value = jax.value_and_grad(lambda x: jnp.sum(layer(x)) + sum(layer.losses))(x)[0]
    assert float(value) == 3.0 + 3.0 + 1.5
    assert [float(loss) for loss in layer.losses] == [1.5, 0.0]
    layer(x)
    assert [float(loss) for loss in layer.losses] == [1.5, 3.0]


def test_a_callable_loss_added_in_a_failed_build_or_call_is_rolled_back():
    class FailsInBuild(_Penalized):
        def build(self, input_shape):
            super().build(input_shape)
            if input_shape[-1] != 3:
                raise ValueError("wants 3 features")

    layer = FailsInBuild()
    with pytest.raises(ValueError, match="wants 3"):
        layer(jnp.ones(2))
    assert not layer.built and layer.losses == []
    with pytest.raises(ValueError, match="wants 3"):
        layer.build((4,))  # a direct build outside any call
    assert not layer.built and layer.losses == []
    layer(jnp.zeros(3))
    assert [float(loss) for loss in layer.losses] == [1.5, 0.0]  # one penalty, not three

    class FailsInCall(_Penalized):
        def call(self, x):
            raise RuntimeError("call failed")

    layer = FailsInCall()
    with pytest.raises(RuntimeError, match="call failed"):
        layer(jnp.ones(3))
    assert not layer.built and layer.losses == []


def test_add_loss_rejects_a_callable_that_needs_arguments():
    layer = Layer(name="needs_args")
    with pytest.raises(TypeError, match=r"zero-argument callable.*received .*lambda"):
        layer.add_loss(lambda weights: jnp.sum(weights))
    assert layer.losses == []


def test_stateless_call_keeps_no_callable_loss_its_call_added():
    class AddsOnce(Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(), initializer="ones", name="w")

        def call(self, x):
            if not self._callable_losses:
                self.add_loss(lambda: 2.0 * self.w.value)
            return x

    layer = AddsOnce()
    layer.build(())
    _, _, losses = layer.stateless_call([jnp.asarray(3.0)], [], jnp.ones(()), return_losses=True)
    assert [float(loss) for loss in losses] == [6.0]
    assert layer.losses == []  # nothing the stateless call did stays
    layer(jnp.ones(()))
    assert [float(loss) for loss in layer.losses] == [2.0]
    layer(jnp.ones(()))
    assert [float(loss) for loss in layer.losses] == [2.0]
