"""What `Layer.__call__`, `Layer.build` and `Layer.stateless_call` do, step by step.

Kept out of the Layer class so that the class reads as the contract and this module as the
mechanism. The order of `run` is the contract of SPEC §4.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import dtypepolicy as dp
from dtypepolicy import _context, _state
from dtypepolicy._autocast import enter_autocast, leave_autocast
from dtypepolicy._dtypes import is_float
from dtypepolicy._strict import check_outputs, strict_mode
from dtypepolicy.quantization import _max_combine as max_combine
from layers._base import (
    _call_context,
    _inputs,
    _masking,
    _policy_key_check,
    _quantization,
    _signature,
    _traced_losses,
    _transaction,
)
from layers._base._arrays import is_jax_array
from layers._base._input_spec import check_input_spec


def _first_argument(layer: Any, args: tuple, kwargs: dict) -> Any:
    """The call's main input: the first positional argument, else the first call parameter."""
    if args:
        return args[0]
    parameters = _signature.call_signature(type(layer).call).signature.parameters
    for name in parameters:
        if name in kwargs:
            return kwargs[name]
    return None


def _read_variables(tree: Any) -> Any:
    if is_jax_array(tree):
        return tree
    return jax.tree.map(
        lambda leaf: leaf.value if isinstance(leaf, dp.Variable) else leaf,
        tree,
        is_leaf=lambda leaf: isinstance(leaf, dp.Variable),
    )


def _describe(args: tuple, kwargs: dict) -> str:
    shapes = _inputs.shapes_of((args, {k: v for k, v in kwargs.items() if k not in ("training", "mask")}))
    return f"positional argument shapes {shapes[0]}" + (f", keyword arguments {shapes[1]}" if shapes[1] else "")


def _note_failure(error: BaseException, layer: Any, args: tuple, kwargs: dict) -> None:
    # Only the innermost layer adds a note: that is where the failure happened.
    if getattr(error, "_layers_noted", False):
        return
    built_for = getattr(layer, "_build_shapes", None)
    built = f"; the layer was built for input shapes {built_for}" if built_for is not None else ""
    error.add_note(
        f"Raised while calling layer {layer.path!r} ({type(layer).__name__}) with {_describe(args, kwargs)}{built}."
    )
    with contextlib.suppress(AttributeError):  # exceptions with __slots__ take no attributes
        error._layers_noted = True


def run(layer: Any, args: tuple, kwargs: dict) -> Any:
    """`Layer.__call__`: the whole call pipeline."""
    layer._check_initialized()
    arrays_only = _inputs.all_arrays(args)
    if not arrays_only:
        _inputs.check_positional(args, layer.name)
        args = _inputs.convert_number_lists(args, layer.name)
    signature = _signature.call_signature(type(layer).call)
    policy = layer.dtype_policy
    compute = policy.compute_dtype
    casting = layer.autocast and is_float(compute)

    # 1. inputs: NumPy to JAX, floating arrays to the input dtype (masks follow every cast).
    kwargs = dict(kwargs)
    training = kwargs.pop("training", None)
    explicit_mask = kwargs.pop("mask", None)
    input_dtype = compute if casting and layer._autocast_inputs else None
    args, kwargs = _inputs.convert_call_arguments(args, kwargs, input_dtype, arrays_only or None)
    first = _first_argument(layer, args, kwargs)
    context = _call_context.current_call_context()
    top_level = context is None

    # Every call is a transaction (variable writes, losses, metrics, builds), nested in the
    # caller's: a failure undoes all of it, even when a parent layer catches the error.
    saved_losses = layer._clear_losses() if top_level else None
    # The process-wide default policy, so that a call that changes it and fails puts it back.
    default_mark = _state.write_mark()
    transaction = _transaction.CallTransaction()
    try:
        with transaction:
            # 2. input_spec, 3. build.
            check_input_spec(layer.input_spec, first, layer.name)
            if not layer.built:
                build_from_arguments(layer, args, kwargs)
            # 4. training and masks: explicit, else inherited from the enclosing call, else the default.
            training, mask = _resolve_training_and_masks(
                signature, context, training, explicit_mask, first, args, kwargs
            )
            # 5. the call, under this layer's own autocast scope.
            outputs = _call_in_context(layer, args, kwargs, training, context, compute if casting else None)
            outputs = _finish_outputs(layer, policy, outputs, first, mask)
            if top_level:
                _check_no_traced_writes(layer, transaction.scope)
            # Output shapes for summary(), the policy-map key check: a warning turned into an
            # error must fail the call before anything is committed.
            outputs = layer._record_call(outputs)
        # Committing can fail too (a metric report, a traced-losses step): the same rollback.
        _commit(transaction, top_level, saved_losses, outputs)
    except BaseException as error:
        transaction.rollback()
        _state.undo_own_writes_since(default_mark)
        if top_level:
            _transaction.restore_losses(saved_losses)
        if isinstance(error, Exception):
            _note_failure(error, layer, args, kwargs)
        raise
    return outputs


