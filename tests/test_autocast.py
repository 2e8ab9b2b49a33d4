"""autocast_scope: which reads are cast, nesting, restoring, errors."""

import jax
import jax.numpy as jnp
import pytest

import dtypepolicy as dp
from dtypepolicy._autocast import current_autocast_dtype, enter_autocast, leave_autocast


def test_no_scope_means_no_casting():
    assert current_autocast_dtype() is None
    assert dp.Variable(jnp.ones(2)).value.dtype == jnp.float32


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", jnp.bfloat16, "f16"], ids=str)
def test_scope_sets_and_restores(dtype):
    with dp.autocast_scope(dtype) as name:
        assert current_autocast_dtype() == name
        with dp.autocast_scope(None):
            assert current_autocast_dtype() is None
        assert current_autocast_dtype() == name
    assert current_autocast_dtype() is None


def test_scope_restores_after_an_exception():
    with pytest.raises(KeyError), dp.autocast_scope("bfloat16"):
        raise KeyError("x")
    assert current_autocast_dtype() is None


def test_scope_applies_inside_jit_traces():
    variable = dp.Variable(jnp.full((3,), 1.0009766))

    @jax.jit
    def read(x):
        with dp.autocast_scope("bfloat16"):
            return x * variable.value

    out = read(jnp.ones((3,), jnp.bfloat16))
    assert out.dtype == jnp.bfloat16 and float(out[0]) == 1.0


@pytest.mark.parametrize(
    ("bad", "error"), [("int8", ValueError), ("bool", ValueError), ("nope", ValueError), (3, TypeError)]
)
def test_non_float_dtypes_are_rejected(bad, error):
    with pytest.raises(error, match=repr(bad) if not isinstance(bad, int) else "received 3"):
        dp.autocast_scope(bad)
    assert current_autocast_dtype() is None


def test_enter_autocast_sets_only_a_change_and_leave_restores_it():
    assert enter_autocast(None) is None  # already None: nothing to undo
    token = enter_autocast("bfloat16")
    assert current_autocast_dtype() == "bfloat16"
    assert enter_autocast("bfloat16") is None
    inner = enter_autocast("float16")
    assert current_autocast_dtype() == "float16"
    leave_autocast(inner)
    assert current_autocast_dtype() == "bfloat16"
    leave_autocast(token)
    leave_autocast(None)
    assert current_autocast_dtype() is None
