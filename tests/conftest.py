"""Shared test setup: strict dtype promotion, a clean default policy, reproducible random draws."""

import zlib

import jax
import pytest

import dtypepolicy as dp
from layers import initializers


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


def seed_for_test(nodeid: str) -> int:
    """The seed a test's unseeded draws start from: fixed by the test's id, different between tests."""
    return zlib.crc32(nodeid.encode())


@pytest.fixture(autouse=True)
def reproducible_random_draws(request):
    """Reseeds the generator of unseeded initializers and dropout before every test.

    It is seeded from `secrets` at import, so without this a test's values changed run to run and
    with the tests that ran before it; now they are the same in every run, and when run alone.
    """
    initializers.set_random_seed(seed_for_test(request.node.nodeid))
