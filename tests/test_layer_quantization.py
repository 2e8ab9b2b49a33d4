"""Model-level quantization (`Layer.quantize`, `layers/_base/_quantization.py`): reports, errors, configs, checkpoints.

The model used throughout is a Sequential holding a TransformerBlock, whose MultiHeadAttention
projections are EinsumDense sublayers the block builds itself (so no config of theirs exists
unless the quantization is recorded on the block).
"""

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
import layers
from layers.training import restore_layer, save_layer
from tests._conformance import check_layer
from tests.test_conformance import CASES

FLOAT8_STATE = (
    "inputs_scale",
    "kernel_scale",
    "outputs_grad_scale",
    "inputs_amax_history",
    "kernel_amax_history",
    "outputs_grad_amax_history",
)

# Every leaf of `block_model()`, with whether it has a quantized form (written out by hand).
LEAVES = {
    "model/embed": True,
    "model/block/attention_norm": False,
    "model/block/attention/attention_dropout": False,
    "model/block/attention/query": True,
    "model/block/attention/key": True,
    "model/block/attention/value": True,
    "model/block/attention/attention_output": True,
    "model/block/attention_dropout": False,
    "model/block/mlp_norm": False,
    "model/block/mlp_in": True,
    "model/block/mlp_dropout": False,
    "model/block/mlp_out": True,
    "model/final_norm": False,
    "model/head": True,
}
ELIGIBLE = [path for path, eligible in LEAVES.items() if eligible]


