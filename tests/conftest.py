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


@pytest.fixture
def strict_raise():
    """Turns strict mode to "raise" for one test: a layer returning a wider dtype than its policy fails."""
    previous = dp.strict_mode()
    dp.set_strict("raise")
    yield
    dp.set_strict(previous)
