"""The matrix products of one transformer layer in each policy, with and without the float8 quantization cost.

`python -m benchmarks gemm [--quick]` times, as Transformer Engine's GEMM benchmark does, the
forward (`Y = X·W`), input-gradient (`dX = dY·Wᵀ`) and weight-gradient (`dW = Xᵀ·dY`) products
of the fused QKV projection, the attention output, FFN up and FFN down, on `tokens` rows
(hidden 4096, FFN 16384, 8192 tokens on a GPU; scaled down on a CPU). Each product runs in:

- `float32`: the float32 policy's product (`F32_F32_F32`: `Precision.HIGHEST` on GPU, no TF32);
- `bfloat16`, `float16`: 16-bit operands accumulated in float32 (`BF16_BF16_F32`, `F16_F16_F32`),
  through the engine's `product_accumulated`, so the formulation is the one layers run here;
- `float8`: the float8 products on pre-quantized operands (E4M3 inputs and kernels, E5M2 output
  gradients, stored as float8 with a scale): the timed call dequantizes (convert + scale
  multiply) and multiplies, the pattern XLA's GPU GEMM rewriter turns into one float8 matmul;
- `float8 + quantize`: the same products from bf16 operands, with the quantization inside the
  timed call: each operand's amax, its scale and its cast (current scaling, as the engine's
  `float8_current` recipe computes them), then the product.

The float8 forward accumulates in float32 and its gradient products return bf16, as the engine's
float8 projection does. In a train step the forward's quantized input and kernel are reused by
the backward, so a step pays fewer casts than the sum of the `float8 + quantize` rows.

Variants run in rounds whose order rotates, per product; the tables give the median ms per
product, TFLOP/s (`2·M·N·K` per product), MFU on a GPU in the peak table, and a summary over the
layer's 12 products. On a CPU float8 is emulated (no float8 units): its rows measure the
emulation, not what a GPU does.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import statistics
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _device, _flops, _results

NAME = "gemm"
VARIANTS = ("float32", "bfloat16", "float16", "float8", "float8 + quantize")
PASSES = ("fwd", "dgrad", "wgrad")
# The einsum of each pass of a projection `(tokens, in) @ (in, out)`.
EQUATIONS = {"fwd": "ti,io->to", "dgrad": "to,io->ti", "wgrad": "ti,to->io"}
# Which operands a pass multiplies (X: input, W: kernel, G: output gradient).
OPERANDS = {"fwd": ("x", "w"), "dgrad": ("g", "w"), "wgrad": ("x", "g")}
E4M3, E5M2 = "float8_e4m3fn", "float8_e5m2"
FLOAT8_FORMAT = {"x": E4M3, "w": E4M3, "g": E5M2}
PEAK_DTYPE = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "float8": "float8"}
PEAK_DTYPE["float8 + quantize"] = "float8"
ALGORITHM = {"float32": "F32_F32_F32", "bfloat16": "BF16_BF16_F32", "float16": "F16_F16_F32"}
POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
COMPUTE = "bfloat16"  # the float8 policies' compute dtype


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The layer's sizes and the timing effort."""

    tokens: int
    hidden: int
    ffn: int
    rounds: int
    round_s: float  # the target duration of one variant's calls in a round


def sizes(device: _device.Device, quick: bool) -> Sizes:
    """Hidden 4096 / FFN 16384 on a GPU (8192 tokens, 4096 quick); 512 / 2048 (quick) or 1024 / 4096 on a CPU."""
    if device.accelerated:
        return Sizes(4096 if quick else 8192, 4096, 16384, rounds=5 if quick else 10, round_s=0.05 if quick else 0.2)
    if quick:
        return Sizes(1024, 512, 2048, rounds=3, round_s=0.04)
    return Sizes(2048, 1024, 4096, rounds=5, round_s=0.2)


def pass_shape(product: _flops.Product, which: str) -> tuple[int, int, int]:
    """`(M, K, N)` of one pass of a projection with `tokens = product.m`, `in = product.k`, `out = product.n`.

    Example:
      >>> [pass_shape(_flops.Product("p", 8, 4, 12), which) for which in PASSES]
      [(8, 4, 12), (8, 12, 4), (4, 8, 12)]
    """
    tokens, fan_in, fan_out = product.m, product.k, product.n
    return {"fwd": (tokens, fan_in, fan_out), "dgrad": (tokens, fan_out, fan_in), "wgrad": (fan_in, tokens, fan_out)}[
        which
    ]


