"""`scoped`, the helper behind every context-local setting: LIFO exits, re-entry, threads, tasks."""

import asyncio
import contextvars
import threading

import pytest

from dtypepolicy._context import scoped

NOT_LIFO = r"exited out of order: scopes must be exited in the reverse order of entry"


@pytest.fixture
def var():
    return contextvars.ContextVar("knob", default=0)


def test_a_scope_sets_the_value_and_restores_it_even_on_error(var):
    with pytest.raises(KeyError), scoped(var, 1) as value:
        assert value == 1 and var.get() == 1
        raise KeyError("boom")
    assert var.get() == 0


def test_an_out_of_order_exit_is_an_error_and_leaves_the_value_from_before_that_scope(var):
    # Before: the exit of s1 then of s2 left the variable at s1's value (1) for good.
    outer, inner = scoped(var, 1), scoped(var, 2)
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(RuntimeError, match=r"\(setting knob to 1\) was exited out of order: .*\(setting knob to 2\)"):
        outer.__exit__(None, None, None)
    assert var.get() == 0  # what was in force before `outer`: the scopes inside it are closed too
    with pytest.raises(RuntimeError, match=r"exited without being entered.*out of order"):
        inner.__exit__(None, None, None)
    assert var.get() == 0
    with outer:  # both objects are still usable afterwards
        with inner:
            assert var.get() == 2
        assert var.get() == 1
    assert var.get() == 0


def test_an_out_of_order_exit_also_restores_other_variables_opened_inside_it(var):
    other = contextvars.ContextVar("other", default="a")
    outer, inner = scoped(var, 1), scoped(other, "b")
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(RuntimeError, match=NOT_LIFO):
        outer.__exit__(None, None, None)
    assert (var.get(), other.get()) == (0, "a")


def test_an_out_of_order_exit_from_a_generator_surfaces(var):
    # A generator holding a scope across a yield, closed while the caller's own scope is open.
    def holds_a_scope():
        with scoped(var, 1):
            yield

    held = holds_a_scope()
    next(held)
    caller = scoped(var, 2)
    caller.__enter__()
    with pytest.raises(RuntimeError, match=NOT_LIFO):
        held.close()
    assert var.get() == 0
    with pytest.raises(RuntimeError, match="exited without being entered"):
        caller.__exit__(None, None, None)


def test_one_object_re_entered_while_open_and_reused_one_block_after_another(var):
    scope, other = scoped(var, 1), scoped(var, 2)
    with scope:
        with other:
            with scope:
                assert var.get() == 1
            assert var.get() == 2
        assert var.get() == 1
    assert var.get() == 0
    for _ in range(3):
        with scope:
            assert var.get() == 1
        assert var.get() == 0


def test_exiting_a_scope_never_entered_is_an_error_that_changes_nothing(var):
    scope = scoped(var, 1)
    with scoped(var, 2):
        with pytest.raises(RuntimeError, match=r"knob to 1\) was exited without being entered"):
            scope.__exit__(None, None, None)
        assert var.get() == 2
    assert var.get() == 0


def test_exiting_in_another_context_than_the_entry_is_an_error_that_changes_nothing(var):
    scope = scoped(var, 5)
    scope.__enter__()
    copy = contextvars.copy_context()  # holds the open scope, but not the token's context
    with pytest.raises(RuntimeError, match="entered in another context"):
        copy.run(scope.__exit__, None, None, None)
    assert copy[var] == 5
    scope.__exit__(None, None, None)  # the entering context can still close it
    assert var.get() == 0


def test_a_failed_cross_context_exit_out_of_order_puts_back_what_it_had_reset(var):
    outer, inner = scoped(var, 1), scoped(var, 2)
    outer.__enter__()
    copy = contextvars.copy_context()

    def enter_inner_then_exit_outer():
        inner.__enter__()
        with pytest.raises(RuntimeError, match="entered in another context"):
            outer.__exit__(None, None, None)  # resets inner's token, then fails on outer's
        assert var.get() == 2
        inner.__exit__(None, None, None)  # still open, and still restores what it saw
        assert var.get() == 1

    copy.run(enter_inner_then_exit_outer)
    outer.__exit__(None, None, None)
    assert var.get() == 0


def test_one_object_open_in_two_threads_restores_each_threads_own_value(var):
    scope, entered, release = scoped(var, 1), threading.Event(), threading.Event()
    seen = {}

    def worker():
        var.set(10)
        with scope:
            entered.set()
            seen["released"] = release.wait(5)
            seen["inside"] = var.get()
        seen["after"] = var.get()

    thread = threading.Thread(target=worker)
    thread.start()
    assert entered.wait(5), "the worker never entered the scope"
    with scope:
        release.set()
        thread.join(5)
        assert not thread.is_alive()
        assert var.get() == 1
    assert seen == {"released": True, "inside": 1, "after": 10}
    assert var.get() == 0


def test_one_object_open_in_two_asyncio_tasks(var):
    scope = scoped(var, 1)

    async def task(start, results):
        var.set(start)
        with scope:
            await asyncio.sleep(0)  # the other task enters and exits in between
            results.append(var.get())
        results.append(var.get())

    async def main():
        results_a, results_b = [], []
        await asyncio.gather(task(10, results_a), task(20, results_b))
        return results_a, results_b

    assert asyncio.run(main()) == ([1, 10], [1, 20])
