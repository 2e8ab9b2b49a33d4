"""Shared test setup: strict dtype promotion, a clean default policy for every test."""

import jax
import pytest

import dtypepolicy as dp


@pytest.fixture(autouse=True)
def strict_promotion():
    """Mixing float widths without an explicit cast fails a test instead of upcasting."""
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture(autouse=True)
def reset_default_policy():
    """Every test starts and ends with the float32 default."""
    dp.set_dtype_policy(None)
    yield
    dp.set_dtype_policy(None)
