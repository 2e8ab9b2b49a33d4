"""`python -m benchmarks overhead`: what going through these layers costs, against plain JAX + optax.

Four figures, each measured in one process with the variants interleaved round by round (the
order rotating), next to its target (the project's own):

1. jitted train step, layers (`make_train_step`) / the same model in plain JAX + optax, for the
   MLP and the TransformerBlock classifier of `benchmarks.train_step`, under float32 and
   mixed_bfloat16 (target ≤ 1.02×);
2. eager `Dense.__call__` / the same few jnp calls, at (8,64)->64, (32,256)->256 and
   (64,512)->256 (`benchmarks._probe.dense_overhead`; target ≤ 1.3×);
3. build + first eager call of a TransformerBlock(width 64) in a fresh process (target ≤ 1 s);
4. trace, lowering and compile time of the train step, `jax.jit(step).trace(...)`, `.lower()`,
   `.compile()` timed separately (no target; each variant's time and its ratio to plain's). The
   timed run of (1) compiles each variant this way and runs the compiled step (dispatch as the
   jitted function's); `compile_rounds` more freshly built steps add samples to the medians.

Float32 means float32: our layers and the plain baselines pass `Precision.HIGHEST`, and the
float32 rows run inside `jax.default_matmul_precision("highest")`, which is what makes Keras's
float32 products float32 on a GPU (on a CPU the two are the same dots).

With the `compare` extra installed (`pip install -e '.[compare]'`: Keras 3 and Flax), their
figures join the same tables and rounds, from the same initial values:

- Keras 3 on the JAX backend (`KERAS_BACKEND=jax` is set before Keras is imported), the policy
  given to each layer as `dtype=` (a Keras DTypePolicy name). The jitted step is
  `model.stateless_call` + `jax.value_and_grad` + `optax.adam` under `jax.jit`, Keras's own
  custom-training-loop form for JAX: it is the same pure computation as ours. `model.fit`'s
  train function is not compared: it adds per-step callback, metric and data-adapter work
  that a bare jitted step does not do, so its ratio would measure `fit`, not the step.
- Flax NNX: `nnx.Linear(dtype=bfloat16, param_dtype=float32)` (float32: `precision=HIGHEST`);
  the step splits the module once (`nnx.split`) and merges it inside `jax.jit` (Flax's
  functional form; `nnx.jit` re-splits the object graph on every call).

Both libraries' 16-bit Dense rounds the product to bfloat16 and adds the bias in bfloat16 (two
roundings; ours accumulates and adds the bias in float32, rounding once), so their losses agree
with plain JAX's to bfloat16 tolerance, not bit for bit; this is checked before timing, as for
ours. The train step compares the MLP only (neither library has our TransformerBlock).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _device, _results

NAME = "overhead"
ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"train_step": 1.02, "dense_call": 1.3, "build_s": 1.0}  # the project's targets
DENSE_SHAPES = ((8, 64, 64), (32, 256, 256), (64, 512, 256))  # (rows, features) -> units
POLICIES = ("float32", "mixed_bfloat16")
MODELS = ("mlp", "transformer")
MISSING = "Keras/Flax not installed (pip install -e '.[compare]')"


# ---------------------------------------------------------------------------------------------
# Keras 3 and Flax, when installed.


def _import_keras() -> Any:
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"  # read once, at Keras's import
    import keras

    if keras.backend.backend() != "jax":
        raise ImportError(f"Keras was imported on the {keras.backend.backend()!r} backend, not 'jax'")
    return keras


def _import_flax() -> Any:
    from flax import nnx

    return nnx


def other_libraries(enabled: bool = True) -> tuple[dict[str, Any], str | None]:
    """The installed comparison libraries `{"keras": keras, "flax": flax.nnx}`, and a line on any missing.

    Example:
      >>> libraries, missing = other_libraries(enabled=False)
      >>> libraries, missing
      ({}, 'Keras/Flax not compared (--no-compare)')
    """
    if not enabled:
        return {}, "Keras/Flax not compared (--no-compare)"
    found, absent = {}, []
    for name, load in (("keras", _import_keras), ("flax", _import_flax)):
        try:
            found[name] = load()
        except ImportError:
            absent.append(name)
    if not absent:
        return found, None
    if len(absent) == 2:
        return found, MISSING
    return found, f"{absent[0].capitalize()} not installed (pip install -e '.[compare]')"


def _check_output(name: str, got: Any, x: Any, kernel: Any, bias: Any, policy: str) -> None:
    """Another library's Dense gives our formula's result (float64 reference) to the policy's tolerance."""
    exact = np.asarray(x, np.float64) @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)
    tolerance = 1e-4 if policy == "float32" else 3e-2  # bf16 operands: a few roundings of 2^-8
    error = np.max(np.abs(np.asarray(got, np.float64) - exact)) / max(np.max(np.abs(exact)), 1e-30)
    if not error <= tolerance:
        raise AssertionError(f"{name} Dense under {policy}: relative error {error:.2e} > {tolerance:.0e}")


