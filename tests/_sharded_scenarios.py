"""Sharded training scenarios on 8 host devices, run in a subprocess by tests/test_distribution_step.py.

`python -m tests._sharded_scenarios` with `XLA_FLAGS=--xla_force_host_platform_device_count=8`
prints one JSON object: the measurements each test asserts on. The rest of the suite keeps one
device, because the device count is fixed when JAX starts.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import dtypepolicy as dp
import layers
from layers import distribution, initializers, optimizers, training

STEPS = 3
RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 8, 16)).astype(np.float32)
Y = RNG.normal(size=(16, 8, 16)).astype(np.float32)

MODEL_PARALLEL_LAYOUT = {
    ".*attention/(query|key|value)/kernel": (None, "model", None),
    ".*attention/(query|key|value)/bias": ("model", None),
    ".*attention_output/kernel": ("model", None, None),
    ".*mlp_in/kernel": (None, "model"),
    ".*mlp_in/bias": ("model",),
    ".*mlp_out/kernel": ("model", None),
}


def _transformer() -> layers.Layer:
    initializers.set_random_seed(1234)  # every run starts from the same weights
    model = layers.Sequential(
        [layers.TransformerBlock(num_heads=4, key_dim=4, mlp_dim=32, dropout=0.1, seed=3, name="block")],
        dtype="mixed_bfloat16",
        name="m",
    )
    model(X[:1])
    return model


def _spec(array: jax.Array) -> list:
    """A sharding's spec as JSON (entries: None, an axis name or a list of names), trailing Nones dropped."""
    sharding = array.sharding
    if not hasattr(sharding, "spec"):
        return ["<single device>"]
    entries = [list(e) if isinstance(e, tuple) else e for e in sharding.spec]
    while entries and entries[-1] is None:
        entries.pop()
    return entries


def _run(model: layers.Layer, dist: distribution.Distribution | None, dump: str | None = None) -> tuple:
    """STEPS steps from the model's weights: (losses, final state, step, compiled FSDP HLO text or None).

    With `dump`, the sharded step is compiled once ahead of time with XLA's dump of the HLO
    after SPMD partitioning into that directory, and that executable runs the steps.
    """
    step = training.make_train_step(model, "mse", optimizers.SGD(0.1, momentum=0.9), distribution=dist)
    state = step.init_state()
    run, compiled_text = step.jitted, None
    if dump is not None:
        compiled = step.jitted.lower(state, (X, Y)).compile(
            compiler_options={"xla_dump_to": dump, "xla_dump_hlo_pass_re": "spmd-partitioning"}
        )
        compiled_text = compiled.as_text()

        def run(state: training.TrainState, batch: tuple) -> tuple:
            return compiled(state, distribution.shard_batch(batch, dist))

    losses = []
    for _ in range(STEPS):
        state, metrics = run(state, (X, Y))
        losses.append(float(metrics["loss"]))
    return losses, state, step, compiled_text


def _slot_specs(state: training.TrainState) -> list:
    """The specs of the momentum trace, one per trainable variable (the optax state's only arrays)."""
    return [_spec(a) for a in jax.tree.leaves(state.optimizer.inner) if a.ndim > 0]


def _all_gathers(hlo: str) -> list:
    """The all-gathers of an HLO module's text, as dtype[shape] strings."""
    return [f"{dtype}[{shape}]" for dtype, shape in re.findall(r"= (\w+)\[([\d,]*)\]\{[^}]*\} all-gather\(", hlo)]


def _partitioned_module(directory: str) -> str:
    """The HLO text right after SPMD partitioning, from XLA's dump in `directory`."""
    [path] = glob.glob(os.path.join(directory, "*distributed_train_step*after_spmd-partitioning*"))
    with open(path) as file:
        return file.read()