def normal(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


X = normal((2, 5, 6), seed=1)
HIDDEN = normal((2, 5, 8), seed=2)  # the shape the block of block_model() sees


def block_model(dtype=None, build=True):
    model = layers.Sequential(
        [
            layers.Dense(8, name="embed"),
            layers.TransformerBlock(num_heads=2, key_dim=4, mlp_dim=16, name="block"),
            layers.LayerNormalization(name="final_norm"),
            layers.Dense(3, name="head"),
        ],
        name="model",
        dtype=dtype,
    )
    if build:
        model(X)
    return model


def by_path(model):
    return {layer.path: layer for layer in model._flatten_layers()}


def snapshot(model):
    """Everything quantize may change: each layer's policy and each variable's name, dtype and bits."""
    policies = {path: layer.dtype_policy for path, layer in by_path(model).items()}
    variables = [(v.path, v.dtype, v.trainable, np.asarray(v._read_storage()).tobytes()) for v in model.variables]
    return policies, variables


def as_dict(report):
    return {d.path: (d.quantized, d.reason) for d in report}


# --- one call quantizes every eligible leaf; the report names every leaf ------------------------------


@pytest.mark.parametrize("source", ["float32"])
def test_model_quantize_int8_quantizes_every_eligible_leaf_and_reports_every_leaf(source):
    model = block_model(source)
    before = np.asarray(model(X), np.float32)
    report = model.quantize("int8")
    assert [d.path for d in report] == list(LEAVES)  # every leaf once, in model order
    expected = {
        path: (True, f"int8_from_{source}") if eligible else (False, "no int8 form")
        for path, eligible in LEAVES.items()
    }
    assert as_dict(report) == expected
    assert report.quantized == ELIGIBLE
    assert report.skipped == [path for path in LEAVES if not LEAVES[path]]
    layers_by_path = by_path(model)
    for path in ELIGIBLE:
        layer = layers_by_path[path]
        assert layer.dtype_policy.name == f"int8_from_{source}"
        assert layer.kernel.dtype == "int8" and layer.kernel_scale.dtype == "float32"
    for path in LEAVES:
        if not LEAVES[path]:
            assert layers_by_path[path].dtype_policy.name == source
    # The containers keep their policy; only leaves changed.
    assert model.dtype_policy.name == layers_by_path["model/block"].dtype_policy.name == source
    after = np.asarray(model(X), np.float32)
    assert after.dtype == before.dtype and np.linalg.norm(after - before) / np.linalg.norm(before) < 5e-2


def test_report_str_has_one_line_per_leaf_with_its_decision_and_reason():
    model = block_model()
    report = model.quantize("int8", filter=r"model/block/.*")
    lines = str(report).splitlines()
    assert re.fullmatch(r"layer\s+decision\s+reason", lines[0])
    assert len(lines) == 1 + len(LEAVES)
    for line, (path, eligible) in zip(lines[1:], LEAVES.items(), strict=True):
        if not eligible:
            pattern = rf"{re.escape(path)}\s+skipped\s+no int8 form"
        elif path.startswith("model/block/"):
            pattern = rf"{re.escape(path)}\s+quantized\s+int8_from_float32"
        else:
            pattern = rf"{re.escape(path)}\s+skipped\s+excluded by the filter"
        assert re.fullmatch(pattern, line), line
    # The columns line up: every decision starts at the same offset.
    offsets = {line.index("quantized") if "quantized" in line else line.index("skipped") for line in lines[1:]}
    assert len(offsets) == 1


def test_model_quantize_float8_gives_every_eligible_leaf_its_state():
    model = block_model("mixed_bfloat16")
    report = model.quantize("float8")
    assert report.quantized == ELIGIBLE
    layers_by_path = by_path(model)
    for path in ELIGIBLE:
        layer = layers_by_path[path]
        assert layer.dtype_policy.name == "float8_from_mixed_bfloat16"
        names = [v.name for v in layer.weights]
        assert names[:2] == ["kernel", "bias"] and tuple(names[2:]) == FLOAT8_STATE
        assert layer.kernel.dtype == "float32" and layer.kernel.trainable
        for name in FLOAT8_STATE:
            variable = getattr(layer, name)
            assert variable.dtype == "float32" and not variable.autocast and variable.overwrite_with_gradient
        assert layer.inputs_amax_history.shape == (1024,)
    assert model(X).dtype == jnp.bfloat16


def test_float8_options_reach_every_quantized_policy():
    model = block_model()
    model.quantize("float8", amax_history_length=16, margin=2)
    for path in ELIGIBLE:
        layer = by_path(model)[path]
        policy = layer.dtype_policy
        assert isinstance(policy, dp.QuantizedFloat8DTypePolicy)
        assert (policy.recipe, policy.amax_history_length, policy.margin) == ("delayed", 16, 2)
        assert layer.kernel_amax_history.shape == (16,)
    current = block_model()
    report = current.quantize("float8", recipe="current")
    assert {reason for quantized, reason in as_dict(report).values() if quantized} == {"float8_current_from_float32"}
    for path in ELIGIBLE:
        layer = by_path(current)[path]
        assert layer.dtype_policy.recipe == "current"
        assert [v.name for v in layer.weights] == ["kernel", "bias"]  # no state: scales come from the tensor


@pytest.mark.parametrize(
    ("mode", "options", "match"),
    [
        ("float8", {"history": 3}, r"quantize\('float8'\) got unknown option\(s\) \['history'\]; float8 accepts"),
        ("int8", {"recipe": "current"}, r"quantize\('int8'\) got unknown option\(s\) \['recipe'\]; int8 takes no"),
        ("int8", {"margin": 1, "amax_history_length": 4}, r"\['amax_history_length', 'margin'\]"),
    ],
)
def test_an_unknown_option_is_a_type_error_naming_it_and_changes_nothing(mode, options, match):
    model = block_model()
    before = snapshot(model)
    with pytest.raises(TypeError, match=match):
        model.quantize(mode, **options)
    assert snapshot(model) == before


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (
            {"recipe": "dynamic"},
            ValueError,
            r"float8 recipe must be one of \('delayed', 'current'\); received 'dynamic'",
        ),
        ({"amax_history_length": 0}, ValueError, r"amax_history_length must be at least 1, received 0"),
        ({"margin": "1"}, TypeError, r"margin must be an int, received '1'"),
    ],
)
def test_a_bad_float8_option_value_raises_before_any_layer_changes(options, error, match):
    model = block_model()
    before = snapshot(model)
    with pytest.raises(error, match=match):
        model.quantize("float8", **options)
    assert snapshot(model) == before


# --- filter and keep_first_and_last ------------------------------------------------------------------


