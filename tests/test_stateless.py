"""StatelessScope: reads from the mapping, writes recorded, nesting, commit, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dtypepolicy as dp


def test_reads_come_from_the_mapping_and_writes_stay_in_the_scope():
    variable = dp.Variable(jnp.zeros(3), name="w")
    with dp.StatelessScope({variable: jnp.ones(3)}) as scope:
        np.testing.assert_array_equal(variable.numpy(), np.ones(3))
        variable.assign_add(jnp.ones(3))
        np.testing.assert_array_equal(variable.numpy(), np.full(3, 2.0))
    np.testing.assert_array_equal(variable.numpy(), np.zeros(3))
    np.testing.assert_array_equal(scope.get_current_value(variable), np.full(3, 2.0))
    assert scope.written == [variable]


def test_values_are_cast_to_the_storage_dtype_and_autocast_still_applies():
    variable = dp.Variable(jnp.zeros(2))
    with dp.StatelessScope([(variable, jnp.ones(2, jnp.bfloat16))]):
        assert variable._read_storage().dtype == jnp.float32
        with dp.autocast_scope("bfloat16"):
            assert variable.value.dtype == jnp.bfloat16


def test_variables_outside_the_mapping_read_their_own_value():
    given, other = dp.Variable(jnp.zeros(())), dp.Variable(jnp.full((), 5.0))
    with dp.StatelessScope({given: 1.0}) as scope:
        assert float(other.value) == 5.0
        other.assign(7.0)
    assert float(other.value) == 5.0 and float(scope.get_current_value(other)) == 7.0


def test_nested_scopes_read_through_and_commit_into_the_parent():
    variable = dp.Variable(jnp.zeros(()))
    with dp.StatelessScope({variable: 1.0}) as outer:
        with dp.StatelessScope() as inner:
            assert float(variable.value) == 1.0
            variable.assign_add(2.0)
        assert float(variable.value) == 1.0
        inner.commit()
        assert float(variable.value) == 3.0
    assert float(variable.value) == 0.0 and float(outer.get_current_value(variable)) == 3.0
    outer.commit()
    assert float(variable.value) == 3.0


def test_makes_a_stateful_update_pure_under_jit_and_grad():
    variable = dp.Variable(jnp.array([1.0, 2.0]))

    def pure(value, x):
        with dp.StatelessScope({variable: value}) as scope:
            variable.assign(variable.value * x)
        return jnp.sum(scope.get_current_value(variable))

    assert float(jax.jit(pure)(jnp.array([3.0, 4.0]), 2.0)) == 14.0
    np.testing.assert_array_equal(jax.grad(pure)(jnp.array([3.0, 4.0]), 2.0), [2.0, 2.0])
    np.testing.assert_array_equal(variable.numpy(), [1.0, 2.0])


def test_validation():
    variable = dp.Variable(jnp.zeros((2,)), name="kernel")
    with pytest.raises(ValueError, match=r"'kernel' has shape \(3,\), expected \(2,\)"):
        dp.StatelessScope({variable: jnp.zeros(3)})
    with pytest.raises(TypeError, match="keys must be Variables, received 'kernel'"):
        dp.StatelessScope({"kernel": jnp.zeros(2)})
