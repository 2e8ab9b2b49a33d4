"""How each matrix-product algorithm runs on the current backend: the fastest formulation with its numerics.

On GPU and TPU the algorithm is passed to XLA as the `jax.lax.DotAlgorithmPreset` itself (full
float32 as `Precision.HIGHEST`), so a float32 policy never runs in TF32 or bf16 passes. XLA's
CPU backend takes no presets, so an equivalent formulation is used:

- bfloat16 operands with float32 accumulation run natively when the CPU has fast bf16 units
  (AMX-BF16); otherwise they are converted to float32 for a float32 dot. The products are the
  same: every bf16 × bf16 product is exact in float32, only the summation order differs.
- Other 16-bit and TF32 operands are rounded to their type, then multiplied in float32.
- Multi-pass bf16 presets (`_X3`, `_X6`, `_X9`) that approximate float32 run as float32.
- 16-bit accumulation (`BF16_BF16_BF16`, `F16_F16_F16`) accumulates in float32 and rounds the
  result once: CPUs have no 16-bit accumulator, and this is never less accurate.

The choice is made once per (algorithm, backend). `describe_dot(policy)` says which one runs.
The environment variable `DTYPEPOLICY_CPU_BF16_DOT` (`native` or `upcast`) overrides the CPU
bf16 choice, for benchmarks.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp

# The operand type and the accumulation type of each preset.
_OPERAND = {
    "BF16_BF16_F32": "bfloat16",
    "BF16_BF16_BF16": "bfloat16",
    "BF16_BF16_F32_X3": "float32",
    "BF16_BF16_F32_X6": "float32",
    "BF16_BF16_F32_X9": "float32",
    "TF32_TF32_F32": "tf32",
    "TF32_TF32_F32_X3": "float32",
    "F16_F16_F32": "float16",
    "F16_F16_F16": "float16",
    "F32_F32_F32": "float32",
    "F64_F64_F64": "float64",
}
_ACCUMULATION = {
    name: {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}[name.split("_")[2]]
    for name in _OPERAND
}
CPU_BF16_OVERRIDE = _CPU_BF16_OVERRIDE = "DTYPEPOLICY_CPU_BF16_DOT"


@dataclasses.dataclass(
    frozen=True, eq=False
)  # one instance per (algorithm, backend, choice): identity is cheap to hash
class DotFormulation:
    """How one algorithm's products are computed here.

    Attributes:
      algorithm: the `jax.lax.DotAlgorithmPreset` name.
      backend: the JAX platform (`"cpu"`, `"gpu"`, `"tpu"`).
      rounding: the operand type values are rounded to first (`"tf32"` included).
      operand_dtype: the dtype the `dot_general` takes its operands in.
      precision: its `precision` argument.
      accumulation: its `preferred_element_type`.
      result_dtype: the dtype of the product handed back (the algorithm's accumulation type).
      description: one sentence saying the above.
    """

    algorithm: str
    backend: str
    rounding: str
    operand_dtype: str
    precision: Any
    accumulation: str
    result_dtype: str
    description: str

    def __reduce__(self) -> tuple:
        # Copies and pickles come back as the one cached instance (formulations compare by identity).
        native = self.backend == "cpu" and self.algorithm == "BF16_BF16_F32" and self.operand_dtype == "bfloat16"
        return (_formulation, (self.algorithm, self.backend, native))

    def prepare(self, x: jax.Array) -> jax.Array:
        """An operand rounded to the algorithm's operand type, in the dot's operand dtype."""
        if self.operand_dtype == "float64" and not jax.config.jax_enable_x64:
            # JAX would truncate the operands to float32 with a warning: that is not this algorithm.
            raise ValueError(
                f"Dot algorithm {self.algorithm} needs float64, which JAX has disabled: set jax_enable_x64 "
                f"(or JAX_ENABLE_X64=1) first, or choose F32_F32_F32."
            )
        x = jnp.asarray(x)
        if self.rounding == "tf32":
            x = round_to_tf32(x.astype(jnp.float32))
        elif x.dtype != self.rounding:
            x = x.astype(self.rounding)
        return x.astype(self.operand_dtype)

    def finish(self, product: jax.Array) -> jax.Array:
        """The dot's result in the algorithm's accumulation type."""
        return product.astype(self.result_dtype)


@jax.custom_jvp
def round_to_tf32(x: jax.Array) -> jax.Array:
    """float32 values rounded to TF32 (10 mantissa bits), to nearest even.

    Its derivative is the identity, as a cast's is (the bit operations alone would give zero).

    Example:
      >>> round_to_tf32(jnp.float32(1 + 2**-11 + 2**-20)).item() == 1 + 2**-10
      True
    """
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    rounded = (bits + jnp.uint32(0x0FFF) + ((bits >> 13) & jnp.uint32(1))) & jnp.uint32(0xFFFFE000)
    finite = jnp.isfinite(x)
    return jnp.where(finite, jax.lax.bitcast_convert_type(rounded, jnp.float32), x)


round_to_tf32.defjvp(lambda primals, tangents: (round_to_tf32(*primals), tangents[0]))


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices faster than float32 (AMX-BF16), or the override says so."""
    override = os.environ.get(_CPU_BF16_OVERRIDE, "").strip().lower()
    if override in ("native", "upcast"):
        return override == "native"
    if override:
        raise ValueError(f"{_CPU_BF16_OVERRIDE} must be 'native' or 'upcast', received {override!r}.")
    return "amx_bf16" in _cpu_flags()


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _accelerator(algorithm: str, backend: str) -> DotFormulation:
    operand = "float32" if _OPERAND[algorithm] == "tf32" else _OPERAND[algorithm]
    accumulation = _ACCUMULATION[algorithm]
    if algorithm in ("F32_F32_F32", "F64_F64_F64"):
        precision, how = jax.lax.Precision.HIGHEST, "Precision.HIGHEST (no TF32 or bf16 passes)"
    else:
        precision, how = jax.lax.DotAlgorithmPreset[algorithm], f"the {algorithm} preset"
    return DotFormulation(
        algorithm, backend, _OPERAND[algorithm], operand, precision, accumulation, accumulation,
        f"{algorithm} on {backend}: {operand} operands, {how}, accumulated in {accumulation}.",
    )  # fmt: skip


def _cpu(algorithm: str) -> DotFormulation:
    rounding = _OPERAND[algorithm]
    accumulation = _ACCUMULATION[algorithm]
    highest = jax.lax.Precision.HIGHEST
    if algorithm == "BF16_BF16_F32" and cpu_has_fast_bf16():
        return DotFormulation(
            algorithm, "cpu", "bfloat16", "bfloat16", None, "float32", "float32",
            f"{algorithm} on cpu: native bfloat16 dot accumulated in float32 (this CPU has fast bf16 units).",
        )  # fmt: skip
    if rounding == "float64":
        return DotFormulation(
            algorithm, "cpu", "float64", "float64", highest, "float64", "float64",
            f"{algorithm} on cpu: float64 dot.",
        )  # fmt: skip
    if rounding == "float32":
        what = (
            "float32 dot"
            if algorithm == "F32_F32_F32"
            else "float32 dot (at least as accurate as the multi-pass preset)"
        )
        return DotFormulation(
            algorithm, "cpu", "float32", "float32", highest, "float32", "float32", f"{algorithm} on cpu: {what}."
        )
    why = {
        "bfloat16": (
            f"{_CPU_BF16_OVERRIDE}=upcast; every bf16 product is exact in float32"
            if "amx_bf16" in _cpu_flags()
            else "no fast bf16 units here; every bf16 product is exact in float32"
        ),
        "float16": "every f16 product is exact in float32",
        "tf32": "every TF32 product is exact in float32",
    }[rounding]
    result = accumulation
    tail = "" if accumulation == "float32" else f", summed in float32 and rounded once to {accumulation}"
    return DotFormulation(
        algorithm, "cpu", rounding, "float32", highest, "float32", result,
        f"{algorithm} on cpu: operands rounded to {rounding}, converted to float32 for a float32 dot ({why}){tail}.",
    )  # fmt: skip


@functools.cache
def _formulation(algorithm: str, backend: str, fast_bf16: bool) -> DotFormulation:
    del fast_bf16  # part of the cache key only: the override may change between calls in tests
    if algorithm not in _OPERAND:
        raise ValueError(f"Unknown dot algorithm {algorithm!r}; expected one of {', '.join(_OPERAND)}.")
    return _cpu(algorithm) if backend == "cpu" else _accelerator(algorithm, backend)


def dot_formulation(algorithm: str, backend: str | None = None) -> DotFormulation:
    """The formulation `algorithm` runs as on `backend` (default: JAX's default backend).

    Example:
      >>> dot_formulation("F32_F32_F32", "gpu").precision == jax.lax.Precision.HIGHEST
      True
      >>> dot_formulation("BF16_BF16_F32", "tpu").operand_dtype
      'bfloat16'
    """
    backend = backend or jax.default_backend()
    # Only the cpu bf16 choice depends on the machine (and the override): the others are one instance each.
    return _formulation(algorithm, backend, backend == "cpu" and algorithm == "BF16_BF16_F32" and cpu_has_fast_bf16())


def describe_dot(policy: Any, backend: str | None = None) -> str:
    """Which formulation a policy's matrix products run as here, in one sentence.

    Args:
      policy: a policy or anything `dtypepolicy.get` accepts.
      backend: a JAX platform name; default: the current default backend.

    Example:
      >>> import dtypepolicy as dp
      >>> dp.describe_dot("float32", backend="gpu")
      'F32_F32_F32 on gpu: float32 operands, Precision.HIGHEST (no TF32 or bf16 passes), accumulated in float32.'
    """
    from dtypepolicy._serialization import get

    policy = get(policy)
    algorithm = policy.dot_algorithm
    if algorithm is None:
        return f"{policy.name}: its compute dtype {policy.compute_dtype} is not floating; products use JAX's default."
    return dot_formulation(algorithm, backend).description


def _transposed(equation: str) -> tuple[str, str] | None:
    """The einsum equations of the two gradients of `equation`, or None when einsum cannot say them.

    For `X,Y->Z` the input gradient is `Z,Y->X` and the kernel gradient `X,Z->Y`. That needs every
    letter of each operand in the other two specs: a letter only one operand has (summed away
    alone) would have to be broadcast back, which an einsum cannot do.
    """
    inputs, output = equation.replace(" ", "").split("->")
    x, y = inputs.split(",")
    letters = [set(spec.replace("...", "")) for spec in (x, y, output)]
    if not letters[0] <= letters[1] | letters[2] or not letters[1] <= letters[0] | letters[2]:
        return None
    if ("..." in x) != ("..." in output) or "..." in y:
        return None
    return f"{output},{y}->{x}", f"{x},{output}->{y}"


@functools.lru_cache(maxsize=256)
def _product(equation: str, formulation: DotFormulation) -> Any:
    """The product as a custom_vjp whose two gradient products run in the same formulation.

    JAX's own transpose would pair the float32 cotangent with the prepared 16-bit operand, a
    mixed product that XLA runs as a float32 dot, off the native bf16 path.
    """

    def run(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
        result = jnp.einsum(
            spec, a, b, precision=formulation.precision, preferred_element_type=formulation.accumulation
        )
        return formulation.finish(result)

    transposed = _transposed(equation)
    if transposed is None:
        return lambda x, y: run(equation, formulation.prepare(x), formulation.prepare(y))
    input_grad, kernel_grad = transposed

    @jax.custom_vjp
    def product(x: jax.Array, y: jax.Array) -> jax.Array:
        return run(equation, formulation.prepare(x), formulation.prepare(y))

    def forward(x: jax.Array, y: jax.Array) -> tuple[jax.Array, tuple]:
        return product(x, y), (x, y)

    def backward(residuals: tuple, cotangent: jax.Array) -> tuple[jax.Array, jax.Array]:
        x, y = residuals
        g = formulation.prepare(cotangent)
        x_grad = run(input_grad, g, formulation.prepare(y))
        y_grad = run(kernel_grad, formulation.prepare(x), g)
        return x_grad.astype(x.dtype), y_grad.astype(y.dtype)

    product.defvjp(forward, backward)
    return product


def product(equation: str, x: Any, y: Any, formulation: DotFormulation) -> jax.Array:
    """`einsum(equation, x, y)` the formulation's way, in its accumulation type; gradients too.

    Example:
      >>> f = dot_formulation("F32_F32_F32", "cpu")
      >>> product("ij,jk->ik", jnp.ones((2, 3)), jnp.ones((3, 2)), f).tolist()
      [[3.0, 3.0], [3.0, 3.0]]
    """
    return _product(equation, formulation)(jnp.asarray(x), jnp.asarray(y))


__all__ = ["DotFormulation", "cpu_has_fast_bf16", "describe_dot", "dot_formulation", "product", "round_to_tf32"]
