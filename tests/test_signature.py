"""Call and build signature facts."""

import pytest

from layers._base._signature import FIRST_INPUT, build_parameters, build_plan, call_signature


def test_call_signature_facts():
    def call(self, inputs, training=True, mask=None):
        return inputs

    facts = call_signature(call)
    assert facts.accepts_training and facts.training_default is True and facts.accepts_mask
    assert not facts.accepts_var_keyword
    assert facts.bind((1,), {"mask": 2}) == {"inputs": 1, "mask": 2}

    def plain(self, x, **kwargs):
        return x

    facts = call_signature(plain)
    assert not facts.accepts_training and facts.training_default is None and facts.accepts_var_keyword


def test_build_parameters():
    def build(self, x_shape, y_shape=None, *rest, flag=False):
        pass

    assert build_parameters(build) == ("x_shape", "y_shape")


def test_bind_lists_keyword_arguments_collected_by_var_keyword_by_name():
    def call(self, x, *args, **kwargs):
        return x

    assert call_signature(call).bind((1, 2), {"extra": 3}) == {"x": 1, "args": (2,), "extra": 3}


def test_mask_arguments_pair_each_argument_with_its_mask_parameter():
    def call(self, query, value, key=None, query_mask=None, value_mask=None, mask=None, training=None):
        return query

    assert call_signature(call).mask_arguments == (("query", "query_mask"), ("value", "value_mask"))
    assert call_signature(call).argument_names == (
        "query",
        "value",
        "key",
        "query_mask",
        "value_mask",
        "mask",
        "training",
    )


def _call_xy(self, x, y=None):
    return x


def test_build_plan_follows_keras_3():
    def one(self, input_shape):
        pass

    def named(self, y_shape):
        pass

    def unrelated(self, z_shape):
        pass

    def two(self, y_shape, x_shape):
        pass

    def none(self):
        pass

    assert build_plan(one, _call_xy) == (FIRST_INPUT,)
    assert build_plan(named, _call_xy) == ("y",)
    assert build_plan(unrelated, _call_xy) == (FIRST_INPUT,)  # one parameter: its name is not checked
    assert build_plan(two, _call_xy) == ("y", "x")
    assert build_plan(none, _call_xy) == ()


def test_build_plan_rejects_several_parameters_that_are_not_call_argument_shapes():
    def misnamed(self, foo_shape, y_shape):
        pass

    def unsuffixed(self, x, y_shape):
        pass

    with pytest.raises(
        ValueError, match=r"'foo_shape' names no call\(\) argument 'foo'.*build\(self, x_shape, y_shape\)"
    ):
        build_plan(misnamed, _call_xy)
    with pytest.raises(
        ValueError, match=r"\('x', 'y_shape'\) do not match call\(\) arguments \('x', 'y'\): 'x' does not"
    ):
        build_plan(unsuffixed, _call_xy)

    def call_with_kwargs(self, x, **kwargs):
        return x

    assert build_plan(misnamed, call_with_kwargs) == ("foo", "y")  # **kwargs may bring them


# ---------------------------------------------------------------- issue 7: var-positional call and build parameters


def _call_varargs(self, *args):
    return args[0]


def test_build_plan_for_a_var_positional_call_explains_the_input_shape_form():
    def two(self, x_shape, y_shape):
        pass

    with pytest.raises(ValueError, match=r"call\(\) takes its inputs as \*args") as caught:
        build_plan(two, _call_varargs)
    message = str(caught.value)
    assert "build(self, )" not in message and "e.g. build(self, )" not in message
    assert "build(self, input_shape)" in message and "one shape per positional input" in message
    assert build_plan(two, _call_xy) == ("x", "y")  # named call arguments still match


def test_build_plan_rejects_a_var_positional_build_parameter_next_to_named_ones():
    def with_rest(self, x_shape, *rest):
        pass

    with pytest.raises(
        ValueError, match=r"build\(\) parameter '\*rest'.*receives shapes by name.*build\(self, x_shape, y_shape\)"
    ):
        build_plan(with_rest, _call_xy)

    def compute_output_shape(self, x_shape, *rest):
        pass

    with pytest.raises(ValueError, match=r"compute_output_shape\(\) parameter '\*rest'"):
        build_plan(compute_output_shape, _call_xy)


def test_build_plan_gives_a_build_with_only_var_positional_parameters_the_first_input_shape():
    def forwarding(self, *args, **kwargs):  # a wrapper passing its arguments on to super().build
        pass

    assert build_plan(forwarding, _call_xy) == (FIRST_INPUT,)
    assert build_plan(forwarding, _call_varargs) == (FIRST_INPUT,)