def transformer_scenarios() -> dict:
    model = _transformer()
    paths = [v.path for v in model.trainable_variables]
    reference_losses, reference, reference_step, _ = _run(model, None)
    reference_eval = float(jax.jit(reference_step.evaluate)(reference, (X, Y))["loss"])
    expected = [np.asarray(v, np.float64) for v in reference.trainable]
    results = {"paths": paths, "reference_losses": reference_losses, "reference_eval_loss": reference_eval}

    dp_mesh = distribution.DeviceMesh((8,), ("batch",))
    mp_map = distribution.LayoutMap(distribution.DeviceMesh((2, 4), ("batch", "model")))
    for key, layout in MODEL_PARALLEL_LAYOUT.items():
        mp_map[key] = layout
    runs = {
        "data_parallel": distribution.DataParallel(dp_mesh),
        "fsdp": distribution.FSDP(dp_mesh, min_weight_size=64),
        "data_model_parallel": distribution.ModelParallel(mp_map, batch_dim_name="batch"),
        "fsdp_model_parallel": distribution.FSDP(layout_map=mp_map, min_weight_size=64),
    }
    dump = tempfile.mkdtemp()
    for name, dist in runs.items():
        losses, state, step, compiled_text = _run(model, dist, dump if name == "fsdp" else None)
        diffs = [
            float(np.max(np.abs(np.asarray(v, np.float64) - e)) / (np.max(np.abs(e)) + 1e-12))
            for v, e in zip(state.trainable, expected, strict=True)
        ]
        results[name] = {
            "losses": losses,
            "max_relative_weight_difference": max(diffs),
            "variable_specs": [_spec(v) for v in state.trainable],
            "slot_specs": _slot_specs(state),
            "shard_shapes": [list(v.addressable_shards[0].data.shape) for v in state.trainable],
            "device_count": len(state.trainable[0].sharding.device_set),
            "iterations_spec": _spec(state.optimizer.iterations),
        }
        if name == "data_parallel":  # evaluation: jit follows the sharded state and batch
            batch = distribution.shard_batch((X, Y), dist)
            results[name]["eval_loss"] = float(jax.jit(step.evaluate)(state, batch)["loss"])
        if name == "fsdp":
            results[name]["partitioned_all_gathers"] = _all_gathers(_partitioned_module(dump))
            results[name]["compiled_all_gathers"] = _all_gathers(compiled_text)
        if name == "data_model_parallel":
            results["checkpoint"] = _checkpoint_scenario(model, step, state)
    return results


def _checkpoint_scenario(model: layers.Layer, step: training.TrainStep, state: training.TrainState) -> dict:
    """Saves the 2x4 state, restores it on a 4x2 mesh."""
    path = os.path.join(tempfile.mkdtemp(), "sharded.ckpt")
    step.save(path, state)
    other = distribution.LayoutMap(distribution.DeviceMesh((4, 2), ("batch", "model")))
    for key, layout in MODEL_PARALLEL_LAYOUT.items():
        other[key] = layout
    restored_step = training.make_train_step(
        model, "mse", optimizers.SGD(0.1, momentum=0.9), distribution=distribution.ModelParallel(other)
    )
    restored = restored_step.restore(path)
    saved_leaves, restored_leaves = jax.tree.leaves(state), jax.tree.leaves(restored)
    return {
        "leaves": len(saved_leaves),
        "bit_equal": all(
            np.array_equal(np.asarray(a), np.asarray(b)) and np.asarray(a).dtype == np.asarray(b).dtype
            for a, b in zip(saved_leaves, restored_leaves, strict=True)
        ),
        "saved_mesh": dict(state.trainable[0].sharding.mesh.shape),
        "restored_mesh": dict(restored.trainable[0].sharding.mesh.shape),
        "restored_specs": [_spec(v) for v in restored.trainable],
        "restored_shard_shapes": [list(v.addressable_shards[0].data.shape) for v in restored.trainable],
        "restored_slot_specs": _slot_specs(restored),
    }


def float8_scenario() -> dict:
    """A float8 MLP trained data-parallel; one shard's rows hold the largest inputs."""
    x = np.random.default_rng(1).normal(size=(16, 16)).astype(np.float32)
    x[13, 5] = 40.0  # row 13 lives on device 6 (2 rows per device): only its shard sees this amax
    y = np.random.default_rng(2).normal(size=(16, 8)).astype(np.float32)
    policy = dp.QuantizedFloat8DTypePolicy("float8", "mixed_bfloat16", amax_history_length=4)

    def run(dist: distribution.Distribution | None) -> tuple[list, dict]:
        initializers.set_random_seed(99)
        model = layers.Sequential(
            [layers.Dense(32, activation="relu", name="up"), layers.Dense(8, name="down")], dtype=policy, name="f8"
        )
        model(x[:1])
        step = training.make_train_step(model, "mse", optimizers.SGD(0.1), distribution=dist)
        state = step.init_state()
        for _ in range(STEPS):
            state, _ = step.jitted(state, (x, y))
        names = [v.path for v in model.trainable_variables]
        state_values = {
            n: v
            for n, v, var in zip(names, state.trainable, model.trainable_variables, strict=True)
            if var.overwrite_with_gradient
        }
        return names, state_values

    _, single = run(None)
    mesh = distribution.DeviceMesh((8,), ("batch",))
    report = {}
    for label, dist in [
        ("data_parallel", distribution.DataParallel(mesh)),
        ("fsdp", distribution.FSDP(mesh, min_weight_size=64)),
    ]:
        _, sharded = run(dist)
        report[label] = {}
        for name, value in sharded.items():
            shards = [np.asarray(s.data) for s in value.addressable_shards]
            report[label][name] = {
                "spec": _spec(value),
                "shards": len(shards),
                "shards_identical": all(np.array_equal(s, shards[0]) for s in shards),
                "sharded": np.asarray(value).tolist(),
                "single": np.asarray(single[name]).tolist(),
            }
    return {
        "state": report,
        "input_amax": float(np.abs(x).max()),
        "shard_input_amaxes": [float(np.abs(x[2 * d : 2 * d + 2]).max()) for d in range(8)],
    }


