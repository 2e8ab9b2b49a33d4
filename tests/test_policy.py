"""Policy values: dtypes, immutability, equality by meaning, configs."""

import copy
import pickle

import pytest

import dtypepolicy as dp


@pytest.mark.parametrize(
    ("name", "variable", "compute", "output"),
    [
        ("float32", "float32", "float32", None),
        ("mixed_bfloat16", "float32", "bfloat16", None),
        ("mixed_float16", "float32", "float16", None),
        ("bfloat16", "bfloat16", "bfloat16", None),
        ("p=f32,c=bf16,o=f32", "float32", "bfloat16", "float32"),
    ],
)
def test_dtypes(name, variable, compute, output):
    policy = dp.DTypePolicy(name)
    assert (policy.variable_dtype, policy.compute_dtype, policy.output_dtype) == (variable, compute, output)
    assert policy.quantization_mode is None


def test_equal_by_meaning_and_hash_equal():
    a, b = dp.DTypePolicy("mixed_bfloat16"), dp.DTypePolicy("p=f32,c=bf16")
    assert a == b and hash(a) == hash(b)
    assert len({a, b, dp.DTypePolicy("params=float32,compute=bfloat16")}) == 1
    assert a != dp.DTypePolicy("p=f32,c=bf16,o=f32")
    assert a != dp.QuantizedDTypePolicy("int8", "mixed_bfloat16")
    assert a != "mixed_bfloat16"


def test_repr_shows_the_name():
    assert repr(dp.DTypePolicy("p=f32,c=bf16")) == '<DTypePolicy "mixed_bfloat16">'
    assert "int8_from_float32" in repr(dp.QuantizedDTypePolicy("int8", "float32"))


def test_immutable():
    policy = dp.DTypePolicy("float32")
    with pytest.raises(AttributeError, match="immutable"):
        policy._spec = None
    with pytest.raises(AttributeError, match="immutable"):
        policy.compute_dtype = "bfloat16"
    assert policy.compute_dtype == "float32"


def test_none_copies_the_current_default():
    with dp.policy_scope("mixed_float16"):
        assert dp.DTypePolicy().name == "mixed_float16"
        assert dp.QuantizedDTypePolicy("int4").name == "int4_from_mixed_float16"
    with dp.policy_scope("int8_from_mixed_bfloat16"):
        assert dp.DTypePolicy().name == "mixed_bfloat16"
    assert dp.DTypePolicy().name == "float32"


@pytest.mark.parametrize("bad", [3, None.__class__, ["float32"], b"float32"])
def test_non_string_name_is_a_type_error(bad):
    with pytest.raises(TypeError, match="must be a string or None, received"):
        dp.DTypePolicy(bad)


def test_quantized_name_passed_to_plain_class_is_rejected():
    with pytest.raises(ValueError, match="quantized policy cannot be used here"):
        dp.DTypePolicy("int8_from_float32")


def test_quantized_policies():
    int8 = dp.QuantizedDTypePolicy("int8", "mixed_bfloat16")
    assert (int8.name, int8.source_name, int8.quantization_mode) == (
        "int8_from_mixed_bfloat16",
        "mixed_bfloat16",
        "int8",
    )
    assert (int8.variable_dtype, int8.compute_dtype) == ("float32", "bfloat16")
    fp8 = dp.QuantizedFloat8DTypePolicy("float8", "mixed_bfloat16", amax_history_length=16, margin=1)
    assert (fp8.name, fp8.amax_history_length, fp8.margin) == ("float8_from_mixed_bfloat16", 16, 1)
    assert dp.QuantizedFloat8DTypePolicy(source_name="float32").amax_history_length == 1024
    assert fp8 != dp.QuantizedFloat8DTypePolicy("float8", "mixed_bfloat16", amax_history_length=17, margin=1)
    assert fp8 == dp.QuantizedFloat8DTypePolicy("float8", "p=f32,c=bf16", amax_history_length=16, margin=1)
    current = dp.QuantizedFloat8DTypePolicy("float8", "mixed_bfloat16", recipe="current")
    assert (current.name, current.recipe, current.amax_history_length) == (
        "float8_current_from_mixed_bfloat16",
        "current",
        None,
    )
    assert current != dp.QuantizedFloat8DTypePolicy("float8", "mixed_bfloat16")
    assert current == dp.get("float8_current_from_p=f32,c=bf16")
    assert hash(current) == hash(dp.get("float8_current_from_mixed_bfloat16"))