def test_filter_as_a_callable_gets_each_eligible_layer():
    model = block_model()
    seen = []

    def only_attention(layer):
        seen.append(layer.path)
        return "/attention/" in layer.path

    report = model.quantize("int8", filter=only_attention)
    assert seen == ELIGIBLE  # asked about eligible layers only, each once
    assert report.quantized == [path for path in ELIGIBLE if "/attention/" in path]
    reasons = as_dict(report)
    assert reasons["model/embed"] == (False, "excluded by the filter")
    assert reasons["model/block/mlp_in"] == (False, "excluded by the filter")
    assert reasons["model/final_norm"] == (False, "no int8 form")


def test_filter_as_a_regex_must_match_the_whole_path():
    model = block_model()
    assert model.quantize("int8", filter=r"block/mlp_.*").quantized == []  # a suffix is not a full match
    assert model.quantize("int8", filter=r".*/mlp_(in|out)").quantized == ["model/block/mlp_in", "model/block/mlp_out"]
    assert model.quantize("int8", filter=r"model/(embed|head)").quantized == ["model/embed", "model/head"]


def test_filter_on_a_leaf_that_it_excludes_reports_the_leaf_skipped():
    dense = layers.Dense(3, name="solo")
    dense(normal((2, 4)))
    report = dense.quantize("int8", filter=lambda layer: False)
    assert list(report) == [("solo", False, "excluded by the filter")]
    assert dense.quantization_mode is None and dense.kernel.dtype == "float32"


def test_keep_first_and_last_keeps_the_first_and_last_eligible_layers():
    model = block_model()
    report = model.quantize("float8", keep_first_and_last=True)
    reasons = as_dict(report)
    assert reasons["model/embed"] == (False, "kept in high precision (the first eligible layer)")
    assert reasons["model/head"] == (False, "kept in high precision (the last eligible layer)")
    assert report.quantized == ELIGIBLE[1:-1]
    assert by_path(model)["model/embed"].dtype_policy.name == "float32"
    assert by_path(model)["model/head"].dtype_policy.name == "float32"


def test_keep_first_and_last_counts_eligible_layers_not_leaves():
    # The first leaf of a TransformerBlock is a LayerNormalization: the first kept is the query projection.
    block = layers.TransformerBlock(num_heads=2, key_dim=4, mlp_dim=16, name="blk")
    block(HIDDEN)
    reasons = as_dict(block.quantize("int8", keep_first_and_last=True))
    assert reasons["blk/attention/query"] == (False, "kept in high precision (the first eligible layer)")
    assert reasons["blk/mlp_out"] == (False, "kept in high precision (the last eligible layer)")
    assert reasons["blk/attention/key"] == (True, "int8_from_float32")