def _keras_dense(keras: Any) -> Callable[..., Callable[[], Any]]:
    def factory(policy: str, x: Any, kernel: Any, bias: Any) -> Callable[[], Any]:
        layer = keras.layers.Dense(kernel.shape[1], dtype=policy)
        layer.build(x.shape)
        layer.kernel.assign(np.asarray(kernel))
        layer.bias.assign(np.asarray(bias))
        _check_output("Keras", layer(x), x, kernel, bias, policy)
        return lambda: layer(x)

    return factory


def _flax_dense(nnx: Any) -> Callable[..., Callable[[], Any]]:
    def factory(policy: str, x: Any, kernel: Any, bias: Any) -> Callable[[], Any]:
        layer = _flax_linear(nnx, policy, *kernel.shape)
        layer.kernel[...] = jnp.asarray(kernel)
        layer.bias[...] = jnp.asarray(bias)
        _check_output("Flax", layer(x), x, kernel, bias, policy)
        return lambda: layer(x)

    return factory


def _flax_linear(nnx: Any, policy: str, features: int, units: int) -> Any:
    if policy == "float32":
        dtype, precision = jnp.float32, jax.lax.Precision.HIGHEST
    elif policy == "mixed_bfloat16":
        dtype, precision = jnp.bfloat16, None
    else:
        raise ValueError(f"Flax is compared under float32 and mixed_bfloat16 only, received {policy!r}.")
    return nnx.Linear(features, units, dtype=dtype, param_dtype=jnp.float32, precision=precision, rngs=nnx.Rngs(0))


def _optax_step(apply: Callable[..., Any], params: Any, others: Any) -> tuple[Any, Any]:
    """`apply(params, others, x) -> (logits, others)` trained by optax.adam: (state, jitted donating step)."""
    import optax

    from benchmarks.train_step import LEARNING_RATE

    transform = optax.adam(LEARNING_RATE)

    def loss_fn(p: Any, o: Any, x: Any, y: Any) -> Any:
        logits, o = apply(p, o, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y).mean(), o

    def step(state: Any, batch: Any) -> Any:
        p, o, opt_state = state
        (loss, o), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, o, *batch)
        updates, opt_state = transform.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), o, opt_state), {"loss": loss}

    return (params, others, transform.init(params)), jax.jit(step, donate_argnums=0)


def _only_mlp(library: str, model: str) -> None:
    if model != "mlp":
        raise ValueError(f"the {library} train step is the MLP only, received model {model!r}.")


def _keras_step(keras: Any) -> Callable[..., tuple[Any, Any]]:
    def factory(policy: str, model: str, initial: dict[str, np.ndarray], widths: tuple[int, ...]) -> tuple[Any, Any]:
        _only_mlp("Keras", model)
        count = len(widths) - 1
        dense = [
            keras.layers.Dense(width, activation="relu" if i < count - 1 else None, dtype=policy)
            for i, width in enumerate(widths[1:])
        ]
        net = keras.Sequential([keras.Input((widths[0],)), *dense])
        for i, layer in enumerate(dense):
            layer.kernel.assign(initial[f"dense_{i}/kernel"])
            layer.bias.assign(initial[f"dense_{i}/bias"])
        # Copies: the step donates its state, which must not be the Keras variables' own buffers.
        params = [jnp.array(v.value, copy=True) for v in net.trainable_variables]
        others = [jnp.array(v.value, copy=True) for v in net.non_trainable_variables]
        return _optax_step(lambda p, o, x: net.stateless_call(p, o, x, training=True), params, others)

    return factory