@pytest.mark.parametrize(
    ("factory", "error", "fragment"),
    [
        (lambda: dp.QuantizedDTypePolicy("float8", "float32"), ValueError, "received 'float8'"),
        (lambda: dp.QuantizedDTypePolicy("int3", "float32"), ValueError, "received 'int3'"),
        (lambda: dp.QuantizedDTypePolicy(8, "float32"), TypeError, "received 8"),
        (lambda: dp.QuantizedDTypePolicy("int8", 32), TypeError, "received 32"),
        (lambda: dp.QuantizedDTypePolicy("int8", "int8_from_float32"), ValueError, "int8_from_float32"),
        (lambda: dp.QuantizedFloat8DTypePolicy("int8", "float32"), ValueError, "received 'int8'"),
        (lambda: dp.QuantizedFloat8DTypePolicy(amax_history_length=0), ValueError, "received 0"),
        (lambda: dp.QuantizedFloat8DTypePolicy(amax_history_length=2.0), TypeError, "received 2.0"),
        (lambda: dp.QuantizedFloat8DTypePolicy(margin=-1), ValueError, "received -1"),
        (lambda: dp.QuantizedFloat8DTypePolicy(margin=128), ValueError, r"margin must lie in \[0, 127\], received 128"),
        (lambda: dp.QuantizedFloat8DTypePolicy(margin=True), TypeError, "received True"),
        (lambda: dp.QuantizedFloat8DTypePolicy(recipe="dynamic"), ValueError, "received 'dynamic'"),
        (lambda: dp.QuantizedFloat8DTypePolicy(recipe=None), TypeError, "received None"),
        (
            lambda: dp.QuantizedFloat8DTypePolicy(amax_history_length=16, recipe="current"),
            ValueError,
            "current scaling keeps no history. Received amax_history_length=16",
        ),
    ],
)
def test_quantized_argument_errors(factory, error, fragment):
    with pytest.raises(error, match=fragment):
        factory()


POLICIES = [
    dp.DTypePolicy("mixed_bfloat16"),
    dp.DTypePolicy("p=f32,c=f16,o=f32"),
    dp.QuantizedDTypePolicy("int8", "bfloat16"),
    dp.QuantizedFloat8DTypePolicy("float8", "mixed_float16", 8, 2),
]


@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_config_pickle_and_copy_round_trip(policy):
    assert type(policy).from_config(policy.get_config()) == policy
    assert pickle.loads(pickle.dumps(policy)) == policy
    assert copy.deepcopy(policy) is policy


def test_from_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown keys \['units'\]"):
        dp.DTypePolicy.from_config({"name": "float32", "units": 3})
    with pytest.raises(TypeError, match="expects a dict, received 'float32'"):
        dp.DTypePolicy.from_config("float32")


# --- regressions (issue 7) ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["int8_from_p=f32,c=bf16", "int8_from_mixed_bfloat16", "float8_from_p=f32,c=f16"])
def test_plain_class_given_a_quantized_name_says_how_to_build_it(name):
    # Before: the explicit-grammar spelling was read as grammar, "unknown key 'int8_from_p'".
    mode, source = name.split("_from_")
    with pytest.raises(ValueError, match="quantized policy cannot be used here") as info:
        dp.DTypePolicy(name)
    message = str(info.value)
    assert "unknown key" not in message
    assert f"dtypepolicy.get({name!r})" in message and f"QuantizedDTypePolicy({mode!r}, {source!r})" in message


def test_quantized_name_with_the_explicit_grammar_as_source():
    assert dp.get("int8_from_p=f32,c=bf16") == dp.get("int8_from_mixed_bfloat16")
    assert dp.QuantizedDTypePolicy("int8", "p=f32,c=bf16").name == "int8_from_mixed_bfloat16"


INT8_FLOAT16 = [  # every spelling of an int8 policy whose compute dtype is float16
    lambda: dp.get("int8_from_float16"),
    lambda: dp.get("int8_from_mixed_float16"),
    lambda: dp.get("int8_from_p=f32,c=f16,o=f32"),
    lambda: dp.QuantizedDTypePolicy("int8", "mixed_float16"),
    lambda: dp.deserialize(
        {"class_name": "QuantizedDTypePolicy", "config": {"mode": "int8", "source_name": "float16"}}
    ),
]