class TwoBranches(layers.Layer):
    """A custom container whose config records none of its sublayers; one of them is never called."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.used = layers.Dense(3, name="used")
        self.unused = layers.Dense(3, name="unused")

    def call(self, x):
        return self.used(x)


def test_an_unbuilt_sublayer_is_skipped_and_a_custom_container_round_trips_its_config():
    x = normal((2, 4))
    two = TwoBranches(name="two")
    two(x)
    report = two.quantize("int8")
    assert list(report) == [("two/used", True, "int8_from_float32"), ("two/unused", False, "not built")]
    clone = TwoBranches.from_config(json.loads(json.dumps(two.get_config())))
    clone(x)
    assert clone.used.dtype_policy.name == "int8_from_float32" and clone.unused.dtype_policy.name == "float32"
    clone.set_weights(two.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(two(x)))


def test_a_filter_that_raises_leaves_every_layer_as_it_was():
    model = block_model()
    before = snapshot(model)
    asked = []

    def flaky(layer):
        asked.append(layer.path)
        if len(asked) == 3:
            raise RuntimeError("filter failed")
        return True

    with pytest.raises(RuntimeError, match="filter failed"):
        model.quantize("int8", filter=flaky)
    assert snapshot(model) == before


# --- errors, each leaving the state untouched --------------------------------------------------------


def test_quantizing_an_unbuilt_layer_or_model_is_an_error():
    with pytest.raises(ValueError, match=r"Layer 'lazy' must be built before quantize\('int8'\)"):
        layers.Dense(3, name="lazy").quantize("int8")
    model = block_model(build=False)
    with pytest.raises(ValueError, match=r"Layer 'model' must be built before quantize\('float8'\)"):
        model.quantize("float8")
    assert not model.built and all(layer.quantization_mode is None for layer in model._flatten_layers())


def test_quantizing_a_leaf_twice_is_an_error():
    dense = layers.Dense(3, name="twice")
    dense(normal((2, 4)))
    dense.quantize("int8")
    before = snapshot(dense)
    for mode in ("int8", "float8"):
        with pytest.raises(
            ValueError,
            match=rf"Layer 'twice' is already quantized \('int8_from_float32'\); it cannot be quantized again to "
            rf"'{mode}'",
        ):
            dense.quantize(mode)
        assert snapshot(dense) == before


def test_quantizing_a_quantized_model_again_is_an_error_that_changes_nothing():
    # As for a leaf: "quantizing twice" raises (it used to return an all-skipped report).
    model = block_model()
    model.quantize("int8")
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"Layer 'model' is already quantized"):
        model.quantize("float8")
    assert snapshot(model) == before


def test_quantizing_a_partly_quantized_model_quantizes_the_rest():
    model = block_model()
    model.quantize("int8", filter=r"model/embed")
    report = model.quantize("int8")
    assert as_dict(report)["model/embed"] == (False, "already quantized (int8_from_float32)")
    assert report.quantized == ELIGIBLE[1:]


def test_a_mode_a_layer_cannot_do_is_an_error():
    norm = layers.LayerNormalization(name="norm")
    norm(normal((2, 4)))
    with pytest.raises(ValueError, match=r"Layer 'norm' \(LayerNormalization\) has no int8 form"):
        norm.quantize("int8")
    stack = layers.Sequential([layers.LayerNormalization(), layers.Dropout(0.1)], name="no_kernels")
    stack(normal((2, 4)))
    with pytest.raises(ValueError, match=r"Layer 'no_kernels' \(Sequential\) has no layer with a float8 form inside"):
        stack.quantize("float8")
    assert norm.dtype_policy.name == "float32" and len(norm.weights) == 2


@pytest.mark.parametrize("mode", ["int3", 8, "INT8", None, "float8_e4m3fn", "int4"])
def test_a_bad_mode_is_an_error_naming_it(mode):
    model = block_model()
    before = snapshot(model)
    with pytest.raises(
        ValueError, match=rf"quantize mode must be one of \('int8', 'float8'\), received {re.escape(repr(mode))}\."
    ):
        model.quantize(mode)
    assert snapshot(model) == before


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"filter": 3},
            TypeError,
            r"quantize filter must be None, a path regex \(str\) or a callable .* received 3 of type int",
        ),
        ({"filter": ["model/embed"]}, TypeError, r"received \['model/embed'\] of type list"),
        ({"filter": "model/(embed"}, ValueError, r"quantize filter 'model/\(embed' is not a valid regular expression"),
        ({"keep_first_and_last": "yes"}, TypeError, r"keep_first_and_last must be a bool, received 'yes'"),
    ],
)
def test_a_bad_filter_or_flag_is_an_error_and_changes_nothing(kwargs, error, match):
    model = block_model()
    before = snapshot(model)
    with pytest.raises(error, match=match):
        model.quantize("int8", **kwargs)
    assert snapshot(model) == before


@pytest.mark.parametrize(
    ("factory", "policy", "inputs"),
    [
        (lambda dtype: layers.LayerNormalization(dtype=dtype, name="x"), "float8_from_float32", normal((2, 4))),
        (lambda dtype: layers.LayerNormalization(dtype=dtype, name="x"), "int8_from_mixed_bfloat16", normal((2, 4))),
        (lambda dtype: layers.Embedding(5, 3, dtype=dtype, name="x"), "int8_from_float32", np.array([[1, 2]])),
        (lambda dtype: layers.BatchNormalization(dtype=dtype, name="x"), "float8_current_from_float32", normal((4, 3))),
    ],
)
def test_a_quantized_policy_on_a_layer_without_that_form_raises_at_build_and_leaves_it_unbuilt(factory, policy, inputs):
    layer = factory(dp.get(policy))
    mode = dp.get(policy).quantization_mode
    with pytest.raises(
        ValueError, match=rf"Layer 'x' \(\w+\) was given the quantized policy '{policy}', but \w+ has no {mode} form"
    ):
        layer(inputs)
    assert not layer.built and layer.weights == []
    string_form = factory(policy)  # the policy given by name fails the same way
    with pytest.raises(ValueError, match="has no"):
        string_form(inputs)


@pytest.mark.parametrize("source", ["float32", "mixed_bfloat16"])
def test_a_container_given_a_quantized_policy_passes_it_on(source):
    model = layers.Sequential(
        [layers.Dense(4, name="a"), layers.LayerNormalization(name="norm"), layers.Dense(2, name="b")],
        dtype=f"float8_from_{source}",
        name="net",
    )
    x = normal((3, 5), seed=2)
    out = model(x)
    a, norm, b = model.layers
    for dense in (a, b):
        assert dense.dtype_policy.name == f"float8_from_{source}"
        assert tuple(v.name for v in dense.weights[2:]) == FLOAT8_STATE
    # The normalization computes in the source policy: the same as a plain layer under it.
    assert norm.compute_dtype == dp.get(source).compute_dtype
    plain = layers.LayerNormalization(dtype=source)
    hidden = a(x)
    plain(hidden)
    plain.set_weights(norm.get_weights())
    np.testing.assert_array_equal(np.asarray(norm(hidden), np.float32), np.asarray(plain(hidden), np.float32))
    assert out.dtype == jnp.dtype(dp.get(source).compute_dtype)


def test_a_transformer_block_given_an_int8_policy_quantizes_its_projections_only():
    block = layers.TransformerBlock(num_heads=2, key_dim=4, mlp_dim=16, dtype="int8_from_float32", name="blk")
    block(HIDDEN)
    kernels = {layer.name: layer.kernel.dtype for layer in block._flatten_layers() if hasattr(layer, "kernel")}
    assert kernels == dict.fromkeys(["query", "key", "value", "attention_output", "mlp_in", "mlp_out"], "int8")
    for norm in (block.attention_norm, block.mlp_norm):
        assert norm.gamma.dtype == "float32" and norm.compute_dtype == "float32" and norm.quantization_mode == "int8"


# --- configs ------------------------------------------------------------------------------------------


def randomize_float8_state(model, seed):
    """Non-trivial float8 scales and histories, as after some training steps."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if layer.quantization_mode == "float8":
            for name in layer._quantized_weight_names:
                variable = getattr(layer, name)
                variable.assign(jnp.asarray(rng.uniform(0.01, 2.0, size=variable.shape).astype(np.float32)))


