"""Int8 inference: per-output-channel int8 kernel, per-row int8 input, int32 product.

The kernel is stored as int8 codes with one float32 scale per output channel (its absmax over
the summed axes / 127); each call quantizes its input the same way per row. The product runs
int8 x int8 -> int32, then the int32 sums are rescaled in float32 by the outer product of the two
scales (the same einsum on the scales, whose summed axes have size 1), the bias is added and the
sum is rounded once to the compute dtype. The input gradient passes straight through to a
float product with the dequantized kernel, so an int8 layer can sit inside a model that trains
other layers; the int8 kernel itself is not trainable.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from dtypepolicy.quantization._contraction import Contraction
from dtypepolicy.quantization._strategy import QuantizationStrategy, WeightSpec

INT8_MAX = 127.0
_INV_INT8_MAX = np.float32(1.0 / INT8_MAX)


def absmax_quantize(x: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Symmetric int8 codes of `x` and their float32 scales, one per slice over `axes`.

    `x ≈ codes * scale`, with `scale = max|x| / 127` over `axes` (kept as size-1 axes); an
    all-zero slice gets scale 1. In float32 terms: `scale = amax * float32(1/127)` and
    `codes = clip(round_half_even(x * float32(1/scale)), -127, 127)`.

    Example:
      >>> codes, scale = absmax_quantize(jnp.array([[1.0, -2.0], [0.5, 0.25]]), axes=(1,))
      >>> codes.tolist(), bool(jnp.all(scale[:, 0] == jnp.array([2.0, 0.5]) / 127))
      ([[64, -127], [127, 64]], True)
    """
    wide = jnp.asarray(x).astype(jnp.float32)
    amax = jnp.max(jnp.abs(wide), axis=axes, keepdims=True)
    # Both divisions are written as products with a float32 reciprocal: XLA rewrites a division
    # by a constant or by a broadcast into exactly that, so saying it keeps the result the same
    # on every backend and under every fusion (and lets a NumPy reference reproduce it bit for bit).
    scale = jnp.where(amax > 0, amax * _INV_INT8_MAX, 1.0)
    codes = jnp.clip(jnp.round(wide * (1.0 / scale)), -INT8_MAX, INT8_MAX).astype(jnp.int8)
    return codes, scale


@functools.lru_cache(maxsize=256)
def _int8_projection(contraction: Contraction, compute: str):
    def rescaled(x, codes, kernel_scale):
        x_codes, x_scale = absmax_quantize(x, contraction.input_axes(x.ndim))
        sums = contraction(x_codes, codes, "int32").astype(jnp.float32)
        return sums * contraction(x_scale, kernel_scale, "float32", precision="highest")

    @jax.custom_vjp
    def product(x, codes, kernel_scale):
        return rescaled(x, codes, kernel_scale)

    def forward(x, codes, kernel_scale):
        return rescaled(x, codes, kernel_scale), (x, codes, kernel_scale)

    def backward(residuals, cotangent):
        x, codes, kernel_scale = residuals
        kernel = (codes.astype(jnp.float32) * kernel_scale).astype(compute)
        _, transpose = jax.vjp(lambda a: contraction(a, kernel, "float32"), x)
        (x_grad,) = transpose(cotangent)
        return x_grad, np.zeros(codes.shape, jax.dtypes.float0), jnp.zeros_like(kernel_scale)

    product.defvjp(forward, backward)
    return product


@dataclasses.dataclass(frozen=True)
class Int8Strategy(QuantizationStrategy):
    """Int8 inference of a projection (see the module docstring).

    Example:
      >>> from dtypepolicy.quantization import DENSE
      >>> strategy = Int8Strategy()
      >>> kernel = jnp.array([[1.0, -4.0], [0.5, 2.0]])
      >>> strategy.stored_kernel(kernel, DENSE).tolist()
      [[127, -127], [64, 64]]
    """

    mode = "int8"

    def weight_specs(self, kernel: jax.Array, contraction: Contraction) -> tuple[WeightSpec, ...]:
        """One float32 `kernel_scale` per output channel (the kernel's shape without its summed axes)."""
        axes = contraction.kernel_axes(kernel.ndim)
        _, scale = absmax_quantize(kernel, axes)
        scale = jnp.squeeze(scale, axis=axes)
        return (WeightSpec("kernel_scale", scale, tuple(scale.shape), "float32", False, False),)

    def stored_kernel(self, kernel: jax.Array, contraction: Contraction) -> jax.Array:
        """The kernel's int8 codes."""
        codes, _ = absmax_quantize(kernel, contraction.kernel_axes(kernel.ndim))
        return codes

    def project(self, x, kernel, bias, weights, *, contraction, compute_dtype, training):
        """The int8 product, rescaled in float32, plus the bias, rounded once to `compute_dtype`."""
        axes = contraction.kernel_axes(kernel.ndim)
        kernel_scale = jnp.expand_dims(jnp.asarray(weights["kernel_scale"], jnp.float32), axes)
        outputs = _int8_projection(contraction, compute_dtype)(x.astype(compute_dtype), kernel, kernel_scale)
        if bias is not None:
            outputs = outputs + bias.astype(outputs.dtype)
        return outputs.astype(compute_dtype)
