"""The precision regression benchmark: each policy's outputs and gradients against a float64 oracle.

`python -m benchmarks precision [--quick] [--update-baseline]` runs every built-in layer with
numerics worth checking, and the two models of `benchmarks/train_step.py`, under each policy, on
fixed generated data. For each (layer, policy) it measures three quantities, each as a relative
Frobenius error `||got - exact|| / ||exact||` (the absolute norm where `exact` is zero):

- `output`: the layer's output (`stateless_call`, jitted);
- `grad inputs`, `grad weights`: the gradients of `sum(output * cotangent)` with respect to the
  floating inputs and to the float weights (all of them flattened into one vector), for a fixed
  cotangent of multiples of 1/4 in [-2, 2], exact in every 16-bit and float8 type, so no rounding of
  the output gradient enters.

`exact` is the float64 oracle: the same layer's math written out here in plain `jax.numpy`
(independent of the library's code) and run in float64 under `jax.enable_x64`, on the float32
inputs and master weights, gradients by `jax.grad` in float64. A user's model (`check`) has no
hand-written formula: its oracle is the same model built under the `"float64"` policy (no 16-bit
cast, no 16-bit product formulation runs there).

Next to each error is its one-rounding floor: the error that exact math on the inputs rounded to the
compute dtype, rounded once to the result's dtype, has against the same oracle on the unrounded
inputs. It is achievable (it is what a perfect implementation of the policy returns) and no
implementation of the policy does better on average. Which values are rounded, by this library's
rules: floating inputs, when the layer autocasts them (normalization layers do not), and weights
whose name ends in `kernel` or `embeddings` (biases, normalization parameters are read in float32).
Outputs round to the dtype the layer returned; input gradients to the compute dtype (float32
where inputs are not autocast); `kernel`/`embeddings` gradients to the compute dtype, other weight
gradients to float32. Quantized policies report the floor of their source policy (what the
bfloat16 policy could do), so the row shows what quantization costs.

The gate. A row fails when:
- its error exceeds `BOUND_FACTOR` (1.1) x its bound, where a bound applies: bound = floor +
  `FLOAT32_ALLOWANCE` (64 float32 unit roundoffs, 3.8e-6: the float32 accumulation and statistics
  that run before the one rounding; it is what lets a float32 row pass, and it catches a float32
  product run in TF32 or bfloat16). A bound applies to the quantities of the layers whose result
  is one rounding of float32 arithmetic (Dense, EinsumDense, LayerNormalization,
  BatchNormalization, Softmax, Embedding), under the float policies. Attention, the
  TransformerBlock, the models, and every quantized policy round several times in a row: their
  rows are checked against the baseline only;
- or it regresses past the stored baseline: error > `BASELINE_FACTOR` (1.1) x baseline +
  `BASELINE_FLOOR` (2**-24). Errors are deterministic on one device and library version, so the
  10 % is room for a compiler's reordering, not for noise.

Baselines live in `benchmarks/baselines/<device slug>.json` ("cpu.json", "nvidia-h200.json"),
one entry per row, keyed `"<sizes> | <layer> | <policy> | <quantity>"`; `--update-baseline`
rewrites this run's entries (keeping the others). A row with no baseline entry is reported as
`new` and does not fail.
"""

from benchmarks.precision._cases import QUICK_LAYERS, SIZES, Case, cases
from benchmarks.precision._check import Result, check
from benchmarks.precision._command import add_arguments, main, run
from benchmarks.precision._gate import (
    BASELINE_FACTOR,
    BASELINE_FLOOR,
    BASELINES,
    BOUND_FACTOR,
    FLOAT32_ALLOWANCE,
    baseline_path,
    load_baseline,
    write_baseline,
)
from benchmarks.precision._gate import _gate as _gate
from benchmarks.precision._metric import COMPUTE_WEIGHTS, QUANTITIES, one_rounding_floor, relative_error, round_to
from benchmarks.precision._policies import POLICIES
from benchmarks.precision._render import _span as _span
from benchmarks.precision._render import exit_code, plot, render, summary_lines
from benchmarks.precision._rows import _cotangent as _cotangent
from benchmarks.precision._rows import _rows_for as _rows_for

__all__ = [
    "BASELINES",
    "BASELINE_FACTOR",
    "BASELINE_FLOOR",
    "BOUND_FACTOR",
    "COMPUTE_WEIGHTS",
    "FLOAT32_ALLOWANCE",
    "POLICIES",
    "QUANTITIES",
    "QUICK_LAYERS",
    "SIZES",
    "Case",
    "Result",
    "add_arguments",
    "baseline_path",
    "cases",
    "check",
    "exit_code",
    "load_baseline",
    "main",
    "one_rounding_floor",
    "plot",
    "relative_error",
    "render",
    "round_to",
    "run",
    "summary_lines",
    "write_baseline",
]

# doctest.testmod(precision) skips functions defined in other modules; these carry the examples.
__test__ = {"relative_error": relative_error, "round_to": round_to, "one_rounding_floor": one_rounding_floor}
