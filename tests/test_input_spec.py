"""InputSpec: every constraint, its message, and config round trips."""

import jax.numpy as jnp
import pytest

from layers import InputSpec
from layers._base._input_spec import check_input_spec, checked_input_spec


@pytest.mark.parametrize(
    ("spec", "x", "fragment"),
    [
        (InputSpec(ndim=2), jnp.ones((1, 2, 3)), "expected ndim=2, found ndim=3"),
        (InputSpec(min_ndim=3), jnp.ones((1, 2)), "expected min_ndim=3, found ndim=2"),
        (InputSpec(max_ndim=1), jnp.ones((1, 2)), "expected max_ndim=1, found ndim=2"),
        (InputSpec(dtype="int32"), jnp.ones((1,)), "expected dtype=int32, found dtype=float32"),
        (
            InputSpec(axes={-1: 4}),
            jnp.ones((2, 3)),
            r"expected axis -1 .* value 4, but received input with shape \(2, 3\)",
        ),
        (InputSpec(axes={2: 4}), jnp.ones((2, 3)), r"expected axis 2.*axis 2 is nothing"),
        (InputSpec(shape=(None, 3)), jnp.ones((2, 4)), r"expected shape=\(None, 3\), found shape=\(2, 4\)"),
    ],
)
def test_violations_raise_naming_layer_and_shapes(spec, x, fragment):
    with pytest.raises(ValueError, match=f"Input 0 of layer 'dense' is incompatible with the layer: {fragment}"):
        check_input_spec(spec, x, "dense")


@pytest.mark.parametrize(
    ("spec", "x"),
    [
        (InputSpec(ndim=2, axes={-1: 3}), jnp.ones((5, 3))),
        (InputSpec(shape=(None, 3)), jnp.ones((7, 3))),
        (InputSpec(min_ndim=1, max_ndim=3, axes={0: None}), jnp.ones((2, 2))),
        (InputSpec(ndim=2, allow_last_axis_squeeze=True), jnp.ones((4, 2, 1))),
        (InputSpec(ndim=2, allow_last_axis_squeeze=True), jnp.ones((4,))),
        (None, jnp.ones(3)),
    ],
)
def test_compatible_inputs_pass(spec, x):
    check_input_spec(spec, x, "dense")


def test_lists_of_specs_match_lists_of_inputs():
    specs = [InputSpec(ndim=1), InputSpec(ndim=2, optional=True)]
    check_input_spec(specs, [jnp.ones(2), None], "merge")
    with pytest.raises(ValueError, match="'merge' expects 2 input\\(s\\), but it received 1 input arrays"):
        check_input_spec(specs, [jnp.ones(2)], "merge")
    with pytest.raises(ValueError, match="Input 1 of layer 'merge' is incompatible"):
        check_input_spec(specs, [jnp.ones(2), jnp.ones(2)], "merge")
    with pytest.raises(ValueError, match="Input 1 of layer 'merge' is None, but the input is not optional"):
        check_input_spec([InputSpec(), InputSpec()], [jnp.ones(2), None], "merge")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"ndim": -1}, "received -1"),
        ({"ndim": 2, "axes": {3: 1}}, "axis 3, beyond the rank 2"),
        ({"axes": [1]}, r"received \[1\]"),
        ({"shape": 3}, "received 3"),
        ({"dtype": "float33"}, "'float33'"),
    ],
)
def test_bad_specs(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        InputSpec(**kwargs)


def test_config_round_trip_and_repr():
    spec = InputSpec(dtype="bfloat16", shape=(None, 4), axes={-1: 4}, name="x")
    restored = InputSpec.from_config(spec.get_config())
    assert restored.get_config() == spec.get_config() and restored.ndim == 2
    assert repr(spec) == "InputSpec(dtype='bfloat16', shape=(None, 4), ndim=2, axes={-1: 4}, name='x')"


def test_a_nested_list_of_numbers_is_one_input():
    check_input_spec(InputSpec(min_ndim=2, axes={-1: 2}), [[1.0, 2.0]], "dense")
    with pytest.raises(ValueError, match=r"expected axis -1 .* value 3, but received input with shape \(1, 2\)"):
        check_input_spec(InputSpec(axes={-1: 3}), [[1.0, 2.0]], "dense")


def test_a_dict_of_specs_matches_a_dict_input_by_key():
    specs = {"tokens": InputSpec(ndim=2), "extra": InputSpec(ndim=1, optional=True)}
    check_input_spec(specs, {"extra": jnp.ones(3), "tokens": jnp.ones((1, 2))}, "model")
    check_input_spec(specs, {"tokens": jnp.ones((1, 2))}, "model")  # an optional key may be missing
    with pytest.raises(ValueError, match=r"Input 0 of layer 'model' is incompatible.*expected ndim=2, found ndim=1"):
        check_input_spec(specs, {"tokens": jnp.ones(2), "extra": jnp.ones(3)}, "model")
    with pytest.raises(ValueError, match="Input 0 of layer 'model' is None, but the input is not optional"):
        check_input_spec(specs, {"extra": jnp.ones(3)}, "model")
    check_input_spec(specs, [jnp.ones((1, 2)), jnp.ones(3)], "model")  # a list: in the dict's order


def test_checked_input_spec():
    spec = InputSpec()
    assert checked_input_spec(None, "x") is None and checked_input_spec(spec, "x") is spec
    assert checked_input_spec((spec, None), "x") == (spec, None)
    assert type(checked_input_spec([spec], "x")) is list and checked_input_spec({"a": spec}, "x") == {"a": spec}
    for bad in ["x", [spec, 3], {1: spec}, InputSpec]:
        with pytest.raises(TypeError, match=r"input_spec of layer 'x' must be an InputSpec.*received"):
            checked_input_spec(bad, "x")
