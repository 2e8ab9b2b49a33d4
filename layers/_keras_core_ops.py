"""More `keras.ops` names for `layers.ops`: control flow, slicing, scatter and segment reductions.

(`slice` and `map` shadow the builtins in this module on purpose: they are the Keras names.)

Same names, argument names and defaults as Keras 3. Every array argument (and every array leaf
of a loop state or scanned tree) may be a `Variable`, read through autocast as `.value` does.
The loops run on `jax.lax`, so their state keeps its shapes and dtypes across iterations.
Segment sums of floats accumulate in float32 (float64 stays float64) and cast back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

from layers._keras_ops import _array, _wide
from layers.ops import _read

__all__ = [
    "associative_scan",
    "cond",
    "divide_no_nan",
    "erfc",
    "fori_loop",
    "map",
    "scan",
    "scatter",
    "scatter_update",
    "segment_max",
    "segment_min",
    "segment_prod",
    "segment_sum",
    "slice",
    "slice_update",
    "switch",
    "unstack",
    "vectorized_map",
    "while_loop",
]


def _tree(tree: Any) -> Any:
    """`tree` with every Variable leaf read through autocast."""
    return jax.tree.map(_read, tree)


def _callable(value: Any, function: str, name: str) -> Callable:
    if not callable(value):
        raise TypeError(f"ops.{function}: {name} must be callable, received {value!r}.")
    return value


def _int(value: Any, function: str, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"ops.{function}: {name} must be an int >= {minimum}, received {value!r}.")
    return int(value)


# --- control flow ------------------------------------------------------------------------------


def cond(pred: Any, true_fn: Callable, false_fn: Callable) -> Any:
    """`true_fn()` if `pred` else `false_fn()`; under `jax.jit` both are traced, one runs.

    Both branches must return the same structure of shapes and dtypes.

    Example:
      >>> from layers import ops
      >>> ops.cond(jnp.array(3) > 2, lambda: jnp.ones(()), lambda: jnp.zeros(()))
      Array(1., dtype=float32)
    """
    _callable(true_fn, "cond", "true_fn")
    _callable(false_fn, "cond", "false_fn")
    predicate = _array(pred, "cond")
    if predicate.shape != ():
        raise ValueError(f"ops.cond: pred must be a scalar, received shape {predicate.shape} ({pred!r}).")
    return jax.lax.cond(predicate.astype(jnp.bool_), true_fn, false_fn)


def switch(index: Any, branches: Sequence[Callable], *operands: Any) -> Any:
    """`branches[index](*operands)`, `index` clamped to the valid range.

    Example:
      >>> from layers import ops
      >>> ops.switch(1, [lambda x: x + 1, lambda x: x * 10], jnp.int32(2))
      Array(20, dtype=int32)
    """
    if not isinstance(branches, (list, tuple)) or not branches:
        raise TypeError(f"ops.switch: branches must be a non-empty list of callables, received {branches!r}.")
    for position, branch in enumerate(branches):
        _callable(branch, "switch", f"branches[{position}]")
    position = _array(index, "switch")
    if position.shape != () or not jnp.issubdtype(position.dtype, jnp.integer):
        raise ValueError(f"ops.switch: index must be an integer scalar, received {index!r}.")
    return jax.lax.switch(position, list(branches), *_tree(operands))


def while_loop(cond: Callable, body: Callable, loop_vars: Any, maximum_iterations: int | None = None) -> Any:
    """Runs `loop_vars = body(loop_vars)` while `cond(loop_vars)`, at most `maximum_iterations` times.

    A tuple or list `loop_vars` is passed positionally to `cond` and `body`, and the result is
    a tuple (as Keras' JAX backend returns); other states are passed and returned as they are.

    Example:
      >>> from layers import ops
      >>> ops.while_loop(lambda i: i < 10, lambda i: i + 1, jnp.int32(0))
      Array(10, dtype=int32)
      >>> x, y = ops.while_loop(lambda x, y: x < 10, lambda x, y: (x + 1, y * 2), (0, 1), maximum_iterations=3)
      >>> int(x), int(y)
      (3, 8)
    """
    _callable(cond, "while_loop", "cond")
    _callable(body, "while_loop", "body")
    limit = None if maximum_iterations is None else _int(maximum_iterations, "while_loop", "maximum_iterations", 0)
    positional = isinstance(loop_vars, (tuple, list))
    state = tuple(_tree(list(loop_vars))) if positional else (_tree(loop_vars),)

    def keep_going(carry: tuple) -> Any:
        state, count = carry
        going = jnp.asarray(cond(*state))
        if going.shape != ():
            raise ValueError(f"ops.while_loop: cond must return a scalar, it returned shape {going.shape}.")
        going = going.astype(jnp.bool_)
        return going if limit is None else going & (count < limit)

    def step(carry: tuple) -> tuple:
        state, count = carry
        out = body(*state)
        if positional:
            if not isinstance(out, (tuple, list)) or len(out) != len(state):
                raise ValueError(
                    f"ops.while_loop: body must return {len(state)} values like loop_vars, it returned {out!r}."
                )
            out = tuple(out)
        else:
            out = (out,)
        return out, count + 1

    final, _ = jax.lax.while_loop(keep_going, step, (state, jnp.asarray(0, jnp.int32)))
    return final if positional else final[0]


def fori_loop(lower: Any, upper: Any, body_fun: Callable, init_val: Any) -> Any:
    """`val = body_fun(i, val)` for `i` in `range(lower, upper)`, starting from `init_val`.

    Example:
      >>> from layers import ops
      >>> ops.fori_loop(0, 4, lambda i, total: total + i, jnp.int32(0))
      Array(6, dtype=int32)
    """
    _callable(body_fun, "fori_loop", "body_fun")
    bounds = []
    for name, bound in (("lower", lower), ("upper", upper)):
        array = _array(bound, "fori_loop")
        if array.shape != () or not jnp.issubdtype(array.dtype, jnp.integer):
            raise ValueError(f"ops.fori_loop: {name} must be an integer scalar, received {bound!r}.")
        bounds.append(_read(bound))
    return jax.lax.fori_loop(bounds[0], bounds[1], body_fun, _tree(init_val))


def scan(
    f: Callable, init: Any, xs: Any = None, length: int | None = None, reverse: bool = False, unroll: int | bool = 1
) -> tuple[Any, Any]:
    """`carry, y = f(carry, x)` over the leading axis of `xs`; returns `(carry, stacked ys)`.

    With `xs=None`, `length` gives the number of steps and `f` receives `None`.

    Example:
      >>> from layers import ops
      >>> carry, ys = ops.scan(lambda c, x: (c + x, c * x), jnp.array(0.0), jnp.arange(1.0, 4.0))
      >>> carry.tolist(), ys.tolist()
      (6.0, [0.0, 2.0, 9.0])
    """
    _callable(f, "scan", "f")
    if not isinstance(unroll, bool):
        unroll = _int(unroll, "scan", "unroll", 1)
    if length is not None:
        length = _int(length, "scan", "length", 0)
    if xs is None and length is None:
        raise ValueError("ops.scan: pass xs or length; with xs=None, length sets the number of steps.")
    if not isinstance(reverse, (bool, np.bool_)):
        raise TypeError(f"ops.scan: reverse must be a bool, received {reverse!r}.")
    return jax.lax.scan(f, _tree(init), _tree(xs), length=length, reverse=bool(reverse), unroll=unroll)


def associative_scan(f: Callable, elems: Any, reverse: bool = False, axis: int = 0) -> Any:
    """The prefix reductions of `elems` along `axis` by the associative binary `f`, in parallel.

    Example:
      >>> from layers import ops
      >>> ops.associative_scan(lambda a, b: a + b, jnp.arange(1.0, 5.0))
      Array([ 1.,  3.,  6., 10.], dtype=float32)
    """
    _callable(f, "associative_scan", "f")
    return jax.lax.associative_scan(f, _tree(elems), reverse=reverse, axis=axis)


def map(f: Callable, xs: Any) -> Any:
    """`stack([f(x) for x in xs])` over the leading axis, one element at a time (see `vectorized_map`).

    Example:
      >>> from layers import ops
      >>> ops.map(lambda x: x * 2, jnp.arange(3))
      Array([0, 2, 4], dtype=int32)
    """
    _callable(f, "map", "f")
    return jax.lax.map(f, _tree(xs))


def vectorized_map(function: Callable, elements: Any) -> Any:
    """`function` mapped over the leading axis of `elements` in parallel (`jax.vmap`).

    Example:
      >>> from layers import ops
      >>> ops.vectorized_map(lambda x: x.sum(), jnp.ones((3, 2)))
      Array([2., 2., 2.], dtype=float32)
    """
    _callable(function, "vectorized_map", "function")
    return jax.vmap(function)(_tree(elements))


# --- slicing and scatter -----------------------------------------------------------------------


def _starts(start_indices: Any, array: jax.Array, function: str) -> list[Any]:
    read = _read(start_indices)
    if isinstance(read, (list, tuple)):
        starts = [_read(s) for s in read]
    else:
        indices = _array(start_indices, function)
        if indices.ndim != 1:
            raise ValueError(f"ops.{function}: start_indices must be 1-D, received shape {indices.shape}.")
        starts = [indices[i] for i in range(indices.shape[0])]
    if len(starts) != array.ndim:
        raise ValueError(
            f"ops.{function}: start_indices has {len(starts)} entries for inputs of rank {array.ndim} "
            f"(shape {array.shape}); expected one start per axis."
        )
    for start in starts:
        if not jnp.issubdtype(jnp.asarray(start).dtype, jnp.integer) or jnp.ndim(start) != 0:
            raise ValueError(f"ops.{function}: start_indices must be integers, received {start_indices!r}.")
    return starts


def slice(inputs: Any, start_indices: Any, shape: Sequence[int]) -> jax.Array:
    """`inputs[start : start + shape]` on every axis; `start_indices` may be traced, `shape` is static.

    A `shape` entry of -1 takes the rest of that axis (its start must then be a concrete int).
    As in `jax.lax.dynamic_slice`, starts are clamped so the slice stays inside `inputs`.

    Example:
      >>> from layers import ops
      >>> ops.slice(jnp.arange(12).reshape(3, 4), (1, 2), (2, -1))
      Array([[ 6,  7],
             [10, 11]], dtype=int32)
    """
    array = _array(inputs, "slice")
    starts = _starts(start_indices, array, "slice")
    if not isinstance(shape, (list, tuple, np.ndarray)) or len(shape) != array.ndim:
        raise ValueError(
            f"ops.slice: shape must list one size per axis of inputs of shape {array.shape}, received {shape!r}."
        )
    sizes = []
    for axis, (start, size) in enumerate(zip(starts, shape, strict=True)):
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)) or size < -1:
            raise ValueError(f"ops.slice: shape entries must be ints >= -1, received shape={shape!r}.")
        if size == -1:
            try:
                size = array.shape[axis] - int(start)
            except (TypeError, jax.errors.ConcretizationTypeError):
                raise ValueError(
                    f"ops.slice: shape[{axis}] = -1 needs a concrete start on that axis, received a traced one."
                ) from None
        if size > array.shape[axis]:
            raise ValueError(f"ops.slice: shape {tuple(shape)} does not fit inside inputs of shape {array.shape}.")
        sizes.append(int(size))
    return jax.lax.dynamic_slice(array, starts, sizes)


def slice_update(inputs: Any, start_indices: Any, updates: Any) -> jax.Array:
    """`inputs` with `inputs[start : start + updates.shape] = updates` (a new array).

    `updates` is cast to `inputs`' dtype; starts are clamped as in `jax.lax.dynamic_update_slice`.

    Example:
      >>> from layers import ops
      >>> ops.slice_update(jnp.zeros((2, 3)), (1, 1), jnp.ones((1, 2)))
      Array([[0., 0., 0.],
             [0., 1., 1.]], dtype=float32)
    """
    array = _array(inputs, "slice_update")
    patch = _array(updates, "slice_update")
    if patch.ndim != array.ndim or any(p > a for p, a in zip(patch.shape, array.shape, strict=True)):
        raise ValueError(
            f"ops.slice_update: updates of shape {patch.shape} do not fit inside inputs of shape {array.shape}; "
            "expected the same rank and no larger size on any axis."
        )
    starts = _starts(start_indices, array, "slice_update")
    return jax.lax.dynamic_update_slice(array, patch.astype(array.dtype), starts)


def _index_tuple(indices: Any, ndim: int, function: str) -> tuple[jax.Array, ...]:
    index = _array(indices, function)
    if not jnp.issubdtype(index.dtype, jnp.integer) or index.ndim < 1 or index.shape[-1] > ndim:
        raise ValueError(
            f"ops.{function}: indices must be integers of shape (num_updates, k) with k <= {ndim}, "
            f"received shape {index.shape} and dtype {index.dtype}."
        )
    return tuple(jnp.moveaxis(index, -1, 0))


def scatter(indices: Any, values: Any, shape: Sequence[int]) -> jax.Array:
    """Zeros of `shape` with `values` added at `indices` (`(num_updates, k)`); duplicates add up.

    Example:
      >>> from layers import ops
      >>> ops.scatter(jnp.array([[0, 1], [1, 0], [0, 1]]), jnp.array([1.0, 2.0, 3.0]), (2, 2))
      Array([[0., 4.],
             [2., 0.]], dtype=float32)
    """
    payload = _array(values, "scatter")
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise ValueError(f"ops.scatter: shape must be a tuple of non-negative ints, received {shape!r}.")
    key = _index_tuple(indices, len(shape), "scatter")
    return jnp.zeros(tuple(shape), payload.dtype).at[key].add(payload)


_REDUCTIONS = {None: "set", "add": "add", "max": "max", "min": "min", "mul": "multiply"}


def scatter_update(inputs: Any, indices: Any, updates: Any, reduction: str | None = None) -> jax.Array:
    """`inputs` with `inputs[indices] = updates` (or combined by `reduction`: add, max, min, mul).

    `indices` is `(num_updates, k)`; `updates` is cast to `inputs`' dtype.

    Example:
      >>> from layers import ops
      >>> ops.scatter_update(jnp.zeros(3), jnp.array([[2], [0]]), jnp.array([5.0, 7.0]))
      Array([7., 0., 5.], dtype=float32)
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"ops.scatter_update: reduction must be None, 'add', 'max', 'min' or 'mul', received {reduction!r}."
        )
    array = _array(inputs, "scatter_update")
    key = _index_tuple(indices, array.ndim, "scatter_update")
    payload = _array(updates, "scatter_update").astype(array.dtype)
    return getattr(array.at[key], _REDUCTIONS[reduction])(payload)


