"""Train-step throughput of an MLP and a TransformerBlock classifier under each policy.

`python -m benchmarks throughput [--quick]` trains both models with `layers.training.make_train_step`
(Adam, sparse categorical cross-entropy from logits; mixed_float16 goes through the loss scaling
the step turns on for float16) under float32, mixed_bfloat16, mixed_float16 and both float8
recipes (delayed: float8_from_mixed_bfloat16; current: float8_current_from_mixed_bfloat16).

Per model, each policy's step is compiled and run once (the "first call": trace + compile + one
step, reported separately), then the policies run in rounds, `steps` steps each, in an order that
rotates between rounds (`_mlp_steps.step_times`). The table gives the median ms/step with the
per-round range, samples/s, the achieved TFLOP/s of the model's matmul FLOPs (`_flops`: forward,
input and weight gradients, the MLP's first input gradient left out), the step time against
float32 and, on a GPU in the peak table, the MFU against the dense peak of the policy's compute
dtype (float8 policies against the float8 peak, though their attention products stay bf16).

Float32 means float32: the float32 policy's products run at `Precision.HIGHEST` (no TF32). On a
CPU float8 is emulated: quantize-dequantize around bf16 products, extra work a GPU folds into
float8 GEMMs. The sizes grow with the device: small on a CPU, hidden 8192 / width 2048 on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _device, _flops, _results
from benchmarks._mlp_steps import cpu_bf16_formulation, step_times

NAME = "throughput"
POLICIES = (
    "float32",
    "mixed_bfloat16",
    "mixed_float16",
    "float8_from_mixed_bfloat16",
    "float8_current_from_mixed_bfloat16",
)
MODELS = ("mlp", "transformer")
# A variant that is a policy traced under one CPU formulation of its bf16 products: what a CPU
# without fast bf16 units runs (bf16 operands converted to float32 for a float32 dot).
UPCAST = "mixed_bfloat16:upcast"
# The dtype whose peak a policy's matmuls are measured against.
PEAK_DTYPE = {
    "float32": "float32",
    "mixed_bfloat16": "bfloat16",
    "mixed_float16": "float16",
    "float8_from_mixed_bfloat16": "float8",
    "float8_current_from_mixed_bfloat16": "float8",
    UPCAST: "bfloat16",
}
SHORT = {
    "float32": "float32",
    "mixed_bfloat16": "bf16",
    "mixed_float16": "f16",
    "float8_from_mixed_bfloat16": "f8 delayed",
    "float8_current_from_mixed_bfloat16": "f8 current",
    UPCAST: "bf16 upcast",
}


def default_policies(device: _device.Device) -> tuple[str, ...]:
    """The five policies, and on a CPU also mixed_bfloat16 with its products upcast to float32."""
    return POLICIES if device.platform != "cpu" else (*POLICIES[:2], UPCAST, *POLICIES[2:])


def _check_policies(policies: tuple[str, ...]) -> None:
    """Each name a policy, optionally with a CPU formulation of its bf16 products (":native", ":upcast")."""
    import dtypepolicy as dp

    if not policies:
        raise ValueError("policies: expected at least one policy name, received none.")
    for variant in policies:
        name, _, formulation = variant.partition(":")
        if formulation not in ("", "native", "upcast"):
            raise ValueError(
                f"policies: {variant!r} names the formulation {formulation!r}; expected 'native' or 'upcast' "
                f"after the colon (as in {UPCAST!r})."
            )
        try:
            dp.get(name)
        except (TypeError, ValueError) as error:
            raise ValueError(f"policies: {error}") from None


@contextlib.contextmanager
def _formulation_of(variant: str) -> Iterator[str]:
    """Traces a variant "policy:formulation" under that CPU formulation (the override); yields the policy."""
    policy, _, formulation = variant.partition(":")
    with cpu_bf16_formulation(formulation):
        yield policy


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Model sizes and timing effort of one run."""

    mlp: dict[str, int]  # width, depth, batch (classes 10)
    transformer: dict[str, int]  # batch, time, width, num_heads, key_dim, mlp_dim, classes
    rounds: int
    round_s: float  # the target duration of one variant's steps in a round


