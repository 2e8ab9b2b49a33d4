"""The shared argument checks and weight-argument plumbing of the built-in layers."""

import doctest
import json
import math

import numpy as np
import pytest

import layers
from layers import constraints, initializers, regularizers
from layers._builtin import _arguments
from layers._builtin._arguments import (
    check_bool,
    check_int,
    check_positive_int,
    check_real,
    set_weight_arguments,
    weight_arguments_config,
)

# --- checks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -3, 7, np.int32(-1), np.int64(2**40)], ids=repr)
def test_check_int_accepts_integers_as_plain_ints(value):
    result = check_int(value, "Owner: axis")
    assert result == value and type(result) is int


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (1.0, r"received 1.0 of type float"),
        (True, r"received True of type bool"),
        (np.True_, r"received np.True_ of type bool"),
        ("1", r"received '1' of type str"),
        ([1], r"received \[1\] of type list"),
        (None, r"received None of type NoneType"),
    ],
    ids=repr,
)
def test_check_int_rejects_non_integers(value, fragment):
    with pytest.raises(TypeError, match=r"^Owner: axis must be an int, " + fragment + r"\.$"):
        check_int(value, "Owner: axis")


@pytest.mark.parametrize("value", [1, 8, np.int8(3), np.uint64(5)], ids=repr)
def test_check_positive_int_accepts_integers_from_one(value):
    result = check_positive_int(value, "Dense units")
    assert result == value and type(result) is int


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0, "0"), (-2, "-2"), (np.int64(0), r"np.int64\(0\)"), (2.0, "2.0"), (True, "True"), ("8", "'8'"), (None, "None")],
    ids=repr,
)
def test_check_positive_int_rejects_everything_else_with_a_value_error(value, shown):
    with pytest.raises(ValueError, match=r"^Dense units must be a positive int, received " + shown + r"\.$"):
        check_positive_int(value, "Dense units")


@pytest.mark.parametrize("value", [0, 0.5, 1, np.float32(0.25), np.float16(1.0), np.int64(0)], ids=repr)
def test_check_real_accepts_numbers_in_range_as_plain_floats(value):
    result = check_real(value, "Owner: momentum", 0.0, 1.0)
    assert result == float(value) and type(result) is float


def test_check_real_without_high_accepts_any_finite_number_from_low():
    assert check_real(1e30, "Owner: epsilon", 0.0) == 1e30
    assert check_real(-5, "Owner: shift", -math.inf) == -5.0


@pytest.mark.parametrize(
    ("value", "shown"),
    [("x", "'x' of type str"), (True, "True of type bool"), (np.False_, "np.False_ of type bool"), (None, "None")],
    ids=repr,
)
def test_check_real_rejects_non_numbers_with_a_type_error(value, shown):
    with pytest.raises(TypeError, match=r"^Owner: momentum must be a real number, received " + shown):
        check_real(value, "Owner: momentum", 0.0, 1.0)


@pytest.mark.parametrize(
    ("value", "high", "message"),
    [
        (1.5, 1.0, r"must be in \[0.0, 1.0\], received 1.5\.$"),
        (-0.1, 1.0, r"must be in \[0.0, 1.0\], received -0.1\.$"),
        (math.nan, 1.0, r"must be in \[0.0, 1.0\], received nan\.$"),
        (-1, math.inf, r"must be finite and >= 0.0, received -1\.$"),
        (math.inf, math.inf, r"must be finite and >= 0.0, received inf\.$"),
        (np.float32(np.nan), math.inf, r"must be finite and >= 0.0, received np.float32\(nan\)\.$"),
    ],
    ids=repr,
)
def test_check_real_rejects_values_outside_the_range_with_a_value_error(value, high, message):
    with pytest.raises(ValueError, match=r"^Owner: epsilon " + message):
        check_real(value, "Owner: epsilon", 0.0, high)


@pytest.mark.parametrize("value", [True, False, np.True_, np.False_], ids=repr)
def test_check_bool_accepts_python_and_numpy_bools_as_plain_bools(value):
    result = check_bool(value, "Dense use_bias")
    assert result == value and type(result) is bool


