"""`is_jax_array` agrees with `isinstance(value, jax.Array)` on every kind of value, traced or not."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp
from layers._base import _arrays
from layers._base._arrays import is_jax_array

CASES = [
    ("array", lambda: jnp.ones(2)),
    ("bf16 array", lambda: jnp.ones((2, 3), jnp.bfloat16)),
    ("typed key", lambda: jax.random.key(0)),
    ("numpy", lambda: np.ones(2)),
    ("list", lambda: [1.0, 2.0]),
    ("float", lambda: 1.0),
    ("None", lambda: None),
    ("Variable", lambda: dp.Variable(jnp.ones(2))),
]


@pytest.mark.parametrize(("name", "make"), CASES, ids=[name for name, _ in CASES])
def test_agrees_with_isinstance(name, make):
    value = make()
    assert is_jax_array(value) == isinstance(value, jax.Array)
    assert is_jax_array(value) == isinstance(value, jax.Array)  # again, with the concrete class remembered


def test_tracers_are_arrays_and_are_not_remembered_as_the_concrete_class(monkeypatch):
    monkeypatch.setattr(_arrays, "_concrete", [])
    seen = []
    jax.jit(lambda x: seen.append(is_jax_array(x)) or x)(jnp.ones(2))
    assert seen == [True] and _arrays._concrete == []
    assert is_jax_array(jnp.ones(2)) and _arrays._concrete == [type(jnp.ones(2))]
    assert not is_jax_array(np.ones(2))
