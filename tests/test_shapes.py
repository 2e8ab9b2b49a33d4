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
