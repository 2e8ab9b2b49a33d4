"""Float8 training: the projection on E4M3 operands with an E5M2 output gradient (SPEC §6).

The forward quantizes and dequantizes the input and the kernel (E4M3) right before the product,
which accumulates in float32; the backward does the same to the output gradient (E5M2) before
the two gradient products. That is the form XLA's GPU GEMM rewriter turns into one float8
cuBLASLt matmul per product (float8 operands, their converts and scale multiplications feeding
the dot); on a CPU the same code emulates it. Input and kernel gradients pass straight through
their quantization. The bias joins the float32 accumulator outside, so its gradient is not rounded.

Two recipes choose the scales:
- delayed (the default, Keras 3 and Transformer Engine): each scale is computed from a history of
  past amaxes and kept in six float32 state variables. A step uses the scales computed by the
  previous step and returns the next ones, and the updated histories, as those variables'
  "gradients" (`overwrite_with_gradient`). With `training` false the state is left alone.
- current: each tensor's scale comes from its own amax in the same step; there is no state.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from dtypepolicy import float8 as _f8
from dtypepolicy.quantization._contraction import Contraction
from dtypepolicy.quantization._max_combine import NOT_UPDATED
from dtypepolicy.quantization._strategy import QuantizationStrategy, WeightSpec

E4M3 = "float8_e4m3fn"
E5M2 = "float8_e5m2"
# The order of the state variables, after kernel and bias (Keras 3 names).
SCALES = ("inputs_scale", "kernel_scale", "outputs_grad_scale")
HISTORIES = ("inputs_amax_history", "kernel_amax_history", "outputs_grad_amax_history")


def _amax(x: jax.Array) -> jax.Array:
    return jnp.max(jnp.abs(x)).astype(jnp.float32)


def _unchanged(value: jax.Array) -> jax.Array:
    """The "gradient" of a state variable that must not change: "not updated"."""
    return jnp.full(jnp.shape(value), NOT_UPDATED, jnp.float32)


def _next_state(x: jax.Array, scale: jax.Array, history: jax.Array, dtype_max: float, margin: int) -> tuple:
    """The delayed recipe's update: the scale from the history so far, then `x`'s amax recorded."""
    new_scale = _f8.compute_scale(jnp.max(history), scale, dtype_max, margin)
    return new_scale, _f8.update_amax_history(x, history)


def _gradient_products(contraction: Contraction, x_hat: jax.Array, kernel_hat: jax.Array, grad_hat: jax.Array):
    """The input and kernel gradients, from the q/dq'd operands and output gradient.

    All three are in the compute dtype, so both products take float8-derived operands of that
    dtype (the pattern the GEMM rewriter turns into float8 matmuls) instead of float32 copies.
    """
    _, transpose = jax.vjp(lambda a, b: contraction(a, b, grad_hat.dtype), x_hat, kernel_hat)
    return transpose(grad_hat)


def _keep_overflow(grads: tuple, cotangent: jax.Array) -> tuple:
    """The gradients, made NaN when the output gradient held an inf or NaN.

    The E5M2 cast saturates, so an overflow upstream (a loss scale too large) would otherwise come
    out as finite gradients that loss scaling never sees. Applied after the products, so the
    dequantized operands still feed the dots directly (the pattern the GEMM rewriter matches).
    """
    overflowed = ~jnp.isfinite(jnp.max(jnp.abs(cotangent)))
    return tuple(jnp.where(overflowed, jnp.nan, g).astype(g.dtype) for g in grads)


@functools.lru_cache(maxsize=256)
def _delayed_projection(contraction: Contraction, compute: str, training: bool, margin: int):
    """The delayed-scaling product as a custom_vjp function of `(x, kernel, state)`."""

    def quantized_operands(x, kernel, state):
        inputs_scale, kernel_scale = state[0], state[1]
        x_hat = _f8.quantize_dequantize(x, inputs_scale, E4M3, compute)
        kernel_hat = _f8.quantize_dequantize(kernel, kernel_scale, E4M3, compute)
        return x_hat, kernel_hat

    @jax.custom_vjp
    def product(x, kernel, state):
        return contraction(*quantized_operands(x, kernel, state), "float32")

    def forward(x, kernel, state):
        x_hat, kernel_hat = quantized_operands(x, kernel, state)
        inputs_scale, kernel_scale, grad_scale, inputs_history, kernel_history, grad_history = state
        if training:
            new_inputs = _next_state(x, inputs_scale, inputs_history, _f8.E4M3_MAX, margin)
            new_kernel = _next_state(kernel, kernel_scale, kernel_history, _f8.E4M3_MAX, margin)
        else:
            new_inputs = (_unchanged(inputs_scale), _unchanged(inputs_history))
            new_kernel = (_unchanged(kernel_scale), _unchanged(kernel_history))
        residuals = (x_hat, kernel_hat, grad_scale, grad_history, new_inputs, new_kernel)
        return contraction(x_hat, kernel_hat, "float32"), residuals

    def backward(residuals, cotangent):
        x_hat, kernel_hat, grad_scale, grad_history, new_inputs, new_kernel = residuals
        if training:
            new_grad = _next_state(cotangent, grad_scale, grad_history, _f8.E5M2_MAX, margin)
        else:
            new_grad = (_unchanged(grad_scale), _unchanged(grad_history))
        grad_hat = _f8.quantize_dequantize(cotangent, grad_scale, E5M2, compute)
        x_grad, kernel_grad = _keep_overflow(_gradient_products(contraction, x_hat, kernel_hat, grad_hat), cotangent)
        state_grad = (new_inputs[0], new_kernel[0], new_grad[0], new_inputs[1], new_kernel[1], new_grad[1])
        return x_grad, kernel_grad, state_grad

    product.defvjp(forward, backward)
    return product


def _current_scale(x: jax.Array, dtype_max: float, margin: int) -> jax.Array:
    # 1.0 stands in when the tensor has no usable amax (all zeros, inf or NaN).
    return _f8.compute_scale(_amax(x), 1.0, dtype_max, margin)


@functools.lru_cache(maxsize=256)
def _current_projection(contraction: Contraction, compute: str, margin: int):
    """The current-scaling product as a custom_vjp function of `(x, kernel)`."""

    def quantized_operands(x, kernel):
        x_hat = _f8.quantize_dequantize(x, _current_scale(x, _f8.E4M3_MAX, margin), E4M3, compute)
        kernel_hat = _f8.quantize_dequantize(kernel, _current_scale(kernel, _f8.E4M3_MAX, margin), E4M3, compute)
        return x_hat, kernel_hat

    @jax.custom_vjp
    def product(x, kernel):
        return contraction(*quantized_operands(x, kernel), "float32")

    def forward(x, kernel):
        x_hat, kernel_hat = quantized_operands(x, kernel)
        return contraction(x_hat, kernel_hat, "float32"), (x_hat, kernel_hat)

    def backward(residuals, cotangent):
        x_hat, kernel_hat = residuals
        grad_scale = _current_scale(cotangent, _f8.E5M2_MAX, margin)
        grad_hat = _f8.quantize_dequantize(cotangent, grad_scale, E5M2, compute)
        return _keep_overflow(_gradient_products(contraction, x_hat, kernel_hat, grad_hat), cotangent)

    product.defvjp(forward, backward)
    return product


@dataclasses.dataclass(frozen=True)
class Float8Strategy(QuantizationStrategy):
    """Float8 training of a projection, delayed or current scaling.

    Args:
      recipe: `"delayed"` or `"current"`.
      amax_history_length: the length of each amax history (delayed).
      margin: power-of-two headroom of every scale.

    Example:
      >>> from dtypepolicy.quantization import DENSE
      >>> strategy = Float8Strategy("delayed", amax_history_length=4)
      >>> [(spec.name, spec.shape) for spec in strategy.weight_specs(jnp.ones((3, 2)), DENSE)][::3]
      [('inputs_scale', ()), ('inputs_amax_history', (4,))]
    """

    recipe: str = "delayed"
    amax_history_length: int | None = 1024  # None for current scaling, which keeps no history
    margin: int = 0
    mode = "float8"

    def weight_specs(self, kernel: jax.Array, contraction: Contraction) -> tuple[WeightSpec, ...]:
        """Three scales (init 1.0) and three amax histories (init 0), float32; none for current scaling."""
        if self.recipe == "current":
            return ()
        length = self.amax_history_length
        scales = tuple(WeightSpec(name, 1.0, (), "float32", True, True) for name in SCALES)
        histories = tuple(WeightSpec(name, 0.0, (length,), "float32", True, True) for name in HISTORIES)
        return scales + histories

    def project(self, x, kernel, bias, weights, *, contraction, compute_dtype, training):
        """The float8 product plus the bias, rounded once to `compute_dtype`."""
        x, kernel = x.astype(compute_dtype), kernel.astype(compute_dtype)
        if self.recipe == "current":
            outputs = _current_projection(contraction, compute_dtype, self.margin)(x, kernel)
        else:
            state = tuple(jnp.asarray(weights[name], jnp.float32) for name in SCALES + HISTORIES)
            product = _delayed_projection(contraction, compute_dtype, bool(training), self.margin)
            outputs = product(x, kernel, state)
        if bias is not None:
            outputs = outputs + bias.astype(outputs.dtype)
        return outputs.astype(compute_dtype)


__all__ = ["Float8Strategy"]