def unstack(x: Any, num: int | None = None, axis: int = 0) -> list[jax.Array]:
    """The slices of `x` along `axis`, as a list.

    Example:
      >>> from layers import ops
      >>> [a.tolist() for a in ops.unstack(jnp.array([[1, 2], [3, 4]]), axis=1)]
      [[1, 3], [2, 4]]
    """
    array = _array(x, "unstack")
    if array.ndim == 0:
        raise ValueError(f"ops.unstack needs an array of rank >= 1, received a scalar {x!r}.")
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool) or not -array.ndim <= axis < array.ndim:
        raise ValueError(f"ops.unstack: axis {axis!r} is out of range for inputs of shape {array.shape}.")
    if num is not None and num != array.shape[axis]:
        raise ValueError(
            f"ops.unstack: num={num!r} but inputs of shape {array.shape} have {array.shape[axis]} "
            f"slices along axis {axis}."
        )
    return list(jnp.moveaxis(array, axis, 0))


# --- math ---------------------------------------------------------------------------------------


def _segment(
    name: str, data: Any, segment_ids: Any, num_segments: int | None, sorted: bool
) -> tuple[jax.Array, jax.Array, int]:
    array = _array(data, name)
    ids = _array(segment_ids, name)
    if ids.ndim != 1 or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(
            f"ops.{name}: segment_ids must be a 1-D integer array, received shape {ids.shape} and dtype {ids.dtype}."
        )
    if array.ndim == 0 or array.shape[0] != ids.shape[0]:
        raise ValueError(
            f"ops.{name}: segment_ids of shape {ids.shape} must match the leading axis of data of shape {array.shape}."
        )
    if not isinstance(sorted, (bool, np.bool_)):
        raise TypeError(f"ops.{name}: sorted must be a bool, received {sorted!r}.")
    if num_segments is None:
        try:
            num_segments = int(jnp.max(ids)) + 1 if ids.size else 0
        except jax.errors.ConcretizationTypeError:
            raise ValueError(
                f"ops.{name}: num_segments=None needs concrete segment_ids (it is their max + 1); "
                "under jax.jit pass num_segments."
            ) from None
    return array, ids, _int(num_segments, name, "num_segments", 0)