def rebuild(layer, *args, **kwargs):
    """From the JSON config, built by a call, given the original's weights."""
    config = json.loads(json.dumps(layer.get_config()))
    clone = type(layer).from_config(config)
    clone(*args, **kwargs)
    clone.set_weights(layer.get_weights())
    return clone


def assert_same_variables(a, b):
    pairs = list(zip(a.variables, b.variables, strict=True))
    for x, y in pairs:
        assert (x.path, x.dtype, x.trainable, x.shape) == (y.path, y.dtype, y.trainable, y.shape)
        assert np.asarray(x._read_storage()).tobytes() == np.asarray(y._read_storage()).tobytes(), x.path  # bits


LAYER_FACTORIES = {
    "Dense": (lambda: layers.Dense(5, bias_initializer="random_normal", name="q"), normal((3, 4))),
    "EinsumDense": (
        lambda: layers.EinsumDense("abc,cde->abde", (None, 2, 3), bias_axes="de", name="q"),
        normal((2, 3, 4)),
    ),
}
QUANTIZATIONS = {
    "int8": ("int8", {}),
    "float8": ("float8", {"amax_history_length": 8, "margin": 1}),
    "float8_current": ("float8", {"recipe": "current"}),
}


@pytest.mark.parametrize(
    ("kind", "quantization", "source"),
    [
        ("Dense", "int8", "float32"),
        ("Dense", "float8", "mixed_bfloat16"),
        ("Dense", "float8_current", "float32"),
        ("EinsumDense", "int8", "mixed_bfloat16"),
        ("EinsumDense", "float8", "float32"),
        ("EinsumDense", "float8_current", "mixed_bfloat16"),
    ],
)
def test_a_quantized_layer_round_trips_its_config(kind, quantization, source):
    factory, x = LAYER_FACTORIES[kind]
    layer = factory()
    layer.dtype_policy = source
    layer(x)
    mode, options = QUANTIZATIONS[quantization]
    layer.quantize(mode, **options)
    randomize_float8_state(layer, seed=5)
    clone = rebuild(layer, x)
    assert clone.dtype_policy == layer.dtype_policy
    assert clone.get_config() == layer.get_config()
    assert_same_variables(clone, layer)
    np.testing.assert_array_equal(np.asarray(clone(x), np.float32), np.asarray(layer(x), np.float32))