@pytest.mark.parametrize(
    ("value", "shown"),
    [(1, "1 of type int"), (0, "0 of type int"), ("yes", "'yes' of type str"), (None, "None of type NoneType")],
    ids=repr,
)
def test_check_bool_rejects_everything_else_with_a_type_error(value, shown):
    with pytest.raises(TypeError, match=r"^Dense use_bias must be a bool, received " + shown + r"\.$"):
        check_bool(value, "Dense use_bias")


# --- weight arguments ------------------------------------------------------------------------------


class _Affine(layers.Layer):
    """A layer with two weight prefixes, built only from the shared plumbing."""

    def __init__(
        self,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        set_weight_arguments(self, "kernel", kernel_initializer, kernel_regularizer, kernel_constraint)
        set_weight_arguments(self, "bias", bias_initializer, bias_regularizer, bias_constraint)

    def get_config(self):
        return {**super().get_config(), **weight_arguments_config(self, "kernel", "bias")}


def test_set_weight_arguments_resolves_names_objects_and_dicts():
    layer = _Affine(
        kernel_initializer={"class_name": "Constant", "config": {"value": 2.0}},
        bias_initializer=initializers.get("ones"),
        kernel_regularizer="l2",
        kernel_constraint=constraints.MaxNorm(3.0),
    )
    assert isinstance(layer.kernel_initializer, initializers.Initializer)
    assert isinstance(layer.bias_initializer, initializers.Initializer)
    assert isinstance(layer.kernel_regularizer, regularizers.Regularizer)
    assert isinstance(layer.kernel_constraint, constraints.MaxNorm)
    assert layer.bias_regularizer is None and layer.bias_constraint is None


def test_set_weight_arguments_passes_on_the_errors_of_unknown_names():
    with pytest.raises(ValueError, match=r"Unknown initializer 'glorot'"):
        _Affine(kernel_initializer="glorot")
    with pytest.raises(ValueError, match=r"'l3'"):
        _Affine(bias_regularizer="l3")
    with pytest.raises(ValueError, match=r"'positive'"):
        _Affine(kernel_constraint="positive")


def test_weight_arguments_config_groups_keys_by_kind_in_prefix_order():
    config = weight_arguments_config(_Affine(), "kernel", "bias")
    assert list(config) == [
        "kernel_initializer",
        "bias_initializer",
        "kernel_regularizer",
        "bias_regularizer",
        "kernel_constraint",
        "bias_constraint",
    ]
    assert config["kernel_initializer"] == {"class_name": "GlorotUniform", "config": {"seed": None}}
    assert config["bias_regularizer"] is None and config["kernel_constraint"] is None


def test_weight_arguments_round_trip_through_json():
    layer = _Affine(
        kernel_initializer=initializers.RandomNormal(0.5, 0.1, seed=3),
        bias_initializer="ones",
        kernel_regularizer=regularizers.L1L2(l1=0.01, l2=0.02),
        bias_regularizer="l2",
        kernel_constraint=constraints.MaxNorm(2.0, axis=0),
        bias_constraint="non_neg",
    )
    config = json.loads(json.dumps(layer.get_config()))
    clone = _Affine.from_config(config)
    assert clone.get_config() == config
    for prefix in ("kernel", "bias"):
        for kind in ("initializer", "regularizer", "constraint"):
            original, restored = getattr(layer, f"{prefix}_{kind}"), getattr(clone, f"{prefix}_{kind}")
            assert type(restored) is type(original), (prefix, kind)
            assert restored.get_config() == original.get_config(), (prefix, kind)


def test_builtin_layers_keep_their_weight_argument_attributes_and_config():
    layer = layers.BatchNormalization(gamma_regularizer="l2", beta_constraint="non_neg")
    config = json.loads(json.dumps(layer.get_config()))
    assert config["gamma_regularizer"]["class_name"] == "L2"
    assert config["beta_constraint"] == {"class_name": "NonNeg", "config": {}}
    assert config["moving_variance_initializer"]["class_name"] == "Ones"
    assert not hasattr(layer, "moving_mean_regularizer")  # the statistics take an initializer only
    assert layers.BatchNormalization.from_config(config).get_config() == config


def test_docstring_examples_run():
    result = doctest.testmod(_arguments, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0 and result.failed == 0
