"""compute_output_shape and compute_output_signature."""

import jax
import jax.numpy as jnp
import pytest

from layers import Layer
from tests._layers_for_tests import Linear


class Reshaper(Layer):
    def call(self, x):
        return {"flat": x.reshape(x.shape[0], -1), "sum": jnp.sum(x, axis=-1).astype(jnp.int32)}


def test_output_shape_marks_dimensions_that_follow_unknown_inputs():
    layer = Linear(5)
    assert layer.compute_output_shape((None, 3)) == (None, 5)
    assert layer.built and layer.kernel.shape == (3, 5)
    assert Reshaper().compute_output_shape((None, 2, 3)) == {"flat": (None, 6), "sum": (None, 2)}
    assert Reshaper().compute_output_shape([4, 2, 3]) == {"flat": (4, 6), "sum": (4, 2)}


def test_output_signature_follows_the_policy_and_changes_nothing():
    layer = Linear(5, dtype="mixed_bfloat16")
    signature = layer.compute_output_signature(jax.ShapeDtypeStruct((7, 3), jnp.float32))
    assert signature == jax.ShapeDtypeStruct((7, 5), jnp.bfloat16)
    head = Linear(2, dtype="p=f32,c=bf16,o=f32")
    assert head.compute_output_signature(jax.ShapeDtypeStruct((1, 3), jnp.float32)).dtype == jnp.float32
    assert layer.losses == []


def test_errors():
    with pytest.raises(TypeError, match=r"expects jax.ShapeDtypeStruct inputs.*received"):
        Linear(2).compute_output_signature((7, 3))
    with pytest.raises(ValueError, match=r"Expected a shape tuple.*received 'x'"):
        Linear(2).compute_output_shape("x")


class DeclaresItsShape(Layer):
    """A layer whose call cannot be traced, but which says its output shape."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, x):
        self.calls += 1
        raise AssertionError("call must not be traced when compute_output_shape is overridden")

    def compute_output_shape(self, input_shape):
        return {"doubled": (*input_shape[:-1], 2 * input_shape[-1]), "count": (input_shape[0],)}


@pytest.mark.parametrize(
    ("policy", "dtype"),
    [("float32", jnp.float32), ("mixed_bfloat16", jnp.bfloat16), ("p=f32,c=bf16,o=f32", jnp.float32)],
)
def test_an_overridden_compute_output_shape_answers_the_signature_without_tracing(policy, dtype):
    layer = DeclaresItsShape(dtype=policy)
    signature = layer.compute_output_signature(jax.ShapeDtypeStruct((4, 3), jnp.float32))
    assert signature == {"doubled": jax.ShapeDtypeStruct((4, 6), dtype), "count": jax.ShapeDtypeStruct((4,), dtype)}
    assert layer.calls == 0 and not layer.built


class DefersToTracing(Linear):
    def compute_output_shape(self, input_shape):
        return super().compute_output_shape(input_shape)


def test_an_override_calling_super_traces_instead_of_recursing():
    layer = DefersToTracing(5)
    assert layer.compute_output_shape((None, 3)) == (None, 5)
    assert layer.compute_output_signature(jax.ShapeDtypeStruct((2, 3), jnp.float32)) == jax.ShapeDtypeStruct(
        (2, 5), jnp.float32
    )


class PartlyUnknown(Linear):
    def compute_output_shape(self, input_shape):
        return (None, self.units)


def test_an_override_with_unknown_dimensions_falls_back_to_the_trace():
    signature = PartlyUnknown(5).compute_output_signature(jax.ShapeDtypeStruct((2, 3), jnp.float32))
    assert signature == jax.ShapeDtypeStruct((2, 5), jnp.float32)


def test_several_inputs_and_plain_keyword_arguments():
    from layers import MultiHeadAttention

    query, value = jax.ShapeDtypeStruct((2, 3, 8), jnp.float32), jax.ShapeDtypeStruct((2, 5, 6), jnp.float32)
    layer = MultiHeadAttention(num_heads=2, key_dim=4, dtype="mixed_bfloat16")
    assert layer.compute_output_signature(query, value) == jax.ShapeDtypeStruct((2, 3, 8), jnp.bfloat16)
    assert not layer.built
    # return_attention_scores changes the outputs' structure, which a shape function cannot see: traced.
    output, scores = layer.compute_output_signature(query, value=value, return_attention_scores=True)
    assert output == jax.ShapeDtypeStruct((2, 3, 8), jnp.bfloat16)
    assert scores == jax.ShapeDtypeStruct((2, 2, 3, 5), jnp.bfloat16)
    with pytest.raises(TypeError, match=r"keyword argument value= must be jax.ShapeDtypeStructs.*received \[1, 2\]"):
        layer.compute_output_signature(query, value=[1, 2])


def test_compute_output_shape_parameters_follow_the_build_rule_never_position():
    class Pair(Layer):
        def call(self, x, y):
            return x + y

        def compute_output_shape(self, foo_shape, y_shape):  # 'foo' is no call argument
            return y_shape

    struct = jax.ShapeDtypeStruct((2, 3), jnp.float32)
    expected = r"'pair' \(Pair\): compute_output_shape\(\) parameters \('foo_shape', 'y_shape'\).*'foo_shape'"
    with pytest.raises(ValueError, match=expected):
        Pair(name="pair").compute_output_signature(struct, struct)

    class Named(Layer):
        def call(self, x, y=None):
            return x

        def compute_output_shape(self, y_shape, x_shape):  # by name, not by position
            return x_shape

    small, large = jax.ShapeDtypeStruct((2, 3), jnp.float32), jax.ShapeDtypeStruct((4, 5), jnp.float32)
    assert Named().compute_output_signature(small, y=large).shape == (2, 3)
