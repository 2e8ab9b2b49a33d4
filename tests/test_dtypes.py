"""Dtype names: canonical strings from every dtype-like, errors naming the value."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from dtypepolicy._dtypes import check_representable, is_float, standardize_dtype


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("bfloat16", "bfloat16"),
        ("BF16", "bfloat16"),
        (" f16 ", "float16"),
        ("f64", "float64"),
        (jnp.bfloat16, "bfloat16"),
        (np.float16, "float16"),
        (np.dtype("int8"), "int8"),
        (ml_dtypes.float8_e4m3fn, "float8_e4m3fn"),
        (jnp.dtype("float8_e5m2"), "float8_e5m2"),
        (float, "float32"),
        (int, "int32"),
        (bool, "bool"),
        (np.bool_, "bool"),
    ],
    ids=repr,
)
def test_standardize(value, name):
    assert standardize_dtype(value) == name


@pytest.mark.parametrize("bad", ["float", "f4", "object", "floa32", ""], ids=repr)
def test_unknown_names(bad):
    with pytest.raises(ValueError, match=f"Unknown dtype {bad!r}"):
        standardize_dtype(bad)


@pytest.mark.parametrize(
    "bad",
    [None, 3, 1.5, True, object(), np.dtype("U4"), [1]],
    ids=lambda value: "object" if type(value) is object else repr(value),
)
def test_non_dtypes(bad):
    with pytest.raises(TypeError, match="received"):
        standardize_dtype(bad)


@pytest.mark.parametrize(
    ("name", "floating"), [("bfloat16", True), ("float8_e4m3fn", True), ("int8", False), ("bool", False)]
)
def test_is_float(name, floating):
    assert is_float(name) is floating


def test_check_representable_needs_x64_for_64_bit():
    if jax.config.jax_enable_x64:
        pytest.skip("x64 is on")
    with pytest.raises(ValueError, match=r"'float64'.*jax_enable_x64"):
        check_representable("float64", "Variable 'w'")
    check_representable("complex64", "Variable 'w'")
    check_representable("bfloat16", "Variable 'w'")
