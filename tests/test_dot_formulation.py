"""How each dot algorithm runs per backend, and layer results under it against float64 NumPy references.

References are NumPy float64 on the operands rounded (with ml_dtypes, or the bit-exact TF32
rounding written out below in float64 arithmetic) to the algorithm's operand type; products and
sums are then exact to float64 precision. The expected formulations are a hand-written table.
"""

import functools
import math
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import dtypepolicy as dp
from dtypepolicy import _numerics
from dtypepolicy._dot_formulation import dot_formulation, round_to_tf32
from layers import Dense, EinsumDense, MultiHeadAttention

OVERRIDE = "DTYPEPOLICY_CPU_BF16_DOT"
ALGORITHMS = (
    "BF16_BF16_F32", "BF16_BF16_BF16", "BF16_BF16_F32_X3", "BF16_BF16_F32_X6", "BF16_BF16_F32_X9",
    "TF32_TF32_F32", "TF32_TF32_F32_X3", "F16_F16_F32", "F16_F16_F16", "F32_F32_F32", "F64_F64_F64",
)  # fmt: skip
# algorithm -> (operand type values are rounded to, accumulation type), read off the preset's name:
# the multi-pass presets (_X3/_X6/_X9) take float32 operands.
ROUNDING = {
    "BF16_BF16_F32": ("bfloat16", "float32"),
    "BF16_BF16_BF16": ("bfloat16", "bfloat16"),
    "BF16_BF16_F32_X3": ("float32", "float32"),
    "BF16_BF16_F32_X6": ("float32", "float32"),
    "BF16_BF16_F32_X9": ("float32", "float32"),
    "TF32_TF32_F32": ("tf32", "float32"),
    "TF32_TF32_F32_X3": ("float32", "float32"),
    "F16_F16_F32": ("float16", "float32"),
    "F16_F16_F16": ("float16", "float16"),
    "F32_F32_F32": ("float32", "float32"),
    "F64_F64_F64": ("float64", "float64"),
}
# Unit roundoff (half an ulp relative to the value) and half the smallest subnormal step of each type.
UNIT = {"bfloat16": 2.0**-8, "float16": 2.0**-11, "tf32": 2.0**-11, "float32": 2.0**-24}
TINY = {"bfloat16": 2.0**-134, "float16": 2.0**-25, "tf32": 2.0**-137, "float32": 2.0**-150}
SHORT = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}
VALID = {
    "bfloat16": (
        "BF16_BF16_F32",
        "BF16_BF16_BF16",
        "BF16_BF16_F32_X3",
        "BF16_BF16_F32_X6",
        "BF16_BF16_F32_X9",
        "TF32_TF32_F32",
        "TF32_TF32_F32_X3",
        "F32_F32_F32",
    ),
    "float16": ("F16_F16_F32", "F16_F16_F16", "F32_F32_F32"),
    "float32": ALGORITHMS[:-1],
}  # fmt: skip  (F64_F64_F64 needs jax_enable_x64, which the suite leaves off)


def _sweep():
    """(compute, algorithm, override): both CPU formulations where the override changes anything (BF16_BF16_F32)."""
    cases = []
    for compute, algorithms in VALID.items():
        for algorithm in algorithms:
            overrides = ("native", "upcast") if algorithm == "BF16_BF16_F32" else ("upcast",)
            cases += [(compute, algorithm, override) for override in overrides]
    return cases


SWEEP = _sweep()
SWEEP_IDS = [f"{c}-{a}-{o}" for c, a, o in SWEEP]


# --- formulations per backend ----------------------------------------------------------------------


def _expected_accelerator(algorithm):
    rounding, accumulation = ROUNDING[algorithm]
    operand = "float32" if rounding == "tf32" else rounding
    precision = (
        jax.lax.Precision.HIGHEST
        if algorithm in ("F32_F32_F32", "F64_F64_F64")
        else jax.lax.DotAlgorithmPreset[algorithm]
    )
    return operand, precision, accumulation


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_accelerators_run_the_preset_itself_or_highest_for_full_precision(algorithm, backend, monkeypatch):
    for override in ("native", "upcast"):  # the CPU override never reaches an accelerator
        monkeypatch.setenv(OVERRIDE, override)
        formulation = dot_formulation(algorithm, backend)
        operand, precision, accumulation = _expected_accelerator(algorithm)
        assert formulation.algorithm == algorithm and formulation.backend == backend
        assert formulation.operand_dtype == operand
        assert formulation.precision == precision
        assert formulation.accumulation == accumulation == formulation.result_dtype
        assert formulation.rounding == ROUNDING[algorithm][0]
        assert algorithm in formulation.description and backend in formulation.description


