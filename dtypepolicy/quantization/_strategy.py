"""The interface between a projection layer and a quantization strategy.

A layer with a kernel (Dense, EinsumDense and the attention projections built from them) asks
its policy for a strategy and delegates three things to it: which extra variables to create,
what to store in place of the float kernel, and the projection itself. Adding a precision mode
means adding a strategy here; no layer changes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from dtypepolicy.quantization._contraction import Contraction


class WeightSpec(NamedTuple):
    """A variable a strategy needs on the layer.

    Attributes:
      name: the attribute and variable name (`"inputs_scale"`).
      value: its initial value, an array (or a scalar with `shape`).
      shape: its shape.
      dtype: its storage dtype.
      trainable: whether it is in `trainable_weights` (float8 state is, to receive its "gradient").
      overwrite_with_gradient: whether optimizers assign the gradient instead of applying it.

    Example:
      >>> import dtypepolicy as dp
      >>> from dtypepolicy.quantization import DENSE, strategy_for
      >>> strategy = strategy_for(dp.get("float8_from_mixed_bfloat16"))
      >>> spec = strategy.weight_specs(jnp.ones((4, 2)), DENSE)[0]
      >>> spec.name, spec.shape, spec.dtype, spec.trainable, spec.overwrite_with_gradient
      ('inputs_scale', (), 'float32', True, True)
    """

    name: str
    value: Any
    shape: tuple[int, ...]
    dtype: str
    trainable: bool
    overwrite_with_gradient: bool


class QuantizationStrategy:
    """Base class of precision strategies (see the module docstring). Instances are hashable values.

    A layer with a kernel creates the variables of `weight_specs`, stores `stored_kernel` (when
    not None) in place of its float kernel, and computes its output with `project`.

    Example:
      >>> import dtypepolicy as dp
      >>> from dtypepolicy.quantization import DENSE, strategy_for
      >>> strategy = strategy_for(dp.get("int8_from_float32"))
      >>> isinstance(strategy, QuantizationStrategy), strategy.mode
      (True, 'int8')
      >>> kernel = jnp.array([[1.0, -2.0], [0.5, 4.0]])
      >>> codes = strategy.stored_kernel(kernel, DENSE)  # int8 codes, per output channel
      >>> codes.tolist()
      [[127, -64], [64, 127]]
      >>> weights = {spec.name: spec.value for spec in strategy.weight_specs(kernel, DENSE)}
      >>> y = strategy.project(
      ...     jnp.ones((1, 2)), codes, None, weights, contraction=DENSE, compute_dtype="float32", training=False
      ... )
      >>> [round(v, 2) for v in y[0].tolist()]  # the float product is [1.5, 2.0]
      [1.5, 1.98]
    """

    mode: str = ""

    def weight_specs(self, kernel: jax.Array, contraction: Contraction) -> tuple[WeightSpec, ...]:
        """The variables the layer creates after `kernel` and `bias`, from its float kernel."""
        return ()

    def stored_kernel(self, kernel: jax.Array, contraction: Contraction) -> jax.Array | None:
        """What replaces the float kernel in storage (int8 codes), or None to keep it."""
        return None

    def project(
        self,
        x: jax.Array,
        kernel: jax.Array,
        bias: jax.Array | None,
        weights: dict[str, jax.Array],
        *,
        contraction: Contraction,
        compute_dtype: str,
        training: bool,
    ) -> jax.Array:
        """`contraction(x, kernel) + bias` in `compute_dtype`, the strategy's way."""
        raise NotImplementedError
