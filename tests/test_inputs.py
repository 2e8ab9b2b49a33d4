"""Input conversion and argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
from layers._inputs import cast_floating, check_positional, convert_inputs, shapes_of


def test_convert_inputs_casts_floats_only():
    tree = {"a": np.ones(2), "b": [jnp.ones(2, jnp.int8), 3.0], "c": dp.Variable(jnp.ones(2))}
    out = convert_inputs(tree, "bfloat16")
    assert out["a"].dtype == jnp.bfloat16 and out["b"][0].dtype == jnp.int8 and out["b"][1] == 3.0
    assert out["c"].dtype == jnp.bfloat16 and isinstance(out["c"], jax.Array)
    untouched = convert_inputs(tree, None)
    assert isinstance(untouched["a"], jax.Array) and untouched["a"].dtype == jnp.float32


def test_cast_floating():
    out = cast_floating((jnp.ones(2, jnp.bfloat16), jnp.arange(2)), "float32")
    assert out[0].dtype == jnp.float32 and out[1].dtype == jnp.int32


def test_check_positional():
    check_positional((jnp.ones(2), [np.ones(1), None], 3, 2.5), "layer")
    for bad in ["x", True, object(), print]:
        with pytest.raises(TypeError, match="may be passed positionally to layer 'layer'"):
            check_positional((jnp.ones(2), bad), "layer")


def test_shapes_of():
    assert shapes_of([jnp.ones((2, 3)), {"k": np.ones(4)}, 7]) == [(2, 3), {"k": (4,)}, 7]
    assert shapes_of(jax.ShapeDtypeStruct((1, 2), jnp.float32)) == (1, 2)
