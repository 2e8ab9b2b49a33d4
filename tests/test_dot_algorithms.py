"""The matrix-product algorithm a policy owns: parsing, defaults, equality, hashing, serialization, errors.

The tables below are written out by hand from SPEC §5 and the preset names: which algorithms take
which compute dtype's values, and what each compute dtype defaults to. They are never read from
`dtypepolicy._dot_algorithms`.
"""

import json
import pickle
import re

import jax
import pytest
from hypothesis import given
from hypothesis import strategies as st

import dtypepolicy as dp
from dtypepolicy._parse import PlainSpec, parse, plain_name

ALL = (
    "BF16_BF16_F32",
    "BF16_BF16_BF16",
    "BF16_BF16_F32_X3",
    "BF16_BF16_F32_X6",
    "BF16_BF16_F32_X9",
    "TF32_TF32_F32",
    "TF32_TF32_F32_X3",
    "F16_F16_F32",
    "F16_F16_F16",
    "F32_F32_F32",
    "F64_F64_F64",
)
# compute dtype -> the algorithms whose operand type holds (or is a meaningful rounding of) its values.
VALID = {
    "bfloat16": (
        "BF16_BF16_F32", "BF16_BF16_BF16", "BF16_BF16_F32_X3", "BF16_BF16_F32_X6", "BF16_BF16_F32_X9",
        "TF32_TF32_F32", "TF32_TF32_F32_X3", "F32_F32_F32", "F64_F64_F64",
    ),
    "float16": ("F16_F16_F32", "F16_F16_F16", "F32_F32_F32", "F64_F64_F64"),
    "float32": ALL,
    "float64": ("F64_F64_F64",),
}  # fmt: skip
DEFAULT = {"bfloat16": "BF16_BF16_F32", "float16": "F16_F16_F32", "float32": "F32_F32_F32", "float64": "F64_F64_F64"}
SHORT = {"bfloat16": "bf16", "float16": "f16", "float32": "f32", "float64": "f64"}


# --- defaults and equality ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "algorithm"),
    [
        ("float32", "F32_F32_F32"),
        ("mixed_bfloat16", "BF16_BF16_F32"),
        ("mixed_float16", "F16_F16_F32"),
        ("bfloat16", "BF16_BF16_F32"),
        ("float16", "F16_F16_F32"),
        ("float64", "F64_F64_F64"),
        ("p=f32,c=bf16,o=f32", "BF16_BF16_F32"),
        ("int32", None),
        ("bool", None),
    ],
)
def test_default_algorithm_of_each_compute_dtype(name, algorithm):
    assert dp.get(name).dot_algorithm == algorithm


def test_mixed_bfloat16_is_the_same_policy_in_every_spelling():
    spellings = [
        dp.get("mixed_bfloat16"),
        dp.get("p=f32,c=bf16,acc=f32"),
        dp.get("p=f32,c=bf16,dot=BF16_BF16_F32"),
        dp.get("params=float32,compute=bfloat16,accumulation=float32"),
        dp.get("p=f32,c=bf16,algorithm=bf16_bf16_f32"),
        dp.DTypePolicy("mixed_bfloat16", dot_algorithm="BF16_BF16_F32"),
        dp.DTypePolicy("mixed_bfloat16", dot_algorithm=jax.lax.DotAlgorithmPreset.BF16_BF16_F32),
    ]
    assert all(policy == spellings[0] for policy in spellings)
    assert len({hash(policy) for policy in spellings}) == 1
    assert {policy.name for policy in spellings} == {"mixed_bfloat16"}


def test_a_non_default_algorithm_is_part_of_the_meaning():
    x3 = dp.DTypePolicy("mixed_bfloat16", dot_algorithm=jax.lax.DotAlgorithmPreset.BF16_BF16_F32_X3)
    assert x3 == dp.get("p=f32,c=bf16,dot=BF16_BF16_F32_X3") == dp.get("c=bf16,algorithm=bf16_bf16_f32_x3")
    assert hash(x3) == hash(dp.get("p=f32,c=bf16,dot=BF16_BF16_F32_X3"))
    assert x3 != dp.get("mixed_bfloat16") and hash(x3) != hash(dp.get("mixed_bfloat16"))
    assert x3.name == "params=float32,compute=bfloat16,dot=BF16_BF16_F32_X3"
    assert x3.dot_algorithm == "BF16_BF16_F32_X3"
    assert (x3.variable_dtype, x3.compute_dtype, x3.output_dtype) == ("float32", "bfloat16", None)
    assert len({x3, dp.get("mixed_bfloat16"), dp.get("p=f32,c=bf16,dot=F32_F32_F32")}) == 3