def _call_in_context(layer: Any, args: tuple, kwargs: dict, training: Any, context: Any, autocast: str | None) -> Any:
    """Step 5: `layer.call` under its call context and its own autocast dtype, both restored after.

    Bare ContextVar tokens, reset in `finally` (a microsecond less per call than `scoped`).
    A scope that `call` entered and never exited is closed before those resets and raises, so
    it can neither outlive the call nor make the resets restore the wrong values.
    """
    scopes = _context.open_scopes()
    context_token = autocast_token = None
    try:
        context_token = _call_context.enter(training, layer if context is None else context.entry_layer)
        autocast_token = enter_autocast(autocast)
        try:
            outputs = _read_variables(layer.call(*args, **kwargs))
        except BaseException:
            with contextlib.suppress(RuntimeError):  # the call's own error is the one to report
                _context.close_scopes_since(scopes, f"Layer {layer.path!r}'s call")
            raise
        if _context.open_scopes() is not scopes:  # the message (and layer.path) only when needed
            _context.close_scopes_since(scopes, f"Layer {layer.path!r}'s call")
        return outputs
    finally:
        try:
            leave_autocast(autocast_token)
        finally:
            if context_token is not None:
                _call_context.leave(context_token)


def _resolve_training_and_masks(
    signature: Any, context: Any, training: Any, explicit_mask: Any, first: Any, args: tuple, kwargs: dict
) -> tuple[Any, Any]:
    """Step 4: fills `training` and the masks into `kwargs`; returns the training flag and the mask.

    Each is the explicit value, else the enclosing call's (training), else the default.
    """
    if training is None and context is not None:
        training = context.training
    if training is None and signature.accepts_training:
        training = signature.training_default
    if signature.accepts_training and training is not None:
        kwargs["training"] = training
    mask = _masking.mask_of(first) if explicit_mask is None else explicit_mask
    if signature.accepts_mask and mask is not None:
        kwargs["mask"] = mask
    if signature.mask_arguments:
        _fill_argument_masks(signature, args, kwargs)
    return training, mask


def _commit(transaction: Any, top_level: bool, saved_losses: Any, outputs: Any) -> None:
    """Hands a successful call's changes to the enclosing call, or applies them at the top."""
    if not top_level:
        transaction.commit()
    elif (
        not transaction.stateless
        and (transaction.losses or transaction.metrics or any(losses for _, losses in saved_losses))
        and transaction.traced(outputs)
    ):
        # Under the user's own jax.jit/grad the losses and metric values are tracers: they must
        # not reach the layer, whose earlier concrete losses stay. `layer.losses` read inside the
        # same trace still sees this call's losses (stateless_call(..., return_losses=True)
        # returns them explicitly).
        transaction.commit(apply_reports=False)
        _transaction.keep_traced_losses(transaction, saved_losses)
    else:
        transaction.commit()
        # This call's losses replace a traced call's; finished traces' entries go (and their tracers).
        _traced_losses.forget(saved_losses)
        if transaction.traced_callables and not transaction.stateless:
            # Added under a trace inside this call that has ended (stateless_call puts the callables back itself).
            _transaction.settle_traced_callables(transaction)


