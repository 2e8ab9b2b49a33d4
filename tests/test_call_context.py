"""The call context helper."""

import pytest

from layers._call_context import call_context, current_call_context


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
