"""Policy name grammar: every accepted spelling, and every rejection with its message."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtypepolicy._parse import PlainSpec, QuantizedSpec, parse, plain_name, quantized_name

# name -> (variable, compute, output); the meaning each spelling must parse to.
PLAIN_CASES = {
    "float16": ("float16", "float16", None),
    "bfloat16": ("bfloat16", "bfloat16", None),
    "float32": ("float32", "float32", None),
    "float64": ("float64", "float64", None),
    "mixed_float16": ("float32", "float16", None),
    "mixed_bfloat16": ("float32", "bfloat16", None),
    "int32": ("int32", "int32", None),
    "int8": ("int8", "int8", None),
    "uint8": ("uint8", "uint8", None),
    "bool": ("bool", "bool", None),
    "float8_e4m3fn": ("float8_e4m3fn", "float8_e4m3fn", None),
    "float8_e5m2": ("float8_e5m2", "float8_e5m2", None),
    "params=float32,compute=bfloat16,output=float32": ("float32", "bfloat16", "float32"),
    "p=f32,c=bf16": ("float32", "bfloat16", None),
    "p=f32,c=f16,o=f32": ("float32", "float16", "float32"),
    " P = F32 , C = BF16 ": ("float32", "bfloat16", None),
    "compute=bf16,params=f32": ("float32", "bfloat16", None),
    "c=bf16": ("float32", "bfloat16", None),
    "p=bf16": ("bfloat16", "bfloat16", None),
    "o=f16": ("float32", "float32", "float16"),
    "params=f64,compute=f32": ("float64", "float32", None),
    "Mixed_BFloat16": ("float32", "bfloat16", None),
    "  float16 ": ("float16", "float16", None),
}

QUANTIZED_CASES = {
    "int8_from_mixed_bfloat16": ("int8", ("float32", "bfloat16", None)),
    "int8_from_float32": ("int8", ("float32", "float32", None)),
    "int4_from_bfloat16": ("int4", ("bfloat16", "bfloat16", None)),
    "float8_from_mixed_bfloat16": ("float8", ("float32", "bfloat16", None)),
    "float8_from_p=f32,c=bf16,o=f32": ("float8", ("float32", "bfloat16", "float32")),
    "INT8_FROM_MIXED_FLOAT16": ("int8", ("float32", "float16", None)),
}

# bad string -> fragment the error must contain (the value received, and the hint).
BAD_CASES = {
    "mixed_bfloat61": "Did you mean 'mixed_bfloat16'",
    "floa32": "Did you mean 'float32'",
    "": "empty",
    "   ": "empty",
    "float": "'float'",
    "f4": "'f4'",
    "params=float32,compute": "'compute' is not of the form key=dtype",
    "params=f32,x=bf16": "unknown key 'x'",
    "params=f32,p=bf16": "'variable' is given twice",
    "params=f32,compute=bf17": "'bf17' is not a dtype name",
    "p=f32,,c=bf16": "'' is not of the form",
    "p=object": "'object' is not a dtype name",
    "int9_from_float32": "unknown quantization mode 'int9'",
    "int8_from_nonsense": "'int8_from_nonsense'",
    "int8_from_int8_from_float32": "a quantized policy cannot be used here",
    "int8_from_": "'int8_from_'",
    "str": "'str'",
}


@pytest.mark.parametrize("name", list(PLAIN_CASES), ids=repr)
def test_plain_names_parse_to_their_dtypes(name):
    assert parse(name) == PlainSpec(*PLAIN_CASES[name])


@pytest.mark.parametrize("name", list(QUANTIZED_CASES), ids=repr)
def test_quantized_names_parse_to_mode_and_source(name):
    mode, source = QUANTIZED_CASES[name]
    recipe = "delayed" if mode == "float8" else None  # the default float8 recipe is implied by the name
    assert parse(name) == QuantizedSpec(mode, PlainSpec(*source), recipe)


FLOAT8_RECIPE_CASES = {
    "float8_from_float32": "delayed",
    "float8_delayed_from_float32": "delayed",
    "float8_current_from_float32": "current",
    " Float8_Current_From_Mixed_BFloat16 ": "current",
}


@pytest.mark.parametrize("name", list(FLOAT8_RECIPE_CASES), ids=repr)
def test_float8_names_carry_their_recipe(name):
    spec = parse(name)
    assert (spec.mode, spec.recipe) == ("float8", FLOAT8_RECIPE_CASES[name])
    assert quantized_name(spec) == ("float8_from_" if spec.recipe == "delayed" else "float8_current_from_") + (
        plain_name(spec.source)
    )


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("float8_curent_from_float32", "unknown float8 recipe 'curent'.*Did you mean 'float8_current_from_'"),
        ("int8_current_from_float32", "mode 'int8' has no recipes"),
    ],
)
def test_bad_float8_recipes_are_named(name, match):
    with pytest.raises(ValueError, match=match):
        parse(name)


@pytest.mark.parametrize("name", ["int8", "int4", "float8_e4m3fn", "float8_e5m2", "uint8"])
def test_plain_dtype_names_are_never_quantized_policies(name):
    assert isinstance(parse(name), PlainSpec)


@pytest.mark.parametrize("name", list(BAD_CASES), ids=repr)
def test_bad_names_raise_value_error_naming_the_input(name):
    with pytest.raises(ValueError) as info:
        parse(name)
    message = str(info.value)
    assert repr(name) in message
    assert BAD_CASES[name] in message
    assert "mixed_bfloat16" in message  # lists the valid names


# canonical name -> meaning; the name is the shortest spelling of that meaning.
CANONICAL = {
    ("float32", "float32", None): "float32",
    ("float32", "bfloat16", None): "mixed_bfloat16",
    ("float32", "float16", None): "mixed_float16",
    ("bfloat16", "float32", None): "params=bfloat16,compute=float32",
    ("float32", "bfloat16", "float32"): "params=float32,compute=bfloat16,output=float32",
    ("float32", "float32", "float32"): "params=float32,compute=float32,output=float32",
    ("float64", "float16", None): "params=float64,compute=float16",
}


@pytest.mark.parametrize("meaning", list(CANONICAL), ids=str)
def test_canonical_names(meaning):
    assert plain_name(PlainSpec(*meaning)) == CANONICAL[meaning]


def test_quantized_name_uses_canonical_source():
    assert quantized_name(parse("int8_from_p=f32,c=bf16")) == "int8_from_mixed_bfloat16"


FLOAT_NAMES = ["float16", "bfloat16", "float32", "float64", "f16", "bf16", "f32", "f64", "int8", "int32"]
KEYS = {"variable": ["params", "p"], "compute": ["compute", "c"], "output": ["output", "o"]}


@st.composite
def grammar_strings(draw):
    fields = draw(st.lists(st.sampled_from(list(KEYS)), min_size=1, max_size=3, unique=True))
    parts = []
    for field in fields:
        key = draw(st.sampled_from(KEYS[field]))
        value = draw(st.sampled_from(FLOAT_NAMES))
        case = draw(st.sampled_from([str.lower, str.upper]))
        space = draw(st.sampled_from(["", " "]))
        parts.append(f"{space}{case(key)}{space}={space}{case(value)}{space}")
    return ",".join(parts)


@given(grammar_strings())
def test_grammar_round_trips_through_the_canonical_name(text):
    spec = parse(text)
    assert parse(plain_name(spec)) == spec


@given(st.text(max_size=12))
def test_arbitrary_text_parses_or_raises_value_error(text):
    try:
        spec = parse(text)
    except ValueError as error:
        assert repr(text) in str(error)
    else:
        assert isinstance(spec, (PlainSpec, QuantizedSpec))


# --- the matrix-product algorithm (dot= / acc=) ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("p=f32,c=bf16,acc=f32", PlainSpec("float32", "bfloat16", None, None)),  # the default is not stored
        ("p=f32,c=bf16,dot=BF16_BF16_F32", PlainSpec("float32", "bfloat16", None, None)),
        ("p=f32,c=bf16,dot=bf16_bf16_f32_x3", PlainSpec("float32", "bfloat16", None, "BF16_BF16_F32_X3")),
        ("c=bf16,acc=bf16", PlainSpec("float32", "bfloat16", None, "BF16_BF16_BF16")),
        ("p=f32,algorithm=TF32_TF32_F32", PlainSpec("float32", "float32", None, "TF32_TF32_F32")),
        ("p=f16,accumulation=float16", PlainSpec("float16", "float16", None, "F16_F16_F16")),
        ("dot=F32_F32_F32,o=bf16,c=bf16", PlainSpec("float32", "bfloat16", "bfloat16", "F32_F32_F32")),
    ],
)
def test_algorithm_keys_parse_into_the_spec(text, spec):
    assert parse(text) == spec


def test_the_algorithm_is_checked_against_the_compute_dtype_after_all_keys():
    # Compute given after dot=: the check uses it, not the default (float32).
    assert parse("dot=BF16_BF16_BF16,c=bf16").dot == "BF16_BF16_BF16"
    with pytest.raises(ValueError, match=r"'F16_F16_F32': it cannot take bfloat16 operands"):
        parse("dot=F16_F16_F32,c=bf16")


def test_a_quantized_source_keeps_its_algorithm():
    spec = parse("int8_from_p=f32,c=bf16,dot=F32_F32_F32")
    assert spec == QuantizedSpec("int8", PlainSpec("float32", "bfloat16", None, "F32_F32_F32"))
    assert quantized_name(spec) == "int8_from_params=float32,compute=bfloat16,dot=F32_F32_F32"
    assert parse("float8_current_from_c=bf16,acc=bf16").source.dot == "BF16_BF16_BF16"


@pytest.mark.parametrize(
    ("meaning", "name"),
    [
        (("float32", "bfloat16", None, "F32_F32_F32"), "params=float32,compute=bfloat16,dot=F32_F32_F32"),
        (("bfloat16", "bfloat16", None, "BF16_BF16_BF16"), "params=bfloat16,compute=bfloat16,dot=BF16_BF16_BF16"),
        (
            ("float32", "float16", "float32", "F16_F16_F16"),
            "params=float32,compute=float16,output=float32,dot=F16_F16_F16",
        ),
    ],
)
def test_canonical_names_spell_a_non_default_algorithm_last(meaning, name):
    assert plain_name(PlainSpec(*meaning)) == name
    assert parse(name) == PlainSpec(*meaning)


ALGORITHM_VALUES = ["F32_F32_F32", "bf16_bf16_f32", "BF16_BF16_BF16", "TF32_TF32_F32", "F16_F16_F32", "f32", "bf16"]


@given(
    grammar_strings(), st.sampled_from(["dot", "algorithm", "acc", "accumulation"]), st.sampled_from(ALGORITHM_VALUES)
)
def test_grammar_with_an_algorithm_parses_or_names_the_input(text, key, value):
    full = f"{text},{key}={value}"
    try:
        spec = parse(full)
    except ValueError as error:
        assert repr(full) in str(error)
    else:
        assert parse(plain_name(spec)) == spec
