"""Variable: mutable state stored in one dtype and read through the autocast scope."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dtypepolicy._array_protocol import ArrayBehaviour, register
from dtypepolicy._autocast import current_autocast_dtype
from dtypepolicy._context import stateless_scope_var
from dtypepolicy._dtypes import check_representable, is_float, standardize_dtype

AGGREGATIONS = ("none", "mean", "sum", "only_first_replica")
SYNCHRONIZATIONS = ("auto", "none", "on_read", "on_write")


def _check_choice(value: Any, what: str, choices: tuple[str, ...], none_means: str) -> str:
    if value is None:
        return none_means
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{what} must be one of {choices} (or None), received {value!r}.")
    return value


def _check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be a bool, received {value!r} of type {type(value).__name__}.")
    return bool(value)


def _check_shape(shape: Any) -> tuple[int, ...]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of non-negative ints, received {shape!r}.") from None
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise ValueError(f"shape must be fully defined with non-negative ints, received {shape!r}.")
    return tuple(int(d) for d in dims)


def _check_callable_or_none(value: Any, what: str) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{what} must be callable or None, received {value!r}.")
    return value


def _to_array(value: Any, what: str) -> jnp.ndarray:
    if isinstance(value, Variable):
        return value._read_storage()
    if value is None:
        raise TypeError(f"{what}: expected an array or a number, received None.")
    try:
        return jnp.asarray(value)
    except TypeError as error:
        raise TypeError(
            f"{what}: cannot convert {value!r} of type {type(value).__name__} to an array ({error})."
        ) from None
    except ValueError as error:  # ragged nested lists, unconvertible objects
        raise ValueError(f"{what}: cannot convert {value!r} to a rectangular numeric array ({error}).") from None


class Variable(ArrayBehaviour):
    """Mutable state stored in one dtype and read through the autocast scope.

    `.dtype` is always the storage dtype. Reading (`.value`, `jnp.asarray(v)`, `np.asarray(v)`,
    arithmetic, indexing) returns the value cast to the current autocast dtype when
    `autocast=True` and the storage dtype is floating. Writes (`assign*`) always happen in the
    storage dtype.

    Args:
      initializer: an initial value (array-like), or a callable `(shape, dtype) -> array`.
      shape: the shape; required with a callable initializer.
      dtype: the storage dtype. None stores floating values as float32 and keeps the dtype of
        integer and bool values.
      trainable: whether optimizers update the variable.
      autocast: whether reads follow the autocast scope.
      aggregation: `"none"`, `"mean"`, `"sum"` or `"only_first_replica"`.
      synchronization: `"auto"`, `"none"`, `"on_read"` or `"on_write"`.
      name: a name without `/`; the tracking layer adds a `path`.
      overwrite_with_gradient: optimizers assign this variable's gradient as its new value.
      regularizer: optional callable `value -> scalar loss`.
      constraint: optional callable `value -> value` applied after optimizer updates.

    Example:
      >>> v = Variable(jnp.zeros((2,)), name="total")
      >>> _ = v.assign_add(jnp.ones((2,)))
      >>> v.dtype, v.numpy().tolist()
      ('float32', [1.0, 1.0])
    """

    __slots__ = (
        "_value",
        "_shape",
        "_dtype",
        "_casts",
        "_trainable",
        "_autocast",
        "_aggregation",
        "_synchronization",
        "_name",
        "_path",
        "_overwrite_with_gradient",
        "_regularizer",
        "_constraint",
        "__weakref__",
    )

    def __init__(
        self,
        initializer: Any,
        shape: Any = None,
        dtype: Any = None,
        trainable: bool = True,
        autocast: bool = True,
        aggregation: str | None = "none",
        synchronization: str | None = "auto",
        name: str | None = None,
        overwrite_with_gradient: bool = False,
        regularizer: Callable | None = None,
        constraint: Callable | None = None,
    ) -> None:
        if name is None:
            name = "variable"
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"Variable name must be a non-empty string without '/', received {name!r}.")
        trainable = _check_bool(trainable, "trainable")
        aggregation = _check_choice(aggregation, "aggregation", AGGREGATIONS, "none")
        synchronization = _check_choice(synchronization, "synchronization", SYNCHRONIZATIONS, "auto")
        if trainable and synchronization == "on_read":
            raise ValueError(
                f"Variable {name!r}: synchronization='on_read' is for non-trainable state; "
                f"received trainable=True. Pass trainable=False."
            )
        storage_dtype = None if dtype is None else standardize_dtype(dtype)
        if shape is not None:
            shape = _check_shape(shape)
        value = self._initial_value(initializer, shape, storage_dtype, name)
        if storage_dtype is None:
            storage_dtype = "float32" if is_float(value.dtype) else standardize_dtype(value.dtype)
        check_representable(storage_dtype, f"Variable {name!r}")
        if shape is not None and value.shape != shape:
            raise ValueError(f"Variable {name!r}: the initial value has shape {value.shape}, expected shape {shape}.")
        set_ = object.__setattr__
        set_(self, "_value", value.astype(storage_dtype))
        set_(self, "_shape", tuple(value.shape))
        set_(self, "_dtype", storage_dtype)
        set_(self, "_casts", bool(autocast) and is_float(storage_dtype))
        set_(self, "_trainable", trainable)
        set_(self, "_autocast", _check_bool(autocast, "autocast"))
        set_(self, "_aggregation", aggregation)
        set_(self, "_synchronization", synchronization)
        set_(self, "_name", name)
        set_(self, "_path", name)
        set_(self, "_overwrite_with_gradient", _check_bool(overwrite_with_gradient, "overwrite_with_gradient"))
        set_(self, "_regularizer", _check_callable_or_none(regularizer, "regularizer"))
        set_(self, "_constraint", _check_callable_or_none(constraint, "constraint"))

    @staticmethod
    def _initial_value(initializer: Any, shape: tuple | None, dtype: str | None, name: str) -> jnp.ndarray:
        if isinstance(initializer, str):
            raise TypeError(
                f"Variable {name!r}: initializer {initializer!r} is a string; pass an array or a "
                f"callable (shape, dtype) -> array (layers.initializers.get resolves names)."
            )
        if callable(initializer) and not hasattr(initializer, "__array__"):
            if shape is None:
                raise ValueError(f"Variable {name!r}: a callable initializer needs shape=, received shape=None.")
            return jnp.asarray(initializer(shape, dtype or "float32"))
        return _to_array(initializer, f"Variable {name!r} initializer")

    # --- reading -------------------------------------------------------------------------

    def _read_storage(self) -> jnp.ndarray:
        """The stored array (or the active StatelessScope's value for it), never cast."""
        scope = stateless_scope_var.get()
        return self._value if scope is None else scope.read(self)

    @property
    def value(self) -> jnp.ndarray:
        """The current value, cast to the autocast dtype when that applies."""
        raw = self._read_storage()
        target = self._read_dtype()
        return raw if target == self._dtype else raw.astype(target)

    def _read_dtype(self) -> str:
        """The dtype a read returns here: the autocast dtype for a casting variable, else storage.

        The one statement of the autocast rule; code that casts inside its own jitted function
        (Dense's forward) asks this instead of reading `.value` eagerly.
        """
        if self._casts:
            target = current_autocast_dtype()
            if target is not None:
                return target
        return self._dtype

    def numpy(self) -> np.ndarray:
        """The value as a writable NumPy array of its own (read like `.value`)."""
        return np.array(self.value)

    # --- writing -------------------------------------------------------------------------

    def _store(self, new: jnp.ndarray) -> jnp.ndarray:
        scope = stateless_scope_var.get()
        if scope is not None:
            scope.write(self, new)  # a StatelessScope (or a layer call's transaction) decides
        elif isinstance(new, jax.core.Tracer):
            raise RuntimeError(
                f"Cannot store a value traced by JAX in variable {self._path!r}: the write happened inside "
                f"jax.jit, grad or vmap, and the variable would keep a tracer that is invalid once the trace "
                f"ends. Return the new value from the transformed function and assign it outside, or write "
                f"inside a dtypepolicy.StatelessScope and read scope.get_current_value(variable)."
            )
        else:
            object.__setattr__(self, "_value", new)
        return new

    def assign(self, value: Any) -> jnp.ndarray:
        """Stores `value` cast to the storage dtype; the shape must match exactly."""
        array = _to_array(value, f"Variable {self._path!r}.assign")
        if array.shape != self.shape:
            raise ValueError(
                f"Cannot assign a value of shape {array.shape} to variable {self._path!r} of shape {self.shape}."
            )
        return self._store(array.astype(self._dtype))

    def _assign_update(self, op: Callable, delta: Any, method: str) -> jnp.ndarray:
        if self._dtype == "bool":
            raise TypeError(
                f"Variable {self._path!r} stores bool values, which have no {method}; "
                f"expected a numeric variable. Use assign() to set bool state."
            )
        array = _to_array(delta, f"Variable {self._path!r}.{method}")
        try:
            fits = jnp.broadcast_shapes(array.shape, self.shape) == self.shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"Cannot {method} a value of shape {array.shape} to variable {self._path!r} of shape {self.shape}."
            )
        # Computed from storage in the storage dtype: never through the autocast read.
        return self._store(op(self._read_storage(), array.astype(self._dtype)).astype(self._dtype))

    def assign_add(self, delta: Any) -> jnp.ndarray:
        """Adds `delta` in the storage dtype."""
        return self._assign_update(operator.add, delta, "assign_add")

    def assign_sub(self, delta: Any) -> jnp.ndarray:
        """Subtracts `delta` in the storage dtype."""
        return self._assign_update(operator.sub, delta, "assign_sub")

    # --- attributes ----------------------------------------------------------------------

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "trainable":
            object.__setattr__(self, "_trainable", _check_bool(value, "trainable"))
            return
        raise AttributeError(f"Cannot set {key!r} on a Variable; use assign() to change its value.")

    @property
    def dtype(self) -> str:
        """The storage dtype name."""
        return self._dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape (fixed at creation)."""
        return self._shape

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of elements."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def trainable(self) -> bool:
        """Whether optimizers update this variable (settable)."""
        return self._trainable

    @property
    def autocast(self) -> bool:
        """Whether reads follow the autocast scope."""
        return self._autocast

    @property
    def aggregation(self) -> str:
        """How replicas combine this variable."""
        return self._aggregation

    @property
    def synchronization(self) -> str:
        """When replicas synchronize this variable."""
        return self._synchronization

    @property
    def name(self) -> str:
        """The variable's own name."""
        return self._name

    @property
    def path(self) -> str:
        """The name qualified by the owning layer's path (`"dense/kernel"`)."""
        return self._path

    def _set_path(self, path: str) -> None:
        object.__setattr__(self, "_path", path)

    @property
    def overwrite_with_gradient(self) -> bool:
        """Whether optimizers assign the gradient as the new value."""
        return self._overwrite_with_gradient

    @property
    def regularizer(self) -> Callable | None:
        """The weight regularizer, if any."""
        return self._regularizer

    @property
    def constraint(self) -> Callable | None:
        """The constraint applied after optimizer updates, if any."""
        return self._constraint

    # --- array protocol (the rest is ArrayBehaviour) ---------------------------------------

    def astype(self, dtype: Any) -> jnp.ndarray:
        """The value (read like `.value`) cast to `dtype`."""
        return self.value.astype(standardize_dtype(dtype))

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError(f"len() of a scalar Variable {self._path!r}.")
        return self.shape[0]

    __hash__ = object.__hash__

    # --- copying and pickling --------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # The stored array itself, never a StatelessScope's value for it: a copy is of the variable.
        return {slot: object.__getattribute__(self, slot) for slot in self.__slots__ if slot != "__weakref__"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for slot, value in state.items():
            object.__setattr__(self, slot, value)

    def __repr__(self) -> str:
        return f"<Variable path={self._path}, shape={self.shape}, dtype={self._dtype}, value={self._value}>"


register(Variable)