def sizes(device: _device.Device, quick: bool) -> Sizes:
    """The sizes for this device: CPU quick (~30 s for everything), CPU full, GPU quick, GPU full."""
    if not device.accelerated:
        if quick:
            return Sizes(
                {"width": 512, "depth": 4, "batch": 128},
                {"batch": 8, "time": 64, "width": 128, "num_heads": 4, "key_dim": 32, "mlp_dim": 512, "classes": 10},
                rounds=3,
                round_s=0.1,
            )
        return Sizes(
            {"width": 1024, "depth": 4, "batch": 256},
            {"batch": 16, "time": 128, "width": 256, "num_heads": 4, "key_dim": 64, "mlp_dim": 1024, "classes": 10},
            rounds=7,
            round_s=0.5,
        )
    if quick:
        return Sizes(
            {"width": 4096, "depth": 4, "batch": 1024},
            {"batch": 8, "time": 512, "width": 1024, "num_heads": 8, "key_dim": 128, "mlp_dim": 4096, "classes": 10},
            rounds=5,
            round_s=0.2,
        )
    return Sizes(
        {"width": 8192, "depth": 4, "batch": 1024},
        {"batch": 8, "time": 1024, "width": 2048, "num_heads": 16, "key_dim": 128, "mlp_dim": 8192, "classes": 10},
        rounds=10,
        round_s=0.5,
    )


def _mlp_widths(dims: dict[str, int]) -> tuple[int, ...]:
    return (dims["width"],) * (dims["depth"] + 1) + (dims.get("classes", 10),)


def products(model: str, dims: dict[str, int]) -> list[_flops.Product]:
    """The matmul products of one model at its sizes."""
    if model == "mlp":
        return _flops.mlp_products(_mlp_widths(dims), dims["batch"])
    return _flops.transformer_products(**dims)


def label(model: str, dims: dict[str, int]) -> str:
    """A short name of the model and its sizes."""
    if model == "mlp":
        return f"MLP {dims['depth']}x{dims['width']} + {dims.get('classes', 10)}, batch {dims['batch']}"
    return (
        f"TransformerBlock w{dims['width']} ({dims['num_heads']}x{dims['key_dim']}) mlp {dims['mlp_dim']}, "
        f"seq {dims['time']}, batch {dims['batch']}"
    )


def _model(policy: str, model: str, dims: dict[str, int]) -> Any:
    import layers
    from benchmarks.train_step import _transformer_classifier

    if model == "transformer":
        return _transformer_classifier(policy, dims)
    hidden = [layers.Dense(dims["width"], activation="relu", name=f"dense_{i}") for i in range(dims["depth"])]
    return layers.Sequential([*hidden, layers.Dense(dims.get("classes", 10), name="head")], dtype=policy)


def _data(model: str, dims: dict[str, int]) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(0)
    shape = (dims["batch"], dims["width"]) if model == "mlp" else (dims["batch"], dims["time"], dims["width"])
    x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    y = jnp.asarray(rng.integers(0, dims.get("classes", 10), size=(dims["batch"],)).astype(np.int32))
    return x, y


def build(policy: str, model: str, dims: dict[str, int], data: tuple) -> tuple[tuple, float]:
    """`((step, state, batch), first_call_s)`: the model's train step, compiled and run once."""
    from layers import losses, optimizers, training

    with _formulation_of(policy) as policy_name:
        network = _model(policy_name, model, dims)
        network(data[0][:1])
        step = training.make_train_step(
            network, losses.SparseCategoricalCrossentropy(from_logits=True), optimizers.Adam(1e-3)
        )
        state = step.init_state()
        start = time.perf_counter()
        # Traced here, so the variant's formulation is the one compiled (later calls reuse it).
        state, _ = step.jitted(state, data)
        jax.block_until_ready(state)
    return (step, state, data), time.perf_counter() - start


def _warm_step_s(variant: tuple) -> tuple[tuple, float]:
    step, state, data = variant
    start = time.perf_counter()
    state, _ = step.jitted(state, data)
    jax.block_until_ready(state)
    return (step, state, data), time.perf_counter() - start


def _measure_model(
    model: str, dims: dict[str, int], policies: tuple[str, ...], sizing: Sizes, steps: int | None, bar: Any
) -> tuple[dict[str, list[float]], dict[str, float], int]:
    data = _data(model, dims)
    variants, first_call = {}, {}
    for policy in policies:
        variants[policy], first_call[policy] = build(policy, model, dims, data)
        bar.advance(f"{model} {SHORT.get(policy, policy)} compiled")
    if steps is None:
        warm = {}
        for policy in policies:
            variants[policy], warm[policy] = _warm_step_s(variants[policy])
        # The median variant's steps fill about `round_s` of each round.
        steps = max(1, min(500, math.ceil(sizing.round_s / max(statistics.median(warm.values()), 1e-6))))
    times = step_times(variants, sizing.rounds, steps)
    bar.advance(f"{model} timed")
    return times, first_call, steps


