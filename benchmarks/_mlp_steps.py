"""What the step benchmarks share: an MLP train step per policy, and step times in rotating rounds."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

CPU_BF16_OVERRIDE = "DTYPEPOLICY_CPU_BF16_DOT"


@contextlib.contextmanager
def cpu_bf16_formulation(formulation: str | None) -> Iterator[None]:
    """Sets the CPU bf16 product formulation ("native" or "upcast") for what is traced inside; restored after.

    The jitted forwards take the formulation as a static argument, so a step traced inside keeps
    it for every later call.
    """
    previous = os.environ.get(CPU_BF16_OVERRIDE)
    try:
        if formulation:
            os.environ[CPU_BF16_OVERRIDE] = formulation
        yield
    finally:
        if previous is None:
            os.environ.pop(CPU_BF16_OVERRIDE, None)
        else:
            os.environ[CPU_BF16_OVERRIDE] = previous


def mlp_train_step(policy: str, width: int, depth: int, batch: int) -> tuple[Any, Any, tuple]:
    """`(step, state, batch)`: `depth` ReLU Dense(width) and a Dense(10) head, Adam, compiled by one step.

    The step runs once here, so tracing happens now (under whatever settings the caller has in
    force) and the timing rounds start on a compiled program.
    """
    import layers
    from layers import losses, optimizers, training

    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, width)).astype(np.float32)
    y = rng.integers(0, 10, size=(batch,)).astype(np.int32)
    hidden = [layers.Dense(width, activation="relu", name=f"dense_{i}") for i in range(depth)]
    model = layers.Sequential([*hidden, layers.Dense(10, name="head")], dtype=policy)
    model(x[:1])
    step = training.make_train_step(
        model, losses.SparseCategoricalCrossentropy(from_logits=True), optimizers.Adam(1e-3)
    )
    state, _ = step.jitted(step.init_state(), (x, y))
    jax.block_until_ready(state)
    return step, state, (x, y)


def step_times(variants: dict[str, tuple[Any, Any, tuple]], rounds: int, steps: int) -> dict[str, list[float]]:
    """ms/step of each variant per round; each round runs every variant for `steps` steps, in an
    order that rotates between rounds, so a drift in machine load reaches every variant alike."""
    names = list(variants)
    states = {name: variants[name][1] for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            step, _, batch = variants[name]
            state = states[name]
            start = time.perf_counter()
            for _ in range(steps):
                state, _ = step.jitted(state, batch)
            jax.block_until_ready(state)
            times[name].append((time.perf_counter() - start) / steps * 1e3)
            states[name] = state
    return times