def warn_unmatched_keys(layer: Any) -> None:
    """The `UnmatchedPolicyKeyWarning` check of a layer holding a map, once, at the caller's line.

    The warning is taken from `_policy_key_check.warn_unmatched_keys` and issued again with the stack
    level of the first frame outside this package (the user's line that called the layer, or
    the user's `call` that called it), however deep the pipeline is. The layer counts as
    checked only once the warning went out: if a filter made it an error, the next call checks again.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _policy_key_check.warn_unmatched_keys(layer)
    level, frame = 1, sys._getframe(0)
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "layers":
        frame, level = frame.f_back, level + 1
    for warning in caught:
        warnings.warn(warning.message, warning.category, stacklevel=level)
    object.__setattr__(layer, "_map_checked", True)


def _fill_argument_masks(signature: Any, args: tuple, kwargs: dict) -> None:
    """Keras 3: a call argument named `<argument>_mask` receives the mask of `<argument>`."""
    bound = signature.bind(args, kwargs)
    for argument, mask_name in signature.mask_arguments:
        if argument in bound and bound.get(mask_name) is None and (mask_name in kwargs or mask_name not in bound):
            mask = _masking.mask_of(bound[argument])
            if mask is not None:
                kwargs[mask_name] = mask


def _check_no_traced_writes(layer: Any, transaction: dp.StatelessScope) -> None:
    """A stateful call traced by the user's own jax.jit would leak tracers into variables."""
    if transaction._parent is not None:
        return  # inside stateless_call or a user's StatelessScope: writes stay in that scope
    for variable in transaction.written if transaction._written else ():
        if isinstance(transaction.get_current_value(variable), jax.core.Tracer):
            raise RuntimeError(
                f"Layer {layer.path!r} updated variable {variable.path!r} while JAX was tracing it "
                f"(a call inside jax.jit, grad or vmap). A traced value cannot be stored; use "
                f"layer.stateless_call(...) inside transformed functions and assign the returned values."
            )


def _finish_outputs(layer: Any, policy: Any, outputs: Any, first: Any, mask: Any) -> Any:
    """Steps 6 to 8: output dtype, activity regularization, output masks."""
    if policy.output_dtype is not None and is_float(policy.output_dtype):
        outputs = _inputs.cast_floating(outputs, policy.output_dtype)
    regularizer = layer.activity_regularizer
    if regularizer is not None:
        for leaf in jax.tree.leaves(outputs):
            if isinstance(leaf, jax.Array) and is_float(leaf.dtype):
                layer.add_loss(_activity_loss(regularizer, leaf))
    if layer.supports_masking:
        _masking.attach_masks(outputs, layer.compute_mask(first, mask))
    if not layer._own_layers and strict_mode() != "off":  # composites answer for their sublayers
        check_outputs(layer.path, outputs, policy.output_dtype or policy.compute_dtype)
    return outputs


def _activity_loss(regularizer: Any, output: jax.Array) -> jax.Array:
    """Keras: `regularizer(output) / batch_size`, batch size `output.shape[0]`, in float32.

    Dividing keeps the penalty's strength independent of the batch size. A scalar output has
    no batch axis and an empty batch has no samples: their penalty is not divided.
    """
    loss = jnp.asarray(regularizer(output.astype("float32")))
    if is_float(loss.dtype) and loss.dtype != jnp.float32:
        loss = loss.astype(jnp.float32)
    batch = output.shape[0] if output.ndim else 0
    return loss / jnp.asarray(batch, jnp.float32) if batch > 1 else loss


# --- build ---------------------------------------------------------------------------------


def parameter_shapes(layer: Any, function: Callable, args: tuple, kwargs: dict) -> tuple:
    """The shapes to pass to `function` (`build`, `compute_output_shape`), one per parameter.

    The parameters are matched to call arguments by `_signature.build_plan` (Keras 3's rule);
    `args` and `kwargs` are arrays or ShapeDtypeStructs.
    """
    try:
        plan = _signature.build_plan(function, type(layer).call)
    except ValueError as error:
        raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}): {error}") from None
    if not plan:
        return ()
    bound = _signature.call_signature(type(layer).call).bind(args, kwargs)
    shapes = []
    for argument in plan:
        if argument is _signature.FIRST_INPUT:
            tensors = (value for value in bound.values() if any(map(_inputs.is_array_like, jax.tree.leaves(value))))
            first = next(tensors, None)
            shapes.append(None if first is None else _inputs.shapes_of(first))
        else:
            # An argument not given (an optional second input) gets None.
            shapes.append(_inputs.shapes_of(bound[argument]) if argument in bound else None)
    return tuple(shapes)


def build_from_arguments(layer: Any, args: tuple, kwargs: dict) -> None:
    """Builds `layer` from the shapes of the call arguments."""
    layer.build(*parameter_shapes(layer, type(layer).build, args, kwargs))