@pytest.mark.parametrize("quantization", ["int8", "float8"])
def test_a_quantized_model_round_trips_its_config_including_the_blocks_own_projections(quantization):
    model = block_model("mixed_bfloat16")
    mode, options = QUANTIZATIONS[quantization]
    model.quantize(mode, keep_first_and_last=True, **options)
    clone = rebuild(model, X)
    policies = {path: layer.dtype_policy for path, layer in by_path(model).items()}
    assert {path: layer.dtype_policy for path, layer in by_path(clone).items()} == policies
    assert_same_variables(clone, model)
    np.testing.assert_array_equal(np.asarray(clone(X), np.float32), np.asarray(model(X), np.float32))
    # And the clone's config is the original's: a second round trip changes nothing.
    assert json.loads(json.dumps(clone.get_config())) == json.loads(json.dumps(model.get_config()))


def test_a_block_quantized_on_its_own_round_trips_its_config():
    block = layers.TransformerBlock(num_heads=2, key_dim=4, mlp_dim=16, name="blk")
    x = HIDDEN
    block(x)
    block.quantize("int8")
    clone = rebuild(block, x)
    assert_same_variables(clone, block)
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(block(x)))


def test_a_quantized_block_keeps_its_quantization_when_nested_later():
    block = layers.TransformerBlock(num_heads=2, key_dim=4, mlp_dim=16, name="blk")
    x = HIDDEN
    block(x)
    block.quantize("int8")
    expected = np.asarray(block(x))
    outer = layers.Sequential([block], name="outer")  # every path below the block changes
    np.testing.assert_array_equal(np.asarray(outer(x)), expected)
    assert outer.layers[0].mlp_in.dtype_policy.name == "int8_from_float32"


def test_quantize_keeps_the_policies_the_rest_of_a_policy_map_gives():
    policy_map = dp.DTypePolicyMap("mixed_bfloat16", {".*/mlp_norm": "float32"})
    block = layers.TransformerBlock(num_heads=2, key_dim=4, mlp_dim=16, name="blk", dtype=policy_map)
    x = HIDDEN
    block(x)
    before = {layer.path: layer.dtype_policy.name for layer in block._flatten_layers()}
    block.quantize("int8")
    after = {layer.path: layer.dtype_policy.name for layer in block._flatten_layers()}
    expected = {
        path: f"int8_from_{name}" if getattr(layer, "kernel", None) is not None else name
        for (path, name), layer in zip(before.items(), block._flatten_layers(), strict=True)
    }
    assert after == expected and after["blk/mlp_norm"] == "float32"
    clone = rebuild(block, x)
    assert {layer.path: layer.dtype_policy.name for layer in clone._flatten_layers()} == after


def test_a_container_given_a_quantized_policy_round_trips_its_config():
    model = layers.Sequential(
        [layers.Dense(4, name="a"), layers.LayerNormalization(name="norm"), layers.Dense(2, name="b")],
        dtype="int8_from_mixed_bfloat16",
        name="net",
    )
    x = normal((3, 5), seed=3)
    model(x)
    clone = rebuild(model, x)
    assert_same_variables(clone, model)
    np.testing.assert_array_equal(np.asarray(clone(x), np.float32), np.asarray(model(x), np.float32))