def run(
    device: _device.Device,
    quick: bool = True,
    *,
    models: tuple[str, ...] = MODELS,
    policies: tuple[str, ...] | None = None,
    mlp: dict[str, int] | None = None,
    transformer: dict[str, int] | None = None,
    rounds: int | None = None,
    steps: int | None = None,
) -> dict[str, Any]:
    """Times each model's train step under each policy; returns the JSON-able result.

    Args:
      device: where it runs (`_device.detect()`).
      quick: the short, report-sized run.
      models: of "mlp", "transformer".
      policies: policy names; "float32" gives the reference of the ratios. A name may carry a CPU
        formulation of its bf16 products, "mixed_bfloat16:upcast". Default: `default_policies(device)`.
      mlp, transformer: sizes replacing the device's defaults (keys as in `sizes`).
      rounds, steps: rounds, and steps per variant per round (default: enough for the round target).
    """
    for model in models:
        if model not in MODELS:
            raise ValueError(f"models must be among {MODELS}, received {model!r}.")
    policies = default_policies(device) if policies is None else tuple(policies)
    _check_policies(policies)
    sizing = sizes(device, quick)
    dims = {"mlp": {**sizing.mlp, **(mlp or {})}, "transformer": {**sizing.transformer, **(transformer or {})}}
    if rounds is not None:
        sizing = dataclasses.replace(sizing, rounds=rounds)
    started, load_before = time.perf_counter(), _results.load_average()
    result: dict[str, Any] = {
        "benchmark": NAME,
        "quick": quick,
        "platform": device.platform,
        "device_kind": device.kind,
        "rounds": sizing.rounds,
        "policies": list(policies),
        "formulations": {policy: _describe(policy) for policy in policies},
        "models": {},
        "rows": [],
    }
    with _results.progress("throughput", len(models) * (len(policies) + 1)) as bar:
        for model in models:
            model_dims = dims[model]
            counted = products(model, model_dims)
            times, first_call, model_steps = _measure_model(model, model_dims, policies, sizing, steps, bar)
            train = _flops.train_flops(counted)
            result["models"][model] = {
                "label": label(model, model_dims),
                "dims": model_dims,
                "forward_flops": _flops.forward_flops(counted),
                "train_flops": train,
                "steps_per_round": model_steps,
            }
            result["rows"] += _rows(model, model_dims["batch"], train, times, first_call, device)
    result["load_average"] = [load_before, _results.load_average()]
    result["cpu_count"] = os.cpu_count()
    result["wall_s"] = time.perf_counter() - started
    result["closing"] = closing_lines(result)
    return result


def _describe(policy: str) -> str:
    import dtypepolicy as dp

    with _formulation_of(policy) as policy_name:
        text = dp.describe_dot(policy_name)
    if PEAK_DTYPE.get(policy) == "float8":
        text += " Projections: E4M3 inputs and kernels, E5M2 output gradients, quantize-dequantize before it."
    return text


def _rows(
    model: str, batch: int, train: int, times: dict[str, list[float]], first_call: dict[str, float], device: Any
) -> list[dict[str, Any]]:
    reference = times.get("float32")
    base = statistics.median(reference) if reference else None
    rows = []
    for policy, values in times.items():
        ms = statistics.median(values)
        tflops = train / (ms * 1e-3) / 1e12
        row = {
            "model": model,
            "policy": policy,
            "ms_per_step": ms,
            "range_ms": [min(values), max(values)],
            "samples_per_s": batch / (ms * 1e-3),
            "tflops": tflops,
            "ratio_to_float32": None,
            "ratio_range": None,
            "speedup_vs_float32": None,
            "mfu": _device.mfu(tflops, device.kind, PEAK_DTYPE.get(policy, "float32")),
            "peak_dtype": PEAK_DTYPE.get(policy),
            "first_call_s": first_call[policy],
        }
        if base is not None:
            per_round = [ours / theirs for ours, theirs in zip(values, reference, strict=True)]
            row.update(
                ratio_to_float32=ms / base, ratio_range=[min(per_round), max(per_round)], speedup_vs_float32=base / ms
            )
        rows.append(row)
    return rows