def _codes(x: jax.Array, fmt: str) -> tuple[jax.Array, jax.Array]:
    """`x` as float8 codes and the current-scaling scale (the engine's), outside any timed call."""
    from dtypepolicy import float8 as f8
    from dtypepolicy.quantization._float8 import _current_scale

    limit = f8.E4M3_MAX if fmt == E4M3 else f8.E5M2_MAX
    scale = _current_scale(x, limit, 0)
    wide = x.astype(jnp.float32)
    return jnp.clip(wide / scale, -limit, limit).astype(fmt), scale


@functools.cache
def _functions(which: str) -> dict[str, Callable[..., jax.Array]]:
    """The timed function of each variant for one pass, jitted once (products of equal shapes share a compile)."""
    from dtypepolicy import float8 as f8
    from dtypepolicy._numerics import product_accumulated
    from dtypepolicy.quantization import Contraction
    from dtypepolicy.quantization._float8 import _current_scale

    equation = EQUATIONS[which]
    contraction = Contraction(equation)
    # The engine's float8 forward accumulates in float32; its gradient products return the compute dtype.
    accumulation = "float32" if which == "fwd" else COMPUTE
    formats = [FLOAT8_FORMAT[name] for name in OPERANDS[which]]

    def plain(algorithm: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
        return lambda a, b: product_accumulated(equation, a, b, algorithm)

    def dequantized(a_codes, a_scale, b_codes, b_scale):
        # The last step of quantize_dequantize: the codes in the compute dtype times the scale.
        a = a_codes.astype(COMPUTE) * a_scale.astype(COMPUTE)
        b = b_codes.astype(COMPUTE) * b_scale.astype(COMPUTE)
        return contraction(a, b, accumulation)

    def quantized(a, b):
        limits = [f8.E4M3_MAX if fmt == E4M3 else f8.E5M2_MAX for fmt in formats]
        a_hat = f8.quantize_dequantize(a, _current_scale(a, limits[0], 0), formats[0], COMPUTE)
        b_hat = f8.quantize_dequantize(b, _current_scale(b, limits[1], 0), formats[1], COMPUTE)
        return contraction(a_hat, b_hat, accumulation)

    functions = {name: plain(ALGORITHM[name]) for name in ("float32", "bfloat16", "float16")}
    functions["float8"] = dequantized
    functions["float8 + quantize"] = quantized
    return {name: jax.jit(function) for name, function in functions.items()}


def _operands(product: _flops.Product, which: str, variants: tuple[str, ...], seed: int) -> dict[str, tuple]:
    """Each variant's arguments for one pass, on the device, made outside the timed calls."""
    rng = np.random.default_rng(seed)
    tokens, fan_in, fan_out = product.m, product.k, product.n
    shapes = {"x": (tokens, fan_in), "w": (fan_in, fan_out), "g": (tokens, fan_out)}
    scales = {"x": 1.0, "w": fan_in**-0.5, "g": 1e-3}  # activations, initialized weights, small gradients
    raw = {name: jnp.asarray((rng.standard_normal(shapes[name]) * scales[name]).astype(np.float32)) for name in shapes}
    a, b = (raw[name] for name in OPERANDS[which])
    arguments: dict[str, tuple] = {}
    for variant in variants:
        if variant == "float32":
            arguments[variant] = (a, b)
        elif variant in ("bfloat16", "float16"):
            arguments[variant] = (a.astype(variant), b.astype(variant))
        elif variant == "float8":
            a_codes, a_scale = _codes(a.astype(COMPUTE), FLOAT8_FORMAT[OPERANDS[which][0]])
            b_codes, b_scale = _codes(b.astype(COMPUTE), FLOAT8_FORMAT[OPERANDS[which][1]])
            arguments[variant] = (a_codes, a_scale, b_codes, b_scale)
        else:
            arguments[variant] = (a.astype(COMPUTE), b.astype(COMPUTE))
    return jax.block_until_ready(arguments)


def _float8_gemm(function: Callable[..., Any], arguments: tuple, platform: str) -> bool | None:
    """On a GPU, whether XLA compiled the product into a float8 cuBLASLt matmul; None elsewhere."""
    if platform != "gpu":
        return None
    text = function.lower(*arguments).compile().as_text()
    return "__cublas$lt$matmul$f8" in text


def _rotating(calls: dict[str, Callable[[], Any]], rounds: int, repeats: int) -> dict[str, list[float]]:
    """ms per call of each variant per round; the variants' order rotates between rounds."""
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            call = calls[name]
            start = time.perf_counter()
            for _ in range(repeats):
                result = call()
            jax.block_until_ready(result)
            times[name].append((time.perf_counter() - start) / repeats * 1e3)
    return times


def _time_pass(
    product: _flops.Product, which: str, variants: tuple[str, ...], sizing: Sizes, repeats: int | None, platform: str
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, bool | None], int]:
    functions = _functions(which)
    arguments = _operands(product, which, variants, seed=zlib.crc32(f"{product.name} {which}".encode()))
    first_call, float8_gemm, warm = {}, {}, {}
    for variant in variants:
        function, args = functions[variant], arguments[variant]
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        first_call[variant] = time.perf_counter() - start
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        warm[variant] = time.perf_counter() - start
        float8_gemm[variant] = _float8_gemm(function, args, platform) if variant.startswith("float8") else None
    if repeats is None:
        repeats = max(1, min(1000, math.ceil(sizing.round_s / max(statistics.median(warm.values()), 1e-7))))
    calls = {variant: (lambda f=functions[variant], a=arguments[variant]: f(*a)) for variant in variants}
    return _rotating(calls, sizing.rounds, repeats), first_call, float8_gemm, repeats