# --- checkpoints ---------------------------------------------------------------------------------------


def test_checkpoints_restore_quantized_layers_bit_exactly(tmp_path):
    model = block_model("mixed_bfloat16")
    model.quantize("float8", filter=r"model/block/.*", amax_history_length=4)
    model.quantize("int8")  # the rest: embed and head
    randomize_float8_state(model, seed=4)
    path = tmp_path / "model.ckpt"
    save_layer(path, model)
    fresh = layers.Sequential.from_config(json.loads(json.dumps(model.get_config())))
    fresh(X)
    restore_layer(path, fresh)
    assert_same_variables(fresh, model)
    dtypes = {v.dtype for v in fresh.variables}
    assert {"int8", "float32"} <= dtypes
    np.testing.assert_array_equal(np.asarray(fresh(X), np.float32), np.asarray(model(X), np.float32))


def test_restoring_an_int8_checkpoint_into_a_float_layer_is_an_error_that_changes_nothing(tmp_path):
    x = normal((2, 4))
    quantized = layers.Dense(3, name="d")
    quantized(x)
    quantized.quantize("int8")
    save_layer(tmp_path / "d.ckpt", quantized)
    plain = layers.Dense(3, name="d")
    plain(x)
    before = snapshot(plain)
    with pytest.raises(ValueError, match=r"d/kernel"):
        restore_layer(tmp_path / "d.ckpt", plain)
    assert snapshot(plain) == before


# --- the conformance checks, under quantized policies ---------------------------------------------------

# Each quantized form under the checks every built-in layer passes (tests/_conformance.py), a few
# policies per layer to keep the module fast. (float8 of a TransformerBlock under mixed_bfloat16
# would fail the jit == eager check: one bf16 ulp between the jitted and eager LayerNormalization
# flips an E4M3 rounding, 6% of a value, beyond the bf16 tolerance that check uses.)
CONFORMANCE = {case.name: case for case in CASES}
SWEEP = [
    ("Dense", "int8_from_mixed_bfloat16"),
    ("Dense", "float8_from_mixed_bfloat16"),
    ("Dense", "float8_current_from_float32"),
    ("EinsumDense", "int8_from_float32"),
    ("EinsumDense", "float8_from_mixed_bfloat16"),
    ("Sequential", "int8_from_mixed_bfloat16"),
    ("TransformerBlock", "int8_from_float32"),
]


@pytest.mark.parametrize(("name", "policy"), SWEEP, ids=[f"{name}-{policy}" for name, policy in SWEEP])
def test_conformance_under_quantized_policies(name, policy):
    case = dataclasses.replace(CONFORMANCE[name], reference=None)  # references are for plain policies
    if policy.startswith("float8"):
        # Training calls: their state "gradients" are the new scales; not-training calls mark them "not updated".
        case = dataclasses.replace(case, call_kwargs={**case.call_kwargs, "training": True})
    check_layer(case, policy)


@pytest.mark.parametrize(
    ("mode", "new_policy"), [("int8", "float32"), ("float8", "int8_from_float32"), ("int8", "float8_from_float32")]
)
def test_a_quantized_layer_refuses_a_policy_of_another_form(mode, new_policy):
    # Its variables are stored for its strategy: an int8 layer set back to float32 would multiply
    # its int8 codes as if they were float weights (outputs ~127x too large), silently.
    dense = layers.Dense(3, name="proj")
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    dense(x)
    dense.quantize(mode)
    before_policy, before = dense.dtype_policy, np.asarray(dense(x))
    with pytest.raises(ValueError, match=rf"Cannot give layer 'proj' the policy '{new_policy}': 'proj' holds {mode} "):
        dense.dtype_policy = new_policy
    assert dense.dtype_policy == before_policy
    np.testing.assert_array_equal(np.asarray(dense(x)), before)


def test_a_quantized_layer_accepts_a_policy_with_the_same_form():
    # The same strategy under another spelling is not a change of form.
    dense = layers.Dense(3)
    dense(np.ones((2, 4), np.float32))
    dense.quantize("int8")
    dense.dtype_policy = "int8_from_p=f32,c=f32"
    assert dense.dtype_policy.name == "int8_from_float32"


