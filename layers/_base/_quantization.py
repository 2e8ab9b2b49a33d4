"""Quantizing layers: `Layer.quantize`, quantized policies at build, and the report.

A layer has a quantized form when its class lists modes in `_quantization_modes` and
implements `_contraction()` (Dense and EinsumDense; attention and transformer blocks are
quantized through the projections inside them). The precision math is the engine's
(`dtypepolicy.quantization`); this module only creates and replaces the variables the strategy
asks for, and decides which layers of a model to quantize.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import dtypepolicy as dp
from dtypepolicy.quantization import MODES, strategy_for

_FLOAT8_OPTIONS = ("recipe", "amax_history_length", "margin")


class QuantizationDecision(NamedTuple):
    """What `quantize` did with one layer.

    Attributes:
      path: the layer's path.
      quantized: whether it was quantized by this call.
      reason: why (the new policy name, or why it was skipped).

    Example:
      >>> import layers
      >>> model = layers.Sequential([layers.Dense(4, name="first"), layers.Dense(2, name="last")], name="m")
      >>> _ = model(jnp.ones((1, 3)))
      >>> first, last = model.quantize("int8", filter="m/last")
      >>> first
      QuantizationDecision(path='m/first', quantized=False, reason='excluded by the filter')
      >>> last.quantized, last.reason
      (True, 'int8_from_float32')
    """

    path: str
    quantized: bool
    reason: str


class QuantizationReport(tuple):
    """The decisions of one `quantize` call, one per leaf layer, in model order.

    Example:
      >>> import layers
      >>> model = layers.Sequential(
      ...     [layers.Dense(4, name="up"), layers.LayerNormalization(name="norm"), layers.Dense(2, name="out")],
      ...     name="model",
      ... )
      >>> _ = model(np.ones((1, 3)))
      >>> report = model.quantize("int8")
      >>> report.quantized
      ['model/up', 'model/out']
      >>> report[1]
      QuantizationDecision(path='model/norm', quantized=False, reason='no int8 form')
    """

    __slots__ = ()

    @property
    def quantized(self) -> list[str]:
        """The paths of the layers quantized."""
        return [d.path for d in self if d.quantized]

    @property
    def skipped(self) -> list[str]:
        """The paths of the layers left as they were."""
        return [d.path for d in self if not d.quantized]

    def __str__(self) -> str:
        width = max((len(d.path) for d in self), default=4)
        lines = [f"{'layer':<{width}}  decision   reason"]
        lines += [f"{d.path:<{width}}  {'quantized' if d.quantized else 'skipped':<9}  {d.reason}" for d in self]
        return "\n".join(lines)


def _misfits(layer: Any) -> list[str]:
    """What in `layer` (and below) has variables that no longer fit its policy, one line each."""
    problems = []
    for sub in layer._flatten_layers():
        strategy = sub.__dict__.get("_quantization_strategy")
        policy = sub.dtype_policy
        if strategy is not None and strategy_for(policy) != strategy:
            problems.append(f"{sub.path!r} holds {strategy.mode} variables and would get the policy {policy.name!r}")
        elif strategy is None and sub.built and policy.quantization_mode in modes_of(sub):
            problems.append(
                f"{sub.path!r} was built with float weights and would get the quantized policy {policy.name!r} "
                f"(quantize it with layer.quantize({policy.quantization_mode!r}) instead)"
            )
    return problems


def change_policy(layer: Any, policy: Any) -> None:
    """`Layer.dtype_policy = policy`, refused (nothing changed) when variables would not fit it.

    A quantized layer's variables have its strategy's form, and a built float layer's have none
    of a quantized one: either would silently run the wrong projection. Maps that `quantize`
    recorded on layers below follow the new policy as their default, as the layers they hold did.

    Raises:
      ValueError: naming each layer whose variables would not fit.
    """
    before = _misfits(layer)
    recorded = [sub for sub in layer._flatten_layers(include_self=False) if sub.__dict__.get("_recorded_map")]
    inherited = {id(sub): sub._parent.dtype_policy for sub in recorded}
    touched = {id(x): x for x in (layer, *layer._flatten_layers(include_self=False))}
    ancestor = layer._parent
    while ancestor is not None:
        touched[id(ancestor)] = ancestor
        ancestor = ancestor._parent
    snapshot = {
        key: (x, x.__dict__.get("_explicit_dtype"), x.__dict__.get("_map_checked")) for key, x in touched.items()
    }
    layer._assign_dtype_policy(policy)
    for sub in recorded:
        current = sub._explicit_dtype
        if isinstance(current, dp.DTypePolicyMap) and current.default_policy == inherited[id(sub)]:
            object.__setattr__(sub, "_explicit_dtype", dp.DTypePolicyMap(sub._parent.dtype_policy, current.policy_map))
    problems = [p for p in _misfits(layer) if p not in before]
    if problems:
        for x, explicit, checked in snapshot.values():
            object.__setattr__(x, "_explicit_dtype", explicit)
            if checked is not None:
                object.__setattr__(x, "_map_checked", checked)
        raise ValueError(
            f"Cannot give layer {layer.name!r} the policy {getattr(policy, 'name', policy)!r}: "
            + "; ".join(problems)
            + ". Nothing was changed. Build new layers under the policy you want and load the weights they can use."
        )


def modes_of(layer: Any) -> tuple[str, ...]:
    """The quantization modes `layer`'s class implements (empty: no quantized form)."""
    return tuple(getattr(type(layer), "_quantization_modes", ()))