@pytest.mark.parametrize(
    ("text", "algorithm"),
    [
        ("c=bf16,acc=bf16", "BF16_BF16_BF16"),
        ("p=f16,acc=f16", "F16_F16_F16"),
        ("p=f32,c=f16,acc=float32", "F16_F16_F32"),
        ("p=f32,acc=f32", "F32_F32_F32"),
        ("p=f64,acc=f64", "F64_F64_F64"),
        ("p=f32,c=bf16,dot=TF32_TF32_F32", "TF32_TF32_F32"),
        ("p=f32,dot=BF16_BF16_F32", "BF16_BF16_F32"),  # float32 operands rounded to bf16
        ("p=f32,dot=tf32_tf32_f32", "TF32_TF32_F32"),
        (" P = F32 , C = BF16 , DOT = F32_F32_F32 ", "F32_F32_F32"),
    ],
)
def test_grammar_spellings_of_algorithms(text, algorithm):
    assert dp.get(text).dot_algorithm == algorithm


def test_the_keyword_replaces_the_names_algorithm():
    policy = dp.DTypePolicy("p=f32,c=bf16,dot=BF16_BF16_F32_X3", dot_algorithm="F32_F32_F32")
    assert policy == dp.get("p=f32,c=bf16,dot=F32_F32_F32")
    assert dp.DTypePolicy("p=f32,c=bf16,dot=F32_F32_F32", dot_algorithm="BF16_BF16_F32") == dp.get("mixed_bfloat16")


def test_the_keyword_is_checked_against_the_default_policys_compute_dtype():
    with dp.policy_scope("mixed_bfloat16"):
        policy = dp.DTypePolicy(None, dot_algorithm="F32_F32_F32")
    assert policy == dp.get("p=f32,c=bf16,dot=F32_F32_F32")


# --- canonical names round-trip ----------------------------------------------------------------------


@st.composite
def valid_meanings(draw):
    variable = draw(st.sampled_from(list(VALID)))
    compute = draw(st.sampled_from(list(VALID)))
    output = draw(st.sampled_from([None, *VALID]))
    algorithm = draw(st.sampled_from([None, *VALID[compute]]))
    return variable, compute, output, algorithm


@given(valid_meanings(), st.sampled_from(["dot", "algorithm", "keyword"]))
def test_canonical_names_round_trip(meaning, how):
    variable, compute, output, algorithm = meaning
    text = f"p={SHORT[variable]},c={SHORT[compute]}" + (f",o={SHORT[output]}" if output else "")
    if algorithm is not None and how != "keyword":
        policy = dp.get(f"{text},{how}={algorithm.lower()}")
    else:
        policy = dp.DTypePolicy(text, dot_algorithm=algorithm)
    assert policy.dot_algorithm == (algorithm or DEFAULT[compute])
    assert (policy.variable_dtype, policy.compute_dtype, policy.output_dtype) == (variable, compute, output)
    name = policy.name
    again = dp.get(name)
    assert again == policy and hash(again) == hash(policy) and again.name == name
    assert parse(name) == parse(plain_name(parse(name)))
    # The default is never spelled out; a non-default algorithm always is.
    assert ("dot=" in name) == (algorithm not in (None, DEFAULT[compute]))


def test_canonical_name_with_an_output_dtype():
    policy = dp.get("p=f32,c=bf16,o=f32,acc=bf16")
    assert policy.name == "params=float32,compute=bfloat16,output=float32,dot=BF16_BF16_BF16"
    assert plain_name(PlainSpec("float32", "bfloat16", "float32", "BF16_BF16_BF16")) == policy.name


# --- serialization -----------------------------------------------------------------------------------