def _why_slower(policy: str, platform: str, formulation: str) -> str:
    """Why a policy can be slower than float32 here, in one sentence."""
    kind = PEAK_DTYPE.get(policy)
    if platform == "cpu":
        if kind == "float8":
            return (
                "float8 is emulated on a CPU: every quantize-dequantize (amax, scale, cast) is extra elementwise "
                "work around ordinary bf16 products, with no float8 units to repay it"
            )
        if kind == "float16":
            return (
                "a CPU has no float16 dot: the products are float32 dots on float16-rounded operands, plus the "
                "casts and the loss scaling"
            )
        if policy == UPCAST:
            return (
                "its bf16 operands are converted to float32 for float32 dots (what a CPU without fast bf16 units "
                "runs), so the casts come on top of float32 speed"
            )
        if kind == "bfloat16" and "native" not in formulation:
            return (
                "this CPU has no fast bf16 units, so the bf16 operands go through float32 dots and the casts come "
                "on top"
            )
        if kind == "bfloat16":
            return (
                "the casts to bf16, and the products XLA keeps on its float32 path on CPU, cost more than the native "
                "bf16 dots save at this size"
            )
    if kind == "float8":
        return "the quantization is not paid back at these sizes, or the float8 GEMM rewrite did not fire"
    return "at these sizes the step is not bound by its matrix products"


def closing_lines(result: dict[str, Any]) -> list[str]:
    """Which policy is fastest per model and by how much against float32; which are slower, and why."""
    platform = result["platform"]
    where = "this CPU" if platform == "cpu" else f"this {result['device_kind']}"
    lines, slower_policies = [], []
    for model in result["models"]:
        rows = [row for row in result["rows"] if row["model"] == model]
        if not rows:
            continue
        name = "MLP" if model == "mlp" else "transformer"
        fastest = min(rows, key=lambda row: row["ms_per_step"])
        reference = next((row for row in rows if row["policy"] == "float32"), None)
        if reference is None:
            lines.append(f"Fastest {name} step on {where}: {fastest['policy']} (no float32 row to compare with).")
            continue
        if fastest["policy"] == "float32":
            lines.append(f"Fastest {name} step on {where}: float32; every other policy is slower here.")
        else:
            lines.append(
                f"Fastest {name} step on {where}: {fastest['policy']}, {fastest['speedup_vs_float32']:.2f}x faster "
                f"than float32 ({_results.ms_text(fastest['ms_per_step'])} ms against "
                f"{_results.ms_text(reference['ms_per_step'])} ms per step)."
            )
        slower = [row for row in rows if row["policy"] != "float32" and row["ratio_to_float32"] > 1]
        if slower:
            listed = ", ".join(f"{row['policy']} {row['ratio_to_float32']:.2f}x the time" for row in slower)
            lines.append(f"  Slower than float32 for the {name}: {listed}.")
            slower_policies += [row["policy"] for row in slower if row["policy"] not in slower_policies]
    reasons: dict[str, list[str]] = {}
    for policy in slower_policies:
        reason = _why_slower(policy, platform, result["formulations"].get(policy, ""))
        reasons.setdefault(reason, []).append(policy)
    for reason, policies in reasons.items():
        lines.append(f"  Why {', '.join(policies)}: {reason}.")
    busy = _busy(result.get("load_average"), result.get("cpu_count"))
    if busy:
        lines.append(busy)
    return lines


def _busy(load_average: list[float | None] | None, cpu_count: int | None) -> str | None:
    """A warning when other work competed for the CPUs during the run (its ratios are then noisy)."""
    loads = [load for load in load_average or [] if load is not None]
    if not loads or not cpu_count or max(loads) <= cpu_count:
        return None
    return (
        f"  The load average reached {max(loads):.1f} on {cpu_count} CPUs during this run: other work competed for "
        "them, so these ratios are noisy. Rerun on an idle machine before drawing conclusions."
    )


def _percent(value: float | None) -> str:
    return "unknown" if value is None else f"{100 * value:.1f}%"


def render(result: dict[str, Any]) -> str:
    """The text tables: one per model, then the formulations and the closing lines."""
    out = [
        f"Train-step throughput (make_train_step, Adam) on {result['device_kind']} ({result['platform']}); "
        f"medians of {result['rounds']} rotating rounds; load average {_results.load_text(result['load_average'])}"
    ]
    headers = ["policy", "ms/step", "range ms", "samples/s", "TFLOP/s", "time/f32", "speedup", "MFU", "1st call s"]
    for model, info in result["models"].items():
        out.append("")
        out.append(
            f"{info['label']}: {info['train_flops'] / 1e9:.3g} GFLOP/step (matmuls: forward + gradients), "
            f"{info['steps_per_round']} steps per round"
        )
        rows = [
            [
                row["policy"],
                row["ms_per_step"],
                f"{row['range_ms'][0]:.3g}-{row['range_ms'][1]:.3g}",
                row["samples_per_s"],
                row["tflops"],
                row["ratio_to_float32"],
                row["speedup_vs_float32"],
                _percent(row["mfu"]),
                row["first_call_s"],
            ]
            for row in result["rows"]
            if row["model"] == model
        ]
        out.append(_results.table(headers, rows))
    out.append("")
    out.append("Products (dp.describe_dot):")
    out += [f"  {policy}: {text}" for policy, text in result["formulations"].items()]
    if result["platform"] == "cpu":
        out.append("  MFU is unknown on a CPU (no peak table entry); float8 is emulated here.")
    out.append("")
    out += result["closing"]
    return "\n".join(out)


