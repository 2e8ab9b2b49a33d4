"""Layer: the base class every layer inherits, wired to the dtype policy engine."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

import dtypepolicy as dp
from dtypepolicy._dtypes import is_float, standardize_dtype
from layers import constraints, initializers, regularizers
from layers._base import (
    _call_pipeline,
    _config,
    _copying,
    _input_spec,
    _names,
    _ownership,
    _quantization,
    _shapes,
    _summary,
    _traced_losses,
    _tracking,
    _transaction,
    _weights,
)
from layers._base._arrays import is_jax_array
from layers._base._metrics import Metric

# Framework attributes that hold state but must not be tracked as the layer's own state.
_UNTRACKED = frozenset({"_parent_ref", "_own_variables", "_own_layers", "_losses", "_metrics_by_name"})
# Constructor arguments the base class serializes itself (a policy map is not a plain value).
_BASE_CONFIG_KEYS = frozenset({"name", "trainable", "dtype", "autocast", "activity_regularizer"})


def _resolve_initializer(identifier: Any, dtype: str) -> Any:
    if identifier is None:
        identifier = "glorot_uniform" if is_float(dtype) else "zeros"
    return initializers.get(identifier)


class Layer(_tracking.Trackable):
    """The base class of all layers: state (weights) plus computation (`call`).

    Subclasses create weights in `__init__` or in `build(input_shape)`, which the first call
    runs, and compute in `call`. Calling the layer runs the pipeline: convert and autocast the
    inputs, check `input_spec`, build, resolve `training` and `mask`, run `call` under the
    layer's autocast scope, cast outputs to the policy's `output_dtype`, add activity
    regularization losses and attach output masks.

    Args:
      activity_regularizer: a regularizer applied to the outputs, added to `losses`.
      trainable: whether the layer's weights are trained.
      dtype: a policy, policy name, dtype-like or `DTypePolicyMap`; None keeps the default
        current at construction (or follows an explicit parent policy).
      autocast: whether inputs and variable reads are cast to the compute dtype.
      name: the layer name; defaults to the class name in snake_case, made unique.

    Example:
      >>> from layers import Layer, ops
      >>> class Scale(Layer):
      ...     def build(self, input_shape):
      ...         self.factor = self.add_weight(shape=(), initializer="ones")
      ...     def call(self, x):
      ...         return x * self.factor
      >>> layer = Scale(dtype="mixed_bfloat16")
      >>> layer(np.ones((2, 3))).dtype, layer.factor.dtype
      (dtype(bfloat16), 'float32')
    """

    # Input casting can be switched off by layers that must see the raw input dtype
    # (normalization layers compute their statistics in float32 from whatever arrives).
    _autocast_inputs = True
    # Tracking bookkeeping that only some layers need; instances replace these (never mutate).
    _owners: tuple = ()  # (sequence number, weakref to a layer tracking this one), in tracking order
    _frozen_ids: frozenset = frozenset()  # ids of own variables that `trainable = False` switched off
    _frozen_layer_ids: frozenset = frozenset()  # ids of own sublayers that freezing this layer switched off
    _map_checked = False  # whether a DTypePolicyMap held here was checked for unmatched keys
    _last_output = None  # shapes and dtypes of the last call's outputs, for summary()
    _callable_losses: tuple = ()  # zero-argument callables from add_loss; calls never clear them

    def __new__(cls, *args: Any, **kwargs: Any) -> Layer:
        instance = super().__new__(cls)
        object.__setattr__(instance, "_auto_config", _config.capture_arguments(cls, args, kwargs, _BASE_CONFIG_KEYS))
        return instance

    def __init__(
        self,
        activity_regularizer: Any = None,
        trainable: bool = True,
        dtype: Any = None,
        autocast: bool = True,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs:
            raise TypeError(
                f"Unrecognized keyword arguments passed to {type(self).__name__}: {kwargs}. "
                f"Layer accepts activity_regularizer, trainable, dtype, autocast and name."
            )
        if not isinstance(trainable, bool):
            raise TypeError(f"trainable must be a bool, received {trainable!r}.")
        if not isinstance(autocast, bool):
            raise TypeError(f"autocast must be a bool, received {autocast!r}.")
        name = _names.unique_name(_names.snake_case(type(self).__name__)) if name is None else _names.check_name(name)
        explicit = None if dtype is None else dp.get(dtype)
        set_ = object.__setattr__
        set_(self, "_name", name)
        set_(self, "_parent_ref", None)  # a weak reference: a parent that is gone owns nothing
        set_(self, "_own_variables", [])
        set_(self, "_own_layers", [])
        set_(self, "_losses", [])
        set_(self, "_metrics_by_name", {})
        set_(self, "_state_ids", set())
        set_(self, "_explicit_dtype", explicit)
        set_(self, "_default_policy", dp.dtype_policy())
        set_(self, "_trainable", trainable)
        set_(self, "_autocast", autocast)
        set_(self, "_activity_regularizer", regularizers.get(activity_regularizer))
        set_(self, "_locked", False)
        set_(self, "built", False)
        set_(self, "input_spec", None)
        set_(self, "supports_masking", type(self).compute_mask is not Layer.compute_mask)

    # --- tracking ------------------------------------------------------------------------

    def _check_initialized(self) -> None:
        if "_own_variables" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}.__init__ must call super().__init__() before it creates "
                f"state or the layer is used."
            )

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _UNTRACKED:
            object.__setattr__(self, name, value)
            return
        initialized = "_own_variables" in self.__dict__
        replaced = self.__dict__.get(name) if initialized else None
        # Lists and dicts are wrapped even when empty: state appended to them later must be seen.
        if _tracking.contains_state(value) or (initialized and type(value) in (list, dict)):
            self._check_initialized()
            self._track(value)
            value = _tracking.wrap(value, self)
        object.__setattr__(self, name, value)
        if replaced is not None and _tracking.may_hold_state(replaced):
            self._untrack(replaced)

    def __delattr__(self, name: str) -> None:
        value = self.__dict__.get(name)
        object.__delattr__(self, name)
        if name not in _UNTRACKED and value is not None and "_own_variables" in self.__dict__:
            self._untrack(value)

    def _track(self, value: Any) -> None:
        """Records every new Variable and Layer in `value` as this layer's own state.

        Everything is checked before anything changes: a locked layer, or a layer that would
        contain itself (a cycle), raises and leaves the tracking as it was. A non-trainable
        layer freezes what it takes in (see `_ownership.track`).
        """
        _ownership.track(self, value)

    def _untrack(self, value: Any) -> None:
        """Forgets the state in `value` that no attribute of this layer holds any more.

        What leaves gets back what this layer changed: a variable its own path and `trainable`
        flag, a sublayer its `trainable` flag and another parent (or none).
        """
        _ownership.untrack(self, value, _UNTRACKED)

    def _refresh_parents(self) -> None:
        """Re-derives the parent of this layer and everything inside it, then their paths.

        The latest owner decides the model; within that model the earliest owner is the parent
        (see "Paths" in docs/layer.md).
        """
        _ownership.refresh_parents(self)

    @contextlib.contextmanager
    def _unlocked(self) -> Iterator[None]:
        """Lets a built layer take new state (used by quantize)."""
        locked = self._locked
        object.__setattr__(self, "_locked", False)
        try:
            yield
        finally:
            object.__setattr__(self, "_locked", locked)

    def _flatten_layers(self, include_self: bool = True) -> list[Layer]:
        """This layer and every layer inside it, depth first in tracking order, each once."""
        result, seen, stack = [], set(), [self]
        while stack:
            layer = stack.pop()
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            result.append(layer)
            stack.extend(reversed(layer._own_layers))
        return result if include_self else result[1:]

    def sublayers(self) -> list[Layer]:
        """Every layer inside this one, at any depth, each once; this layer itself excluded.

        The order is depth first in tracking order: a sublayer is followed by its own
        sublayers before the next sibling. A layer held twice is listed where it is first met.

        Example:
          >>> from layers import Dense, Sequential
          >>> model = Sequential([Dense(4, name="hidden"), Dense(2, name="out")], name="mlp")
          >>> [layer.path for layer in model.sublayers()]
          ['mlp/hidden', 'mlp/out']
        """
        return self._flatten_layers(include_self=False)

    def summary(self, print_fn: Callable[[str], Any] | None = None) -> None:
        """Prints a table of this layer and its sublayers, line by line; returns None (as Keras).

        One row per layer (path, class, policy with its variable / compute / output dtypes,
        parameters, and the shapes and dtypes of the last call's outputs), then the totals.

        Args:
          print_fn: called with each line of the table; None (the default) means `print`.

        Raises:
          TypeError: `print_fn` is neither callable nor None.

        Example:
          >>> from layers import Dense, Sequential
          >>> model = Sequential([Dense(4, name="hidden")], name="mlp", dtype="mixed_bfloat16")
          >>> _ = model(np.ones((2, 3)))
          >>> lines = []
          >>> model.summary(print_fn=lines.append)
          >>> [line.split()[0] for line in lines[2:4]]
          ['mlp', 'mlp/hidden']
        """
        _summary.print_summary(self, print_fn)

    def _record_call(self, outputs: Any) -> Any:
        """Called by the pipeline with each call's outputs: notes their shapes and dtypes."""
        if is_jax_array(outputs):  # the common case, kept cheap
            record = ((outputs.shape, outputs.dtype),)
        else:
            record = tuple((np.shape(leaf), getattr(leaf, "dtype", None)) for leaf in jax.tree.leaves(outputs))
        # The key check comes first and the pipeline calls this before committing the call: a
        # warning turned into an error fails the call, which then changes nothing.
        if not self._map_checked:
            if isinstance(self._explicit_dtype, dp.DTypePolicyMap):
                _call_pipeline.warn_unmatched_keys(self)
            else:  # nothing to check until a map is set, which clears the flag (an ABC check per call is not free)
                self.__dict__["_map_checked"] = True
        self.__dict__["_last_output"] = record
        return outputs

    # --- copies and pickles --------------------------------------------------------------

    def __copy__(self) -> Layer:
        """A new layer object sharing this one's variables and sublayers (see docs/layer.md).

        It has no parent: a policy it followed from a layer above it becomes its own default.
        """
        return _copying.shallow_copy(self)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (_copying.new_layer, (type(self),), self.__getstate__())

    def __getstate__(self) -> dict[str, Any]:
        """The state pickled and deep-copied: not the links to the layers tracking this one."""
        return _copying.get_state(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restores a layer; a copy taken without its parent keeps the policy it followed."""
        _copying.set_state(self, state)

    # --- names, paths and policies -------------------------------------------------------

    @property
    def name(self) -> str:
        """The layer name."""
        return self._name

    @property
    def _parent(self) -> Layer | None:
        """The layer this one's path and inherited policy follow (see "Paths" in docs/layer.md), or None.

        Held weakly: a parent that is collected owns nothing, and the layer falls back to its other
        owners (`_ownership.owner_gone` re-derives that when the parent goes; the check here covers
        the moment before it has run).
        """
        ref = self._parent_ref
        if ref is None:
            return None
        parent = ref()
        if parent is None:
            _ownership.refresh_parents(self)
            ref = self._parent_ref
            parent = None if ref is None else ref()
        return parent

    @property
    def path(self) -> str:
        """The layer's path from the outermost layer tracking it: `"encoder/block_0/dense"`."""
        # Read on every call: the live-parent case is one dereference; `_parent` handles the rest.
        ref = self._parent_ref
        parent = None if ref is None else ref()
        if parent is None:
            if ref is None:
                return self._name
            parent = self._parent
            if parent is None:
                return self._name
        return f"{parent.path}/{self._name}"

    @property
    def dtype_policy(self) -> dp.DTypePolicy:
        """The policy in force for this layer (settable)."""
        layer = self
        while layer is not None:
            source = layer._explicit_dtype
            if source is not None:
                return source[self.path] if isinstance(source, dp.DTypePolicyMap) else source
            ref = layer._parent_ref
            if ref is None:
                break
            parent = ref()
            layer = layer._parent if parent is None else parent
        return self._default_policy

    @dtype_policy.setter
    def dtype_policy(self, value: Any) -> None:
        # Refused, with everything left as it was, when a built layer's variables would no longer
        # fit its policy (an int8 layer set to float32, a built float Dense given float8).
        _quantization.change_policy(self, dp.get(value))

    def _assign_dtype_policy(self, policy: Any) -> None:
        """Sets the policy (or this layer's entry in the map that governs it), unchecked."""
        holder = self
        while holder is not None and holder._explicit_dtype is None:
            holder = holder._parent
        in_map = holder is not None and isinstance(holder._explicit_dtype, dp.DTypePolicyMap)
        if in_map and not isinstance(policy, dp.DTypePolicyMap):
            # The policy comes from a map: change this layer's entry only (maps are values).
            object.__setattr__(holder, "_explicit_dtype", holder._explicit_dtype | {self.path: policy})
            return
        object.__setattr__(self, "_explicit_dtype", policy)
        object.__setattr__(self, "_map_checked", False)  # a new map is checked on the next call

    @property
    def dtype(self) -> str:
        """The dtype of the layer's weights (alias of `variable_dtype`)."""
        return self.dtype_policy.variable_dtype

    @property
    def variable_dtype(self) -> str:
        """The dtype of the layer's weights."""
        return self.dtype_policy.variable_dtype

    @property
    def compute_dtype(self) -> str:
        """The dtype the layer computes in."""
        return self.dtype_policy.compute_dtype

    @property
    def input_dtype(self) -> str:
        """The dtype floating inputs are cast to."""
        return self.dtype_policy.compute_dtype

    @property
    def quantization_mode(self) -> str | None:
        """The policy's quantization mode, or None."""
        return self.dtype_policy.quantization_mode

    @property
    def autocast(self) -> bool:
        """Whether inputs and variable reads are cast to the compute dtype."""
        return self._autocast

    @property
    def activity_regularizer(self) -> Any:
        """The regularizer applied to outputs, or None."""
        return self._activity_regularizer

    @activity_regularizer.setter
    def activity_regularizer(self, value: Any) -> None:
        object.__setattr__(self, "_activity_regularizer", regularizers.get(value))

    @property
    def dynamic(self) -> bool:
        """Always False: every layer can be traced by JAX."""
        return False

    @property
    def input(self) -> Any:
        """Not available: layers here have no symbolic graph (see docs/layer.md)."""
        raise AttributeError(
            f"Layer {self.name!r} has no symbolic input: layers are called on arrays, eagerly or under "
            f"JAX tracing, and do not remember them. Keep a reference to the arrays you pass."
        )

    @property
    def output(self) -> Any:
        """Not available: layers here have no symbolic graph (see docs/layer.md)."""
        raise AttributeError(
            f"Layer {self.name!r} has no symbolic output: keep a reference to the arrays the call returns."
        )

    # --- weights -------------------------------------------------------------------------

    @_weights.shape_first
    def add_weight(
        self,
        shape: Any = None,
        initializer: Any = None,
        dtype: Any = None,
        trainable: bool = True,
        autocast: bool = True,
        regularizer: Any = None,
        constraint: Any = None,
        aggregation: str = "none",
        overwrite_with_gradient: bool = False,
        name: str | None = None,
    ) -> dp.Variable:
        """Creates a variable owned by this layer.

        Args:
          shape: the shape; `()` when None.
          initializer: an initializer, its name (`"random_normal"`) or a callable
            `(shape, dtype) -> array`; defaults to `"glorot_uniform"` for floating dtypes and
            `"zeros"` otherwise.
          dtype: the storage dtype; defaults to the layer's `variable_dtype`.
          trainable: whether optimizers update it.
          autocast: whether reads inside `call` follow the compute dtype.
          regularizer: a regularizer (or its name) whose value joins `losses`.
          constraint: a constraint (or its name) applied after optimizer updates.
          aggregation: `"none"`, `"mean"`, `"sum"` or `"only_first_replica"`.
          overwrite_with_gradient: optimizers assign the gradient instead of applying it.
          name: the variable name; its `path` is `"<layer path>/<name>"`. By keyword: a string
            in the first position (the tf.keras order) is a `TypeError`.

        Returns:
          The new `dtypepolicy.Variable`.
        """
        self._check_initialized()
        dtype = self.variable_dtype if dtype is None else standardize_dtype(dtype)
        variable = dp.Variable(
            _resolve_initializer(initializer, dtype),
            shape=() if shape is None else shape,
            dtype=dtype,
            trainable=trainable,
            autocast=autocast,
            aggregation=aggregation,
            name=name,
            overwrite_with_gradient=overwrite_with_gradient,
            regularizer=regularizers.get(regularizer),
            constraint=constraints.get(constraint),
        )
        self._track(variable)
        return variable

    @property
    def trainable(self) -> bool:
        """Whether the layer's weights are trained (settable, applies to sublayers)."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        # Reaches every sublayer and their variables; True switches back on only the variables
        # the flag switched off (see `_ownership.set_trainable`).
        if not isinstance(value, bool):
            raise TypeError(f"trainable must be a bool, received {value!r}.")
        _ownership.set_trainable(self, value)

    def add_state(self, initializer: Any, shape: Any, dtype: Any, name: str) -> dp.Variable:
        """Creates non-trainable state that is not a weight (random-generator keys, counters).

        It is one of `variables` and `non_trainable_variables`, so `stateless_call` threads it
        through, but not one of `weights`: `get_weights`, `set_weights` and `count_params`
        leave it out, as Keras does for seed generators.
        """
        variable = self.add_weight(
            shape=shape, initializer=initializer, dtype=dtype, trainable=False, autocast=False, name=name
        )
        self._state_ids.add(id(variable))
        return variable

    def _state_variables(self) -> list[dp.Variable]:
        return [v for layer in self._flatten_layers() for v in layer._own_variables if id(v) in layer._state_ids]

    @property
    def variables(self) -> list[dp.Variable]:
        """Every variable of this layer and its sublayers, own variables first, in tracking order."""
        return _tracking.unique(v for layer in self._flatten_layers() for v in layer._own_variables)

    @property
    def trainable_weights(self) -> list[dp.Variable]:
        """Variables updated by backpropagation (none when the layer is not trainable)."""
        if not self._trainable:
            return []
        own = [v for v in self._own_variables if v.trainable and id(v) not in self._state_ids]
        return _tracking.unique([*own, *(v for layer in self._own_layers for v in layer.trainable_weights)])

    @property
    def non_trainable_weights(self) -> list[dp.Variable]:
        """Variables not updated by backpropagation (state from `add_state` excluded)."""
        excluded = {id(v) for v in self.trainable_weights} | {id(v) for v in self._state_variables()}
        return [v for v in self.variables if id(v) not in excluded]

    @property
    def weights(self) -> list[dp.Variable]:
        """`trainable_weights` followed by `non_trainable_weights`."""
        return self.trainable_weights + self.non_trainable_weights

    @property
    def trainable_variables(self) -> list[dp.Variable]:
        """Same as `trainable_weights`."""
        return self.trainable_weights

    @property
    def non_trainable_variables(self) -> list[dp.Variable]:
        """`non_trainable_weights` followed by the state from `add_state`."""
        return self.non_trainable_weights + _tracking.unique(iter(self._state_variables()))

    def get_weights(self) -> list[np.ndarray]:
        """The values of `weights` as NumPy arrays, in their storage dtypes."""
        return [np.array(v._read_storage()) for v in self.weights]  # writable copies, as in Keras

    def set_weights(self, weights: Any) -> None:
        """Sets `weights` from arrays in the order `get_weights` returns; all or nothing.

        Every value is converted and checked (count, shape, numeric content) before any is
        assigned; an unbuilt layer, whose weights do not exist yet, says so.
        """
        variables = self.weights
        for variable, value in zip(variables, _weights.check_set_weights(self, variables, weights), strict=True):
            variable.assign(value)

    def count_params(self) -> int:
        """The number of scalars in `weights`."""
        if not self.built:
            raise ValueError(
                f"count_params() needs the weights of layer {self.name!r}, but the layer is not built. "
                f"Call it on data or call build(input_shape) first."
            )
        return sum(v.size for v in self.weights)

    # --- losses and metrics --------------------------------------------------------------

    def add_loss(self, loss: Any) -> None:
        """Adds a scalar loss (or a zero-argument callable returning one) to `losses`.

        Floating losses are kept in float32, whatever dtype the layer computes in. A loss value
        counts until the next outermost call; a callable (a weight penalty added in `build`)
        stays for good and is evaluated on every read of `losses`.
        """
        if callable(loss):
            _transaction.add_callable_loss(self, loss)
            return
        stored = _as_float32(loss)
        self._losses.append(stored)
        _transaction.note_loss(self, stored)  # taken back if the call adding it fails

    def _own_losses(self) -> list[Any]:
        # Inside the user's jax.jit/grad, the losses of the layer's traced call (kept apart from
        # its state, see layers/_traced_losses.py); otherwise its concrete ones.
        traced = _traced_losses.shown(self)
        callables = self._callable_losses if traced is None else self._callable_losses + traced.callables
        losses = [_as_float32(loss()) for loss in callables]  # the layer's own, then the traced call's
        losses += self._losses if traced is None else traced.losses
        for variable in self._own_variables:
            if variable.regularizer is not None and self._trainable and variable.trainable:
                losses.append(_as_float32(variable.regularizer(variable._read_storage().astype("float32"))))
        return losses

    @property
    def losses(self) -> list[Any]:
        """Losses from `add_loss`, activity and weight regularizers, of this layer and sublayers."""
        return [loss for layer in self._flatten_layers() for loss in layer._own_losses()]

    def _clear_losses(self) -> list[tuple[Layer, list]]:
        saved = []
        for layer in self._flatten_layers() if self._own_layers else (self,):
            saved.append((layer, layer._losses))
            object.__setattr__(layer, "_losses", [])
        return saved

    def add_metric(self, value: Any, name: str | None = None, aggregation: str = "mean") -> None:
        """Reports a value to the metric `name` (a running mean, or sum), listed in `metrics`.

        Inside a call the value counts once the outermost call succeeds; values traced by JAX
        (inside the user's `jax.jit`) never count. Without a name, the n-th unnamed report of a
        call goes to `"<layer name>_metric"` (n = 0) or `"<layer name>_metric_<n>"`, so every
        call feeds the same metrics.
        """
        _transaction.note_metric(self, value, name, aggregation)

    @property
    def metrics(self) -> list[Metric]:
        """Metrics reported with `add_metric` by this layer and its sublayers."""
        return [m for layer in self._flatten_layers() for m in layer._metrics_by_name.values()]

    # --- the call pipeline ---------------------------------------------------------------

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        build = cls.__dict__.get("build")
        if build is not None and not getattr(build, "_wraps_build", False):
            cls.build = _call_pipeline.wrap_build(build)

    def build(self, input_shape: Any = None) -> None:
        """Creates weights that depend on the input shape; runs before the first call.

        Overrides create weights with `add_weight` and sublayers; the layer is marked built
        (and closed to new state) when the outermost `build` returns, and rolled back if it
        raises.
        """

    @property
    def input_spec(self) -> Any:
        """The `InputSpec` (or list/tuple/dict of them, or None) checked before each call (settable)."""
        return self.__dict__.get("_input_spec")

    @input_spec.setter
    def input_spec(self, value: Any) -> None:
        object.__setattr__(self, "_input_spec", _input_spec.checked_input_spec(value, self.__dict__.get("_name")))

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """The computation; subclasses override it."""
        raise NotImplementedError(f"Layer {type(self).__name__} does not implement call().")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the call pipeline (see the class docstring)."""
        return _call_pipeline.run(self, args, kwargs)

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        """The mask of the outputs: the input mask when the layer supports masking, else None."""
        return mask if self.supports_masking else None

    def compute_output_shape(self, input_shape: Any) -> Any:
        """The output shape for an input shape (None entries allowed), found by tracing."""
        return _shapes.compute_output_shape(self, input_shape)

    def compute_output_signature(self, input_signature: Any, *args: Any, **kwargs: Any) -> Any:
        """`jax.ShapeDtypeStruct`s of the outputs for the call's input structs; dtypes follow the policy.

        Arguments are those of `call`, as structs. A class that overrides `compute_output_shape`
        is answered from it (nothing is traced or built); other layers are traced.
        """
        return _shapes.compute_output_signature(self, (input_signature, *args), kwargs)

    def stateless_call(
        self,
        trainable_variables: Any,
        non_trainable_variables: Any,
        *args: Any,
        return_losses: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Calls the layer as a pure function of the given variable values.

        Returns `(outputs, non_trainable_values)`, plus the list of losses when
        `return_losses=True`. The layer and its variables are left untouched, so this works
        under `jax.jit`, `jax.grad` and `jax.vmap`.
        """
        return _call_pipeline.stateless_call(
            self, trainable_variables, non_trainable_variables, args, kwargs, return_losses
        )

    def quantize(
        self, mode: str, filter: Any = None, keep_first_and_last: bool = False, **options: Any
    ) -> _quantization.QuantizationReport:
        """Quantizes this built layer, or every layer inside it that has a quantized form.

        `"float8"` (training: the layer keeps its float32 master weights and gains six scale and
        history variables) or `"int8"` (inference: the kernel becomes int8 codes and a float32
        scale per output channel). Each quantized layer's policy becomes
        `"<mode>_from_<its policy>"`, so `get_config` records it.

        Args:
          mode: `"float8"` or `"int8"`.
          filter: None (every eligible layer), a regex that layer paths must fully match, or a
            callable taking a layer and returning True to quantize it.
          keep_first_and_last: keep the first and last eligible layers in high precision (the
            usual recipe: the embedding-side and the head projections are the most sensitive).
          **options: float8 policy options: `recipe` (`"delayed"` or `"current"`),
            `amax_history_length`, `margin`.

        Returns:
          A `QuantizationReport`: per leaf layer, quantized or skipped and why.

        Raises:
          ValueError: the layer is not built, is already quantized, or nothing in it has a
            `mode` form; or a bad mode or filter.
          TypeError: an option this mode does not take.

        Example:
          >>> import layers
          >>> dense = layers.Dense(3)
          >>> _ = dense(np.ones((2, 4)))
          >>> _ = dense.quantize("float8")
          >>> dense.dtype_policy.name, [v.name for v in dense.weights][:3]
          ('float8_from_float32', ['kernel', 'bias', 'inputs_scale'])
        """
        return _quantization.quantize(self, mode, filter, keep_first_and_last, **options)

    # --- configs -------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that re-create this layer (weights not included).

        Constructor arguments that are plain JSON values are captured automatically; layers
        taking other objects override this, starting from `super().get_config()`.
        """
        source = self._explicit_dtype if isinstance(self._explicit_dtype, dp.DTypePolicyMap) else self.dtype_policy
        config: dict[str, Any] = {"name": self.name, "trainable": self.trainable, "dtype": dp.serialize(source)}
        if not self._autocast:
            config["autocast"] = False
        if self._activity_regularizer is not None:
            config["activity_regularizer"] = regularizers.serialize(self._activity_regularizer)
        if type(self).__init__ is not Layer.__init__:
            captured = self._auto_config
            if captured is not None:
                config = {**captured, **config}
            elif type(self).get_config is Layer.get_config:
                raise NotImplementedError(
                    f"Layer {type(self).__name__} has constructor arguments that are not plain values; "
                    f"override get_config() (and from_config() if the keys differ)."
                )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        """Creates a layer from the output of `get_config`."""
        return cls(**_config.check_config(cls, config))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


_new_layer = _copying.new_layer  # the name pickles made before _copying existed refer to


def _as_float32(value: Any) -> Any:
    array = jax.numpy.asarray(value)
    return array.astype("float32") if is_float(array.dtype) and array.dtype != np.float32 else array


Layer.build = _call_pipeline.wrap_build(Layer.build)