def batch_statistics_scenario() -> dict:
    """BatchNormalization's moving statistics under data parallelism: those of the global batch."""
    x = np.random.default_rng(4).normal(size=(16, 8)).astype(np.float32)
    x *= np.repeat(np.arange(1, 9, dtype=np.float32), 2)[:, None]  # each device's rows on another scale
    y = np.zeros((16, 4), np.float32)

    def run(dist: distribution.Distribution | None) -> list:
        initializers.set_random_seed(7)
        model = layers.Sequential(
            [layers.Dense(8, name="dense"), layers.BatchNormalization(name="norm"), layers.Dense(4, name="head")],
            dtype="mixed_bfloat16",
            name="bn",
        )
        model(x[:1])
        step = training.make_train_step(model, "mse", optimizers.SGD(0.1), distribution=dist)
        state = step.init_state()
        for _ in range(2):
            state, _ = step.jitted(state, (x, y))
        return state.non_trainable

    single = run(None)
    sharded = run(distribution.DataParallel(distribution.DeviceMesh((8,), ("batch",))))
    return {
        "max_relative_difference": max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / (np.max(np.abs(np.asarray(b))) + 1e-12))
            for a, b in zip(sharded, single, strict=True)
        ),
        "specs": [_spec(a) for a in sharded],
        "count": len(single),
    }