def segment_sum(data: Any, segment_ids: Any, num_segments: int | None = None, sorted: bool = False) -> jax.Array:
    """The sum of the rows of `data` in each segment (floats summed in float32, cast back).

    `num_segments` defaults to `max(segment_ids) + 1` (eagerly only); ids outside
    `[0, num_segments)` are dropped; an empty segment sums to 0.

    Example:
      >>> from layers import ops
      >>> ops.segment_sum(jnp.array([1, 2, 10, 20, 100]), jnp.array([0, 0, 1, 1, 2]))
      Array([  3,  30, 100], dtype=int32)
    """
    array, ids, count = _segment("segment_sum", data, segment_ids, num_segments, sorted)
    wide = _wide(array) if jnp.issubdtype(array.dtype, jnp.floating) else array
    return jax.ops.segment_sum(wide, ids, count, indices_are_sorted=bool(sorted)).astype(array.dtype)


def segment_max(data: Any, segment_ids: Any, num_segments: int | None = None, sorted: bool = False) -> jax.Array:
    """The max of the rows of `data` in each segment; an empty segment gives the dtype's lowest value.

    Example:
      >>> from layers import ops
      >>> ops.segment_max(jnp.array([1.0, 5.0, 2.0]), jnp.array([0, 0, 1]))
      Array([5., 2.], dtype=float32)
    """
    array, ids, count = _segment("segment_max", data, segment_ids, num_segments, sorted)
    return jax.ops.segment_max(array, ids, count, indices_are_sorted=bool(sorted))


