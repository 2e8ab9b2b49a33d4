"""The jitted train step of `layers.training.make_train_step` against the same step in plain JAX.

Usage:
  .venv/bin/python -m benchmarks.train_step [--rounds 15] [--steps 50] [--models mlp,transformer]

Both variants train the same model on the same batch from the same initial values, with sparse
categorical cross-entropy from logits, and both are jitted with their state donated:

- `layers`: the model built from built-in layers under the policy, through `make_train_step`
  with `layers.optimizers.Optimizer(optax.adam(1e-3))`;
- `plain`: a dict of jnp arrays, `jax.value_and_grad` and `optax.adam(1e-3)` written by hand.
  Under mixed_bfloat16 the float32 master values are cast to bfloat16 inside the step, each
  matmul accumulates in float32 (`preferred_element_type`) and so do its two gradient products,
  from the float32 cotangent rounded to bfloat16 (a small `custom_vjp`, as the layers' products
  do), the float32 bias is added before one rounding to bfloat16, activations and residuals run
  in bfloat16, LayerNorm and the attention softmax in float32, and the loss is float32; under
  float32 everything is, and every product
  passes `precision=Precision.HIGHEST` (what a float32 policy pins), so float32 means float32 on
  GPUs too (JAX's default there is TF32).

Models: an MLP 256 -> 512 -> 512 -> 10 with ReLU (batch 256), and a classifier made of one
`TransformerBlock` (width 128 = 4 heads of 32, MLP 512, exact GELU), a mean over time and a
Dense(10) head, on (32, 32, 128) inputs.

The optimizer is optax's Adam on both sides (epsilon added to `sqrt(v_hat)`), so the two compute
the same update; `layers.optimizers.Adam` follows Keras (epsilon added to `sqrt(v)`) and is not
what is compared here. Before timing, the losses of the first steps of both variants are checked
to agree (1e-4 under float32, bfloat16 tolerance under mixed_bfloat16).

Timing: the first call of each variant (trace + compile + one step) is reported separately.
Then, round by round, each variant runs `steps` steps back to back (its state carried through,
`block_until_ready` at the end), the order of the variants rotating between rounds; the table
gives the median ms/step over rounds, the range of the per-round ratios, and the ratio of the
medians, layers / plain. `compare(..., extra=...)` adds more variants (the `overhead` command's
Keras and Flax steps) to the same rounds.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

WIDTHS = (256, 512, 512, 10)
# The transformer classifier: TransformerBlock(width 128 = 4 heads of 32, MLP 512) on (batch 32, time 32, 128),
# a mean over time and a Dense(10) head.
TRANSFORMER = {"batch": 32, "time": 32, "width": 128, "num_heads": 4, "key_dim": 32, "mlp_dim": 512, "classes": 10}
TRANSFORMER_EPSILON = 1e-6  # TransformerBlock's LayerNormalization default
LEARNING_RATE = 1e-3
# (policy, model kind, initial values by variable path, MLP widths) -> (state, jitted donating step).
VariantFactory = Callable[[str, str, dict[str, np.ndarray], tuple[int, ...]], tuple[Any, Any]]


def machine() -> dict[str, Any]:
    """The CPU, its bf16 matrix features and a measured bf16 / float32 matmul time ratio."""
    from benchmarks._device import cpu_flags
    from benchmarks.compare_revisions import _machine as describe

    flags = cpu_flags()
    a = jnp.ones((512, 512), jnp.float32)
    dot32 = jax.jit(lambda u: u @ u)
    dot16 = jax.jit(lambda u: jax.lax.dot(u, u, preferred_element_type=jnp.float32))
    b = a.astype(jnp.bfloat16)

    def seconds(function: Callable[[Any], Any], value: Any) -> float:
        jax.block_until_ready(function(value))
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(10):
                result = function(value)
            jax.block_until_ready(result)
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    return {
        "cpu": describe(),
        "device": jax.devices()[0].platform,
        "amx_bf16_flag": "amx_bf16" in flags,
        "avx512_bf16_flag": "avx512_bf16" in flags,
        "bf16_over_f32_matmul": seconds(dot16, b) / seconds(dot32, a),
        "load_average": os.getloadavg()[0],
    }


def _transformer_classifier(policy: str, dims: dict[str, int]) -> Any:
    import layers

    class TransformerClassifier(layers.Layer):
        """A TransformerBlock, a mean over time, a Dense head: `(batch, time, width)` -> logits."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.block = layers.TransformerBlock(
                num_heads=dims["num_heads"], key_dim=dims["key_dim"], mlp_dim=dims["mlp_dim"], name="block"
            )
            self.head = layers.Dense(dims["classes"], name="head")

        def call(self, x: Any) -> Any:
            return self.head(jnp.mean(self.block(x), axis=1))

    return TransformerClassifier(dtype=policy, name="classifier")


