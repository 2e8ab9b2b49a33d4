"""EinsumDense: shapes from the equation, the attention projections, one rounding, configs, errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
from layers import initializers, regularizers
from layers._builtin._dense import Dense
from layers._builtin._einsum_dense import EinsumDense
from tests._compilations import compilations
from tests._conformance import Case, check_layer
from tests._tolerances import assert_close

POLICIES = ["float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16"]
MODES = ["eager", "jit"]


def _normal(shape, seed, scale=1.0):
    return np.random.default_rng(seed).normal(scale=scale, size=shape).astype(np.float32)


def _run(layer, x, mode):
    if mode == "eager":
        return layer(x)
    values = [v.value for v in layer.trainable_variables]
    return jax.jit(lambda values, x: layer.stateless_call(values, [], x)[0])(values, x)


def _randomize(layer, seed=7):
    layer.set_weights([_normal(w.shape, seed + i) for i, w in enumerate(layer.weights)])


def einsum_reference(equation, x, weights):
    """np.einsum in float64, plus the bias broadcast from the right (Keras's bias layout)."""
    y = np.einsum(equation, np.asarray(x, np.float64), np.asarray(weights[0], np.float64))
    return y + np.asarray(weights[1], np.float64) if len(weights) > 1 else y


def _reference(equation):
    return lambda x, weights: einsum_reference(equation, x, weights)


# --- the forms MultiHeadAttention builds on -----------------------------------------------------------


def _heads(**kw):
    return EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de", bias_initializer="ones", **kw)


# Every policy gets the cheap sweep; the full conformance run (several compilations each)
# covers the two projections of MultiHeadAttention under a mixed and a pure 16-bit policy.
SWEEP = [
    (Case("heads", _heads, lambda: (_normal((2, 5, 4), 0),), _reference("abc,cde->abde")), "mixed_bfloat16"),
    (
        Case(
            "attention_output",
            lambda **kw: EinsumDense("abcd,cde->abe", output_shape=(None, 6), bias_axes="e", **kw),
            lambda: (_normal((2, 5, 2, 3), 1),),
            _reference("abcd,cde->abe"),
        ),
        "float16",
    ),
]


@pytest.mark.parametrize(("case", "policy"), SWEEP, ids=[f"{case.name}-{policy}" for case, policy in SWEEP])
def test_conformance(case, policy):
    check_layer(case, policy)


@pytest.mark.parametrize("policy", POLICIES)
def test_policy_sweep(policy):
    p = dp.get(policy)
    layer = _heads(dtype=policy)
    x = _normal((2, 5, 4), 0)
    y = layer(x)
    assert layer.kernel.dtype == layer.bias.dtype == p.variable_dtype
    assert layer.kernel.autocast and layer.bias.autocast  # autocast as in Keras; the forward reads the master
    assert y.dtype == np.dtype(p.compute_dtype) and y.shape == (2, 5, 2, 3)
    seen = np.asarray(jax.numpy.asarray(x).astype(p.compute_dtype), np.float64)
    assert_close(y, einsum_reference("abc,cde->abde", seen, layer.get_weights()), p.compute_dtype)


def test_attention_projection_shapes():
    # (batch, time, features) -> (batch, time, heads, head_dim) -> (batch, time, model_dim)
    heads = EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de")
    assert heads(np.ones((2, 5, 4), np.float32)).shape == (2, 5, 2, 3)
    assert heads.kernel.shape == (4, 2, 3) and heads.bias.shape == (2, 3)
    assert heads.full_output_shape == (2, 5, 2, 3)
    # A later call with another batch and sequence length is fine; only the features are fixed.
    assert heads(np.ones((3, 7, 4), np.float32)).shape == (3, 7, 2, 3)

    output = EinsumDense("abcd,cde->abe", output_shape=(None, 6), bias_axes="e")
    assert output(np.ones((2, 5, 2, 3), np.float32)).shape == (2, 5, 6)
    assert output.kernel.shape == (2, 3, 6) and output.bias.shape == (6,)
    assert output.input_spec.ndim == 4 and output.input_spec.axes == {2: 2, 3: 3}


def test_attention_projection_built_directly_with_initializer_objects():
    # As MultiHeadAttention does: objects for the initializers, build() called with a shape.
    layer = EinsumDense(
        "abc,cde->abde",
        output_shape=(None, 2, 3),
        bias_axes="de",
        kernel_initializer=initializers.GlorotUniform(seed=1),
        bias_initializer=initializers.Zeros(),
        kernel_regularizer=regularizers.L2(0.01),
        name="query",
    )
    layer.build((None, 5, 4))
    assert layer.built and layer.kernel.shape == (4, 2, 3)
    config = json.loads(json.dumps(layer.get_config()))
    assert config["kernel_initializer"] == {"class_name": "GlorotUniform", "config": {"seed": 1}}
    assert config["output_shape"] == [None, 2, 3]
    assert EinsumDense.from_config(config).get_config() == config


# --- other equation forms, against np.einsum ----------------------------------------------------------

FORMS = [
    ("ab,bc->ac", 4, "c", (3, 5)),
    ("abc,cd->abd", (3, 4), "b", (2, 3, 5)),  # bias over a non-trailing axis: shape (3, 1)
    ("...b,bc->...c", 4, "c", (2, 3, 5)),
    ("...b,bc->...c", 4, None, (5,)),  # the ellipsis may be empty
    ("ab...,bc->ac...", 4, "c", (2, 5, 3, 2)),  # bias shape (4, 1, 1)
    ("abc,bcd->ad", (4,), "d", (2, 3, 5)),  # two contracted axes
]


@pytest.mark.parametrize(("equation", "output_shape", "bias_axes", "shape"), FORMS, ids=[f[0] for f in FORMS])
def test_equation_forms_match_numpy_eagerly_and_jitted(equation, output_shape, bias_axes, shape):
    layer = EinsumDense(equation, output_shape=output_shape, bias_axes=bias_axes)
    x = _normal(shape, 3)
    layer(x)
    _randomize(layer)
    expected = einsum_reference(equation, x, [np.asarray(w) for w in layer.get_weights()])
    for mode in MODES:
        y = _run(layer, x, mode)
        assert y.shape == expected.shape == layer.full_output_shape
        assert_close(y, expected, "float32")


def test_bias_layout_follows_keras():
    shapes = {}
    for equation, output_shape, bias_axes, shape in FORMS:
        if bias_axes is not None:
            layer = EinsumDense(equation, output_shape=output_shape, bias_axes=bias_axes)
            layer.build(shape)
            shapes[(equation, bias_axes)] = layer.bias.shape
    assert shapes[("abc,cd->abd", "b")] == (3, 1)
    assert shapes[("ab...,bc->ac...", "c")] == (4, 1, 1)
    assert shapes[("ab,bc->ac", "c")] == (4,)


def test_compute_output_shape_with_unknown_batch_and_sequence():
    layer = EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de")
    assert layer.compute_output_shape((None, None, 4)) == (None, None, 2, 3)


# --- one rounding -------------------------------------------------------------------------------------


def test_same_as_dense_bit_for_bit_in_mixed_bfloat16():
    x = _normal((8, 32), 4)
    einsum = EinsumDense("ab,bc->ac", output_shape=16, bias_axes="c", dtype="mixed_bfloat16")
    dense = Dense(16, dtype="mixed_bfloat16")
    einsum(x)
    dense(x)
    _randomize(einsum)
    dense.set_weights(einsum.get_weights())
    for mode in MODES:
        np.testing.assert_array_equal(
            np.asarray(_run(einsum, x, mode), np.float32), np.asarray(_run(dense, x, mode), np.float32)
        )


EXACT_POLICIES = [*POLICIES, "p=f32,c=bf16,o=f32"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("policy", EXACT_POLICIES)
def test_matches_the_explicit_formula_bit_for_bit(policy, mode):
    # Cast input and kernel to the compute dtype, einsum with a float32 accumulator, add the
    # float32 bias, round once, then the output dtype: one jnp op at a time.
    p = dp.get(policy)
    layer = EinsumDense("abc,cde->abde", output_shape=(None, 3, 8), bias_axes="de", dtype=policy)
    x = _normal((2, 5, 24), 30)
    layer(x)
    _randomize(layer, 31)
    y = _run(layer, x, mode)
    compute = p.compute_dtype
    kernel, bias = layer.kernel._read_storage(), layer.bias._read_storage()
    product = jnp.einsum(
        "abc,cde->abde", jnp.asarray(x).astype(compute), kernel.astype(compute), preferred_element_type=jnp.float32
    )
    expected = (product + bias.astype(jnp.float32)).astype(compute)
    if p.output_dtype is not None:
        expected = expected.astype(p.output_dtype)
    assert y.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(expected, np.float32))


def test_an_eager_call_runs_one_compiled_computation():
    # The casts happen inside the jitted forward: a new batch size compiles that and nothing else.
    layer = EinsumDense("abc,cd->abd", output_shape=(None, 9), bias_axes="d", dtype="mixed_bfloat16")
    layer(np.ones((1, 2, 11), np.float32))
    x = jax.block_until_ready(jnp.ones((31, 2, 11), jnp.float32))
    with compilations() as compiled:
        y = layer(x)
    assert y.dtype == jnp.bfloat16
    assert len(compiled) == 1


def test_a_subclass_with_its_own_call_still_gets_cast_inputs():
    class Passthrough(EinsumDense):
        def call(self, inputs):
            return inputs

    y = Passthrough("ab,bc->ac", output_shape=3, dtype="mixed_float16")(np.ones((2, 3), np.float32))
    assert y.dtype == jnp.float16


def test_no_bias_and_activation():
    layer = EinsumDense("ab,bc->ac", output_shape=3, activation="relu", kernel_initializer="ones")
    y = layer(np.array([[1.0, -3.0]], np.float32))
    assert layer.bias is None and len(layer.weights) == 1
    np.testing.assert_array_equal(y, [[0.0, 0.0, 0.0]])


# --- errors -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "fragment"),
    [
        ((3, 4), {}, TypeError, r"equation must be a string.*received 3"),
        (("ab,bc", 4), {}, ValueError, r"Invalid EinsumDense equation 'ab,bc'.*two operands"),
        (("ab,bc,cd->ad", 4), {}, ValueError, r"Invalid EinsumDense equation"),
        (("ab,b...->a...", 4), {}, ValueError, r"kernel 'b\.\.\.' must be letters only"),
        (("...ab,bc->ac", 4), {}, ValueError, r"'\.\.\.' at the same end"),
        (("a...b,bc->ac", 4), {}, ValueError, r"input 'a\.\.\.b' must be letters with at most one"),
        (("ab1,bc->ac", 4), {}, ValueError, r"input 'ab1'"),
        (("aab,bc->ac", 4), {}, ValueError, r"input repeats the letter\(s\) \['a'\]"),
        (("ab,bc->acx", (4, 2)), {}, ValueError, r"output letter 'x' appears in neither"),
        (("ab,bcz->ac", 4), {}, ValueError, r"kernel letter 'z' appears in neither.*size is unknown"),
        (("ab,bc->ca", 4), {}, ValueError, r"first input letter is the batch axis"),
        (("ab,bc->ac", (4, 2)), {}, ValueError, r"has 2 entries, but the output letters 'c'.*need 1"),
        (("...b,bc->...c", ()), {}, ValueError, r"has 0 entries.*'c' need 1"),
        (("ab,bc->ac", 0), {}, ValueError, r"positive int or a tuple.*received 0"),
        (("ab,bc->ac", "4"), {}, TypeError, r"received '4' of type str"),
        (("ab,bc->ac", (2.5,)), {}, ValueError, r"received \(2.5,\)"),
        (("ab,bc->ac", (None,)), {}, ValueError, r"None for output letter 'c', which comes from the kernel"),
        (("ab,bc->ac", 4), {"bias_axes": "x"}, ValueError, r"letter 'x' is not in the output 'ac'"),
        (("ab,bc->ac", 4), {"bias_axes": "cc"}, ValueError, r"repeats the letter 'c'"),
        (("ab,bc->ac", 4), {"bias_axes": ""}, ValueError, r"non-empty string.*received ''"),
        (("ab,bc->ac", 4), {"bias_axes": 1}, TypeError, r"string of output letters, received 1 of type int"),
        (("ab,bc->ac", 4), {"activation": "rleu"}, ValueError, r"Did you mean 'relu'"),
        (("ab,bc->ac", 4), {"bias_initializer": "zero"}, ValueError, r"Unknown initializer 'zero'"),
    ],
)
def test_constructor_errors(args, kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        EinsumDense(*args, **kwargs)


@pytest.mark.parametrize(
    ("equation", "output_shape", "bias_axes", "input_shape", "fragment"),
    [
        ("abc,cd->abd", (None, 4), "d", (2, 5), r"expects inputs of rank 3, received input_shape=\(2, 5\)"),
        ("...bc,cd->...d", 4, "d", (5,), r"rank >= 2"),
        ("abc,cd->abd", (7, 4), "d", (2, 3, 5), r"output_shape gives 7 for letter 'b', but the input has 3"),
        ("abc,cd->abd", (None, 4), "d", (2, 3, None), r"size of input axis 2 \(letter 'c'\)"),
        ("abc,cd->abd", (None, 4), "bd", (2, None, 5), r"bias_axes 'bd' include an axis whose size is unknown"),
    ],
)
def test_build_errors_name_the_layer_and_shapes(equation, output_shape, bias_axes, input_shape, fragment):
    layer = EinsumDense(equation, output_shape=output_shape, bias_axes=bias_axes, name="proj")
    with pytest.raises(ValueError, match=fragment):
        layer.build(input_shape)
    assert not layer.built and layer.weights == []


def test_input_spec_after_build_rejects_a_different_feature_size_or_rank():
    layer = EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de", name="query")
    layer(np.ones((2, 5, 4), np.float32))
    with pytest.raises(ValueError, match=r"layer 'query'.*axis 2 .* value 4.*shape \(2, 5, 6\)"):
        layer(np.ones((2, 5, 6), np.float32))
    with pytest.raises(ValueError, match=r"layer 'query'.*expected ndim=3, found ndim=2"):
        layer(np.ones((2, 4), np.float32))