def check_policy_at_build(layer: Any) -> None:
    """A quantized policy given to a layer without that quantized form is an error, not a no-op.

    Runs after `build`. A layer with sublayers passes the policy on to them; layers that only
    inherit a quantized policy (from a parent or the global default) compute in its source
    policy: a model given `dtype="float8_from_mixed_bfloat16"` quantizes its Dense layers and
    keeps its normalization layers in mixed_bfloat16. A layer given the same quantized policy as
    its container counts as inheriting it (a Sequential's config gives every layer its policy).
    """
    policy = layer.dtype_policy
    mode = policy.quantization_mode
    if mode is None or mode in modes_of(layer) or layer._own_layers:  # a container passes it on
        return
    explicit = layer._explicit_dtype
    if isinstance(explicit, dp.DTypePolicy) and explicit.quantization_mode is not None:
        if _container_policy(layer) == explicit:
            # Its container has the same policy: that is how a Sequential given a quantized
            # policy comes back from its config (each layer's config records the policy it
            # inherited), so the layer follows the container as it did before.
            return
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) was given the quantized policy {policy.name!r}, but "
            f"{type(layer).__name__} has no {mode} form (layers with one: Dense, EinsumDense and the layers built "
            f"from them). Give it a plain policy such as {policy.source_name!r}, or call model.quantize({mode!r}) "
            f"to quantize the layers that can be."
        )


def _container_policy(layer: Any) -> Any:
    """The policy of the layer holding `layer`, or None at the top."""
    parent = layer._parent
    return None if parent is None else parent.dtype_policy


def add_quantized_weights(layer: Any) -> None:
    """Creates the variables the layer's quantization strategy asks for (at build or by `quantize`)."""
    strategy = strategy_for(layer.dtype_policy)
    if strategy is None or layer.quantization_mode not in modes_of(layer):
        return
    contraction = layer._contraction()
    kernel = jnp.asarray(layer.kernel._read_storage(), jnp.float32)  # the master, never an autocast copy
    specs = strategy.weight_specs(kernel, contraction)
    stored = strategy.stored_kernel(kernel, contraction)
    with layer._unlocked():
        if stored is not None:
            # The codes replace the float kernel: stored as they are, not trained, never cast.
            layer.kernel = layer.add_weight(
                shape=stored.shape,
                initializer=_constant(stored),
                dtype=str(stored.dtype),
                trainable=False,
                autocast=False,
                name="kernel",
            )
        for spec in specs:
            variable = layer.add_weight(
                shape=spec.shape,
                initializer=_constant(spec.value),
                dtype=spec.dtype,
                trainable=spec.trainable,
                autocast=False,
                overwrite_with_gradient=spec.overwrite_with_gradient,
                name=spec.name,
            )
            setattr(layer, spec.name, variable)
    object.__setattr__(layer, "_quantized_weight_names", tuple(spec.name for spec in specs))
    # The variables now have this strategy's form: the projection follows them, whatever the policy says later.
    object.__setattr__(layer, "_quantization_strategy", strategy)


