"""Parsing dtype policy names into structured values, and naming them back.

Parsing happens once, at the edge: everything inside the library works with the
`PlainSpec`/`QuantizedSpec` values this module returns, never with name prefixes.
"""

from __future__ import annotations

import dataclasses
import re

from dtypepolicy._dot_algorithms import algorithm_from_accumulation, parse_algorithm
from dtypepolicy._dtypes import KNOWN_DTYPE_NAMES, SHORT_NAMES, closest, dtype_from_name

MIXED_NAMES = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}
QUANTIZATION_MODES = ("int8", "int4", "float8")
FLOAT8_RECIPES = ("delayed", "current")
# "float8_current_from_mixed_bfloat16": a float8 recipe may follow the mode; delayed is the default.
_QUANTIZED = re.compile(r"^(?P<mode>[a-z0-9]+)(?:_(?P<recipe>[a-z]+))?_from_(?P<source>.+)$")
_KEYS = {
    "params": "variable",
    "p": "variable",
    "compute": "compute",
    "c": "compute",
    "output": "output",
    "o": "output",
    "dot": "dot",
    "algorithm": "dot",
    "acc": "accumulation",
    "accumulation": "accumulation",
}
_DTYPE_FIELDS = ("variable", "compute", "output")
_GRAMMAR_HINT = (
    "'params=<dtype>,compute=<dtype>,output=<dtype>' (keys p/c/o, dtypes like f32/bf16/f16; optionally "
    "dot=<DotAlgorithmPreset name> or acc=<accumulation dtype>)"
)
_COMMON_NAMES = ("float16", "bfloat16", "float32", "float64", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class PlainSpec:
    """What a non-quantized policy means: storage, compute and output dtypes."""

    variable: str
    compute: str
    output: str | None = None
    dot: str | None = None  # a non-default matrix-product algorithm (see _dot_algorithms)


@dataclasses.dataclass(frozen=True)
class QuantizedSpec:
    """A quantization mode applied on top of a plain source policy."""

    mode: str
    source: PlainSpec
    recipe: str | None = None  # float8 only: "delayed" or "current"


def _error(text: str, detail: str, hint: str | None = None) -> ValueError:
    suggestion = f" Did you mean {hint!r}?" if hint else ""
    return ValueError(
        f"Cannot parse dtype policy {text!r}: {detail}. Expected one of "
        f"{', '.join(_COMMON_NAMES)}, any dtype name (e.g. 'int32', 'float8_e4m3fn'), "
        f"the form {_GRAMMAR_HINT}, or '<mode>_from_<source>' with mode in "
        f"{', '.join(QUANTIZATION_MODES)}.{suggestion}"
    )


def _quantized_here(original: str, key: str, match: re.Match) -> ValueError:
    detail = f"{key!r} is a quantized policy name; a quantized policy cannot be used here, a plain one is expected"
    if key == "".join(original.split()).lower():  # the whole name, not the source part of one
        mode, source = match.group("mode"), match.group("source")
        detail += (
            f" (for the quantized policy use dtypepolicy.get({original!r}) or "
            f"QuantizedDTypePolicy({mode!r}, {source!r}))"
        )
    return _error(original, detail)


def _parse_grammar(text: str, key: str) -> PlainSpec:
    fields: dict[str, str] = {}
    for part in key.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name or not value:
            raise _error(text, f"{part!r} is not of the form key=dtype")
        if name not in _KEYS:
            hint = closest(name, list(_KEYS))
            raise _error(text, f"unknown key {name!r} (keys are params/p, compute/c, output/o, dot, acc)", hint)
        field = _KEYS[name]
        if field in fields or (field in ("dot", "accumulation") and {"dot", "accumulation"} & set(fields)):
            raise _error(text, f"{field!r} is given twice" if field in fields else "give either dot= or acc=, not both")
        if field in _DTYPE_FIELDS:
            dtype = dtype_from_name(value)
            if dtype is None:
                hint = closest(value, list(KNOWN_DTYPE_NAMES) + list(SHORT_NAMES))
                raise _error(text, f"{value!r} is not a dtype name", hint)
            value = dtype
        fields[field] = value
    # Master weights default to float32; compute defaults to the storage dtype.
    variable = fields.get("variable", "float32")
    compute = fields.get("compute", variable)
    try:
        if "dot" in fields:
            dot = parse_algorithm(fields["dot"], compute)
        elif "accumulation" in fields:
            dot = algorithm_from_accumulation(fields["accumulation"], compute)
        else:
            dot = None
    except ValueError as error:
        raise ValueError(f"Cannot parse dtype policy {text!r}: {error}") from None
    return PlainSpec(variable, compute, fields.get("output"), dot)


def parse_plain(text: str, original: str | None = None) -> PlainSpec:
    """Parses a non-quantized policy name (`"mixed_bfloat16"`, `"p=f32,c=bf16"`, `"int8"`)."""
    original = text if original is None else original
    key = "".join(text.split()).lower()
    if not key:
        raise _error(original, "the name is empty")
    # Before the grammar: "int8_from_p=f32,c=bf16" would otherwise read as an unknown key "int8_from_p".
    quantized = _QUANTIZED.match(key)
    if quantized:
        raise _quantized_here(original, key, quantized)
    if "=" in key:
        return _parse_grammar(original, key)
    if key in MIXED_NAMES:
        return PlainSpec("float32", MIXED_NAMES[key])
    dtype = dtype_from_name(key)
    if dtype is not None:
        return PlainSpec(dtype, dtype)
    choices = list(_COMMON_NAMES) + list(KNOWN_DTYPE_NAMES)
    raise _error(original, "not a known policy or dtype name", closest(key, choices))


def parse(text: str) -> PlainSpec | QuantizedSpec:
    """Parses any policy name.

    Example:
      >>> spec = parse("int8_from_mixed_bfloat16")
      >>> spec.mode, spec.source
      ('int8', PlainSpec(variable='float32', compute='bfloat16', output=None, dot=None))
    """
    key = "".join(text.split()).lower()
    match = _QUANTIZED.match(key)
    if match is None:
        return parse_plain(text)
    mode = match.group("mode")
    if mode not in QUANTIZATION_MODES:
        hint = closest(mode, QUANTIZATION_MODES)
        raise _error(text, f"unknown quantization mode {mode!r}", hint)
    recipe = match.group("recipe")
    if recipe is not None and (mode != "float8" or recipe not in FLOAT8_RECIPES):
        detail = f"unknown {mode} recipe {recipe!r}" if mode == "float8" else f"mode {mode!r} has no recipes"
        hint = closest(recipe, FLOAT8_RECIPES) if mode == "float8" else None
        raise _error(text, f"{detail} (float8 recipes: {', '.join(FLOAT8_RECIPES)})", hint and f"float8_{hint}_from_")
    if mode == "float8":
        recipe = recipe or "delayed"
    return QuantizedSpec(mode, parse_plain(match.group("source"), original=text), recipe)


def plain_name(spec: PlainSpec) -> str:
    """The canonical name of a plain policy: the shortest spelling with the same meaning."""
    if spec.dot is not None:
        name = f"params={spec.variable},compute={spec.compute}"
        if spec.output is not None:
            name += f",output={spec.output}"
        return f"{name},dot={spec.dot}"
    if spec.output is None:
        if spec.variable == spec.compute:
            return spec.variable
        if spec.variable == "float32":
            for name, compute in MIXED_NAMES.items():
                if compute == spec.compute:
                    return name
    name = f"params={spec.variable},compute={spec.compute}"
    return name if spec.output is None else f"{name},output={spec.output}"


def quantized_name(spec: QuantizedSpec) -> str:
    """The canonical name of a quantized policy, e.g. `"float8_from_mixed_bfloat16"`.

    The default float8 recipe (delayed) is left out of the name, as in Keras; current scaling is
    `"float8_current_from_<source>"`.
    """
    mode = spec.mode if spec.recipe in (None, "delayed") else f"{spec.mode}_{spec.recipe}"
    return f"{mode}_from_{plain_name(spec.source)}"
