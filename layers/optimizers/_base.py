"""Optimizer: the dtype and state handling around any optax GradientTransformation.

The update is computed in float32 (float64 for float64 weights) from float32 gradients, with
float32 slots, and the result is cast to each weight's storage dtype. Overwrite-with-gradient
entries bypass the transform and take their incoming value; constraints run last.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import dtypepolicy as dp
from dtypepolicy._stateless import current_scope
from dtypepolicy.quantization import keep_unless_updated
from layers.optimizers import _arguments, _rules

__all__ = ["AccumulationState", "Optimizer", "OptimizerState"]


class AccumulationState(NamedTuple):
    """What gradient accumulation carries between micro-steps.

    Attributes:
      micro_step: int32 count of micro-steps since the last update.
      gradients: float32 sums of the ordinary gradients, one per ordinary entry.
      maxima: element-wise maxima of the overwrite-with-gradient values, one per such entry.

    Example:
      >>> from layers import optimizers
      >>> opt = optimizers.SGD(0.1, gradient_accumulation_steps=2)
      >>> values = [jnp.ones(2)]
      >>> state = opt.init(values)
      >>> values, state = opt.stateless_apply(state, [jnp.ones(2)], values)  # the first micro-step
      >>> int(state.accumulation.micro_step), state.accumulation.gradients[0].tolist(), int(state.iterations)
      (1, [1.0, 1.0], 0)
    """

    micro_step: jax.Array
    gradients: list
    maxima: list


class OptimizerState(NamedTuple):
    """An optimizer's state, a pytree of arrays (jit-able, checkpointable).

    Attributes:
      iterations: int32 count of updates applied (a skipped or accumulating step does not count).
      inner: the optax transform's state over the ordinary (not overwrite-with-gradient) entries.
      accumulation: an `AccumulationState`, or None without gradient accumulation.

    Example:
      >>> from layers import optimizers
      >>> opt = optimizers.Adam(1e-3)
      >>> state = opt.init([jnp.ones(2)])
      >>> type(state).__name__, int(state.iterations), state.accumulation
      ('OptimizerState', 0, None)
      >>> _, state = opt.stateless_apply(state, [jnp.ones(2)], [jnp.ones(2)])
      >>> int(state.iterations)
      1
    """

    iterations: jax.Array
    inner: Any
    accumulation: AccumulationState | None


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a static argument of the jitted step
class _Layout:
    """The per-entry facts the update needs, fixed at build time."""

    overwrite: tuple[bool, ...]
    constraints: tuple[Callable | None, ...]
    shapes: tuple[tuple[int, ...], ...] | None = None
    paths: tuple[str, ...] | None = None

    def ordinary(self) -> list[int]:
        return [i for i, owg in enumerate(self.overwrite) if not owg]

    def overwritten(self) -> list[int]:
        return [i for i, owg in enumerate(self.overwrite) if owg]

    def describe(self, i: int) -> str:
        return f"variable {self.paths[i]!r}" if self.paths else f"entry {i}"


def _wide(dtype: Any) -> Any:
    """The dtype updates are computed in: float32, or float64 for float64 weights."""
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


def _lowest(value: jax.Array) -> jax.Array:
    """The identity of element-wise max for `value`'s dtype."""
    dtype = value.dtype
    if jnp.issubdtype(dtype, jnp.floating):
        low = -jnp.inf
    elif jnp.issubdtype(dtype, jnp.integer):
        low = jnp.iinfo(dtype).min
    else:
        low = False
    return jnp.full(value.shape, low, dtype)


def _describe(value: Any) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{value!r} of type {type(value).__name__}"


def _as_list(items: Any, what: str) -> list:
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{what} must be a list or tuple, received {_describe(items)}.")
    return list(items)


def _has_tracer(tree: Any) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


_TRACED_APPLY = (
    "{name}.apply is stateful: it writes the variables and keeps the optimizer state in Python, so it cannot run "
    "inside jax.jit, grad or vmap (the state would keep a tracer that is invalid once the trace ends). In a jitted "
    "step use state = optimizer.init(values) outside and new_values, state = optimizer.stateless_apply(state, "
    "grads, values) inside."
)