def _constant(value: Any) -> Callable[..., Any]:
    def initializer(shape: Any, dtype: Any = None) -> Any:
        return jnp.broadcast_to(jnp.asarray(value), tuple(shape)).astype(dtype)

    return initializer


def _check_arguments(mode: Any, filter: Any, keep_first_and_last: Any) -> Callable[[Any], bool] | None:
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(f"quantize mode must be one of {MODES}, received {mode!r}.")
    if not isinstance(keep_first_and_last, bool):
        raise TypeError(f"keep_first_and_last must be a bool, received {keep_first_and_last!r}.")
    if filter is None:
        return None
    if isinstance(filter, str):
        try:
            pattern = re.compile(filter)
        except re.error as error:
            raise ValueError(f"quantize filter {filter!r} is not a valid regular expression: {error}.") from None
        return lambda layer: pattern.fullmatch(layer.path) is not None
    if callable(filter):
        return filter
    raise TypeError(
        f"quantize filter must be None, a path regex (str) or a callable taking a layer and returning a bool; "
        f"received {filter!r} of type {type(filter).__name__}."
    )


def _target_policy(layer: Any, mode: str, options: dict[str, Any]) -> dp.DTypePolicy:
    source = layer.dtype_policy.name
    if mode == "float8":
        return dp.QuantizedFloat8DTypePolicy("float8", source, **options)
    return dp.QuantizedDTypePolicy(mode, source)


def _check_options(mode: str, options: dict[str, Any]) -> None:
    allowed = _FLOAT8_OPTIONS if mode == "float8" else ()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"quantize({mode!r}) got unknown option(s) {unknown}; "
            + (f"float8 accepts {list(_FLOAT8_OPTIONS)}." if mode == "float8" else f"{mode} takes no options.")
        )


def _config_holder(layer: Any) -> Any:
    """The nearest layer, `layer` itself or one above it, whose policy a model config records.

    A config records the policy of the top layer and of each layer a Sequential holds (its
    config embeds theirs). A layer that its parent creates itself, such as a TransformerBlock's
    Dense layers or the attention projections, is re-created by that parent and takes its
    policy from it, so its own policy is recorded nowhere unless the parent holds it in a map.
    """
    from layers._builtin._sequential import Sequential  # _base modules load before _builtin

    while True:
        parent = layer._parent
        if parent is None or isinstance(parent, Sequential):
            return layer
        layer = parent


def _recorded_policies(changes: list[tuple[Any, dp.DTypePolicy]]) -> list[tuple[Any, dp.DTypePolicyMap]]:
    """The maps to give the config holders of quantized layers that no config would record.

    Each holder gets a `DTypePolicyMap` (its own, extended; or a new one whose default is its
    policy) with an exact entry for every quantized layer below it, so `get_config` records the
    quantization and `from_config` re-creates the quantized variables. The entries also pin the
    policies every other layer below the holder has now, so none of them changes. Computed
    before anything changes: a failure here leaves the model as it was.
    """
    maps: dict[int, tuple[Any, dict[str, Any]]] = {}
    for sub, policy in changes:
        holder = _config_holder(sub)
        if holder is sub:
            continue  # its own config (or its Sequential's) records the policy
        if id(holder) not in maps:
            maps[id(holder)] = (holder, {})
        maps[id(holder)][1][sub.path] = policy
    result = []
    for holder, entries in maps.values():
        explicit = holder._explicit_dtype
        if isinstance(explicit, dp.DTypePolicyMap):
            result.append((holder, explicit | entries))
            continue
        default = holder.dtype_policy
        pinned = {
            below.path: below.dtype_policy
            for below in holder._flatten_layers(include_self=False)
            if below.dtype_policy != default
        }
        result.append((holder, dp.DTypePolicyMap(default, {**pinned, **entries})))
    return result