def run(
    device: _device.Device,
    quick: bool = True,
    *,
    variants: tuple[str, ...] = VARIANTS,
    tokens: int | None = None,
    hidden: int | None = None,
    ffn: int | None = None,
    rounds: int | None = None,
    repeats: int | None = None,
) -> dict[str, Any]:
    """Times every product of one layer in every variant; returns the JSON-able result.

    Args:
      device: where it runs.
      quick: the short, report-sized run.
      variants: of `VARIANTS`; "float32" gives the reference of the ratios.
      tokens, hidden, ffn: sizes replacing the device's defaults.
      rounds, repeats: rotating rounds, and calls per variant per round (default: the round target).
    """
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"variants must be among {VARIANTS}, received {variant!r}.")
    sizing = sizes(device, quick)
    sizing = dataclasses.replace(
        sizing,
        tokens=tokens or sizing.tokens,
        hidden=hidden or sizing.hidden,
        ffn=ffn or sizing.ffn,
        rounds=rounds or sizing.rounds,
    )
    started, load_before = time.perf_counter(), _results.load_average()
    layer = _flops.layer_products(sizing.tokens, sizing.hidden, sizing.ffn)
    rows: list[dict[str, Any]] = []
    with _results.progress("gemm", len(layer) * len(PASSES)) as bar:
        for product in layer:
            for which in PASSES:
                times, first_call, float8_gemm, used = _time_pass(
                    product, which, variants, sizing, repeats, device.platform
                )
                rows += _rows(product, which, times, first_call, float8_gemm, used, device)
                bar.advance(f"{product.name} {which}")
    result = {
        "benchmark": NAME,
        "quick": quick,
        "platform": device.platform,
        "device_kind": device.kind,
        "sizes": {"tokens": sizing.tokens, "hidden": sizing.hidden, "ffn": sizing.ffn},
        "rounds": sizing.rounds,
        "variants": list(variants),
        "formulations": {variant: _describe(variant) for variant in variants},
        "rows": rows,
        "summary": summary(rows, variants, device),
        "load_average": [load_before, _results.load_average()],
        "wall_s": time.perf_counter() - started,
    }
    result["closing"] = closing_lines(result)
    return result


def _describe(variant: str) -> str:
    import dtypepolicy as dp

    if variant in POLICY:
        return dp.describe_dot(POLICY[variant])
    quantize = (
        "amax, current scale and quantize-dequantize of both operands inside the timed call, then"
        if variant == "float8 + quantize"
        else "pre-quantized float8 codes dequantized (convert, scale multiply) inside the timed call, then"
    )
    return (
        f"E4M3 inputs and kernels, E5M2 output gradients; {quantize} a {COMPUTE} product accumulated in float32 "
        f"(forward; the gradients return {COMPUTE}), as the engine's float8 projection."
    )