def segment_min(data: Any, segment_ids: Any, num_segments: int | None = None, sorted: bool = False) -> jax.Array:
    """The min of the rows of `data` in each segment; an empty segment gives the dtype's highest value.

    Example:
      >>> from layers import ops
      >>> ops.segment_min(jnp.array([1.0, 5.0, 2.0]), jnp.array([0, 0, 1]))
      Array([1., 2.], dtype=float32)
    """
    array, ids, count = _segment("segment_min", data, segment_ids, num_segments, sorted)
    return jax.ops.segment_min(array, ids, count, indices_are_sorted=bool(sorted))


def segment_prod(data: Any, segment_ids: Any, num_segments: int | None = None, sorted: bool = False) -> jax.Array:
    """The product of the rows of `data` in each segment (floats in float32, cast back); empty is 1.

    Example:
      >>> from layers import ops
      >>> ops.segment_prod(jnp.array([2.0, 3.0, 4.0]), jnp.array([0, 0, 1]))
      Array([6., 4.], dtype=float32)
    """
    array, ids, count = _segment("segment_prod", data, segment_ids, num_segments, sorted)
    wide = _wide(array) if jnp.issubdtype(array.dtype, jnp.floating) else array
    return jax.ops.segment_prod(wide, ids, count, indices_are_sorted=bool(sorted)).astype(array.dtype)


def divide_no_nan(x1: Any, x2: Any) -> jax.Array:
    """`x1 / x2`, with 0 wherever `x2 == 0` (and a gradient free of NaN there).

    Example:
      >>> from layers import ops
      >>> ops.divide_no_nan(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0]))
      Array([0. , 0.5], dtype=float32)
    """
    numerator, denominator = _array(x1, "divide_no_nan"), _array(x2, "divide_no_nan")
    zero = denominator == 0
    # Divide by 1 where the denominator is 0, so neither the value nor the gradient becomes NaN.
    safe = jnp.where(zero, jnp.ones_like(denominator), denominator)
    quotient = jnp.true_divide(numerator, safe)
    return jnp.where(zero, jnp.zeros_like(quotient), quotient)


def erfc(x: Any) -> jax.Array:
    """`1 - erf(x)`, accurate for large `x`.

    Example:
      >>> from layers import ops
      >>> ops.erfc(jnp.array([0.0]))
      Array([1.], dtype=float32)
    """
    array = _array(x, "erfc")
    array = array if jnp.issubdtype(array.dtype, jnp.floating) else array.astype(jnp.float32)
    return jax.scipy.special.erfc(array)