def _flax_step(nnx: Any) -> Callable[..., tuple[Any, Any]]:
    def factory(policy: str, model: str, initial: dict[str, np.ndarray], widths: tuple[int, ...]) -> tuple[Any, Any]:
        _only_mlp("Flax", model)

        class MLP(nnx.Module):
            def __init__(self) -> None:
                self.dense = nnx.List([_flax_linear(nnx, policy, a, b) for a, b in itertools.pairwise(widths)])

            def __call__(self, x: Any) -> Any:
                for i, layer in enumerate(self.dense):
                    x = layer(x)
                    if i < len(self.dense) - 1:
                        x = nnx.relu(x)
                return x

        net = MLP()
        for i, layer in enumerate(net.dense):
            layer.kernel[...] = jnp.asarray(initial[f"dense_{i}/kernel"])
            layer.bias[...] = jnp.asarray(initial[f"dense_{i}/bias"])
        graph, params = nnx.split(net, nnx.Param)
        params = jax.tree.map(lambda value: jnp.array(value, copy=True), params)
        return _optax_step(lambda p, o, x: (nnx.merge(graph, p)(x), o), params, ())

    return factory


# ---------------------------------------------------------------------------------------------
# The measurements.


@contextlib.contextmanager
def _full_precision(policy: str) -> Iterator[None]:
    """float32 rows: JAX's default matmul precision at HIGHEST (ours and plain pin it already)."""
    if policy == "float32":
        with jax.default_matmul_precision("highest"):
            yield
    else:
        yield


def compile_times(
    policy: str,
    model: str,
    *,
    widths: tuple[int, ...],
    batch: int | None,
    extra: dict[str, Any] | None = None,
    rounds: int = 1,
) -> dict[str, list[dict[str, float]]]:
    """Seconds of `trace`, `lower` and `compile` of each variant's jitted step, one sample per fresh build.

    The variants' order rotates between rounds; every round builds new models and closures, so
    nothing traced or compiled before is reused.
    """
    from benchmarks import train_step

    data, _ = train_step.problem(model, widths, batch)
    samples: dict[str, list[dict[str, float]]] = {}
    for round_index in range(rounds):
        built = train_step.variants(policy, model, data[0], widths, extra)
        names = list(built)
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            state, step = built[name]
            samples.setdefault(name, []).append(train_step.aot_compile(step, state, data)[1])
    return samples


def build_seconds(rounds: int) -> list[float]:
    """Build + first call of a TransformerBlock(width 64), each in a fresh process (`benchmarks._probe`)."""
    seconds = []
    for _ in range(rounds):
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks._probe", "--build-only"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"the build probe failed:\n{result.stderr[-4000:]}")
        seconds.append(json.loads(result.stdout.strip().splitlines()[-1])["build_s"])
    return seconds


def default_sizes(device: Any, quick: bool) -> dict[str, Any]:
    """Sizes and repeat counts: small on a CPU, a wider MLP and batch on an accelerator; `quick` for the report."""
    from benchmarks import train_step

    sizes: dict[str, Any] = {
        "models": list(MODELS),
        "policies": list(POLICIES),
        "widths": list(train_step.WIDTHS),
        "batch": None,  # train_step's defaults: 256 (MLP), 32 (transformer)
        "dense_shapes": [list(shape) for shape in DENSE_SHAPES],
        "compare": True,
    }
    if device.accelerated:
        sizes.update(widths=[1024, 4096, 4096, 1024], batch=512)
    if quick:
        sizes.update(rounds=9, steps=5, repeats=9, calls=200, build_rounds=1, compile_rounds=0)
    else:
        sizes.update(rounds=15, steps=20, repeats=15, calls=200, build_rounds=5, compile_rounds=2)
    if device.accelerated:
        sizes["steps"] *= 4  # short steps: more of them per round
    return sizes