def _rows(product, which, times, first_call, float8_gemm, repeats, device) -> list[dict[str, Any]]:
    m, k, n = pass_shape(product, which)
    flops = 2 * m * k * n
    reference = times.get("float32")
    base = statistics.median(reference) if reference else None
    rows = []
    for variant, values in times.items():
        ms = statistics.median(values)
        tflops = flops / (ms * 1e-3) / 1e12
        rows.append(
            {
                "product": product.name,
                "pass": which,
                "m": m,
                "k": k,
                "n": n,
                "flops": flops,
                "variant": variant,
                "ms": ms,
                "range_ms": [min(values), max(values)],
                "tflops": tflops,
                "mfu": _device.mfu(tflops, device.kind, PEAK_DTYPE[variant]),
                "ratio_to_float32": None if base is None else ms / base,
                "first_call_s": first_call[variant],
                "float8_gemm": float8_gemm[variant],
                "repeats": repeats,
            }
        )
    return rows


def summary(rows: list[dict[str, Any]], variants: tuple[str, ...], device: Any) -> list[dict[str, Any]]:
    """Per variant, over the layer's products: total ms, TFLOP/s, time against float32, MFU."""
    totals = {}
    for variant in variants:
        mine = [row for row in rows if row["variant"] == variant]
        ms = sum(row["ms"] for row in mine)
        flops = sum(row["flops"] for row in mine)
        totals[variant] = (ms, flops)
    base = totals.get("float32", (None,))[0]
    out = []
    for variant, (ms, flops) in totals.items():
        tflops = flops / (ms * 1e-3) / 1e12 if ms > 0 else 0.0
        out.append(
            {
                "variant": variant,
                "ms": ms,
                "tflops": tflops,
                "ratio_to_float32": None if not base else ms / base,
                "mfu": _device.mfu(tflops, device.kind, PEAK_DTYPE[variant]) if ms > 0 else None,
            }
        )
    return out


def closing_lines(result: dict[str, Any]) -> list[str]:
    """Which variant runs the layer's products fastest and by how much; what quantizing costs."""
    platform = result["platform"]
    where = "this CPU" if platform == "cpu" else f"this {result['device_kind']}"
    totals = {entry["variant"]: entry for entry in result["summary"]}
    if not totals:
        return []
    fastest = min(totals.values(), key=lambda entry: entry["ms"])
    lines = []
    if "float32" not in totals:
        lines.append(f"Fastest products on {where}: {fastest['variant']} (no float32 variant to compare with).")
    elif fastest["variant"] == "float32":
        lines.append(f"Fastest products on {where}: float32; every other variant is slower here.")
    else:
        lines.append(
            f"Fastest products on {where}: {fastest['variant']}, {1 / fastest['ratio_to_float32']:.2f}x faster than "
            f"float32 over the layer's {len(PASSES) * 4} products ({_results.ms_text(fastest['ms'])} ms against "
            f"{_results.ms_text(totals['float32']['ms'])} ms)."
        )
    if "float8" in totals and "float8 + quantize" in totals and totals["float8"]["ms"] > 0:
        extra = totals["float8 + quantize"]["ms"] / totals["float8"]["ms"] - 1
        lines.append(f"  Quantizing the operands (amax, scale, cast) adds {100 * extra:.0f}% to the float8 products.")
    if platform == "cpu" and any(name.startswith("float8") for name in totals):
        lines.append(
            "  float8 is emulated on a CPU: the float8 rows are bf16 products behind extra converts, not float8 "
            "matmuls; they say nothing about a GPU."
        )
    return lines


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    text = f"{row['tflops']:.3g}"
    return text if row["mfu"] is None else f"{text} ({100 * row['mfu']:.0f}%)"