@pytest.mark.parametrize("factory", INT8_FLOAT16)
def test_int8_with_float16_compute_is_accepted(factory):
    # Keras 3 refuses these because it dequantizes the int32 sums in float16; this engine rescales
    # them in float32 and rounds once (tests/test_quantization_int8.py, docs/float8.md).
    policy = factory()
    assert (policy.quantization_mode, policy.compute_dtype) == ("int8", "float16")


def test_float16_compute_stays_allowed_for_int4_and_float8():
    assert dp.get("int4_from_mixed_float16").compute_dtype == "float16"
    assert dp.get("float8_from_mixed_float16").compute_dtype == "float16"


@pytest.mark.parametrize("name", ["int8_from_int8", "int4_from_int32", "float8_from_int32", "int8_from_bool"])
def test_a_quantized_policy_needs_a_floating_source(name):
    with pytest.raises(ValueError, match=rf"Policy '{name}' is not supported: .* must be floating; received '"):
        dp.get(name)


# --- the matrix-product algorithm (issue 10) ---------------------------------------------------


def test_dot_algorithm_property_and_keyword():
    import jax

    assert dp.DTypePolicy("float32").dot_algorithm == "F32_F32_F32"
    assert dp.DTypePolicy("mixed_float16").dot_algorithm == "F16_F16_F32"
    x3 = dp.DTypePolicy("mixed_bfloat16", dot_algorithm=jax.lax.DotAlgorithmPreset.BF16_BF16_F32_X3)
    assert x3 == dp.DTypePolicy("p=f32,c=bf16,dot=BF16_BF16_F32_X3") and x3 != dp.DTypePolicy("mixed_bfloat16")
    assert hash(x3) == hash(dp.DTypePolicy("p=f32,c=bf16,dot=BF16_BF16_F32_X3"))
    assert hash(x3) != hash(dp.DTypePolicy("mixed_bfloat16"))
    assert repr(x3) == '<DTypePolicy "params=float32,compute=bfloat16,dot=BF16_BF16_F32_X3">'


def test_dot_algorithm_is_immutable():
    policy = dp.DTypePolicy("p=f32,c=bf16,dot=F32_F32_F32")
    with pytest.raises(AttributeError):
        policy.dot_algorithm = "BF16_BF16_F32"
    assert policy.dot_algorithm == "F32_F32_F32"


@pytest.mark.parametrize(
    "policy",
    [
        dp.DTypePolicy("p=f32,c=bf16,dot=F32_F32_F32"),
        dp.DTypePolicy("float32", dot_algorithm="TF32_TF32_F32"),
        dp.QuantizedDTypePolicy("int8", "p=f32,c=bf16,dot=F32_F32_F32"),
        dp.QuantizedFloat8DTypePolicy("float8", "p=f32,c=bf16,acc=bf16", 8, 1),
    ],
    ids=repr,
)
def test_config_pickle_and_copy_keep_the_algorithm(policy):
    for restored in (type(policy).from_config(policy.get_config()), pickle.loads(pickle.dumps(policy))):
        assert restored == policy and hash(restored) == hash(policy)
        assert restored.dot_algorithm == policy.dot_algorithm
    assert copy.copy(policy) is policy and copy.deepcopy(policy) is policy


def test_quantized_policy_reports_its_sources_algorithm():
    policy = dp.QuantizedDTypePolicy("int8", "p=f32,c=bf16,dot=F32_F32_F32")
    assert policy.dot_algorithm == "F32_F32_F32" and policy.compute_dtype == "bfloat16"
    assert policy != dp.QuantizedDTypePolicy("int8", "mixed_bfloat16")
    assert dp.QuantizedDTypePolicy("int8", "mixed_bfloat16").dot_algorithm == "BF16_BF16_F32"


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        (
            {"dot_algorithm": 3},
            TypeError,
            r"dot_algorithm must be a jax.lax.DotAlgorithmPreset or its name.*received 3",
        ),
        ({"dot_algorithm": "F16_F16_F32"}, ValueError, r"'F16_F16_F32': it cannot take bfloat16 operands"),
        ({"dot_algorithm": "BF16_BF16_F23"}, ValueError, r"not a known algorithm.*Did you mean 'BF16_BF16_F32'"),
    ],
)
def test_bad_dot_algorithm_keyword(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        dp.DTypePolicy("mixed_bfloat16", **kwargs)