def run(device: Any, quick: bool = True, **sizes: Any) -> dict[str, Any]:
    """Measures the four figures (and Keras's and Flax's where installed); a JSON-able dict."""
    from benchmarks import _probe, train_step

    unknown = set(sizes) - set(default_sizes(device, quick))
    if unknown:
        raise TypeError(
            f"run() got unknown sizes {sorted(unknown)}; expected some of {sorted(default_sizes(device, quick))}."
        )
    sizes = {**default_sizes(device, quick), **{key: value for key, value in sizes.items() if value is not None}}
    for key in ("rounds", "steps", "repeats", "calls", "build_rounds", "compile_rounds"):
        least = 0 if key in ("build_rounds", "compile_rounds") else 1
        if not isinstance(sizes[key], int) or sizes[key] < least:
            raise ValueError(f"{key} must be an integer >= {least}, received {sizes[key]!r}.")
    libraries, missing = other_libraries(sizes["compare"])
    dense_extra = {name: (_keras_dense if name == "keras" else _flax_dense)(lib) for name, lib in libraries.items()}
    step_extra = {name: (_keras_step if name == "keras" else _flax_step)(lib) for name, lib in libraries.items()}
    widths = tuple(sizes["widths"])
    result: dict[str, Any] = {
        "quick": quick,
        "sizes": sizes,
        "targets_spec": TARGETS,
        "libraries": {name: importlib.metadata.version(name) for name in libraries},
        "missing": missing,
        "dots": {policy: _dot_sentence(policy) for policy in sizes["policies"]},
        "train_step": [],
        "dense": [],
        "compile": [],
        "build_s": [],
    }
    units = len(sizes["models"]) * len(sizes["policies"]) * 2 + len(sizes["dense_shapes"]) * len(sizes["policies"])
    with _results.progress("overhead", units + (1 if sizes["build_rounds"] else 0)) as bar:
        for model in sizes["models"]:
            for policy in sizes["policies"]:
                extra = step_extra if model == "mlp" else None
                with _full_precision(policy):
                    report = train_step.compare(
                        policy, model, widths=widths, batch=sizes["batch"], rounds=sizes["rounds"],
                        steps=sizes["steps"], extra=extra, aot=True,
                    )  # fmt: skip
                    result["train_step"].append(report)
                    bar.advance(f"compile {model} {policy}")
                    more = compile_times(
                        policy, model, widths=widths, batch=sizes["batch"], extra=extra, rounds=sizes["compile_rounds"]
                    )
                for name in report["variants"]:
                    # The timed run's own first compile, then the extra fresh builds': medians of each stage.
                    taken = [report[f"{name}_stages_s"], *more.get(name, [])]
                    medians = {key: statistics.median(t[key] for t in taken) for key in taken[0]}
                    result["compile"].append(
                        {"model": model, "policy": policy, "variant": name, "samples": len(taken), **medians}
                    )
                bar.advance(f"eager Dense {policy}")
        for rows, features, units_ in sizes["dense_shapes"]:
            for policy in sizes["policies"]:
                with _full_precision(policy):
                    figures = _probe.dense_overhead(
                        policy, rows, features, units_, sizes["repeats"], calls=sizes["calls"], extra=dense_extra
                    )
                result["dense"].append({"shape": [rows, features, units_], "policy": policy, **figures})
                bar.advance()
        if sizes["build_rounds"]:
            result["build_s"] = build_seconds(sizes["build_rounds"])
            bar.advance()
    result["targets"] = targets(result)
    return result


def _dot_sentence(policy: str) -> str:
    import dtypepolicy as dp

    return dp.describe_dot(policy)


# ---------------------------------------------------------------------------------------------
# Targets, tables, plot.


def verdict(measured: float | None, target: float) -> str | None:
    """ "met" when `measured <= target`, "not met" above it, None when nothing was measured.

    >>> verdict(1.01, 1.02), verdict(1.05, 1.02), verdict(None, 1.0)
    ('met', 'not met', None)
    """
    if measured is None:
        return None
    return "met" if measured <= target else "not met"


def _shape_label(shape: list[int]) -> str:
    rows, features, units = shape
    return f"({rows},{features})->{units}"


def _model_label(report: dict[str, Any]) -> str:
    from benchmarks import train_step

    return train_step.label(report)


