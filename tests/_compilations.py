"""Counting XLA compilations in a block, for the tests that check what a call or a draw compiles."""

import contextlib
from collections.abc import Iterator

import jax

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def compilations() -> Iterator[list[float]]:
    """Yields a list that gets one entry (the seconds it took) per backend compilation in the block."""
    compiled: list[float] = []

    def listener(event: str, seconds: float, **kwargs: object) -> None:
        if event == _COMPILE_EVENT:
            compiled.append(seconds)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