def test_a_container_policy_that_would_misfit_a_quantized_child_is_refused():
    # The child inherits: setting the container's policy would leave int8 codes under float32.
    model = layers.Sequential(
        [layers.Dense(3, name="a"), layers.Dense(2, name="b")], dtype="int8_from_float32", name="m"
    )
    x = np.ones((2, 4), np.float32)
    model(x)
    before = np.asarray(model(x))
    with pytest.raises(ValueError, match=r"Cannot give layer 'm' the policy 'float32': 'm/a' holds int8 variables"):
        model.dtype_policy = "float32"
    assert [sub.dtype_policy.name for sub in model.layers] == ["int8_from_float32"] * 2
    np.testing.assert_array_equal(np.asarray(model(x)), before)


def test_a_quantized_policy_on_a_built_float_layer_is_refused():
    # The issue: a quantized policy must never be a silent no-op; a built Dense has float weights only.
    dense = layers.Dense(3, name="d")
    dense(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"'d' was built with float weights .*layer.quantize\('int8'\)"):
        dense.dtype_policy = "int8_from_float32"
    assert dense.dtype_policy.name == "float32" and dense.quantization_mode is None


def test_a_model_policy_change_after_quantize_reaches_inside_blocks():
    # quantize records a block's projections in a map on the block; the map's default must keep
    # following the model's policy, as the block's other layers did before quantize.
    model = layers.Sequential([layers.TransformerBlock(num_heads=2, key_dim=4, mlp_dim=8, name="blk")], name="m")
    model(np.ones((2, 3, 8), np.float32))
    model.quantize("int8", filter="m/blk/mlp_in")
    model.dtype_policy = "mixed_bfloat16"
    block = model.layers[0]
    assert block.dtype_policy.name == "mixed_bfloat16"
    assert block.attention_norm.dtype_policy.name == "mixed_bfloat16"
    assert block.mlp_in.dtype_policy.name == "int8_from_float32"
    assert np.asarray(model(np.ones((2, 3, 8), np.float32))).dtype == np.dtype("bfloat16")


def test_bad_float8_options_are_refused_even_when_the_filter_selects_nothing():
    dense = layers.Dense(3, name="d")
    dense(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="amax_history_length must be at least 1, received -3"):
        dense.quantize("float8", filter="nomatch", amax_history_length=-3)
    with pytest.raises(ValueError, match=r"float8 recipe must be one of .* received 'bogus'"):
        dense.quantize("float8", filter="nomatch", recipe="bogus")
    assert dense.quantization_mode is None


def test_quantize_inside_a_jax_transformation_is_refused_and_changes_nothing():

    dense = layers.Dense(3, name="d")
    x = np.ones((2, 4), np.float32)
    dense(x)
    values = [v.value for v in dense.trainable_variables]

    def quantize_in_trace(values):
        dense.stateless_call(values, [], x)
        with dp.StatelessScope(list(zip(dense.trainable_variables, values, strict=True))):
            dense.quantize("int8")
        return values[0]

    with pytest.raises(RuntimeError, match=r"quantize\('int8'\) cannot run inside jax.jit.*\['d'\]"):
        jax.jit(quantize_in_trace)(values)
    assert dense.quantization_mode is None and dense.kernel.dtype == "float32"


def test_a_bad_training_flag_on_a_float8_layer_is_a_type_error():
    dense = layers.Dense(3, name="d", dtype="float8_from_float32")
    with pytest.raises(TypeError, match=r"Dense 'd': training must be a Python bool or None, received 'false'"):
        dense(np.ones((2, 4), np.float32), training="false")


def test_a_built_float_layer_that_joins_a_quantized_model_raises_when_called():
    # The model's quantized policy reaches the built Dense through tracking, not its setter: its
    # float weights have no quantized form, and running them as floats would ignore the policy.
    dense = layers.Dense(3, name="d")
    x = np.ones((2, 4), np.float32)
    dense(x)
    model = layers.Sequential([dense], dtype="float8_from_float32", name="m")
    with pytest.raises(
        ValueError, match=r"'d' has the quantized policy 'float8_from_float32' but was built with float"
    ):
        model(x)