def wrap_build(build: Callable) -> Callable:
    """Makes a subclass's `build` mark the layer built and locked, or roll back on error."""

    @functools.wraps(build)
    def building(layer: Any, *args: Any, **kwargs: Any) -> Any:
        layer._check_initialized()
        if layer.__dict__.get("_building", False):
            return build(layer, *args, **kwargs)  # a super().build() inside a build
        snapshot = dict(layer.__dict__)
        own_variables, own_layers = list(layer._own_variables), list(layer._own_layers)
        object.__setattr__(layer, "_building", True)
        try:
            # Sublayers created in build take this layer's policy as their default, as they
            # would had they been created in __init__. Initial values depend on shapes only, so
            # they are computed concretely even when the first call happens under a JAX trace.
            with dp.policy_scope(layer.dtype_policy), jax.ensure_compile_time_eval():
                result = build(layer, *args, **kwargs)
                _quantization.check_policy_at_build(layer)  # after build: it may create the sublayers
                _quantization.add_quantized_weights(layer)  # a quantized policy's variables, after the layer's own
        except BaseException:
            _transaction.restore(layer, snapshot, own_variables, own_layers)
            raise
        object.__setattr__(layer, "_building", False)
        object.__setattr__(layer, "built", True)
        object.__setattr__(layer, "_locked", True)
        object.__setattr__(layer, "_build_shapes", args[0] if len(args) == 1 else args)
        # Built during a layer call: if that call fails, the layer goes back to unbuilt.
        _transaction.note_build(layer, snapshot, own_variables, own_layers)
        return result

    building._wraps_build = True
    return building


# --- stateless_call --------------------------------------------------------------------------


def _check_values(values: Any, variables: list, what: str, layer: Any) -> list:
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"stateless_call: {what} must be a list of arrays, received {type(values).__name__}.")
    if len(values) != len(variables):
        raise ValueError(
            f"stateless_call on layer {layer.name!r}: expected {len(variables)} {what} (one per variable in "
            f"layer.{what}), received {len(values)}."
        )
    return list(values)


def _touch_held_state(outputs: Any, held: list) -> Any:
    """Routes "not updated" cotangents to held float8 state through every floating output.

    A state variable no quantizer read in this call (its layer skipped) then gets "not updated"
    from `jax.grad` rather than the zero of an unused input, which an optimizer would assign.
    Every floating output, not just one: JAX skips the backward of an output the loss ignores.
    """
    if not held:
        return outputs
    leaves, treedef = jax.tree.flatten(outputs)
    floating = [isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.floating) for leaf in leaves]
    if not any(floating):
        return outputs
    touched = [max_combine.touch(leaf, held) if f else leaf for leaf, f in zip(leaves, floating, strict=True)]
    return jax.tree.unflatten(treedef, touched)


def stateless_call(
    layer: Any, trainable_values: Any, non_trainable_values: Any, args: tuple, kwargs: dict, return_losses: bool
) -> Any:
    """`Layer.stateless_call`: the call pipeline as a pure function of variable values."""
    if not layer.built:
        raise ValueError(
            f"Layer {layer.name!r} must be built before stateless_call, so that its variables exist. "
            f"Call it once on example data or call build(input_shape)."
        )
    trainable, non_trainable = layer.trainable_variables, layer.non_trainable_variables
    mapping = list(
        zip(trainable, _check_values(trainable_values, trainable, "trainable_variables", layer), strict=True)
    )
    mapping += zip(
        non_trainable,
        _check_values(non_trainable_values, non_trainable, "non_trainable_variables", layer),
        strict=True,
    )
    saved_losses = layer._clear_losses()
    saved_callables = [(owner, owner._callable_losses) for owner, _ in saved_losses]  # tuples: never mutated
    hidden = _traced_losses.forget(saved_losses)  # its own losses only, put back after
    saved_metrics = {id(m): (m, m._total, m._count) for m in layer.metrics}
    metric_tables = [(owner, dict(owner._metrics_by_name)) for owner in layer._flatten_layers()]
    try:
        # Its own transaction root: nothing a stateless call reports reaches an enclosing call.
        with dp.StatelessScope(mapping) as scope, _transaction.isolated():
            held = scope.combine_gradients_by_max(v for v in trainable if v.overwrite_with_gradient)
            outputs = _touch_held_state(run(layer, args, kwargs), held)
            losses = layer.losses if return_losses else None
        new_values = [scope.get_current_value(variable) for variable in non_trainable]
    finally:
        _transaction.restore_losses(saved_losses)
        for owner, callables in saved_callables:
            object.__setattr__(owner, "_callable_losses", callables)
        _traced_losses.restore(hidden)
        for owner, table in metric_tables:
            owner._metrics_by_name.clear()
            owner._metrics_by_name.update(table)
        for metric, total, count in saved_metrics.values():
            metric._total, metric._count = total, count
    return (outputs, new_values, losses) if return_losses else (outputs, new_values)