@pytest.mark.parametrize("override", ["native", "upcast"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cpu_formulations(algorithm, override, monkeypatch):
    monkeypatch.setenv(OVERRIDE, override)
    formulation = dot_formulation(algorithm, "cpu")
    rounding, accumulation = ROUNDING[algorithm]
    assert formulation.algorithm == algorithm and formulation.backend == "cpu"
    assert formulation.rounding == rounding
    assert formulation.result_dtype == accumulation
    if algorithm == "BF16_BF16_F32" and override == "native":
        assert (formulation.operand_dtype, formulation.precision, formulation.accumulation) == (
            "bfloat16", None, "float32",
        )  # fmt: skip
        assert "native" in formulation.description
    elif algorithm == "F64_F64_F64":
        expected = ("float64", jax.lax.Precision.HIGHEST, "float64")
        assert (formulation.operand_dtype, formulation.precision, formulation.accumulation) == expected
    else:
        # No presets on XLA:CPU: operands rounded to their type, multiplied exactly in a float32 dot.
        expected = ("float32", jax.lax.Precision.HIGHEST, "float32")
        assert (formulation.operand_dtype, formulation.precision, formulation.accumulation) == expected
    assert formulation.description.startswith(f"{algorithm} on cpu")


def test_the_override_changes_only_the_bf16_f32_cpu_formulation(monkeypatch):
    by_override = {}
    for override in ("native", "upcast"):
        monkeypatch.setenv(OVERRIDE, override)
        by_override[override] = {a: dot_formulation(a, "cpu") for a in ALGORITHMS}
    changed = [a for a in ALGORITHMS if by_override["native"][a] != by_override["upcast"][a]]
    assert changed == ["BF16_BF16_F32"]


@pytest.mark.parametrize(
    ("policy", "backend", "fragments"),
    [
        ("float32", "gpu", ("F32_F32_F32 on gpu", "Precision.HIGHEST")),
        ("float32", "tpu", ("F32_F32_F32 on tpu", "Precision.HIGHEST")),
        ("mixed_bfloat16", "gpu", ("BF16_BF16_F32 on gpu", "BF16_BF16_F32 preset", "bfloat16 operands")),
        ("p=f32,dot=TF32_TF32_F32", "gpu", ("TF32_TF32_F32 on gpu", "TF32_TF32_F32 preset")),
        ("mixed_float16", "cpu", ("F16_F16_F32 on cpu", "float32 dot")),
        ("p=f32,dot=BF16_BF16_F32_X6", "cpu", ("BF16_BF16_F32_X6 on cpu", "float32 dot")),
    ],
)
def test_describe_dot_names_the_algorithm_and_the_backend(policy, backend, fragments):
    text = dp.describe_dot(policy, backend=backend)
    assert all(fragment in text for fragment in fragments), text


@pytest.mark.parametrize(("override", "word"), [("native", "native bfloat16 dot"), ("upcast", "converted to float32")])
def test_describe_dot_on_cpu_follows_the_override(override, word, monkeypatch):
    monkeypatch.setenv(OVERRIDE, override)
    text = dp.describe_dot(dp.get("mixed_bfloat16"), backend="cpu")
    assert text.startswith("BF16_BF16_F32 on cpu") and word in text


@pytest.mark.parametrize(
    ("flags", "reason"),
    [({"amx_bf16"}, "DTYPEPOLICY_CPU_BF16_DOT=upcast"), (set(), "no fast bf16 units here")],
)
def test_describe_dot_says_why_bf16_is_upcast_on_cpu(flags, reason, monkeypatch):
    # On a CPU with AMX the upcast only runs because the override asked for it: saying "no fast
    # bf16 units here" would be false there.
    from dtypepolicy import _dot_formulation

    monkeypatch.setattr(_dot_formulation, "_cpu_flags", lambda: frozenset(flags))
    monkeypatch.setenv(OVERRIDE, "upcast")
    _dot_formulation._formulation.cache_clear()
    try:
        text = dp.describe_dot(dp.get("mixed_bfloat16"), backend="cpu")
    finally:
        _dot_formulation._formulation.cache_clear()
    assert "converted to float32" in text and reason in text, text


def test_describe_dot_of_an_integer_policy_says_it_has_no_algorithm():
    assert "int32" in dp.describe_dot("int32") and "not floating" in dp.describe_dot("int32")


@pytest.mark.parametrize("bad", ["fast", "AMX", "1"])
def test_an_invalid_override_is_a_value_error_naming_it(bad, monkeypatch):
    monkeypatch.setenv(OVERRIDE, bad)
    with pytest.raises(ValueError, match=rf"{OVERRIDE} must be 'native' or 'upcast', received {bad.lower()!r}"):
        dot_formulation("BF16_BF16_F32", "cpu")
    with pytest.raises(ValueError, match=OVERRIDE):
        Dense(2, dtype="mixed_bfloat16")(np.ones((1, 3), np.float32))


def test_f64_algorithm_without_x64_is_a_clear_error():
    """F64_F64_F64 on a float32 policy would silently run in float32 (and warn) while x64 is off."""
    assert not jax.config.jax_enable_x64
    layer = Dense(2, dtype="p=f32,dot=F64_F64_F64")
    with pytest.raises(ValueError, match=r"Dot algorithm F64_F64_F64 needs float64.*jax_enable_x64"):
        layer(np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"Dot algorithm F64_F64_F64 needs float64.*jax_enable_x64"):
        _numerics.einsum("ij,jk->ik", jnp.ones((1, 3)), jnp.ones((3, 2)), algorithm="F64_F64_F64")
    assert "F64_F64_F64 on cpu" in dp.describe_dot("p=f32,dot=F64_F64_F64", backend="cpu")  # still described


# --- TF32 rounding ---------------------------------------------------------------------------------


def tf32_reference(x32):
    """float32 values rounded to 10 mantissa bits, to nearest even, in float64 arithmetic."""
    with np.errstate(invalid="ignore", over="ignore"):  # signalling NaNs; overflow to inf is intended
        x = np.asarray(x32, np.float32).astype(np.float64)
        out = x.copy()
        finite = np.isfinite(x) & (x != 0)
        mantissa, exponent = np.frexp(x[finite])  # x = mantissa * 2**exponent, 0.5 <= |mantissa| < 1
        # A normal float32 keeps 11 significant bits (10 stored); below 2**-126 the step is fixed at 2**-136.
        step_exponent = np.maximum(exponent - 11, -136)
        out[finite] = np.rint(np.ldexp(mantissa, exponent - step_exponent)) * np.ldexp(1.0, step_exponent)
        return out.astype(np.float32)  # past the largest TF32 value rounds to inf, as IEEE does


def _tf32_inputs():
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, size=20000, dtype=np.uint64).astype(np.uint32)
    ties = (rng.integers(0, 2**19, size=2000, dtype=np.uint32) << 13) | np.uint32(0x1000)  # exactly half a step
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, 3.4028235e38, 1.4e-45, -1.1754942e-38], np.float32)
    # 1 + 2**-11 is a tie that rounds down to 1 (even); 1 + 3 * 2**-11 one that rounds up.
    handpicked = np.array([1 + 2.0**-11, 1 + 3 * 2.0**-11, 1 + 2.0**-11 + 2.0**-23], np.float32)
    return np.concatenate([bits.view(np.float32), ties.view(np.float32), specials, handpicked])


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_round_to_tf32_matches_the_bit_level_reference(mode):
    x = _tf32_inputs()
    fn = round_to_tf32 if mode == "eager" else jax.jit(round_to_tf32)
    actual = np.asarray(fn(jnp.asarray(x)))
    expected = tf32_reference(x)
    nan = np.isnan(x)
    assert np.isnan(actual[nan]).all()
    np.testing.assert_array_equal(actual[~nan].view(np.uint32), expected[~nan].view(np.uint32))
    assert list(expected[-3:]) == [1.0, 1 + 2.0**-9, 1 + 2.0**-10]