def quantize(
    layer: Any, mode: str, filter: Any = None, keep_first_and_last: bool = False, **options: Any
) -> QuantizationReport:
    """`Layer.quantize`: quantizes `layer`, or every eligible layer inside it; returns the report."""
    accept = _check_arguments(mode, filter, keep_first_and_last)
    _check_options(mode, options)
    if mode == "float8":  # the option values too, before any filter or layer decides anything
        dp.QuantizedFloat8DTypePolicy("float8", "float32", **options)
    if not layer.built:
        raise ValueError(
            f"Layer {layer.name!r} must be built before quantize({mode!r}): quantization converts existing "
            f"weights. Call it once on example data or call build(input_shape) first."
        )
    if modes_of(layer):  # a layer with a quantized form of its own: quantize it or say why not
        if layer.quantization_mode is not None:
            raise ValueError(
                f"Layer {layer.name!r} is already quantized ({layer.dtype_policy.name!r}); it cannot be quantized "
                f"again to {mode!r}. Quantize a copy of the unquantized layer instead."
            )
        if mode not in modes_of(layer):
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) has no {mode} form; it has {modes_of(layer)}."
            )
        if accept is not None and not accept(layer):
            return QuantizationReport([QuantizationDecision(layer.path, False, "excluded by the filter")])
        leaves = [layer]
    elif not layer._own_layers:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) has no {mode} form (layers with one: Dense, EinsumDense "
            f"and the layers built from them)."
        )
    else:
        leaves = [sub for sub in layer._flatten_layers(include_self=False) if modes_of(sub) or not sub._own_layers]
        if not any(mode in modes_of(sub) for sub in leaves):
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) has no layer with a {mode} form inside it "
                f"(layers with one: Dense, EinsumDense and the layers built from them)."
            )
    eligible = [sub for sub in leaves if mode in modes_of(sub) and sub.quantization_mode is None]
    ends = {id(eligible[0]), id(eligible[-1])} if keep_first_and_last and eligible else set()
    plan: list[tuple[Any, dp.DTypePolicy | None, str]] = []
    for sub in leaves:
        if not modes_of(sub):
            plan.append((sub, None, f"no {mode} form"))
        elif sub.quantization_mode is not None:
            plan.append((sub, None, f"already quantized ({sub.dtype_policy.name})"))
        elif mode not in modes_of(sub):
            plan.append((sub, None, f"no {mode} form"))
        elif id(sub) in ends:
            which = "first" if sub is eligible[0] else "last"
            plan.append((sub, None, f"kept in high precision (the {which} eligible layer)"))
        elif accept is not None and not accept(sub):
            plan.append((sub, None, "excluded by the filter"))
        elif not sub.built:
            plan.append((sub, None, "not built"))
        else:
            plan.append((sub, _target_policy(sub, mode, options), ""))  # options checked before anything changes
    chosen = [sub for sub, policy, _ in plan if policy is not None]
    if not chosen and leaves and all(sub.quantization_mode is not None for sub in leaves if modes_of(sub)):
        raise ValueError(
            f"Layer {layer.name!r} is already quantized: every layer in it with a quantized form has a quantized "
            f"policy ({sorted({sub.dtype_policy.name for sub in leaves if modes_of(sub)})}). Quantize a copy of the "
            f"unquantized model instead."
        )
    traced = [sub.path for sub in chosen if isinstance(sub.kernel._read_storage(), jax.core.Tracer)]
    if traced:
        raise RuntimeError(
            f"quantize({mode!r}) cannot run inside jax.jit/grad/vmap: the weights of {traced} are traced values, and "
            f"the quantized variables would keep them after the trace ends. Quantize outside the transformation."
        )
    recorded = _recorded_policies([(sub, policy) for sub, policy, _ in plan if policy is not None])
    for holder, policy_map in recorded:
        fresh = not isinstance(holder._explicit_dtype, dp.DTypePolicyMap)
        object.__setattr__(holder, "_explicit_dtype", policy_map)
        object.__setattr__(holder, "_recorded_map", True)  # its default follows later policy changes above it
        if fresh:  # every key is a path that exists now: nothing for the first-call key check to find
            object.__setattr__(holder, "_map_checked", True)
    held = {id(holder) for holder, _ in recorded}
    for sub, policy, _ in plan:
        if policy is not None:
            sub._assign_dtype_policy(policy)
            if id(_config_holder(sub)) in held:
                # Its own policy too: the map's exact path entry is for configs, and this layer's
                # path changes if the model is nested later; its variables must keep their policy.
                object.__setattr__(sub, "_explicit_dtype", policy)
            add_quantized_weights(sub)
    return QuantizationReport(
        QuantizationDecision(sub.path, policy is not None, policy.name if policy is not None else reason)
        for sub, policy, reason in plan
    )
