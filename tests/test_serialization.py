"""get / serialize / deserialize: every accepted identifier, JSON round trips, errors."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dtypepolicy as dp
from dtypepolicy._dtypes import is_float


@pytest.mark.parametrize(
    ("identifier", "expected"),
    [
        ("mixed_bfloat16", dp.DTypePolicy("mixed_bfloat16")),
        ("int8", dp.DTypePolicy("int8")),
        ("float8_e4m3fn", dp.DTypePolicy("float8_e4m3fn")),
        ("int8_from_mixed_bfloat16", dp.QuantizedDTypePolicy("int8", "mixed_bfloat16")),
        ("int4_from_float32", dp.QuantizedDTypePolicy("int4", "float32")),
        ("float8_from_mixed_bfloat16", dp.QuantizedFloat8DTypePolicy("float8", "mixed_bfloat16")),
        (jnp.bfloat16, dp.DTypePolicy("bfloat16")),
        (np.dtype("float16"), dp.DTypePolicy("float16")),
        (np.float32, dp.DTypePolicy("float32")),
        (jnp.dtype("int32"), dp.DTypePolicy("int32")),
        (float, dp.DTypePolicy("float32")),
        (int, dp.DTypePolicy("int32")),
        ({"class_name": "DTypePolicy", "config": {"name": "bfloat16"}}, dp.DTypePolicy("bfloat16")),
    ],
    ids=repr,
)
def test_get_accepts(identifier, expected):
    policy = dp.get(identifier)
    assert policy == expected and type(policy) is type(expected)


def test_get_plain_dtype_names_stay_plain():
    assert dp.get("int8").quantization_mode is None
    assert type(dp.get("float8_e4m3fn")) is dp.DTypePolicy


def test_get_none_is_the_current_default_and_objects_pass_through():
    assert dp.get(None) == dp.DTypePolicy("float32")
    with dp.policy_scope("bfloat16"):
        assert dp.get(None).name == "bfloat16"
    policy = dp.DTypePolicy("mixed_float16")
    assert dp.get(policy) is policy
    policy_map = dp.DTypePolicyMap()
    assert dp.get(policy_map) is policy_map


@pytest.mark.parametrize(
    "bad",
    [3, 2.5, True, ["float32"], object(), np.dtype("O"), np.dtype("U3")],
    ids=lambda value: "object" if type(value) is object else repr(value),
)
def test_get_wrong_type_names_the_value(bad):
    with pytest.raises(TypeError, match="dtype policy identifier") as info:
        dp.get(bad)
    assert repr(bad) in str(info.value)


def test_get_bad_string_is_a_value_error_with_hint():
    with pytest.raises(ValueError, match="Did you mean 'mixed_float16'"):
        dp.get("mixed_flaot16")


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"class_name": "Nope", "config": {}}, "received 'Nope'"),
        ({"config": {"name": "float32"}}, "received None"),
        ({"class_name": "DTypePolicy", "config": "float32"}, "'config' must be a dict, received 'float32'"),
        ({"class_name": "DTypePolicy", "config": {"name": "float33"}}, "'float33'"),
    ],
)
def test_deserialize_errors(config, fragment):
    with pytest.raises(ValueError, match=fragment):
        dp.deserialize(config)


def test_deserialize_and_serialize_type_errors():
    with pytest.raises(TypeError, match="received 'float32'"):
        dp.deserialize("float32")
    with pytest.raises(TypeError, match="received 'float32'"):
        dp.serialize("float32")


def test_serialize_format():
    assert dp.serialize(dp.DTypePolicy("p=f32,c=bf16")) == {
        "class_name": "DTypePolicy",
        "config": {"name": "mixed_bfloat16"},
    }
    assert dp.serialize(dp.QuantizedFloat8DTypePolicy("float8", "float32", 4, 1)) == {
        "class_name": "QuantizedFloat8DTypePolicy",
        "config": {
            "mode": "float8",
            "source_name": "float32",
            "amax_history_length": 4,
            "margin": 1,
            "recipe": "delayed",
        },
    }
    # Current scaling keeps no history, so its config has no history length.
    assert dp.serialize(dp.QuantizedFloat8DTypePolicy("float8", "float32", recipe="current")) == {
        "class_name": "QuantizedFloat8DTypePolicy",
        "config": {"mode": "float8", "source_name": "float32", "margin": 0, "recipe": "current"},
    }


DTYPES = ["float16", "bfloat16", "float32", "float64", "int8", "int32", "float8_e4m3fn"]


@st.composite
def plain_policies(draw):
    variable = draw(st.sampled_from(DTYPES))
    compute = draw(st.sampled_from(DTYPES))
    output = draw(st.sampled_from([None, *DTYPES]))
    text = f"p={variable},c={compute}" + ("" if output is None else f",o={output}")
    return dp.DTypePolicy(text)


@st.composite
def policies(draw):
    kind = draw(st.sampled_from(["plain", "int", "float8"]))
    plain = draw(plain_policies())
    source = plain.name
    if kind == "plain" or not is_float(plain.compute_dtype):  # quantized sources compute in floats
        return dp.DTypePolicy(source)
    if kind == "int":
        # int8 with float16 compute is refused (as in Keras), so those sources go with int4.
        modes = ["int4"] if plain.compute_dtype == "float16" else ["int8", "int4"]
        return dp.QuantizedDTypePolicy(draw(st.sampled_from(modes)), source)
    length = draw(st.integers(1, 2048))
    margin = draw(st.integers(0, 4))
    return dp.QuantizedFloat8DTypePolicy("float8", source, amax_history_length=length, margin=margin)


PATHS = st.from_regex(r"[a-z]{1,5}(_[0-9])?(/[a-z]{1,5}(_[0-9])?){0,2}", fullmatch=True)


@st.composite
def policy_maps(draw):
    default = draw(st.one_of(st.none(), policies()))
    entries = draw(st.dictionaries(PATHS, policies(), max_size=4))
    return dp.DTypePolicyMap(default, entries)


@given(policies())
def test_json_round_trip_is_identity_for_policies(policy):
    text = json.dumps(dp.serialize(policy))
    restored = dp.deserialize(json.loads(text))
    assert restored == policy and type(restored) is type(policy)
    assert hash(restored) == hash(policy)
    assert dp.get(policy.name) == policy or isinstance(policy, dp.QuantizedFloat8DTypePolicy)


@given(policy_maps())
def test_json_round_trip_is_identity_for_maps(policy_map):
    before = dp.serialize(policy_map)
    restored = dp.deserialize(json.loads(json.dumps(before)))
    assert restored == policy_map and hash(restored) == hash(policy_map)
    assert dp.serialize(policy_map) == before  # serializing changed nothing


# --- policies with a matrix-product algorithm (issue 10) -----------------------------------------

# compute dtype -> algorithms that can take its values (hand-written from the preset names; F64 aside).
_ALGORITHMS_FOR = {
    "bfloat16": ["BF16_BF16_F32", "BF16_BF16_BF16", "BF16_BF16_F32_X3", "TF32_TF32_F32", "F32_F32_F32"],
    "float16": ["F16_F16_F32", "F16_F16_F16", "F32_F32_F32"],
    "float32": ["BF16_BF16_F32", "TF32_TF32_F32", "F16_F16_F16", "BF16_BF16_F32_X9", "F32_F32_F32"],
}


@st.composite
def policies_with_algorithms(draw):
    compute = draw(st.sampled_from(list(_ALGORITHMS_FOR)))
    variable = draw(st.sampled_from(["float32", compute]))
    output = draw(st.sampled_from([None, "float32", compute]))
    algorithm = draw(st.sampled_from(_ALGORITHMS_FOR[compute]))
    text = f"p={variable},c={compute}" + ("" if output is None else f",o={output}") + f",dot={algorithm}"
    kind = draw(st.sampled_from(["plain", "keyword", "int", "float8"]))
    if kind == "keyword":
        return dp.DTypePolicy(text.rsplit(",", 1)[0], dot_algorithm=algorithm)
    if kind == "int":
        return dp.QuantizedDTypePolicy("int4" if compute == "float16" else "int8", text)
    if kind == "float8":
        return dp.QuantizedFloat8DTypePolicy("float8", text, amax_history_length=draw(st.integers(1, 64)))
    return dp.DTypePolicy(text)


@given(policies_with_algorithms())
def test_json_round_trip_keeps_the_algorithm(policy):
    restored = dp.deserialize(json.loads(json.dumps(dp.serialize(policy))))
    assert restored == policy and type(restored) is type(policy) and hash(restored) == hash(policy)
    assert restored.dot_algorithm == policy.dot_algorithm
    assert dp.serialize(restored) == dp.serialize(policy)


def test_the_serialized_name_carries_a_non_default_algorithm_only():
    assert dp.serialize(dp.get("p=f32,c=bf16,acc=f32")) == {
        "class_name": "DTypePolicy",
        "config": {"name": "mixed_bfloat16"},
    }
    assert dp.serialize(dp.get("p=f32,c=bf16,acc=bf16")) == {
        "class_name": "DTypePolicy",
        "config": {"name": "params=float32,compute=bfloat16,dot=BF16_BF16_BF16"},
    }
    assert dp.get("p=f32,c=bf16,dot=F32_F32_F32").dot_algorithm == "F32_F32_F32"


@given(st.dictionaries(PATHS, policies_with_algorithms(), max_size=3))
def test_maps_of_policies_with_algorithms_round_trip(entries):
    policy_map = dp.DTypePolicyMap("p=f32,c=bf16,dot=F32_F32_F32", entries)
    restored = dp.deserialize(json.loads(json.dumps(dp.serialize(policy_map))))
    assert restored == policy_map and hash(restored) == hash(policy_map)


def test_a_layer_config_keeps_its_policys_algorithm():
    from layers import Dense

    layer = Dense(3, dtype="p=f32,c=bf16,dot=F32_F32_F32")
    rebuilt = Dense.from_config(json.loads(json.dumps(layer.get_config())))
    assert rebuilt.dtype_policy == layer.dtype_policy and rebuilt.dtype_policy.dot_algorithm == "F32_F32_F32"