def render(result: dict[str, Any]) -> str:
    """The per-product table (ms and TFLOP/s per variant), the summary, the formulations and the closing lines."""
    s = result["sizes"]
    variants = result["variants"]
    out = [
        f"GEMMs of one transformer layer (hidden {s['hidden']}, FFN {s['ffn']}, {s['tokens']} tokens) on "
        f"{result['device_kind']} ({result['platform']}); medians of {result['rounds']} rotating rounds; "
        f"load average {_results.load_text(result['load_average'])}",
        "",
        "ms per product",
    ]
    keys = [(row["product"], row["pass"]) for row in result["rows"]]
    keys = list(dict.fromkeys(keys))
    lookup = {(row["product"], row["pass"], row["variant"]): row for row in result["rows"]}

    def shape(key):
        row = next(r for r in result["rows"] if (r["product"], r["pass"]) == key)
        return f"{row['m']}x{row['k']}x{row['n']}"

    ms_rows = [
        [f"{p} {w}", shape((p, w))] + [lookup[(p, w, v)]["ms"] if (p, w, v) in lookup else None for v in variants]
        for p, w in keys
    ]
    out.append(_results.table(["product", "MxKxN", *variants], ms_rows))
    out += ["", "TFLOP/s per product (MFU where the device's peak is known)"]
    tf_rows = [[f"{p} {w}", *(_cell(lookup.get((p, w, v))) for v in variants)] for p, w in keys]
    out.append(_results.table(["product", *variants], tf_rows))
    out += ["", "The layer's products together"]
    summary_rows = [
        [
            entry["variant"],
            entry["ms"],
            entry["tflops"],
            entry["ratio_to_float32"],
            None if not entry["ratio_to_float32"] else 1 / entry["ratio_to_float32"],
            "unknown" if entry["mfu"] is None else f"{100 * entry['mfu']:.1f}%",
        ]
        for entry in result["summary"]
    ]
    out.append(_results.table(["variant", "total ms", "TFLOP/s", "time/f32", "speedup", "MFU"], summary_rows))
    out += ["", "Products:"]
    out += [f"  {variant}: {text}" for variant, text in result["formulations"].items()]
    gemm = [row["float8_gemm"] for row in result["rows"] if row["float8_gemm"] is not None]
    if gemm:
        out.append(f"  float8 cuBLASLt matmuls in the compiled programs: {sum(gemm)} of {len(gemm)} float8 rows.")
    out += ["", *result["closing"]]
    return "\n".join(out)


def plot(result: dict[str, Any], out: Path) -> list[Path]:
    """One PNG: TFLOP/s of each product and pass, by variant."""
    plt = _results.pyplot()
    variants = result["variants"]
    keys = list(dict.fromkeys((row["product"], row["pass"]) for row in result["rows"]))
    lookup = {(row["product"], row["pass"], row["variant"]): row["tflops"] for row in result["rows"]}
    figure, axis = plt.subplots(figsize=(max(7.0, 0.75 * len(keys)), 4.2))
    width = 0.8 / max(len(variants), 1)
    for index, variant in enumerate(variants):
        positions = [i + (index - (len(variants) - 1) / 2) * width for i in range(len(keys))]
        axis.bar(positions, [lookup.get((p, w, variant), 0.0) for p, w in keys], width, label=variant)
    axis.set_xticks(range(len(keys)), [f"{p.replace('attention_', 'attn ')}\n{w}" for p, w in keys], fontsize=7)
    axis.set_ylabel("TFLOP/s")
    s = result["sizes"]
    axis.set_title(
        f"One transformer layer's GEMMs on {result['device_kind']} (hidden {s['hidden']}, FFN {s['ffn']}, "
        f"{s['tokens']} tokens)",
        fontsize=9,
    )
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(variants))
    return [_results.save_figure(figure, out, NAME)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--quick, the variants and the layer's sizes."""
    parser.add_argument("--quick", action="store_true", help="the short, report-sized run")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of %(default)s")
    parser.add_argument(
        "--tokens", type=_results.positive_int, default=None, help="rows of every product (default: by device)"
    )
    parser.add_argument("--hidden", type=_results.positive_int, default=None, help="hidden size (default: by device)")
    parser.add_argument("--ffn", type=_results.positive_int, default=None, help="FFN size (default: by device)")
    parser.add_argument(
        "--rounds", type=_results.positive_int, default=None, help="rotating rounds (default: by device)"
    )
    parser.add_argument(
        "--repeats", type=_results.positive_int, default=None, help="calls per variant per round (default: ~target)"
    )


def main(options: argparse.Namespace) -> int:
    """Runs, prints the tables, writes the JSON and the PNG."""
    device = _device.detect()
    result = run(
        device,
        quick=options.quick,
        variants=tuple(name.strip() for name in options.variants.split(",")),
        tokens=options.tokens,
        hidden=options.hidden,
        ffn=options.ffn,
        rounds=options.rounds,
        repeats=options.repeats,
    )
    print(render(result))
    written = [_results.write_json(options.out, NAME, {**_results.environment(device), **result})]
    written += plot(result, options.out)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0
