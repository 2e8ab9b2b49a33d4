"""The default policy: process-wide set_dtype_policy, context-local policy_scope."""

import asyncio
import threading

import jax.numpy as jnp
import pytest

import dtypepolicy as dp


def run_in_thread(fn):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", fn()))
    thread.start()
    thread.join()
    return result["value"]


def test_default_is_float32():
    assert dp.dtype_policy() == dp.DTypePolicy("float32")


@pytest.mark.parametrize(
    "identifier",
    [
        "mixed_bfloat16",
        dp.DTypePolicy("mixed_bfloat16"),
        "p=f32,c=bf16",
        {"class_name": "DTypePolicy", "config": {"name": "mixed_bfloat16"}},
    ],
    ids=repr,
)
def test_set_dtype_policy_accepts_what_get_accepts(identifier):
    dp.set_dtype_policy(identifier)
    assert dp.dtype_policy() == dp.DTypePolicy("mixed_bfloat16")


def test_set_dtype_policy_dtype_like_and_none_resets():
    dp.set_dtype_policy(jnp.bfloat16)
    assert dp.dtype_policy().name == "bfloat16"
    dp.set_dtype_policy(None)
    assert dp.dtype_policy().name == "float32"


def test_set_dtype_policy_is_seen_from_a_new_thread():
    dp.set_dtype_policy("mixed_float16")
    assert run_in_thread(lambda: dp.dtype_policy().name) == "mixed_float16"


def test_policy_scope_is_not_seen_from_another_thread():
    with dp.policy_scope("bfloat16"):
        assert dp.dtype_policy().name == "bfloat16"
        assert run_in_thread(lambda: dp.dtype_policy().name) == "float32"


def test_policy_scope_in_a_thread_does_not_leak_to_the_main_thread():
    entered, release = threading.Event(), threading.Event()

    def worker():
        with dp.policy_scope("float16"):
            entered.set()
            release.wait(5)
        return True

    thread = threading.Thread(target=worker)
    thread.start()
    entered.wait(5)
    try:
        assert dp.dtype_policy().name == "float32"
    finally:
        release.set()
        thread.join()


def test_policy_scope_nests_and_restores():
    with dp.policy_scope("mixed_bfloat16") as outer:
        assert outer == dp.dtype_policy() == dp.DTypePolicy("mixed_bfloat16")
        with dp.policy_scope("float16"):
            assert dp.dtype_policy().name == "float16"
        assert dp.dtype_policy().name == "mixed_bfloat16"
    assert dp.dtype_policy().name == "float32"


def test_policy_scope_restores_after_an_exception():
    with pytest.raises(RuntimeError, match="boom"), dp.policy_scope("bfloat16"):
        raise RuntimeError("boom")
    assert dp.dtype_policy().name == "float32"


def test_policy_scope_overrides_the_global_default_only_inside():
    dp.set_dtype_policy("mixed_float16")
    with dp.policy_scope("bfloat16"):
        assert dp.dtype_policy().name == "bfloat16"
        dp.set_dtype_policy("float16")  # changes the global, the scope still wins here
        assert dp.dtype_policy().name == "bfloat16"
    assert dp.dtype_policy().name == "float16"


def test_policy_scope_is_local_to_an_async_task():
    async def main():
        async def inside():
            with dp.policy_scope("bfloat16"):
                await asyncio.sleep(0)
                return dp.dtype_policy().name

        async def outside():
            await asyncio.sleep(0)
            return dp.dtype_policy().name

        return await asyncio.gather(inside(), outside())

    assert asyncio.run(main()) == ["bfloat16", "float32"]


@pytest.mark.parametrize("setter", [dp.set_dtype_policy, dp.policy_scope], ids=["set", "scope"])
def test_bad_input_leaves_the_default_untouched(setter):
    dp.set_dtype_policy("mixed_bfloat16")
    with pytest.raises(ValueError, match="'mixed_bfloat61'"):
        setter("mixed_bfloat61")
    with pytest.raises(TypeError, match="received 3"):
        setter(3)
    with pytest.raises(TypeError, match="takes a single policy, received a DTypePolicyMap"):
        setter(dp.DTypePolicyMap())
    assert dp.dtype_policy().name == "mixed_bfloat16"


# --- regressions (issue 7) ---------------------------------------------------------------------


@pytest.mark.parametrize("setter", [dp.set_dtype_policy, dp.policy_scope], ids=["set", "scope"])
def test_a_serialized_map_is_rejected_as_a_default_and_changes_nothing(setter):
    # Before: get() turned the dict back into a map after the "no map" check, and every later
    # layer failed when it read the default.
    dp.set_dtype_policy("mixed_bfloat16")
    config = dp.serialize(dp.DTypePolicyMap("float32", {"head": "float16"}))
    with pytest.raises(TypeError, match="takes a single policy, received a DTypePolicyMap"):
        setter(config)
    assert dp.dtype_policy() == dp.DTypePolicy("mixed_bfloat16")


def test_a_policy_scope_object_can_be_entered_again_after_it_exits():
    scope = dp.policy_scope("bfloat16")
    for _ in range(3):
        with scope as policy:
            assert policy.name == "bfloat16" and dp.dtype_policy().name == "bfloat16"
        assert dp.dtype_policy().name == "float32"


def test_a_policy_scope_object_can_be_re_entered_while_open():
    scope = dp.policy_scope("bfloat16")
    with scope:
        with dp.policy_scope("float16"):
            with scope:
                assert dp.dtype_policy().name == "bfloat16"
            assert dp.dtype_policy().name == "float16"
        assert dp.dtype_policy().name == "bfloat16"
    assert dp.dtype_policy().name == "float32"


def test_one_policy_scope_object_shared_by_two_threads():
    scope, entered, release = dp.policy_scope("float16"), threading.Event(), threading.Event()
    seen = {}

    def worker():
        with scope:
            entered.set()
            seen["released"] = release.wait(5)  # False: timed out, the two scopes never overlapped
            seen["worker"] = dp.dtype_policy().name
        seen["worker_after"] = dp.dtype_policy().name

    thread = threading.Thread(target=worker)
    thread.start()
    assert entered.wait(5), "the worker thread never entered the scope"
    with scope:  # entered here while the worker still holds it
        release.set()
        thread.join(5)
        assert not thread.is_alive()
        seen["main"] = dp.dtype_policy().name
    assert seen == {"released": True, "worker": "float16", "worker_after": "float32", "main": "float16"}
    assert dp.dtype_policy().name == "float32"


def test_exiting_a_policy_scope_that_was_not_entered_is_a_clear_error():
    scope = dp.policy_scope("bfloat16")
    with pytest.raises(RuntimeError, match="exited without being entered"):
        scope.__exit__(None, None, None)
    assert dp.dtype_policy().name == "float32"