TARGET_TITLES = {
    "train_step": "jitted train step ≤ 1.02× plain JAX",
    "dense_call": "eager Dense.__call__ ≤ 1.3× the jnp ops",
    "build_s": "build + first call of TransformerBlock(64) ≤ 1 s",
}


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target figure of ours: `{"target": key of TARGETS, "where", "measured", "limit", "met"}`."""
    rows = [
        {"target": "train_step", "where": f"{_model_label(r)} {r['policy']}", "measured": r["ratio"]}
        for r in result["train_step"]
    ]
    rows += [
        {"target": "dense_call", "where": f"{_shape_label(d['shape'])} {d['policy']}", "measured": d["ratio"]}
        for d in result["dense"]
    ]
    build = statistics.median(result["build_s"]) if result["build_s"] else None
    rows.append({"target": "build_s", "where": "TransformerBlock(64), fresh process", "measured": build})
    for row in rows:
        row["limit"] = TARGETS[row["target"]]
        row["met"] = verdict(row["measured"], row["limit"])
    return rows


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """One line per target: met or not, how many figures meet it, and the worst one.

    >>> summary([{"target": "build_s", "where": "here", "measured": 1.5, "limit": 1.0, "met": "not met"}])[-1]
    'build + first call of TransformerBlock(64) ≤ 1 s: not met (0/1; worst 1.50 s, here)'
    """
    lines = []
    for key, title in TARGET_TITLES.items():
        group = [row for row in rows if row["target"] == key and row["met"] is not None]
        if not group:
            lines.append(f"{title}: not measured")
            continue
        worst = max(group, key=lambda row: row["measured"])
        met = sum(row["met"] == "met" for row in group)
        state = "met" if met == len(group) else "not met"
        figure = f"{worst['measured']:.2f} s" if key == "build_s" else f"{worst['measured']:.3f}×"
        lines.append(f"{title}: {state} ({met}/{len(group)}; worst {figure}, {worst['where']})")
    return lines


def _train_rows(result: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for r in result["train_step"]:
        label = _model_label(r)
        for name in r["variants"]:
            if name == "layers":
                ratio, span = r["ratio"], r["ratio_range"]
            elif name == "plain":
                ratio, span = 1.0, None
            else:
                ratio, span = r[f"ratio_{name}"], r[f"ratio_{name}_range"]
            ours = name == "layers"
            rows.append([
                label, r["policy"], _variant_label(name), r[f"{name}_ms"],
                f"{r[f'{name}_range_ms'][0]:.3g}-{r[f'{name}_range_ms'][1]:.3g}", ratio,
                f"{span[0]:.3f}-{span[1]:.3f}" if span else "", r[f"{name}_compile_s"],
                f"≤ {TARGETS['train_step']}" if ours else "", verdict(ratio, TARGETS["train_step"]) if ours else "",
            ])  # fmt: skip
    return rows


def _variant_label(name: str) -> str:
    return {"layers": "layers (ours)", "plain": "plain JAX+optax", "keras": "Keras 3", "flax": "Flax NNX"}.get(
        name, name
    )


def _dense_rows(result: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for d in result["dense"]:
        shape = _shape_label(d["shape"])
        rows.append([shape, d["policy"], "jnp ops", d["ops_us"], 1.0, "", ""])
        if "math_us" in d:
            rows.append(
                [
                    shape,
                    d["policy"],
                    "jnp ops, operands already 16-bit",
                    d["math_us"],
                    d["math_us"] / d["ops_us"],
                    "",
                    "",
                ]
            )
        target = TARGETS["dense_call"]
        rows.append(
            [shape, d["policy"], "layers (ours)", d["layer_us"], d["ratio"], f"≤ {target}", verdict(d["ratio"], target)]
        )
        for name in ("keras", "flax"):
            if f"{name}_us" in d:
                rows.append([shape, d["policy"], _variant_label(name), d[f"{name}_us"], d[f"ratio_{name}"], "", ""])
    return rows


def _compile_rows(result: dict[str, Any]) -> list[list[Any]]:
    plain = {(c["model"], c["policy"]): c for c in result["compile"] if c["variant"] == "plain"}
    rows = []
    for c in result["compile"]:
        total = c["trace_s"] + c["lower_s"] + c["compile_s"]
        base = plain.get((c["model"], c["policy"]))
        base_total = base["trace_s"] + base["lower_s"] + base["compile_s"] if base else None
        rows.append([
            c["model"], c["policy"], _variant_label(c["variant"]), c["trace_s"], c["lower_s"], c["compile_s"], total,
            total / base_total if base_total else None,
        ])  # fmt: skip
    return rows


def render(result: dict[str, Any]) -> str:
    """The four tables, the targets, and what was not compared."""
    sizes = result["sizes"]
    out = []
    if result["missing"]:
        out.append(result["missing"])
    if result["libraries"]:
        out.append("compared with " + ", ".join(f"{n} {v}" for n, v in result["libraries"].items()))
    out.append("products: " + " | ".join(result["dots"].values()))
    out.append("")
    out.append(
        f"Jitted train step vs plain JAX + optax (optax.adam everywhere; medians of {sizes['rounds']} rotating rounds"
        f" of {sizes['steps']} steps; first call = trace + compile + 1 step)"
    )
    headers = ["model", "policy", "variant", "ms/step", "range", "× plain", "ratio range", "first call s", "target", ""]
    out.append(_results.table(headers, _train_rows(result)))
    out.append("")
    out.append(
        f"Eager Dense.__call__ vs the same jnp calls (medians of {sizes['repeats']} rotating rounds of"
        f" {sizes['calls']} calls)"
    )
    headers = ["shape", "policy", "variant", "µs/call", "× jnp ops", "target", ""]
    out.append(_results.table(headers, _dense_rows(result)))
    out.append("")
    samples = (
        f"medians of {1 + sizes['compile_rounds']} fresh builds, the timed run's own and more"
        if sizes["compile_rounds"]
        else "one sample each: the timed run's own compile"
    )
    out.append(f"Train step trace / lowering / compile, seconds (`jax.jit(step).trace().lower().compile()`; {samples})")
    headers = ["model", "policy", "variant", "trace", "lower", "compile", "total", "× plain"]
    out.append(_results.table(headers, _compile_rows(result)))
    out.append("")
    if result["build_s"]:
        build = result["build_s"]
        median = statistics.median(build)
        spread = f" (range {min(build):.2f}-{max(build):.2f} over {len(build)} processes)" if len(build) > 1 else ""
        out.append(
            f"Build + first eager call of TransformerBlock(num_heads=4, key_dim=16, mlp_dim=256) on (2, 16, 64), fresh"
            f" process: {median:.2f} s{spread}; target ≤ {TARGETS['build_s']} s: {verdict(median, TARGETS['build_s'])}"
        )
    else:
        out.append("Build + first call: not measured (build_rounds=0)")
    out.append("")
    out.append("dtypepolicy's targets (ours; Keras and Flax have none):")
    out += ["  " + line for line in summary(result["targets"])]
    return "\n".join(out)


def plot(result: dict[str, Any], out: Path) -> list[Path]:
    """One PNG: train-step and eager-call ratios and the build time, each against its target line."""
    plt = _results.pyplot()
    from matplotlib.ticker import FuncFormatter

    figure, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [3, 3, 1]})
    panels = [
        (axes[0], "jitted train step / plain JAX", TARGETS["train_step"], [
            (f"{_model_label(r).split(' ')[0]} {r['policy']}", {
                name: r["ratio"] if name == "layers" else r[f"ratio_{name}"]
                for name in r["variants"] if name != "plain"
            }) for r in result["train_step"]
        ]),
        (axes[1], "eager Dense call / jnp ops", TARGETS["dense_call"], [
            (f"{_shape_label(d['shape'])} {d['policy']}", {
                name: d["ratio"] if name == "layers" else d[f"ratio_{name}"]
                for name in ("layers", "keras", "flax") if name == "layers" or f"ratio_{name}" in d
            }) for d in result["dense"]
        ]),
    ]  # fmt: skip
    colours = {"layers": "tab:blue", "keras": "tab:red", "flax": "tab:green"}
    for axis, title, target, groups in panels:
        names = [name for name in ("layers", "keras", "flax") if any(name in values for _, values in groups)]
        width = 0.8 / max(len(names), 1)
        for offset, name in enumerate(names):
            xs = [i + offset * width for i, (_, values) in enumerate(groups) if name in values]
            ys = [values[name] for _, values in groups if name in values]
            axis.bar(xs, ys, width, label=_variant_label(name), color=colours[name])
        axis.axhline(target, color="black", linestyle="--", linewidth=1, label=f"target ≤ {target}")
        axis.axhline(1.0, color="grey", linewidth=0.8)
        axis.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(groups))])
        axis.set_xticklabels([label for label, _ in groups], rotation=30, ha="right", fontsize=8)
        values = [v for _, group in groups for v in group.values()]
        if values and max(values) > 4:
            axis.set_yscale("log")
            plain_numbers = FuncFormatter(lambda value, _: f"{value:g}")
            axis.yaxis.set_major_formatter(plain_numbers)
            axis.yaxis.set_minor_formatter(plain_numbers)
        axis.set_title(title)
        axis.set_ylabel("ratio (lower is better)")
        axis.legend(fontsize=8)
    build = result["build_s"]
    axes[2].bar([0], [statistics.median(build) if build else 0.0], 0.5, color="tab:blue")
    axes[2].axhline(
        TARGETS["build_s"], color="black", linestyle="--", linewidth=1, label=f"target ≤ {TARGETS['build_s']} s"
    )
    axes[2].set_xticks([0])
    axes[2].set_xticklabels(["TransformerBlock(64)" if build else "not measured"], fontsize=8)
    axes[2].set_title("build + first call")
    axes[2].set_ylabel("seconds")
    axes[2].set_ylim(0, max(1.25 * TARGETS["build_s"], 1.1 * max(build, default=0.0)))
    axes[2].legend(fontsize=8, loc="upper left")
    figure.suptitle("dtypepolicy overhead vs its targets" + (" (quick)" if result["quick"] else ""))
    return [_results.save_figure(figure, out, NAME)]


# ---------------------------------------------------------------------------------------------
# Command line.


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, received {text!r}") from None


def _shapes(text: str) -> list[list[int]]:
    try:
        shapes = [[int(n) for n in part.split("x")] for part in text.split(",")]
    except ValueError:
        shapes = []
    if not shapes or any(len(shape) != 3 for shape in shapes):
        raise argparse.ArgumentTypeError(f"expected ROWSxFEATURESxUNITS[,...], e.g. 8x64x64, received {text!r}")
    return shapes


def _names(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = text.split(",")
        wrong = [name for name in names if name not in allowed]
        if wrong:
            raise argparse.ArgumentTypeError(f"expected some of {','.join(allowed)}, received {text!r}")
        return names

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--quick`, the sizes and repeat counts (default: by device), and `--no-compare`."""
    parser.add_argument("--quick", action="store_true", help="the short run of `report` / `make demo`")
    parser.add_argument("--models", type=_names(MODELS), help="comma-separated, default mlp,transformer")
    parser.add_argument("--policies", type=_names(POLICIES), help="comma-separated, default float32,mixed_bfloat16")
    parser.add_argument("--widths", type=_ints, help="MLP widths, input first (CPU default 256,512,512,10)")
    parser.add_argument(
        "--batch", type=_results.positive_int, help="train-step batch (default 256 MLP, 32 transformer)"
    )
    parser.add_argument(
        "--dense-shapes", type=_shapes, help="eager Dense shapes, default 8x64x64,32x256x256,64x512x256"
    )
    parser.add_argument("--rounds", type=_results.positive_int, help="interleaved train-step rounds")
    parser.add_argument("--steps", type=_results.positive_int, help="train steps per round")
    parser.add_argument("--repeats", type=_results.positive_int, help="eager rounds")
    parser.add_argument("--calls", type=_results.positive_int, help="eager calls per round")
    parser.add_argument("--build-rounds", type=int, help="fresh processes timing the build (0: skip)")
    parser.add_argument(
        "--compile-rounds", type=int, help="fresh builds timing trace/lower/compile, beyond the timed run's own"
    )
    parser.add_argument("--no-compare", action="store_true", help="leave Keras and Flax out even when installed")


def main(options: argparse.Namespace) -> int:
    """Runs, prints the tables, writes overhead.json and overhead.png; 0 (targets missed are reported, not failed)."""
    device = _device.detect()
    keys = ("models", "policies", "widths", "batch", "dense_shapes", "rounds", "steps", "repeats", "calls")
    sizes = {key: getattr(options, key) for key in (*keys, "build_rounds", "compile_rounds")}
    sizes = {key: value for key, value in sizes.items() if value is not None}
    if options.no_compare:
        sizes["compare"] = False
    start = time.perf_counter()
    result = run(device, quick=options.quick, **sizes)
    result["wall_s"] = time.perf_counter() - start
    print(f"device: {device.kind} ({device.host}); load average {os.getloadavg()[0]:.2f}")
    print(render(result))
    print(f"wall time {result['wall_s']:.1f} s")
    written = [_results.write_json(options.out, NAME, {**_results.environment(device), **result})]
    written += plot(result, options.out)
    for path in written:
        print(f"wrote {path}")
    return 0