def _layers_variant(
    policy: str, model_kind: str, x: jax.Array, widths: tuple[int, ...]
) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """The model through make_train_step: (state, `step.jitted`, initial values by variable path, as NumPy)."""
    import layers
    from layers import losses, optimizers, training

    if model_kind == "mlp":
        *hidden, classes = widths[1:]
        dense = [layers.Dense(width, activation="relu", name=f"dense_{i}") for i, width in enumerate(hidden)]
        model = layers.Sequential([*dense, layers.Dense(classes, name=f"dense_{len(hidden)}")], dtype=policy)
    else:
        model = _transformer_classifier(policy, TRANSFORMER)
    model(x)
    step = training.make_train_step(
        model, losses.SparseCategoricalCrossentropy(from_logits=True), optimizers.Optimizer(optax.adam(LEARNING_RATE))
    )
    state = step.init_state()
    # Copies taken before the first donated call invalidates the state's buffers; keyed by the path
    # below the model ("dense_0/kernel", "block/mlp_in/bias").
    names = [variable.path.split("/", 1)[1] for variable in model.trainable_variables]
    initial = {name: np.array(value) for name, value in zip(names, state.trainable, strict=True)}
    return state, step.jitted, initial


@functools.cache
def _product_16(equation: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`einsum(equation)` of 16-bit operands accumulated in float32, whose gradient products take
    16-bit operands too: the float32 cotangent is rounded to the operands' type first.

    This is what the layers' products do. JAX's own transpose would pair the float32 cotangent
    with the 16-bit operand, a mixed product XLA runs as a float32 dot (TF32 on a GPU), so the
    baseline's backward would be other numerics and another speed.
    """
    inputs, output = equation.split("->")
    a_spec, b_spec = inputs.split(",")

    def run(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)

    @jax.custom_vjp
    def product(a: jax.Array, b: jax.Array) -> jax.Array:
        return run(equation, a, b)

    def forward(a: jax.Array, b: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        return run(equation, a, b), (a, b)

    def backward(residuals: tuple[jax.Array, jax.Array], cotangent: jax.Array) -> tuple[jax.Array, jax.Array]:
        a, b = residuals
        g = cotangent.astype(a.dtype)
        a_grad = run(f"{output},{b_spec}->{a_spec}", g, b)
        b_grad = run(f"{a_spec},{output}->{b_spec}", a, g)
        return a_grad.astype(a.dtype), b_grad.astype(b.dtype)

    product.defvjp(forward, backward)
    return product


def _einsum(equation: str, a: jax.Array, b: jax.Array, compute: Any) -> jax.Array:
    """The product in float32: float32 at `Precision.HIGHEST` (JAX's GPU default is TF32), 16-bit as the layers do."""
    if compute == jnp.float32:
        return jnp.einsum(equation, a, b, precision=jax.lax.Precision.HIGHEST)
    return _product_16(equation)(a, b)


def _dense(h: jax.Array, kernel: jax.Array, bias: jax.Array, equation: str, compute: Any) -> jax.Array:
    """`h · kernel + bias`; 16-bit: operands in `compute`, float32 accumulate and bias, one rounding."""
    if compute == jnp.float32:
        return _einsum(equation, h, kernel, compute) + bias
    return (_einsum(equation, h, kernel.astype(compute), compute) + bias).astype(compute)


def _mlp_forward(params: dict[str, jax.Array], x: jax.Array, compute: Any) -> jax.Array:
    layers_count = len(params) // 2
    h = x.astype(compute)
    for i in range(layers_count):
        h = _dense(h, params[f"dense_{i}/kernel"], params[f"dense_{i}/bias"], "bi,io->bo", compute)
        if i < layers_count - 1:
            h = jax.nn.relu(h)
    return h


def _layer_norm(h: jax.Array, gamma: jax.Array, beta: jax.Array, compute: Any) -> jax.Array:
    """In float32 whatever the compute dtype, rounded once at the end."""
    wide = h.astype(jnp.float32)
    mean = jnp.mean(wide, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(wide - mean), axis=-1, keepdims=True)
    y = (wide - mean) * jax.lax.rsqrt(variance + TRANSFORMER_EPSILON) * gamma + beta
    return y.astype(compute)


def _transformer_forward(params: dict[str, jax.Array], x: jax.Array, compute: Any) -> jax.Array:
    def p(name: str) -> tuple[jax.Array, jax.Array]:
        return params[f"block/{name}/kernel"], params[f"block/{name}/bias"]

    def norm(name: str, h: jax.Array) -> jax.Array:
        return _layer_norm(h, params[f"block/{name}/gamma"], params[f"block/{name}/beta"], compute)

    x = x.astype(compute)
    normed = norm("attention_norm", x)
    q, k, v = (_dense(normed, *p(f"attention/{n}"), "btd,dnh->btnh", compute) for n in ("query", "key", "value"))
    q = q * jnp.asarray(1.0 / TRANSFORMER["key_dim"] ** 0.5, compute)
    scores = _einsum("bsnh,btnh->bnts", k, q, compute)
    probabilities = jax.nn.softmax(scores, axis=-1).astype(compute)
    context = _einsum("bnts,bsnh->btnh", probabilities, v, compute).astype(compute)
    hidden = x + _dense(context, *p("attention/attention_output"), "btnh,nhd->btd", compute)
    inner = jax.nn.gelu(_dense(norm("mlp_norm", hidden), *p("mlp_in"), "btd,df->btf", compute), approximate=False)
    out = hidden + _dense(inner, *p("mlp_out"), "btf,fd->btd", compute)
    return _dense(jnp.mean(out, axis=1), params["head/kernel"], params["head/bias"], "bd,dc->bc", compute)


def _plain_variant(policy: str, model_kind: str, initial: dict[str, np.ndarray]) -> tuple[Any, Any]:
    """The same model and optax update by hand: (state, one jitted donating step)."""
    compute = jnp.bfloat16 if policy == "mixed_bfloat16" else jnp.float32
    forward = _mlp_forward if model_kind == "mlp" else _transformer_forward
    params = {name: jnp.asarray(value) for name, value in initial.items()}
    transform = optax.adam(LEARNING_RATE)

    def loss_fn(p: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
        logits = forward(p, x, compute).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(state: Any, batch: tuple[jax.Array, jax.Array]) -> tuple[Any, dict[str, jax.Array]]:
        p, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(p, *batch)
        updates, opt_state = transform.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), {"loss": loss}

    return (params, transform.init(params)), jax.jit(step, donate_argnums=0)


def _run(step: Callable[[Any, Any], Any], state: Any, batch: Any, steps: int) -> tuple[Any, list[float]]:
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch)
        losses.append(metrics["loss"])
    jax.block_until_ready((state, losses))
    return state, [float(value) for value in losses]


def problem(model: str, widths: tuple[int, ...] = WIDTHS, batch: int | None = None, seed: int = 0) -> tuple[Any, int]:
    """The fixed batch `(x, y)` a model trains on, and its batch size (default 256 MLP, 32 transformer)."""
    if model not in ("mlp", "transformer"):
        raise ValueError(f"model must be 'mlp' or 'transformer', received {model!r}.")
    rng = np.random.default_rng(seed)
    if batch is None:
        batch = 256 if model == "mlp" else TRANSFORMER["batch"]
    if model == "mlp":
        shape, classes = (batch, widths[0]), widths[-1]
    else:
        shape, classes = (batch, TRANSFORMER["time"], TRANSFORMER["width"]), TRANSFORMER["classes"]
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    y = jnp.asarray(rng.integers(0, classes, size=(batch,)), jnp.int32)
    return (x, y), batch


def variants(
    policy: str,
    model: str,
    x: jax.Array,
    widths: tuple[int, ...] = WIDTHS,
    extra: dict[str, VariantFactory] | None = None,
) -> dict[str, tuple[Any, Any]]:
    """Fresh `{name: (state, jitted step)}`: "layers", "plain", then each of `extra` from the same initial values."""
    ours_state, ours_step, initial = _layers_variant(policy, model, x, widths)
    built = {"layers": (ours_state, ours_step), "plain": _plain_variant(policy, model, initial)}
    for name, factory in (extra or {}).items():
        built[name] = factory(policy, model, initial, widths)
    return built


def aot_compile(step: Any, state: Any, batch: Any) -> tuple[Any, dict[str, float]]:
    """`step.trace(...).lower().compile()`: the compiled step and the seconds of each stage.

    `trace_s` makes the jaxpr, `lower_s` the StableHLO module, `compile_s` is XLA's compile.
    """
    start = time.perf_counter()
    traced = step.trace(state, batch)
    traced_at = time.perf_counter()
    lowered = traced.lower()
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    return compiled, {"trace_s": traced_at - start, "lower_s": lowered_at - traced_at, "compile_s": done - lowered_at}


def compare(
    policy: str,
    model: str = "mlp",
    *,
    widths: tuple[int, ...] = WIDTHS,
    batch: int | None = None,
    rounds: int = 15,
    steps: int = 50,
    check_steps: int = 5,
    seed: int = 0,
    extra: dict[str, VariantFactory] | None = None,
    aot: bool = False,
) -> dict[str, Any]:
    """Measures the variants side by side; returns ms/step medians, ranges, ratios and compile times.

    `extra` adds variants built from the same initial values; each gets `<name>_ms`,
    `<name>_range_ms`, `<name>_compile_s` and `ratio_<name>` (its median over plain's).
    With `aot`, each first call is compiled ahead of time (`aot_compile`), its stages' seconds
    reported as `<name>_stages_s`, and the compiled step runs the rest (its dispatch is the
    jitted function's, within a microsecond).

    Raises:
      AssertionError: a variant's losses over the first `check_steps` steps differ from plain's by
        more than the policy's tolerance (float32: 1e-4, mixed_bfloat16: 2e-2).
    """
    data, batch = problem(model, widths, batch, seed)
    running = {name: list(entry[::-1]) for name, entry in variants(policy, model, data[0], widths, extra).items()}

    compile_s, first_losses, stages = {}, {}, {}
    for name, entry in running.items():
        start = time.perf_counter()
        if aot:
            entry[0], stages[name] = aot_compile(entry[0], entry[1], data)
        entry[1], losses = _run(entry[0], entry[1], data, 1)
        compile_s[name] = time.perf_counter() - start
        entry[1], more = _run(entry[0], entry[1], data, check_steps - 1)
        first_losses[name] = losses + more
    # float32: the two programs may order a reduction differently; bfloat16: one rounding apart at most.
    tolerance = 1e-4 if policy == "float32" else 2e-2
    for name, losses in first_losses.items():
        if not np.allclose(losses, first_losses["plain"], rtol=tolerance, atol=tolerance):
            raise AssertionError(f"{policy} {model}: the {name} variant's losses differ from plain's: {first_losses}")

    samples: dict[str, list[float]] = {name: [] for name in running}
    names = list(running)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            entry = running[name]
            start = time.perf_counter()
            entry[1], _ = _run(entry[0], entry[1], data, steps)
            samples[name].append((time.perf_counter() - start) / steps * 1e3)
    report: dict[str, Any] = {
        "model": model,
        "shape": list(widths) if model == "mlp" else TRANSFORMER,
        "policy": policy,
        "batch": batch,
        "rounds": rounds,
        "steps": steps,
        "variants": names,
    }
    for name, values in samples.items():
        report[f"{name}_ms"] = statistics.median(values)
        report[f"{name}_range_ms"] = [min(values), max(values)]
        report[f"{name}_compile_s"] = compile_s[name]
        if aot:
            report[f"{name}_stages_s"] = stages[name]
    ratios = [ours / plain for ours, plain in zip(samples["layers"], samples["plain"], strict=True)]
    report["ratio"] = report["layers_ms"] / report["plain_ms"]
    report["ratio_range"] = [min(ratios), max(ratios)]
    for name in names[2:]:
        theirs = [other / plain for other, plain in zip(samples[name], samples["plain"], strict=True)]
        report[f"ratio_{name}"] = report[f"{name}_ms"] / report["plain_ms"]
        report[f"ratio_{name}_range"] = [min(theirs), max(theirs)]
    report["first_losses"] = first_losses
    return report


def describe_machine(machine: dict[str, Any]) -> str:
    """One plain sentence on the machine and what bf16 matmuls cost on it."""
    features = [
        name for name, key in [("amx_bf16", "amx_bf16_flag"), ("avx512_bf16", "avx512_bf16_flag")] if machine[key]
    ]
    listed = f"cpuinfo lists {', '.join(features)}" if features else "cpuinfo lists neither amx_bf16 nor avx512_bf16"
    factor = machine["bf16_over_f32_matmul"]
    speed = "slower" if factor > 1 else "faster"
    return (
        f"{machine['cpu']}; {machine['device']}; load average {machine['load_average']:.2f}. {listed}; a 512x512 "
        f"bf16 matmul (float32 accumulate) takes {factor:.2f}x the time of the float32 one under XLA: bf16 dots are "
        f"{speed} than float32 dots on this machine."
    )


def label(report: dict[str, Any]) -> str:
    """A short name of the model and batch of one report."""
    if report["model"] == "mlp":
        return f"MLP {'-'.join(map(str, report['shape']))} b{report['batch']}"
    return f"Transformer w{TRANSFORMER['width']} t{TRANSFORMER['time']} b{report['batch']}"


def table(reports: list[dict[str, Any]]) -> str:
    """The figures as text lines."""
    lines = [
        f"{'model':26} {'policy':15} {'layers ms/step':>15} {'plain ms/step':>14} {'ratio':>6} {'ratio range':>13}"
        f" {'compile layers / plain':>23}"
    ]
    for r in reports:
        lines.append(
            f"{label(r):26} {r['policy']:15} {r['layers_ms']:15.3f} {r['plain_ms']:14.3f} {r['ratio']:6.3f} "
            f"{r['ratio_range'][0]:6.3f}-{r['ratio_range'][1]:.3f} {r['layers_compile_s']:10.2f} s / "
            f"{r['plain_compile_s']:.2f} s"
        )
    return "\n".join(lines)


def main() -> None:
    """Runs every model and policy and prints the table, then one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=None, help="default: 256 for the MLP, 32 for the transformer")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="MLP layer widths, input first")
    parser.add_argument("--models", default="mlp,transformer")
    parser.add_argument("--policies", default="float32,mixed_bfloat16")
    args = parser.parse_args()
    host = machine()
    widths = tuple(int(width) for width in args.widths.split(","))
    reports = [
        compare(policy, model, widths=widths, batch=args.batch, rounds=args.rounds, steps=args.steps)
        for model in args.models.split(",")
        for policy in args.policies.split(",")
    ]
    print("Train step (make_train_step) vs the same step in plain JAX, optax.adam on both sides")
    print(f"medians of {args.rounds} interleaved rounds of {args.steps} steps; target ratio <= 1.02")
    print(describe_machine(host))
    print(table(reports))
    print(json.dumps({"machine": host, "reports": reports}))


if __name__ == "__main__":
    main()
