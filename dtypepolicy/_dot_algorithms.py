"""Matrix-product algorithms a policy can name: `jax.lax.DotAlgorithmPreset` names, checked against the compute dtype.

An algorithm fixes the operand rounding and the accumulation of every product a layer computes.
Each compute dtype has a default that keeps the SPEC §5 rule (16-bit operands, float32
accumulation; a float32 policy means full float32 products). A policy stores only a non-default
choice, so `"mixed_bfloat16"` and `"p=f32,c=bf16,acc=f32"` are the same policy.
"""

from __future__ import annotations

from dtypepolicy._dtypes import closest, dtype_from_name

# Presets a plain (non-quantized) policy may name, with the operand dtypes whose values they take
# exactly. Float8 presets belong to the float8 strategy, not to a plain policy.
_EXACT_FOR = {
    "BF16_BF16_F32": ("bfloat16",),
    "BF16_BF16_BF16": ("bfloat16",),
    "BF16_BF16_F32_X3": ("bfloat16", "float32"),
    "BF16_BF16_F32_X6": ("bfloat16", "float32"),
    "BF16_BF16_F32_X9": ("bfloat16", "float32"),
    "TF32_TF32_F32": ("bfloat16",),
    "TF32_TF32_F32_X3": ("bfloat16", "float32"),
    "F16_F16_F32": ("float16",),
    "F16_F16_F16": ("float16",),
    "F32_F32_F32": ("bfloat16", "float16", "float32"),
    "F64_F64_F64": ("bfloat16", "float16", "float32", "float64"),
}
ALGORITHMS = tuple(_EXACT_FOR)
# Operand dtypes an algorithm may round its inputs to (lossy but meaningful): float32 operands
# rounded to bfloat16 for BF16_BF16_F32, float32 operands to TF32, and so on.
_ROUNDS_FROM = {
    "BF16_BF16_F32": ("float32",),
    "BF16_BF16_BF16": ("float32",),
    "TF32_TF32_F32": ("float32",),
    "F16_F16_F32": ("float32",),
    "F16_F16_F16": ("float32",),
}
_DEFAULTS = {
    "bfloat16": "BF16_BF16_F32",
    "float16": "F16_F16_F32",
    "float32": "F32_F32_F32",
    "float64": "F64_F64_F64",
}
_SHORT_ACCUMULATION = {"bfloat16": "BF16", "float16": "F16", "float32": "F32", "float64": "F64"}


def default_algorithm(compute: str) -> str | None:
    """The algorithm a compute dtype gets when its policy names none (None: not a floating dtype).

    Example:
      >>> default_algorithm("bfloat16"), default_algorithm("float32"), default_algorithm("int32")
      ('BF16_BF16_F32', 'F32_F32_F32', None)
    """
    return _DEFAULTS.get(compute)


def _error(text: str, detail: str, hint: str | None = None) -> ValueError:
    suggestion = f" Did you mean {hint!r}?" if hint else ""
    return ValueError(
        f"Invalid dot algorithm {text!r}: {detail}. Expected one of {', '.join(ALGORITHMS)} "
        f"(jax.lax.DotAlgorithmPreset names, any case), or an accumulation dtype with acc= (f32, bf16, f16, f64)."
        f"{suggestion}"
    )


def parse_algorithm(text: str, compute: str) -> str | None:
    """The canonical algorithm `text` names for `compute`, None when it is that dtype's default.

    Raises:
      ValueError: an unknown name, or one that cannot take `compute` operands.
    """
    name = text.strip().upper()
    if name not in _EXACT_FOR:
        raise _error(name, "not a known algorithm", closest(name, ALGORITHMS))
    if compute not in _EXACT_FOR[name] + _ROUNDS_FROM.get(name, ()):
        usable = [a for a in ALGORITHMS if compute in _EXACT_FOR[a] + _ROUNDS_FROM.get(a, ())]
        raise ValueError(
            f"Invalid dot algorithm {name!r}: it cannot take {compute} operands. Algorithms for {compute} compute: "
            f"{', '.join(usable) or 'none (not a floating dtype)'}."
        )
    return None if name == _DEFAULTS.get(compute) else name


def algorithm_from_accumulation(text: str, compute: str) -> str | None:
    """The algorithm `acc=<dtype>` means: operands in `compute`, accumulated in that dtype.

    Example:
      >>> algorithm_from_accumulation("f32", "bfloat16") is None  # the default for bfloat16
      True
      >>> algorithm_from_accumulation("bf16", "bfloat16")
      'BF16_BF16_BF16'
    """
    accumulation = dtype_from_name(text)
    if accumulation not in _SHORT_ACCUMULATION or compute not in _SHORT_ACCUMULATION:
        raise _error(f"acc={text}", f"accumulating {compute} products in {accumulation or text!r} is not an algorithm")
    operand = _SHORT_ACCUMULATION[compute]
    name = f"{operand}_{operand}_{_SHORT_ACCUMULATION[accumulation]}"
    if name not in _EXACT_FOR:  # name what was typed, not a preset name the user never wrote
        raise _error(f"acc={text}", f"accumulating {compute} products in {accumulation} ({name}) is not an algorithm")
    return parse_algorithm(name, compute)