ROUND_TRIP = [
    dp.get("mixed_bfloat16"),
    dp.DTypePolicy("mixed_bfloat16", dot_algorithm=jax.lax.DotAlgorithmPreset.BF16_BF16_F32_X3),
    dp.DTypePolicy("float32", dot_algorithm="TF32_TF32_F32"),
    dp.get("p=f16,acc=f16"),
    dp.get("p=f32,c=bf16,o=f32,dot=F32_F32_F32"),
    dp.get("int8_from_p=f32,c=bf16,dot=F32_F32_F32"),
    dp.get("float8_from_p=f32,c=bf16,dot=BF16_BF16_F32_X6"),
    dp.QuantizedFloat8DTypePolicy("float8", "p=f32,c=bf16,dot=F32_F32_F32", amax_history_length=16, recipe="delayed"),
]


@pytest.mark.parametrize("policy", ROUND_TRIP, ids=lambda p: p.name)
def test_serialization_keeps_the_algorithm(policy):
    for restored in (
        dp.deserialize(json.loads(json.dumps(dp.serialize(policy)))),
        pickle.loads(pickle.dumps(policy)),
        type(policy).from_config(json.loads(json.dumps(policy.get_config()))),
        dp.get(policy.name) if not isinstance(policy, dp.QuantizedFloat8DTypePolicy) else policy,
    ):
        assert restored == policy and type(restored) is type(policy) and hash(restored) == hash(policy)
        assert restored.dot_algorithm == policy.dot_algorithm


def test_a_config_with_the_keyword_builds_the_same_policy():
    config = {"name": "mixed_bfloat16", "dot_algorithm": "BF16_BF16_F32_X3"}
    assert dp.DTypePolicy.from_config(config) == dp.get("p=f32,c=bf16,dot=BF16_BF16_F32_X3")
    assert dp.DTypePolicy.from_config(config).get_config() == {
        "name": "params=float32,compute=bfloat16,dot=BF16_BF16_F32_X3"
    }


def test_quantized_policies_keep_the_sources_algorithm():
    policy = dp.get("int8_from_p=f32,c=bf16,dot=F32_F32_F32")
    assert isinstance(policy, dp.QuantizedDTypePolicy) and policy.quantization_mode == "int8"
    assert policy.dot_algorithm == "F32_F32_F32" and policy.compute_dtype == "bfloat16"
    assert policy.source_name == "params=float32,compute=bfloat16,dot=F32_F32_F32"
    assert policy.name == "int8_from_params=float32,compute=bfloat16,dot=F32_F32_F32"
    assert policy != dp.get("int8_from_mixed_bfloat16")
    assert dp.get("int8_from_p=f32,c=bf16,acc=f32") == dp.get("int8_from_mixed_bfloat16")
    float8 = dp.get("float8_current_from_p=f32,c=bf16,dot=TF32_TF32_F32")
    assert float8.recipe == "current" and float8.dot_algorithm == "TF32_TF32_F32"
    assert dp.get(float8.name) == float8


# --- bad values --------------------------------------------------------------------------------------