def test_round_to_tf32_passes_gradients_through():
    """Rounding's derivative is taken as the identity, as for a cast: a TF32 product still has gradients."""
    x = jnp.asarray(np.random.default_rng(3).normal(size=(3, 4)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(jax.grad(lambda x: round_to_tf32(x).sum())(x)), np.ones((3, 4)))
    w = jnp.ones((4, 2), jnp.float32)
    grad = jax.grad(lambda w: _numerics.einsum("ij,jk->ik", x, w, algorithm="TF32_TF32_F32").sum())(w)
    assert np.abs(np.asarray(grad)).min() > 0


# --- layers against float64 NumPy ------------------------------------------------------------------
#
# Per element, with r the float64 reference on the rounded operands, S = sum |x_i w_i| + |b| (the
# same sum of absolute values), n the contraction length and u(t) the unit roundoff of type t:
#
#   |y - r| <= u(out) |r| + 2 u(acc) S + (n + 2) u(f32) S + 4 tiny(out)
#
# - u(out) |r|: the one rounding of the exact result to the output dtype (the compute dtype);
# - (n + 2) u(f32) S: the float32 accumulator's summation error in any order (n - 1 additions,
#   plus the bias, each off by at most u(f32) times a partial sum bounded by S);
# - 2 u(acc) S: only for the 16-bit-accumulation presets (BF16_BF16_BF16, F16_F16_F16), whose sum
#   and bias are each rounded to 16 bits before the sum of the two is;
# - 4 tiny(out): results below the normal range round with an absolute, not a relative, error.
# Products of rounded operands are exact in float32 (8 x 8, 11 x 11 bits), so nothing else enters.


def round_to(values, kind):
    """float64 copies of `values` rounded to `kind` ("bfloat16", "float16", "tf32", "float32")."""
    x32 = np.asarray(values, np.float64).astype(np.float32)
    if kind == "tf32":
        return tf32_reference(x32).astype(np.float64)
    if kind == "float32":
        return x32.astype(np.float64)
    return x32.astype({"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}[kind]).astype(np.float64)


def assert_within_bound(actual, reference, absolute_sum, n, out, algorithm):
    accumulation = ROUNDING[algorithm][1]
    accumulation_unit = UNIT[accumulation] if accumulation in ("bfloat16", "float16") else 0.0
    bound = (
        UNIT[out] * np.abs(reference)
        + 2 * accumulation_unit * absolute_sum
        + (n + 2) * UNIT["float32"] * absolute_sum
        + 4 * TINY[out]
    )
    error = np.abs(np.asarray(actual, np.float64) - reference)
    worst = np.unravel_index(np.argmax(error / bound), error.shape)
    assert (error <= bound).all(), (
        f"error {error[worst]:.3e} > bound {bound[worst]:.3e} at {worst} (reference {reference[worst]:.6e})"
    )


def _normal(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _cotangent(shape, seed):
    """Multiples of 1/4 in [-2, 2]: exact in bf16, f16 and TF32, so no rounding of the output gradient enters."""
    return (np.random.default_rng(seed).integers(-8, 9, size=shape) / 4).astype(np.float32)


def _set_weights(layer, seed):
    values = {}
    for i, variable in enumerate(layer.trainable_variables):
        values[variable.path] = _normal(variable.shape, seed + i)
        variable.assign(values[variable.path])
    return values


def _outputs_and_gradients(layer, inputs, cotangent, mode):
    """Outputs, and d(sum(outputs * cotangent)) w.r.t. the trainable values and the inputs, eager or jitted."""
    values = [v.value for v in layer.trainable_variables]

    def forward(values, *inputs):
        return layer.stateless_call(values, [], *inputs)[0]

    def loss(values, *inputs):
        outputs = forward(values, *inputs)
        return jnp.sum(outputs.astype(jnp.float32) * cotangent), outputs

    argnums = tuple(range(len(inputs) + 1))
    if mode == "jit":  # one compiled function for the outputs and the gradients
        (_, outputs), grads = jax.jit(jax.value_and_grad(loss, argnums=argnums, has_aux=True))(values, *inputs)
    else:
        outputs = layer(*inputs)
        grads = jax.grad(lambda *args: loss(*args)[0], argnums=argnums)(values, *inputs)
    paths = [v.path for v in layer.trainable_variables]
    return outputs, dict(zip(paths, grads[0], strict=True)), grads[1:]


def _policy(compute, algorithm):
    return dp.get(f"p=f32,c={SHORT[compute]},dot={algorithm}")


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize(("compute", "algorithm", "override"), SWEEP, ids=SWEEP_IDS)
def test_dense_outputs_and_gradients_within_the_one_rounding_bound(compute, algorithm, override, mode, monkeypatch):
    monkeypatch.setenv(OVERRIDE, override)  # before the layer is built and called
    rounding = ROUNDING[algorithm][0]
    layer = Dense(8, dtype=_policy(compute, algorithm))
    x = _normal((2, 3, 24), 0)
    layer.build(x.shape)
    weights = _set_weights(layer, 10)
    kernel, bias = weights[layer.kernel.path], weights[layer.bias.path]
    cotangent = _cotangent((2, 3, 8), 20)
    y, grads, (dx,) = _outputs_and_gradients(layer, (jnp.asarray(x),), jnp.asarray(cotangent), mode)
    assert y.dtype == compute and dx.dtype == "float32"

    x_op, k_op = round_to(round_to(x, compute), rounding), round_to(round_to(kernel, compute), rounding)
    reference = x_op @ k_op + bias
    assert_within_bound(y, reference, np.abs(x_op) @ np.abs(k_op) + np.abs(bias), 24, compute, algorithm)
    # Both gradient products take the cotangent (exact in every operand type) and the rounded operands.
    dx_reference = cotangent @ k_op.T
    assert_within_bound(dx, dx_reference, np.abs(cotangent) @ np.abs(k_op).T, 8, compute, algorithm)
    dk_reference = np.einsum("abi,abo->io", x_op, cotangent)
    dk_sum = np.einsum("abi,abo->io", np.abs(x_op), np.abs(cotangent))
    assert_within_bound(grads[layer.kernel.path], dk_reference, dk_sum, 6, compute, algorithm)


def _einsum_gradient_unit(compute, algorithm):
    """EinsumDense's gradients are JAX's transposes of the forward: the cotangent of each operand cast
    (compute dtype -> operand type) is rounded to the narrower of the two, once."""
    rounding = ROUNDING[algorithm][0]
    return max(compute, rounding if rounding != "tf32" else compute, key=lambda t: UNIT[t])


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize(("compute", "algorithm", "override"), SWEEP, ids=SWEEP_IDS)
def test_einsum_dense_outputs_and_gradients_within_the_one_rounding_bound(
    compute, algorithm, override, mode, monkeypatch
):
    monkeypatch.setenv(OVERRIDE, override)
    rounding = ROUNDING[algorithm][0]
    layer = EinsumDense("abc,cde->abde", output_shape=(None, 2, 4), bias_axes="de", dtype=_policy(compute, algorithm))
    x = _normal((2, 3, 16), 1)
    layer.build(x.shape)
    weights = _set_weights(layer, 30)
    kernel, bias = weights[layer.kernel.path], weights[layer.bias.path]
    cotangent = _cotangent((2, 3, 2, 4), 40)
    y, grads, (dx,) = _outputs_and_gradients(layer, (jnp.asarray(x),), jnp.asarray(cotangent), mode)
    assert y.dtype == compute

    x_op, k_op = round_to(round_to(x, compute), rounding), round_to(round_to(kernel, compute), rounding)
    reference = np.einsum("abc,cde->abde", x_op, k_op) + bias
    absolute = np.einsum("abc,cde->abde", np.abs(x_op), np.abs(k_op)) + np.abs(bias)
    assert_within_bound(y, reference, absolute, 16, compute, algorithm)
    unit = _einsum_gradient_unit(compute, algorithm)
    dx_reference = np.einsum("abde,cde->abc", cotangent, k_op)
    dx_sum = np.einsum("abde,cde->abc", np.abs(cotangent), np.abs(k_op))
    assert_within_bound(dx, dx_reference, dx_sum, 8, unit, algorithm)
    dk_reference = np.einsum("abc,abde->cde", x_op, cotangent)
    dk_sum = np.einsum("abc,abde->cde", np.abs(x_op), np.abs(cotangent))
    assert_within_bound(grads[layer.kernel.path], dk_reference, dk_sum, 6, unit, algorithm)


# --- MultiHeadAttention ----------------------------------------------------------------------------
#
# Attention is a chain of roundings, not one: the reference mirrors each of them at the same point
# (projections rounded to the compute dtype once after their float32 sum and bias, q scaled by 0.5
# (exact), scores kept unrounded for the float32 softmax, probabilities rounded, context rounded),
# with every product's operands rounded to the algorithm's type. The implementation then differs
# from it only by the float32 summation order (relative ~n u(f32)) and the rounding flips that
# order causes, each one ulp of an intermediate. Bound (Frobenius, relative):
#   outputs:   ||y - r|| <= (u(out) + 48 u(f32)) ||r|| + 4 tiny(out) sqrt(size)
# with u(out) the unit roundoff of the last rounding (the compute dtype, or the 16-bit
# accumulation type of BF16_BF16_BF16 / F16_F16_F16): the mirrored reference already carries
# that rounding, so |y - r| is 0 or one ulp per element and flips are rare, well under one
# half-ulp on average; 48 u(f32) bounds the float32 summation order over the five products of
# at most 8 terms each, first order (5 * (8 + 2) u(f32) < 48 u(f32)). For the 16-bit-accumulation
# presets XLA may keep in float32 an intermediate (the product before its bias) that the reference
# rounds to 16 bits: one more half-ulp per element, so the bound doubles to 2 u(out) (measured 0.86 u).
# The gradients come from a float64 NumPy backward pass of the mirrored forward, roundings taken as
# identities; the implementation's backward rounds each cotangent once per cast and product on the
# longest path (output projection, context, softmax, scores, query projection: 5 products, each
# with a rounded result and a rounded operand), so ||g - g_ref|| <= (10 u + 48 u(f32)) ||g_ref||,
# with u the largest of u(out) above and the operand type's unit roundoff.

HEADS, KEY_DIM = 2, 4  # 1 / sqrt(4) = 0.5 scales exactly in every dtype


def _softmax(scores):
    shifted = np.exp(scores - scores.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def attention_reference(query, value, weights, compute, algorithm, cotangent):
    """Outputs and (d query, d query-kernel) of attention in float64, mirroring the implementation's roundings."""
    rounding, accumulation = ROUNDING[algorithm]
    narrow = accumulation in ("bfloat16", "float16")
    rc = lambda a: round_to(a, compute)  # noqa: E731
    rop = lambda a: round_to(a, rounding)  # noqa: E731
    racc = (lambda a: round_to(a, accumulation)) if narrow else (lambda a: a)

    def finish(product, bias=None):
        product = racc(product)
        return rc(product if bias is None else racc(product + racc(bias)))

    w = {name.split("/", 1)[1]: value_ for name, value_ in weights.items()}
    kernels = {name: rop(rc(w[f"{name}/kernel"])) for name in ("query", "key", "value", "attention_output")}
    query_c, value_c = rop(rc(query)), rop(rc(value))
    q = finish(np.einsum("abc,cde->abde", query_c, kernels["query"]), w["query/bias"])
    k = finish(np.einsum("abc,cde->abde", value_c, kernels["key"]), w["key/bias"])
    v = finish(np.einsum("abc,cde->abde", value_c, kernels["value"]), w["value/bias"])
    qs = q * 0.5
    scores = racc(np.einsum("aecd,abcd->acbe", rop(k), rop(qs)))
    probabilities = rc(racc(_softmax(scores)))
    context = finish(np.einsum("acbe,aecd->abcd", rop(probabilities), rop(v)))
    out = finish(np.einsum("abcd,cde->abe", rop(context), kernels["attention_output"]), w["attention_output/bias"])

    # Backward of the same graph, roundings taken as identities.
    d_context = np.einsum("abe,cde->abcd", cotangent, kernels["attention_output"])
    d_probabilities = np.einsum("abcd,aecd->acbe", d_context, rop(v))
    d_scores = probabilities * (d_probabilities - (d_probabilities * probabilities).sum(-1, keepdims=True))
    d_q = 0.5 * np.einsum("acbe,aecd->abcd", d_scores, rop(k))
    d_query = np.einsum("abde,cde->abc", d_q, kernels["query"])
    d_query_kernel = np.einsum("abc,abde->cde", query_c, d_q)
    return out, d_query, d_query_kernel


def _relative(actual, reference):
    actual = np.asarray(actual, np.float64)
    return np.linalg.norm(actual - reference) / np.linalg.norm(reference)


# Attention runs one CPU formulation per (operand rounding, accumulation) class; the multi-pass presets
# other than _X3 and F32_F32_F32 on bf16 are those of F32_F32_F32 under another name (the Dense and
# EinsumDense sweeps cover every name). Eager runs the per-layer jitted forwards, the same for all.
_EAGER_ATTENTION = {
    ("bfloat16", "BF16_BF16_F32", "native"),
    ("bfloat16", "BF16_BF16_F32", "upcast"),
    ("float16", "F16_F16_F32", "upcast"),
    ("float32", "F32_F32_F32", "upcast"),
    ("float32", "BF16_BF16_F32", "native"),
}
ATTENTION = [
    (*case, mode)
    for case in SWEEP
    if case[1] not in ("BF16_BF16_F32_X6", "BF16_BF16_F32_X9", "TF32_TF32_F32_X3")
    and case[:2] != ("bfloat16", "F32_F32_F32")
    for mode in ("jit", "eager")
    if mode == "jit" or case in _EAGER_ATTENTION
]


@pytest.mark.parametrize(("compute", "algorithm", "override", "mode"), ATTENTION, ids="-".join)
def test_attention_outputs_and_gradients_within_their_bounds(compute, algorithm, override, mode, monkeypatch):
    monkeypatch.setenv(OVERRIDE, override)
    layer = MultiHeadAttention(num_heads=HEADS, key_dim=KEY_DIM, dtype=_policy(compute, algorithm))
    query, value = _normal((2, 3, 8), 2), _normal((2, 5, 6), 3)
    layer.build(query.shape, value.shape)
    weights = {path: w * 0.5 for path, w in _set_weights(layer, 50).items()}  # keep the softmax away from one-hot
    for variable in layer.trainable_variables:
        variable.assign(weights[variable.path])
    cotangent = _cotangent((2, 3, 8), 60)
    y, grads, (d_query, _) = _outputs_and_gradients(
        layer, (jnp.asarray(query), jnp.asarray(value)), jnp.asarray(cotangent), mode
    )
    assert y.dtype == compute
    reference, d_query_reference, d_kernel_reference = attention_reference(
        query, value, weights, compute, algorithm, cotangent
    )
    rounding, accumulation = ROUNDING[algorithm]
    narrow = UNIT[accumulation] if accumulation in ("bfloat16", "float16") else 0.0
    final = max(UNIT[compute], narrow)  # a 16-bit-accumulation preset rounds its results to 16 bits
    size_term = 4 * TINY[compute] * math.sqrt(reference.size) / np.linalg.norm(reference)
    assert _relative(y, reference) <= (2 if narrow else 1) * final + 48 * UNIT["float32"] + size_term
    unit = max(final, UNIT[rounding])
    assert _relative(d_query, d_query_reference) <= 10 * unit + 48 * UNIT["float32"]
    assert _relative(grads[layer.query_dense.kernel.path], d_kernel_reference) <= 10 * unit + 48 * UNIT["float32"]


# --- float32 means float32, and the HLO says so ----------------------------------------------------


def _stateless(layer, values, *inputs):
    return layer.stateless_call(values, [], *inputs)[0]


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_a_float32_dense_matches_float64_to_float32_precision_not_tf32(mode):
    x, kernel = _normal((64, 256), 4), _normal((256, 32), 5)
    reference = x.astype(np.float64) @ kernel.astype(np.float64)
    errors = {}
    for name in ("float32", "p=f32,dot=TF32_TF32_F32"):
        layer = Dense(32, use_bias=False, dtype=name)
        layer.build(x.shape)
        layer.kernel.assign(kernel)
        run = layer if mode == "eager" else functools.partial(jax.jit(functools.partial(_stateless, layer)), [kernel])
        y = run(x)
        errors[name] = _relative(y, reference)
    # float32 sums of 256 terms: ~1e-7 relative; TF32's 10-bit operands: ~1e-4 (measured 2.1e-7 and 3.1e-4).
    assert errors["float32"] < 1e-6
    assert errors["p=f32,dot=TF32_TF32_F32"] > 1e-5


def _dots(text):
    """(lhs type, rhs type, result type, precision) of every dot_general in a StableHLO module."""
    found = []
    for line in text.splitlines():
        if "dot_general" not in line:
            continue
        precision = re.search(r"precision = \[(\w+), (\w+)\]", line)
        types = re.search(r":\s*\(tensor<([^>]*)>, tensor<([^>]*)>\)\s*->\s*tensor<([^>]*)>", line)
        element = [t.rsplit("x", 1)[-1] for t in types.groups()]
        found.append((*element, precision.group(1) if precision else "DEFAULT"))
    return found


def _dense_hlo(policy, gradient=False):
    layer = Dense(16, dtype=policy)
    x = jnp.ones((8, 32), jnp.float32)
    layer.build(x.shape)
    values = [v.value for v in layer.trainable_variables]

    def forward(values, x):
        return layer.stateless_call(values, [], x)[0]

    if gradient:
        fn = jax.grad(lambda values, x: jnp.sum(forward(values, x).astype(jnp.float32)), argnums=(0, 1))
    else:
        fn = forward
    return _dots(jax.jit(fn).lower(values, x).as_text())


@pytest.mark.parametrize("override", ["native", "upcast"])
def test_a_float32_dense_lowers_to_highest_precision(override, monkeypatch):
    monkeypatch.setenv(OVERRIDE, override)
    assert _dense_hlo("float32") == [("f32", "f32", "f32", "HIGHEST")]
    gradient = _dense_hlo("float32", gradient=True)
    assert len(gradient) == 2 and all(dot == ("f32", "f32", "f32", "HIGHEST") for dot in gradient)


def test_float32_einsum_dense_and_attention_lower_every_dot_to_highest():
    layer = MultiHeadAttention(num_heads=2, key_dim=4, dtype="float32")
    query = jnp.ones((2, 3, 8), jnp.float32)
    layer.build(query.shape, query.shape)
    values = [v.value for v in layer.trainable_variables]
    text = jax.jit(lambda values, q: layer.stateless_call(values, [], q, q)[0]).lower(values, query).as_text()
    dots = _dots(text)
    # The projections share one nested forward function: its dot is printed once.
    assert len(dots) >= 4 and all(dot == ("f32", "f32", "f32", "HIGHEST") for dot in dots), dots


def test_mixed_bfloat16_dense_native_takes_bf16_operands_with_f32_accumulation(monkeypatch):
    monkeypatch.setenv(OVERRIDE, "native")
    assert _dense_hlo("mixed_bfloat16") == [("bf16", "bf16", "f32", "DEFAULT")]


def test_mixed_bfloat16_dense_upcast_takes_f32_operands(monkeypatch):
    monkeypatch.setenv(OVERRIDE, "upcast")
    assert _dense_hlo("mixed_bfloat16") == [("f32", "f32", "f32", "HIGHEST")]


def test_dense_gradient_products_use_the_forward_formulation(monkeypatch):
    """Both the input-gradient and the weight-gradient dot: bf16 operands natively, none upcast.

    (The loss needs no forward value, so the forward dot is gone from the gradient's HLO.)
    """
    monkeypatch.setenv(OVERRIDE, "native")
    native = _dense_hlo("mixed_bfloat16", gradient=True)
    assert len(native) == 2 and all(dot == ("bf16", "bf16", "f32", "DEFAULT") for dot in native), native
    monkeypatch.setenv(OVERRIDE, "upcast")
    upcast = _dense_hlo("mixed_bfloat16", gradient=True)
    assert len(upcast) == 2 and all(dot == ("f32", "f32", "f32", "HIGHEST") for dot in upcast), upcast
    assert not any(dot[:2] == ("bf16", "bf16") for dot in upcast)


def test_a_changed_override_is_never_served_a_stale_trace(monkeypatch):
    layer = Dense(16, dtype="mixed_bfloat16")
    x = np.ones((8, 32), np.float32)
    for override, operand in (("native", "bf16"), ("upcast", "f32"), ("native", "bf16")):
        monkeypatch.setenv(OVERRIDE, override)
        layer(x)  # the eager path goes through the same jitted forward
        values = [v.value for v in layer.trainable_variables]
        text = jax.jit(lambda values, x: layer.stateless_call(values, [], x)[0]).lower(values, x).as_text()
        assert _dots(text)[0][0] == operand


@pytest.mark.parametrize("override", ["native", "upcast"])
def test_einsum_dense_and_attention_gradient_products_use_the_forward_formulation(override, monkeypatch):
    # JAX's own transpose paired the float32 cotangent with the bf16 operand: a float32 DEFAULT dot,
    # off the native bf16 path. The einsum custom_vjp runs both gradient products in the formulation.
    monkeypatch.setenv(OVERRIDE, override)
    expected = ("bf16", "bf16", "f32", "DEFAULT") if override == "native" else ("f32", "f32", "f32", "HIGHEST")
    layer = EinsumDense("abc,cde->abde", output_shape=(None, 2, 4), bias_axes="de", dtype="mixed_bfloat16")
    x = jnp.ones((2, 3, 16), jnp.float32)
    layer.build(x.shape)
    values = [v.value for v in layer.trainable_variables]
    loss = lambda values, x: jnp.sum(_stateless(layer, values, x).astype(jnp.float32))  # noqa: E731
    dots = _dots(jax.jit(jax.grad(loss, argnums=(0, 1))).lower(values, x).as_text())
    assert len(dots) == 2 and all(dot == expected for dot in dots), dots

    attention = MultiHeadAttention(num_heads=2, key_dim=4, dtype="mixed_bfloat16")
    query = jnp.ones((2, 3, 8), jnp.float32)
    attention.build(query.shape, query.shape)
    values = [v.value for v in attention.trainable_variables]

    def attention_loss(values, q):
        return jnp.sum(attention.stateless_call(values, [], q, q)[0].astype(jnp.float32))

    dots = _dots(jax.jit(jax.grad(attention_loss, argnums=(0, 1))).lower(values, query).as_text())
    assert dots and all(dot == expected for dot in dots), dots
