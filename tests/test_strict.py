"""Strict mode: silent upcasts in layer outputs warn or raise."""

import jax.numpy as jnp
import pytest

import dtypepolicy as dp
from dtypepolicy._strict import _mode_from_env
from layers import Layer


class Upcasting(Layer):
    def call(self, x):
        return x.astype(jnp.float32)


class Composite(Layer):
    def __init__(self):
        super().__init__(dtype="mixed_bfloat16")
        self.inner = Layer(dtype="float32")

    def call(self, x):
        return x.astype(jnp.float32)


@pytest.fixture(autouse=True)
def strict_off_after():
    yield
    dp.set_strict(False)


def test_off_by_default_and_settable():
    assert dp.strict_mode() == "off"
    Upcasting(dtype="mixed_bfloat16")(jnp.ones(2))
    dp.set_strict(True)
    assert dp.strict_mode() == "warn"
    with pytest.raises(ValueError, match="received 'loud'"):
        dp.set_strict("loud")
    assert dp.strict_mode() == "warn"


def test_warns_for_a_leaf_layer_that_upcasts():
    dp.set_strict("warn")
    with pytest.warns(dp.DtypeUpcastWarning, match=r"returned float32 output where its policy allows bfloat16"):
        Upcasting(dtype="mixed_bfloat16")(jnp.ones(2))


def test_raises_when_asked():
    dp.set_strict("raise")
    layer = Upcasting(dtype="mixed_float16", name="sneaky")
    with pytest.raises(dp.DtypeUpcastError, match="'sneaky' returned float32"):
        layer(jnp.ones(2))


def test_no_complaint_when_the_policy_allows_it():
    dp.set_strict("raise")
    Upcasting(dtype="float32")(jnp.ones(2))
    Upcasting(dtype="p=f32,c=bf16,o=f32")(jnp.ones(2))  # output= makes float32 the allowed dtype
    Composite()(jnp.ones(2))  # layers with sublayers are not checked


@pytest.mark.parametrize(("value", "mode"), [("", "off"), ("1", "warn"), ("RAISE", "raise"), ("false", "off")])
def test_environment_variable(monkeypatch, value, mode):
    monkeypatch.setenv("DTYPEPOLICY_STRICT", value)
    assert _mode_from_env() == mode


def test_bad_environment_value(monkeypatch):
    monkeypatch.setenv("DTYPEPOLICY_STRICT", "sometimes")
    with pytest.raises(ValueError, match="received 'sometimes'"):
        _mode_from_env()