_LISTS_ALL = ", ".join(ALL)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("p=f32,c=bf16,dot=BF16_BF16_F33", r"'BF16_BF16_F33': not a known algorithm.*Did you mean 'BF16_BF16_F32'\?"),
        ("p=f32,dot=F32_F32_F16", r"'F32_F32_F16': not a known algorithm.*Did you mean 'F32_F32_F32'\?"),
        ("p=f32,dot=DEFAULT", r"'DEFAULT': not a known algorithm"),
        ("p=f32,c=bf16,dot=F8E4M3FN_F8E4M3FN_F32", r"not a known algorithm"),  # float8 presets are not plain
    ],
)
def test_unknown_algorithm_names_the_value_lists_the_valid_ones_and_hints(text, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        dp.get(text)
    assert repr(text) in str(info.value) and _LISTS_ALL in str(info.value)


@pytest.mark.parametrize(
    ("text", "algorithm", "compute"),
    [
        ("p=f32,c=bf16,dot=F16_F16_F32", "F16_F16_F32", "bfloat16"),  # bf16's range is not float16's
        ("p=f32,c=bf16,dot=F16_F16_F16", "F16_F16_F16", "bfloat16"),
        ("p=f32,c=f16,dot=BF16_BF16_F32", "BF16_BF16_F32", "float16"),  # f16 keeps 3 more mantissa bits
        ("p=f32,c=f16,dot=TF32_TF32_F32", "TF32_TF32_F32", "float16"),
        ("p=f64,dot=F32_F32_F32", "F32_F32_F32", "float64"),
    ],
)
def test_an_algorithm_that_cannot_take_the_compute_dtype_lists_those_that_can(text, algorithm, compute):
    usable = ", ".join(VALID[compute])
    pattern = rf"{re.escape(repr(text))}.*'{algorithm}': it cannot take {compute} operands.*{re.escape(usable)}\."
    with pytest.raises(ValueError, match=pattern):
        dp.get(text)
    with pytest.raises(ValueError, match=rf"it cannot take {compute} operands.*{re.escape(usable)}\."):
        dp.DTypePolicy(text.rsplit(",", 1)[0], dot_algorithm=algorithm)


def test_an_algorithm_on_an_integer_policy_is_rejected():
    with pytest.raises(ValueError, match=r"cannot take int32 operands.*none \(not a floating dtype\)"):
        dp.get("p=int32,dot=F32_F32_F32")
    with pytest.raises(ValueError, match=r"cannot take int32 operands"):
        dp.DTypePolicy("int32", dot_algorithm="F32_F32_F32")


@pytest.mark.parametrize(
    "text",
    [
        "p=f32,c=bf16,dot=F32_F32_F32,acc=f32",
        "p=f32,c=bf16,acc=f32,dot=F32_F32_F32",
        "p=f32,c=bf16,algorithm=F32_F32_F32,accumulation=f32",
    ],
)
def test_dot_and_acc_together_are_rejected(text):
    with pytest.raises(ValueError, match=rf"{re.escape(repr(text))}: give either dot= or acc=, not both"):
        dp.get(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("p=f32,c=bf16,dot=F32_F32_F32,dot=F32_F32_F32", r"'dot' is given twice"),
        ("p=f32,c=bf16,acc=f32,accumulation=f32", r"'accumulation' is given twice"),
        ("p=f32,c=bf16,dot=", r"'dot=' is not of the form key=dtype"),
    ],
)
def test_repeated_or_empty_algorithm_keys(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        dp.get(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("p=f32,c=bf16,acc=int8", r"'acc=int8': accumulating bfloat16 products in 'int8' is not an algorithm"),
        ("p=f32,c=bf16,acc=f8", r"'acc=f8': accumulating bfloat16 products in 'f8' is not an algorithm"),
        ("p=f32,c=int32,acc=f32", r"'acc=f32': accumulating int32 products in 'float32' is not an algorithm"),
        # Floating but no such preset: the message names what was typed, not the preset name it would be.
        ("p=f32,c=bf16,acc=f64", r"'acc=f64': accumulating bfloat16 products in float64 \(BF16_BF16_F64\) is not"),
        ("p=f32,acc=bf16", r"'acc=bf16': accumulating float32 products in bfloat16 \(F32_F32_BF16\) is not"),
        ("p=f32,c=f16,acc=bf16", r"'acc=bf16': accumulating float16 products in bfloat16 \(F16_F16_BF16\) is not"),
    ],
)
def test_acc_with_an_impossible_dtype(text, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        dp.get(text)
    assert repr(text) in str(info.value) and _LISTS_ALL in str(info.value)
    assert "acc= (f32, bf16, f16, f64)" in str(info.value) and "Did you mean" not in str(info.value)


@pytest.mark.parametrize("bad", [3, 1.0, jax.lax.Precision.HIGHEST, ["F32_F32_F32"], jax.numpy.float32, b"F32_F32_F32"])
def test_a_non_string_non_preset_algorithm_is_a_type_error(bad):
    with pytest.raises(
        TypeError,
        match=rf"dot_algorithm must be a jax.lax.DotAlgorithmPreset or its name.*"
        rf"received .* of type {re.escape(type(bad).__name__)}",
    ):
        dp.DTypePolicy("mixed_bfloat16", dot_algorithm=bad)


def test_the_default_preset_is_not_an_algorithm_a_policy_can_name():
    with pytest.raises(ValueError, match=r"'DEFAULT': not a known algorithm"):
        dp.DTypePolicy("float32", dot_algorithm=jax.lax.DotAlgorithmPreset.DEFAULT)


def test_a_failed_construction_leaves_the_default_policy_alone():
    dp.set_dtype_policy("mixed_bfloat16")
    with pytest.raises(ValueError):
        dp.set_dtype_policy("p=f32,c=bf16,dot=F16_F16_F32")
    assert dp.dtype_policy() == dp.get("mixed_bfloat16")
