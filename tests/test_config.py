"""Constructor-argument capture and config checks."""

import pytest

from layers._base._config import capture_arguments, check_config


class Example:
    def __init__(self, units, activation="relu", **kwargs):
        pass


def test_capture_plain_arguments_and_flatten_kwargs():
    captured = capture_arguments(Example, (4,), {"name": "x", "extra": [1, 2]}, frozenset({"name"}))
    # defaults are not captured (the layer's own get_config adds what it needs); name is handled by the base
    assert captured == {"units": 4, "extra": [1, 2]}


def test_non_plain_arguments_give_none():
    assert capture_arguments(Example, (object(),), {}, frozenset()) is None
    assert capture_arguments(Example, (), {}, frozenset()) is None  # missing argument: __init__ will complain


def test_check_config():
    class Strict:
        def __init__(self, units):
            pass

    assert check_config(Strict, {"units": 1}) == {"units": 1}
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        check_config(Strict, {"units": 1, "colour": "red"})
    with pytest.raises(TypeError, match="expects a dict, received 'x'"):
        check_config(Strict, "x")
    assert check_config(Example, {"anything": 1}) == {"anything": 1}
