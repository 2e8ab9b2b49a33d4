"""The call context helper."""

import pytest

from layers._base._call_context import call_context, current_call_context, enter, leave


def test_nesting_and_restore():
    assert current_call_context() is None
    with call_context(True, "outer"):
        assert current_call_context().training is True
        with call_context(False, "outer"):
            assert current_call_context().training is False
        assert current_call_context().training is True
        with pytest.raises(RuntimeError), call_context(None, "outer"):
            raise RuntimeError
        assert current_call_context().entry_layer == "outer"
    assert current_call_context() is None


def test_enter_and_leave_nest_and_restore_like_the_context_manager():
    outer = enter(True, "outer")
    inner = enter(False, "inner")
    assert current_call_context() == (False, "inner")
    leave(inner)
    assert current_call_context().training is True and current_call_context().entry_layer == "outer"
    leave(outer)
    assert current_call_context() is None
