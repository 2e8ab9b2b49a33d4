"""Input conversion and argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
from layers._base._inputs import (
    cast_floating,
    check_positional,
    convert_call_arguments,
    convert_inputs,
    convert_number_lists,
    shapes_of,
)


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


def test_every_conversion_keeps_the_mask():
    from layers._base._masking import attach_mask, get_mask

    mask = jnp.array([True, False])
    host, device = np.ones(2, np.float64), jnp.ones(2)
    attach_mask(host, mask)
    attach_mask(device, mask)
    out = convert_inputs({"a": host, "b": [device]}, "bfloat16")
    assert get_mask(out["a"]) is mask and get_mask(out["b"][0]) is mask
    assert get_mask(cast_floating([device], "float16")[0]) is mask
    (fast,), _ = convert_call_arguments((device,), {}, "float16")
    assert fast.dtype == jnp.float16 and get_mask(fast) is mask


def test_convert_number_lists():
    matrix, array, mixed, scalar = convert_number_lists(
        ([[1.0, 2.0], [3.0, 4.0]], np.ones(2), [jnp.ones(2), 1.0], 3), "layer"
    )
    assert isinstance(matrix, np.ndarray) and matrix.shape == (2, 2) and matrix.dtype == np.float64
    assert isinstance(array, np.ndarray) and isinstance(mixed, list) and scalar == 3
    (ints,) = convert_number_lists(((1, 2, 3),), "layer")
    assert ints.tolist() == [1, 2, 3]
    (empty,) = convert_number_lists(([],), "layer")
    assert empty == []  # no leaves: nothing says it is numbers
    with pytest.raises(ValueError, match=r"Layer 'layer': positional argument 1 .*ragged.*\[\[1\], \[2, 3\]\]"):
        convert_number_lists((np.ones(1), [[1], [2, 3]]), "layer")
