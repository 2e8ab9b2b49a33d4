"""Dense: `activation(inputs @ kernel + bias)` with one rounding to the compute dtype.

The product takes the compute-dtype inputs and kernel, accumulates in float32 (SPEC §5), and the
bias is added to that float32 accumulator before the single rounding to the compute dtype. The
forward reads the bias's float32 master itself, not its autocast read (a copy already rounded
to 16 bits); the activation then runs in the compute dtype. The bias is an ordinary autocast
variable, as in Keras, so a subclass's own `call` (`inputs @ self.kernel + self.bias`) reads
it in the compute dtype like the kernel.

An eager call is one compiled dispatch: the raw input and the stored weights go into the jitted
forward, which does the casts to the compute dtype itself (two eager casts cost more than the
product at small sizes).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp

from dtypepolicy import _numerics
from dtypepolicy._autocast import current_autocast_dtype
from dtypepolicy._dot_algorithms import default_algorithm
from dtypepolicy._dot_formulation import CPU_BF16_OVERRIDE, DotFormulation, dot_formulation
from dtypepolicy._dtypes import is_float
from dtypepolicy.quantization import DENSE, Contraction, QuantizationStrategy
from layers import activations
from layers._base._input_spec import InputSpec
from layers._base._layer import Layer
from layers._builtin._arguments import check_bool, check_positive_int, set_weight_arguments, weight_arguments_config
from layers._builtin._training_flag import check_training

__all__ = ["Dense"]


@functools.partial(jax.jit, static_argnames=("equation", "activation", "dtypes", "algorithm"))
def projection_forward(
    equation: str,
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    activation: Any,
    dtypes: tuple[str, str, str | None],
    algorithm: DotFormulation | None = None,
) -> jax.Array:
    """`activation(einsum(equation, x, kernel) + bias)` with the casts, for Dense and EinsumDense.

    One compiled dispatch per eager call, the casts included (SPEC §8 eager overhead); inside a
    caller's jit it is inlined.
    """
    x, kernel, bias = cast_operands(x, kernel, bias, dtypes)
    outputs = _numerics.einsum(equation, x, kernel, bias, algorithm=algorithm)
    return outputs if activation is None else activation(outputs)


_dense_forward = functools.partial(projection_forward, DENSE.equation)


def cast_operands(
    x: jax.Array, kernel: jax.Array, bias: jax.Array | None, dtypes: tuple[str, str, str | None]
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """Casts the raw operands to the dtypes `project` chose; runs inside the jitted forward."""
    x_dtype, kernel_dtype, bias_dtype = dtypes
    return x.astype(x_dtype), kernel.astype(kernel_dtype), None if bias is None else bias.astype(bias_dtype)


def static_activation(activation: Callable[..., Any]) -> Any:
    """The activation as a static jit argument: None for linear, else the (hashable) function."""
    if activation is activations.linear:
        return None
    return activation if isinstance(activation, Hashable) else None


@functools.lru_cache(maxsize=256)
def _input_dtype(dtype: Any, autocast: str | None, kernel_dtype: str) -> str:
    """A floating input is read as `autocast` (if any); an integer or bool one as the kernel.

    Cached: `numpy.dtype.name` alone costs more than a microsecond on every eager call.
    """
    if is_float(dtype):
        return dtype.name if autocast is None else autocast
    return dtype.name if jnp.issubdtype(dtype, jnp.inexact) else kernel_dtype


def _quantized_forward_traced(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    weights: tuple[jax.Array, ...],
    *,
    strategy: QuantizationStrategy,
    contraction: Contraction,
    names: tuple[str, ...],
    compute: str,
    training: bool,
    activation: Any,
) -> jax.Array:
    # The strategy's projection in one compiled dispatch per eager call, like the plain forward.
    outputs = strategy.project(
        x,
        kernel,
        bias,
        dict(zip(names, weights, strict=True)),
        contraction=contraction,
        compute_dtype=compute,
        training=training,
    )
    return outputs if activation is None else activation(outputs)


# Eager calls dispatch once through jit; traced calls inline the forward, so a caller's lowered HLO
# shows the quantize-dequantize ops next to the dots they feed (no nested call in between).
_quantized_forward_jitted = jax.jit(
    _quantized_forward_traced, static_argnames=("strategy", "contraction", "names", "compute", "training", "activation")
)


def _project_quantized(layer: Layer, inputs: jax.Array, strategy: QuantizationStrategy, training: Any) -> jax.Array:
    autocast = current_autocast_dtype()
    names = layer._quantized_weight_names
    bias = None if layer.bias is None else layer.bias._read_storage()
    activation = static_activation(layer.activation)
    kernel = layer.kernel._read_storage()
    weights = tuple(getattr(layer, name)._read_storage() for name in names)
    traced = any(isinstance(value, jax.core.Tracer) for value in (inputs, kernel, bias, *weights))
    forward = _quantized_forward_traced if traced else _quantized_forward_jitted
    outputs = forward(
        inputs,
        kernel,
        bias,
        weights,
        strategy=strategy,
        contraction=layer._contraction(),
        names=names,
        compute=autocast or layer.compute_dtype,
        training=bool(check_training(training, f"{type(layer).__name__} {layer.name!r}")),
        activation=activation,
    )
    if activation is None and layer.activation is not activations.linear:
        outputs = layer.activation(outputs)
    return outputs


def project(layer: Layer, inputs: jax.Array, forward: Callable[..., jax.Array], training: Any = None) -> jax.Array:
    """Runs `forward(x, kernel, bias, activation=, dtypes=)` for a layer with `kernel`, `bias`, `activation`.

    The forward gets the raw input and the stored (float32 master) weights and casts them
    itself, inside its one jitted dispatch: eager casts would each cost a dispatch of their own
    (SPEC §8). `dtypes` are those the call pipeline and the autocast reads would have produced:
    a floating input becomes the autocast dtype when one is active (the layer's compute dtype
    when it autocasts, the pipeline having left the input alone, see `_autocast_inputs`), an
    integer or bool input becomes the kernel's read dtype, the kernel its `.value` dtype and the bias its storage dtype.

    The activation goes inside the jitted forward when it is hashable; an unhashable one cannot
    be a static jit argument and runs after it. (Dense and EinsumDense share this; a precision
    strategy plugs in here: a layer under a quantized policy runs its strategy's projection,
    with `training` deciding whether float8 scales advance.)
    """
    strategy = layer.__dict__.get("_quantization_strategy")  # set when quantized variables are created
    if strategy is not None:
        return _project_quantized(layer, inputs, strategy, training)
    autocast = current_autocast_dtype()
    kernel_variable, bias_variable = layer.kernel, layer.bias
    kernel_dtype = kernel_variable._read_dtype()
    x_dtype = _input_dtype(inputs.dtype, autocast, kernel_dtype)
    bias, bias_dtype = None, None
    if bias_variable is not None:
        # The float32 master joins the float32 accumulator unrounded, whatever autocast says.
        bias, bias_dtype = bias_variable._read_storage(), bias_variable.dtype
    activation = static_activation(layer.activation)
    policy = layer.dtype_policy
    # The policy's formulation for these operands, kept on the layer for the same policy object and
    # dtype: the lookup runs on every eager call (SPEC §8 overhead). The bf16 one may follow the
    # CPU override, so it is always looked up again.
    plan = layer.__dict__.get("_projection_plan")
    if plan is not None and plan[0] is policy and plan[1] == x_dtype:
        formulation = plan[2]
    else:
        if policy.quantization_mode is not None and policy.quantization_mode in layer._quantization_modes:
            raise _built_without_quantized_form(layer, policy)
        formulation = algorithm_for(policy, x_dtype)
        if formulation is None or formulation.algorithm != "BF16_BF16_F32":
            object.__setattr__(layer, "_projection_plan", (policy, x_dtype, formulation))
    outputs = forward(
        inputs,
        kernel_variable._read_storage(),
        bias,
        activation=activation,
        dtypes=(x_dtype, kernel_dtype, bias_dtype),
        algorithm=formulation,
    )
    if activation is None and layer.activation is not activations.linear:
        outputs = layer.activation(outputs)
    return outputs


def _built_without_quantized_form(layer: Layer, policy: Any) -> ValueError:
    # A layer built with float weights that a quantized policy reached later (put into a model
    # given one): running the float product would silently ignore the policy.
    return ValueError(
        f"Layer {layer.name!r} has the quantized policy {policy.name!r} but was built with float weights (it got the "
        f"policy after it was built, e.g. from a model it joined). Call layer.quantize({policy.quantization_mode!r}) "
        f"(or model.quantize) to convert its weights, or give it a plain policy."
    )


@functools.lru_cache(maxsize=256)
def _algorithm_for(policy: Any, operand_dtype: str) -> str | None:
    if operand_dtype == policy.compute_dtype:
        return policy.dot_algorithm
    return default_algorithm(operand_dtype)


_FORMULATIONS: dict[tuple, tuple] = {}


def algorithm_for(policy: Any, operand_dtype: str) -> DotFormulation | None:
    """How products run for these operands: the policy's algorithm when they are its compute dtype.

    A formulation, not a name, goes into the jitted forwards as a static argument: the same
    algorithm may run differently (DTYPEPOLICY_CPU_BF16_DOT), and jit must not reuse the other one.
    Looked up by the policy's identity (kept alive in the entry) on every eager call: hashing the
    policy and choosing the formulation cost more than a small product. Only the bf16 algorithm's
    formulation depends on the override, so only it reads the environment again.
    """
    entry = _FORMULATIONS.get((id(policy), operand_dtype))
    if entry is not None and entry[0] is policy:
        _, formulation, override = entry
        if override is None or os.environ.get(CPU_BF16_OVERRIDE) == override[0]:
            return formulation
    algorithm = _algorithm_for(policy, operand_dtype)
    formulation = None if algorithm is None else dot_formulation(algorithm)
    override = (os.environ.get(CPU_BF16_OVERRIDE),) if algorithm == "BF16_BF16_F32" else None
    if len(_FORMULATIONS) > 1024:
        _FORMULATIONS.clear()
    _FORMULATIONS[(id(policy), operand_dtype)] = (policy, formulation, override)
    return formulation


def restore_input_autocast(cls: type) -> None:
    """Gives a subclass that replaces `call` the pipeline's input autocast back.

    Dense and EinsumDense set `_autocast_inputs = False` because `project` casts the input; a
    subclass whose own `call` may not reach `project` needs the pipeline to cast for it (a cast
    of an input already in the compute dtype costs nothing inside `project`).
    """
    if "call" in cls.__dict__ and "_autocast_inputs" not in cls.__dict__:
        cls._autocast_inputs = True


class Dense(Layer):
    """A densely connected layer: `activation(inputs @ kernel + bias)`.

    The product contracts the last axis of inputs of any rank ≥ 2 with the `(input_dim, units)`
    kernel. Under a 16-bit policy it accumulates in float32, adds the float32 bias to the
    accumulator and rounds once to the compute dtype, which is more accurate than rounding the
    product and then the sum. After the first call the input's last axis is fixed: another size
    raises a ValueError naming the layer and the shapes. Masks pass through unchanged.

    Args:
      units: the size of the last output axis, a positive int.
      activation: an activation name, function or None (linear).
      use_bias: whether to add a bias.
      kernel_initializer: initializer of the kernel (a name, an `Initializer` or a dict).
      bias_initializer: initializer of the bias.
      kernel_regularizer: optional regularizer of the kernel; its value joins `losses`.
      bias_regularizer: optional regularizer of the bias.
      kernel_constraint: optional constraint applied to the kernel after optimizer updates.
      bias_constraint: optional constraint applied to the bias.
      **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`, `autocast`, ...).

    Raises:
      ValueError: `units` is not a positive int, or a name is unknown.
      TypeError: `use_bias` is not a bool, or an argument has the wrong type.

    Example:
      >>> from layers import Dense
      >>> layer = Dense(4, activation="relu", dtype="mixed_bfloat16")
      >>> y = layer(np.ones((2, 3)))
      >>> y.shape, y.dtype, layer.kernel.dtype, layer.bias.dtype
      ((2, 4), dtype(bfloat16), 'float32', 'float32')
    """

    _autocast_inputs = False  # `project` casts inside the jitted forward
    _quantization_modes = ("int8", "float8")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        restore_input_autocast(cls)

    def __init__(
        self,
        units: int,
        activation: str | Callable[..., Any] | None = None,
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.units = check_positive_int(units, "Dense units")
        self.activation = activations.get(activation)
        self.use_bias = check_bool(use_bias, "Dense use_bias")
        set_weight_arguments(self, "kernel", kernel_initializer, kernel_regularizer, kernel_constraint)
        set_weight_arguments(self, "bias", bias_initializer, bias_regularizer, bias_constraint)
        self.supports_masking = True
        # Checked before the first build, so a rank-1 input fails with a clear message.
        self.input_spec = InputSpec(min_ndim=2)

    def build(self, input_shape: Any) -> None:
        """Creates `kernel` `(input_shape[-1], units)` and, with `use_bias`, `bias` `(units,)`."""
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ValueError(
                f"Dense layer {self.name!r} needs inputs of rank >= 2 (batch, ..., features), received "
                f"input_shape={input_shape}."
            )
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"Dense layer {self.name!r} needs the size of the last input axis to create its kernel, "
                f"received input_shape={input_shape}."
            )
        self.kernel = self.add_weight(
            shape=(input_dim, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            name="kernel",
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                name="bias",
            )
        self.input_spec = InputSpec(min_ndim=2, axes={-1: input_dim})

    def call(self, inputs: jax.Array, training: bool | None = None) -> jax.Array:
        """Returns `activation(inputs @ kernel + bias)` in the compute dtype.

        `training` matters to float8 layers only: their scales advance in training steps.
        """
        return project(self, inputs, _dense_forward, training)

    def _contraction(self) -> Contraction:
        return DENSE

    def get_config(self) -> dict[str, Any]:
        """The base config plus every constructor argument, serialized for JSON.

        Raises:
          ValueError: the activation is a custom function, which has no name to serialize.
        """
        return {
            **super().get_config(),
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            **weight_arguments_config(self, "kernel", "bias"),
        }