class Optimizer:
    """Wraps any optax `GradientTransformation` with float32 master updates and float32 slots.

    Each entry is updated in float32 (float64 for float64 weights): the gradient and the weight are
    cast up, the transform runs on them, and the new weight is cast back to its storage dtype, so
    a bfloat16 or float16 weight keeps its dtype while its slots stay float32. Entries built from
    `overwrite_with_gradient` variables are assigned their incoming value (never clipped, decayed,
    given slots or a learning rate); then every variable's `constraint` runs on its new value.

    Two forms:
      - stateful: `apply(grads, variables)` builds on first use, keeps its state and writes the
        variables (eager only);
      - functional: `build(variables)` records the variables' flags (`overwrite_with_gradient`,
        `constraint`), `state = init(values)`, then `stateless_apply(state, grads, values) ->
        (new_values, new_state)` is pure and jit-able. Without `build`, every entry is an ordinary
        weight without a constraint.

    Args:
      transform: an optax `GradientTransformation`; it owns the learning rate.
      clipnorm: clip each gradient to this L2 norm (Keras' rule), applied before `transform`.
      clipvalue: clip each gradient element to `[-clipvalue, clipvalue]`.
      global_clipnorm: clip all gradients together to this global L2 norm.
      gradient_accumulation_steps: update once every N calls with the mean of the N gradients
        (overwrite-with-gradient values: their element-wise max). None or 1: every call.
      name: a name for messages.

    Example:
      >>> import optax
      >>> from layers import optimizers
      >>> w = dp.Variable(jnp.array([1.0, 2.0]))
      >>> opt = optimizers.Optimizer(optax.sgd(0.5))
      >>> opt.apply([jnp.array([1.0, 1.0])], [w])
      >>> w.numpy().tolist(), opt.iterations
      ([0.5, 1.5], 1)
    """

    def __init__(
        self,
        transform: optax.GradientTransformation,
        *,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        gradient_accumulation_steps: int | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(transform, optax.GradientTransformation):
            raise TypeError(
                f"Optimizer expects an optax GradientTransformation (such as optax.adam(1e-3)), received "
                f"{_describe(transform)}."
            )
        self._setup(name)
        _arguments.one_clipping(clipnorm, clipvalue, global_clipnorm)
        self.clipnorm = _arguments.optional_positive(clipnorm, "clipnorm")
        self.clipvalue = _arguments.optional_positive(clipvalue, "clipvalue")
        self.global_clipnorm = _arguments.optional_positive(global_clipnorm, "global_clipnorm")
        self.gradient_accumulation_steps = _arguments.accumulation_steps(gradient_accumulation_steps)
        clip = None
        if self.clipnorm is not None:
            clip = _rules.clip_by_norm(self.clipnorm)
        elif self.global_clipnorm is not None:
            clip = _rules.clip_by_global_norm(self.global_clipnorm)
        elif self.clipvalue is not None:
            clip = _rules.clip_by_value(self.clipvalue)
        self.transform = transform if clip is None else optax.chain(clip, transform)
        self._learning_rate: float | Callable | None = None

    def _setup(self, name: str | None) -> None:
        self.name = _arguments.name(name, type(self).__name__)
        self._layout: _Layout | None = None
        self._variables: list | None = None
        self._state: Any = None
        self._unbuilt_layouts: dict[int, _Layout] = {}
        self._jitted_step = jax.jit(self._step, static_argnums=0)

    # --- building ------------------------------------------------------------------------

    @property
    def built(self) -> bool:
        """Whether `build` (or a first `apply`) recorded the variables."""
        return self._layout is not None

    def build(self, variables: Sequence[dp.Variable]) -> None:
        """Records the variables' flags and constraints for `init`, `stateless_apply` and `apply`.

        Calling it again with the same variables does nothing; other variables are a ValueError
        (make a new optimizer for another model).
        """
        variables = self._check_variables(variables)
        if self._variables is not None:
            self._check_same_variables(variables)
            return
        self._layout = self._layout_of(variables)
        self._variables = variables

    def _check_variables(self, variables: Any) -> list:
        variables = _as_list(variables, f"{self.name} variables")
        for i, v in enumerate(variables):
            if not isinstance(v, dp.Variable):
                raise TypeError(
                    f"{self.name} variables must be dtypepolicy Variables, received {_describe(v)} at index {i}."
                )
            if v.overwrite_with_gradient:
                continue
            if not v.trainable:
                raise ValueError(
                    f"{self.name} updates trainable variables, but variable {v.path!r} is not trainable (and not "
                    f"overwrite_with_gradient); pass layer.trainable_variables."
                )
            if not jnp.issubdtype(v.dtype, jnp.floating):
                raise TypeError(
                    f"{self.name} updates floating variables, but variable {v.path!r} stores {v.dtype}; integer and "
                    f"bool state can only be overwrite_with_gradient."
                )
        return variables

    def _check_same_variables(self, variables: list) -> None:
        known = self._variables
        if len(variables) != len(known) or any(a is not b for a, b in zip(variables, known, strict=True)):
            raise ValueError(
                f"{self.name} was built for the variables {[v.path for v in known]}, received "
                f"{[v.path for v in variables]}: pass the same variables in the same order (or make a new optimizer)."
            )

    @staticmethod
    def _layout_of(variables: list) -> _Layout:
        return _Layout(
            overwrite=tuple(v.overwrite_with_gradient for v in variables),
            constraints=tuple(v.constraint for v in variables),
            shapes=tuple(v.shape for v in variables),
            paths=tuple(v.path for v in variables),
        )

    def _current_layout(self, count: int) -> _Layout:
        if self._layout is not None:
            return self._layout
        if count not in self._unbuilt_layouts:
            self._unbuilt_layouts[count] = _Layout(overwrite=(False,) * count, constraints=(None,) * count)
        return self._unbuilt_layouts[count]

    # --- checks --------------------------------------------------------------------------

    def _check_values(self, values: Any, layout: _Layout | None = None) -> list:
        values = [jnp.asarray(v) for v in _as_list(values, f"{self.name} values")]
        layout = layout or self._current_layout(len(values))
        if len(values) != len(layout.overwrite):
            raise ValueError(
                f"{self.name} was built for {len(layout.overwrite)} variables, received {len(values)} values."
            )
        for i, v in enumerate(values):
            if layout.shapes is not None and v.shape != layout.shapes[i]:
                raise ValueError(
                    f"{self.name}: the value for {layout.describe(i)} has shape {v.shape}, expected {layout.shapes[i]}."
                )
            if not layout.overwrite[i] and not jnp.issubdtype(v.dtype, jnp.floating):
                raise TypeError(
                    f"{self.name}: the value for {layout.describe(i)} has dtype {v.dtype}; expected a floating dtype."
                )
        # An explicit dtype drops JAX's weak typing, so both branches of the update agree on types.
        return [jnp.asarray(v, v.dtype) for v in values]

    def _check_grads(self, grads: Any, values: list, layout: _Layout) -> list:
        grads = _as_list(grads, f"{self.name} grads")
        if len(grads) != len(values):
            raise ValueError(f"{self.name} received {len(grads)} gradients for {len(values)} variables.")
        checked = []
        for i, (g, v) in enumerate(zip(grads, values, strict=True)):
            if g is None:
                raise ValueError(f"{self.name}: the gradient for {layout.describe(i)} is None; expected an array.")
            try:
                g = jnp.asarray(g)
            except TypeError:
                raise TypeError(
                    f"{self.name}: the gradient for {layout.describe(i)} must be an array, received {_describe(g)}."
                ) from None
            if g.shape != v.shape:
                raise ValueError(
                    f"{self.name}: the gradient for {layout.describe(i)} has shape {g.shape}, expected {v.shape}."
                )
            if not layout.overwrite[i] and not jnp.issubdtype(g.dtype, jnp.floating):
                raise TypeError(
                    f"{self.name}: the gradient for {layout.describe(i)} has dtype {g.dtype}; expected floating."
                )
            checked.append(g)
        return checked

    def _check_state(self, state: Any) -> None:
        if not isinstance(state, OptimizerState):
            raise TypeError(f"{self.name} expects the state made by its init(values), received {_describe(state)}.")
        if (state.accumulation is None) != (self.gradient_accumulation_steps == 1):
            raise ValueError(
                f"{self.name}: this state was made by an optimizer with other gradient_accumulation_steps "
                f"(this one has {self.gradient_accumulation_steps})."
            )

    # --- the functional form -------------------------------------------------------------

    def init(self, values: Sequence[Any]) -> Any:
        """The initial state for `values` (the variables' values in the order given to `build`).

        Slots are float32 (float64 for float64 weights) whatever the values' dtypes.
        """
        values = self._check_values(values)
        return self._initial_state(self._current_layout(len(values)), values)

    def _initial_state(self, layout: _Layout, values: list) -> OptimizerState:
        params = [values[i].astype(_wide(values[i].dtype)) for i in layout.ordinary()]
        accumulation = None
        if self.gradient_accumulation_steps > 1:
            accumulation = AccumulationState(
                micro_step=jnp.zeros((), jnp.int32),
                gradients=[jnp.zeros_like(p) for p in params],
                maxima=[_lowest(values[i]) for i in layout.overwritten()],
            )
        return OptimizerState(jnp.zeros((), jnp.int32), self.transform.init(params), accumulation)

    def stateless_apply(self, state: Any, grads: Sequence[Any], values: Sequence[Any]) -> tuple[list, Any]:
        """One step as a pure function: returns `(new_values, new_state)`; jit-able.

        Args:
          state: from `init` (or a previous `stateless_apply`).
          grads: one gradient per value (for an overwrite-with-gradient entry: its new value).
          values: the current values, in the order given to `build`.
        """
        values = self._check_values(values)
        layout = self._current_layout(len(values))
        grads = self._check_grads(grads, values, layout)
        self._check_state(state)
        return self._jitted_step(layout, state, grads, values)

    def _step(self, layout: _Layout, state: OptimizerState, grads: list, values: list) -> tuple[list, OptimizerState]:
        ordinary, overwritten = layout.ordinary(), layout.overwritten()
        grads_wide = [grads[i].astype(_wide(values[i].dtype)) for i in ordinary]
        incoming = [grads[i].astype(values[i].dtype) for i in overwritten]
        steps = self.gradient_accumulation_steps
        if steps == 1:
            new_values, inner = self._update(layout, state.inner, grads_wide, incoming, values)
            return new_values, OptimizerState(state.iterations + 1, inner, None)
        acc = state.accumulation
        sums = [a + g for a, g in zip(acc.gradients, grads_wide, strict=True)]
        maxima = [jnp.maximum(a, g) for a, g in zip(acc.maxima, incoming, strict=True)]
        micro_step = acc.micro_step + 1

        def update(_: Any) -> tuple[list, OptimizerState]:
            new_values, inner = self._update(layout, state.inner, [s / steps for s in sums], maxima, values)
            cleared = AccumulationState(
                jnp.zeros((), jnp.int32), [jnp.zeros_like(s) for s in sums], [_lowest(m) for m in maxima]
            )
            return new_values, OptimizerState(state.iterations + 1, inner, cleared)

        def hold(_: Any) -> tuple[list, OptimizerState]:
            return list(values), OptimizerState(
                state.iterations, state.inner, AccumulationState(micro_step, sums, maxima)
            )

        return jax.lax.cond(micro_step >= steps, update, hold, None)

    def _update(self, layout: _Layout, inner: Any, grads_wide: list, incoming: list, values: list) -> tuple[list, Any]:
        ordinary, overwritten = layout.ordinary(), layout.overwritten()
        params = [values[i].astype(_wide(values[i].dtype)) for i in ordinary]
        updates, inner = self.transform.update(grads_wide, inner, params)
        new_values = list(values)
        for i, p, u in zip(ordinary, params, updates, strict=True):
            new_values[i] = (p + jnp.asarray(u).astype(p.dtype)).astype(values[i].dtype)
        for i, value in zip(overwritten, incoming, strict=True):
            # A use that did not run (a skipped layer, an untaken lax.cond branch) sends "not updated".
            new_values[i] = keep_unless_updated(values[i], value)
        for i, constraint in enumerate(layout.constraints):
            if constraint is not None:
                new_values[i] = jnp.asarray(constraint(new_values[i])).astype(values[i].dtype)
        return new_values, inner

    # --- the stateful form ---------------------------------------------------------------

    def apply(self, grads: Sequence[Any], variables: Sequence[dp.Variable]) -> None:
        """Updates `variables` in place from `grads` (builds on first use); eager only.

        Raises:
          RuntimeError: inside jax.jit/grad/vmap or a StatelessScope; use `stateless_apply` there.
        """
        variables = self._check_variables(variables)
        if self._variables is not None:
            self._check_same_variables(variables)
        if current_scope() is not None:
            raise RuntimeError(
                f"{self.name}.apply cannot run inside a dtypepolicy.StatelessScope: the optimizer state is not a "
                f"variable the scope could hold. Use optimizer.stateless_apply(state, grads, values)."
            )
        if _has_tracer(list(grads) if isinstance(grads, (list, tuple)) else grads):
            raise RuntimeError(_TRACED_APPLY.format(name=self.name))
        layout = self._layout or self._layout_of(variables)
        with dp.autocast_scope(None):  # the stored values, whatever autocast scope the caller is in
            values = self._check_values([v.value for v in variables], layout)
        grads = self._check_grads(grads, values, layout)
        state = self._state if self._state is not None else self._initial_state(layout, values)
        new_values, new_state = self._jitted_step(layout, state, grads, values)
        if _has_tracer((new_values, new_state)):
            raise RuntimeError(_TRACED_APPLY.format(name=self.name))
        # Everything is computed: commit.
        if self._variables is None:
            self._layout, self._variables = layout, variables
        for variable, value in zip(variables, new_values, strict=True):
            variable.assign(value)
        self._state = new_state

    @property
    def state(self) -> Any:
        """The stateful form's state (None before the first `apply`)."""
        return self._state

    @state.setter
    def state(self, state: Any) -> None:
        self._check_state(state)
        self._state = state

    @property
    def iterations(self) -> int:
        """Updates applied by `apply` so far (in a state: `state.iterations`)."""
        return 0 if self._state is None else int(self._iterations_of(self._state))

    def _iterations_of(self, state: Any) -> jax.Array:
        return state.iterations

    @property
    def learning_rate(self) -> Any:
        """The next step's learning rate (a schedule at `iterations`); None when the transform owns it."""
        if callable(self._learning_rate):
            return self._learning_rate(jnp.asarray(self.iterations, jnp.int32))
        return self._learning_rate