def plot(result: dict[str, Any], out: Path) -> list[Path]:
    """One PNG: samples/s relative to float32, by model and policy, the samples/s written on each bar."""
    plt = _results.pyplot()
    models = list(result["models"])
    policies = result["policies"]
    figure, axis = plt.subplots(figsize=(max(6.0, 2.2 * len(models) * len(policies) / 3), 4.2))
    width = 0.8 / max(len(policies), 1)
    for index, policy in enumerate(policies):
        heights, labels = [], []
        for model in models:
            row = next((r for r in result["rows"] if r["model"] == model and r["policy"] == policy), None)
            heights.append(0.0 if row is None or row["speedup_vs_float32"] is None else row["speedup_vs_float32"])
            labels.append("" if row is None else f"{row['samples_per_s']:,.0f}")
        positions = [m + (index - (len(policies) - 1) / 2) * width for m in range(len(models))]
        bars = axis.bar(positions, heights, width, label=policy)
        axis.bar_label(bars, labels=labels, fontsize=7, rotation=90, padding=2)
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_xticks(range(len(models)), [result["models"][m]["label"] for m in models], fontsize=7)
    axis.set_ylabel("samples/s relative to float32")
    axis.set_title(f"Train-step throughput on {result['device_kind']} (bar labels: samples/s)", fontsize=9)
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    axis.margins(y=0.3)
    return [_results.save_figure(figure, out, NAME)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--quick, the models and policies, and the sizes."""
    parser.add_argument("--quick", action="store_true", help="the short, report-sized run")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of %(default)s")
    parser.add_argument(
        "--policies",
        default=None,
        help=f"comma-separated policy names (default: {','.join(POLICIES)}; on a CPU also {UPCAST})",
    )
    parser.add_argument(
        "--rounds", type=_results.positive_int, default=None, help="rotating rounds (default: by device)"
    )
    parser.add_argument(
        "--steps", type=_results.positive_int, default=None, help="steps per variant per round (default: ~round target)"
    )
    parser.add_argument("--mlp-width", type=_results.positive_int, default=None)
    parser.add_argument("--mlp-depth", type=_results.positive_int, default=None)
    parser.add_argument("--mlp-batch", type=_results.positive_int, default=None)
    parser.add_argument(
        "--width", type=_results.positive_int, default=None, help="transformer width (= heads x key_dim)"
    )
    parser.add_argument("--heads", type=_results.positive_int, default=None, help="transformer heads")
    parser.add_argument("--seq", type=_results.positive_int, default=None, help="transformer sequence length")
    parser.add_argument("--batch", type=_results.positive_int, default=None, help="transformer batch")


def _overrides(options: argparse.Namespace) -> tuple[dict[str, int], dict[str, int]]:
    mlp = {"width": options.mlp_width, "depth": options.mlp_depth, "batch": options.mlp_batch}
    transformer = {"width": options.width, "num_heads": options.heads, "time": options.seq, "batch": options.batch}
    mlp = {key: value for key, value in mlp.items() if value is not None}
    transformer = {key: value for key, value in transformer.items() if value is not None}
    if "width" in transformer or "num_heads" in transformer:
        base = sizes(_device.detect(), options.quick).transformer
        width, heads = transformer.get("width", base["width"]), transformer.get("num_heads", base["num_heads"])
        if width % heads:
            raise ValueError(f"--width must be a multiple of --heads, received width {width} and {heads} heads.")
        transformer.update(width=width, num_heads=heads, key_dim=width // heads, mlp_dim=4 * width)
    return mlp, transformer


def main(options: argparse.Namespace) -> int:
    """Runs, prints the tables, writes the JSON and the PNG."""
    device = _device.detect()
    mlp, transformer = _overrides(options)
    result = run(
        device,
        quick=options.quick,
        models=tuple(options.models.split(",")),
        policies=None if options.policies is None else tuple(options.policies.split(",")),
        mlp=mlp,
        transformer=transformer,
        rounds=options.rounds,
        steps=options.steps,
    )
    print(render(result))
    written = [_results.write_json(options.out, NAME, {**_results.environment(device), **result})]
    written += plot(result, options.out)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0
