"""Every built-in layer passes the shared conformance checks under every policy.

One row per layer; a new built-in layer without a row fails `test_every_builtin_layer_has_a_row`.
Float64 references live in each layer's own test module; this table checks the contract.
"""

import numpy as np
import pytest

import layers
from tests._conformance import Case, check_layer

POLICIES = ["float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16"]


def normal(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


class Residual(layers.Layer):
    """A custom composite used to run Sequential with weights on both sides."""

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.inner = layers.Dense(units)

    def call(self, x):
        return x + self.inner(x)


CASES = [
    Case("Dense", lambda **kw: layers.Dense(4, activation="relu", **kw), lambda: (normal((3, 5)),)),
    Case(
        "EinsumDense",
        lambda **kw: layers.EinsumDense("abc,cde->abde", (None, 2, 3), bias_axes="de", **kw),
        lambda: (normal((2, 3, 4)),),
    ),
    Case(
        "Embedding",
        lambda **kw: layers.Embedding(10, 4, **kw),
        lambda: (np.array([[1, 2, 0], [3, 9, 4]], np.int32),),
    ),
    Case("LayerNormalization", lambda **kw: layers.LayerNormalization(**kw), lambda: (normal((3, 6)) * 5 + 2,)),
    Case("RMSNormalization", lambda **kw: layers.RMSNormalization(**kw), lambda: (normal((3, 6)) * 5,)),
    Case(
        "BatchNormalization",
        lambda **kw: layers.BatchNormalization(**kw),
        lambda: (normal((8, 3)) * 3 + 1,),
        call_kwargs={"training": True},
    ),
    Case(
        "Dropout",
        lambda **kw: layers.Dropout(0.3, seed=1, **kw),
        lambda: (normal((4, 6)),),
        call_kwargs={"training": True},
    ),
    Case("Activation", lambda **kw: layers.Activation("gelu", **kw), lambda: (normal((3, 4)),)),
    Case("Softmax", lambda **kw: layers.Softmax(**kw), lambda: (normal((3, 7)) * 3,), grads_nonzero=False),
    Case(
        "MultiHeadAttention",
        lambda **kw: layers.MultiHeadAttention(num_heads=2, key_dim=3, **kw),
        lambda: (normal((2, 4, 6)), normal((2, 5, 6), 1)),
    ),
    Case(
        "Sequential",
        lambda **kw: layers.Sequential([layers.Dense(4), Residual(4), layers.LayerNormalization()], **kw),
        lambda: (normal((3, 5)),),
    ),
    Case(
        "TransformerBlock",
        lambda **kw: layers.TransformerBlock(num_heads=2, key_dim=4, mlp_dim=8, **kw),
        lambda: (normal((2, 5, 8)),),
    ),
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_conformance(case, policy):
    check_layer(case, policy)


def test_every_builtin_layer_has_a_row():
    builtin = {
        name
        for name in layers.__all__
        if isinstance(getattr(layers, name), type) and issubclass(getattr(layers, name), layers.Layer)
    }
    assert builtin - {"Layer"} == {case.name for case in CASES}