def fit_scenario() -> dict:
    """`fit` with a DataParallel distribution: the losses and weights of the single-device `fit`."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x @ rng.normal(size=(8, 2))).astype(np.float32)

    def run(dist: distribution.Distribution | None) -> tuple:
        initializers.set_random_seed(11)
        model = layers.Sequential(
            [layers.Dense(16, activation="relu", name="hidden"), layers.Dense(2, name="head")],
            dtype="mixed_bfloat16",
            name="fit_model",
        )
        history = training.fit(
            model, (x, y), "mse", optimizers.Adam(1e-2), epochs=3, batch_size=16, verbose=False, distribution=dist
        )
        return history.history["loss"], [np.asarray(v) for v in history.state.trainable], history.state.trainable

    single_losses, single_weights, _ = run(None)
    losses, weights, arrays = run(distribution.DataParallel(distribution.DeviceMesh((8,), ("batch",))))

    # The model fit left its variables laid out by DataParallel; another distribution takes it from there.
    initializers.set_random_seed(11)
    model = layers.Sequential([layers.Dense(16, name="hidden"), layers.Dense(2, name="head")], name="refit")
    data_parallel = distribution.DataParallel(distribution.DeviceMesh((8,), ("batch",)))
    training.fit(model, (x, y), "mse", optimizers.SGD(0.1), batch_size=16, verbose=False, distribution=data_parallel)
    fsdp = distribution.FSDP(distribution.DeviceMesh((8,), ("batch",)), min_weight_size=8)
    refit = training.make_train_step(model, "mse", optimizers.SGD(0.1), distribution=fsdp)
    refit_state, _ = refit.jitted(refit.init_state(), (x[:16], y[:16]))
    return {
        "refit_kernel_spec": _spec(refit_state.trainable[0]),
        "single_losses": single_losses,
        "losses": losses,
        "max_weight_difference": max(
            float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))
            for a, b in zip(weights, single_weights, strict=True)
        ),
        "devices_per_weight": sorted({len(a.sharding.device_set) for a in arrays}),
    }


def loss_scale_scenario() -> dict:
    """A mixed_float16 step whose scaled gradient overflows in one column block of a model-parallel kernel."""
    initializers.set_random_seed(5)
    model = layers.Sequential([layers.Dense(16, name="head")], dtype="mixed_float16", name="fp16")
    x = np.random.default_rng(3).normal(size=(16, 8)).astype(np.float32)
    model(x[:1])
    mesh = distribution.DeviceMesh((2, 4), ("batch", "model"))
    layout_map = distribution.LayoutMap(mesh)
    layout_map[".*head/kernel"] = (None, "model")
    layout_map[".*head/bias"] = ("model",)
    dist = distribution.ModelParallel(layout_map)
    step = training.make_train_step(model, "mse", optimizers.SGD(0.1), distribution=dist)
    assert step.loss_scaling
    finite_y = np.zeros((16, 16), np.float32)
    overflow_y = finite_y.copy()
    overflow_y[:, 0] = 1e4  # column 0 of the kernel lives on the devices of model index 0

    # Which devices' gradient shards overflow: the scaled loss's gradient, sharded like the kernel.
    state = step.init_state()
    shardings = step.jitted.state_shardings(state)

    def scaled_loss(trainable: list) -> jax.Array:
        out, _ = model.stateless_call(trainable, [], x)
        loss = jnp.mean(jnp.square(out.astype(jnp.float32) - overflow_y))
        return loss * state.optimizer.loss_scale.loss_scale

    grads = jax.jit(jax.grad(scaled_loss), out_shardings=shardings.trainable)(state.trainable)
    kernel_shards_finite = {
        str(s.device.id): bool(np.isfinite(np.asarray(s.data)).all()) for s in grads[0].addressable_shards
    }

    before = [np.asarray(v) for v in state.trainable]
    initial_scale = float(state.optimizer.loss_scale.loss_scale)
    skipped, _ = step.jitted(state, (x, overflow_y))

    def per_device(array: jax.Array) -> list:
        return [np.asarray(s.data).tolist() for s in array.addressable_shards]

    unchanged = {
        str(s.device.id): bool(np.array_equal(np.asarray(s.data), before[0][s.index]))
        for s in skipped.trainable[0].addressable_shards
    }
    bias_unchanged = bool(np.array_equal(np.asarray(skipped.trainable[1]), before[1]))
    scale_after_overflow = per_device(skipped.optimizer.loss_scale.loss_scale)
    iterations_after_overflow = per_device(skipped.optimizer.inner.iterations)
    applied, _ = step.jitted(skipped, (x, finite_y))  # donates `skipped`
    changed = {
        str(s.device.id): bool(not np.array_equal(np.asarray(s.data), before[0][s.index]))
        for s in applied.trainable[0].addressable_shards
    }
    return {
        "kernel_gradient_shards_finite": kernel_shards_finite,
        "kernel_shards_unchanged_after_overflow": unchanged,
        "bias_unchanged_after_overflow": bias_unchanged,
        "loss_scale_per_device_after_overflow": scale_after_overflow,
        "iterations_per_device_after_overflow": iterations_after_overflow,
        "kernel_shards_changed_after_finite_step": changed,
        "iterations_after_finite_step": int(applied.optimizer.inner.iterations),
        "initial_scale": initial_scale,
    }


def _error(function: object) -> str:
    try:
        function()
    except (ValueError, TypeError) as error:
        return f"{type(error).__name__}: {error}"
    return "no error"


def bad_input_scenario() -> dict:
    mesh = distribution.DeviceMesh((2, 4), ("batch", "model"))
    model = layers.Sequential([layers.Dense(6, name="odd")], name="bad")
    model(np.ones((1, 3), np.float32))
    layout_map = distribution.LayoutMap(mesh)
    layout_map[".*odd/kernel"] = (None, "model")
    step = training.make_train_step(
        model, "mse", optimizers.SGD(0.1), distribution=distribution.ModelParallel(layout_map)
    )
    fine = training.make_train_step(
        layers.Dense(8, name="fine"), "mse", optimizers.SGD(0.1), distribution=distribution.DataParallel(mesh)
    )
    fine.model(np.ones((1, 3), np.float32))
    state = fine.init_state()
    small = layers.Dense(2, name="small")
    small(np.ones((1, 3), np.float32))
    kernel_before = np.asarray(small.kernel.value)
    uneven_error = _error(
        lambda: training.fit(
            small,
            (np.ones((20, 3), np.float32), np.ones((20, 2), np.float32)),
            "mse",
            optimizers.SGD(0.1),
            batch_size=8,
            verbose=False,
            distribution=distribution.DataParallel(distribution.DeviceMesh((8,), ("batch",))),
        )
    )
    return {
        "uneven_fit": uneven_error,
        "uneven_fit_left_the_kernel": bool(np.array_equal(np.asarray(small.kernel.value), kernel_before)),
        "indivisible_variable": _error(step.init_state),
        "indivisible_batch": _error(lambda: fine.jitted(state, (np.ones((5, 3)), np.ones((5, 8))))),
        "wrong_device_count": _error(lambda: distribution.DeviceMesh((3, 2), ("batch", "model"))),
    }


def main() -> None:
    warnings.simplefilter("error")
    if len(jax.devices()) != 8:
        sys.exit(f"expected 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8), found {len(jax.devices())}")
    with jax.numpy_dtype_promotion("strict"):
        results = {
            "devices": len(jax.devices()),
            "transformer": transformer_scenarios(),
            "float8": float8_scenario(),
            "loss_scale": loss_scale_scenario(),
            "batch_statistics": batch_statistics_scenario(),
            "fit": fit_scenario(),
            "bad_input": bad_input_scenario(),
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
