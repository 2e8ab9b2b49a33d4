"""One model's rows: its fixed data and oracle, prepared once, then each policy's errors, floors and bounds."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from benchmarks.precision._gate import FLOAT32_ALLOWANCE
from benchmarks.precision._measure import (
    _assign,
    _built,
    _draw_weights,
    _exact_function,
    _float_weights,
    _is_float,
    _measure,
    _oracle_from_float64_model,
    _relative_path,
)
from benchmarks.precision._metric import _quantities, _rounds_in_compute, round_to
from benchmarks.precision._policies import _applies, _compute_dtype, _forward_only, _quantization


def _cotangent(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Multiples of 1/4 in [-2, 2]: exact in bfloat16, float16 and both float8 types."""
    return (np.random.default_rng(seed).integers(-8, 9, size=shape) / 4).astype(np.float32)


@dataclasses.dataclass
class _Prepared:
    """One model's fixed data and its float64 oracle: everything the policies' rows share."""

    weights: list[np.ndarray]
    paths: list[str]
    cotangent: np.ndarray
    exact_of: Callable[..., dict[str, Any]]
    exact: dict[str, Any]
    on_rounded: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # by compute dtype


def _prepare(
    name: str,
    build: Callable[[str], Any],
    inputs: tuple[np.ndarray, ...],
    reference: Callable[..., Any] | None,
    weights: Sequence[np.ndarray] | None,
    call_kwargs: Mapping[str, Any],
    seed: int,
) -> _Prepared:
    """Weights (drawn or given), the cotangent, and the oracle's output and gradients."""
    reference_layer = _built(build, "float32", inputs, call_kwargs)
    if weights is None:
        weights = _draw_weights(reference_layer, seed)
    else:
        weights = [np.asarray(w, np.float32) for w in weights]
        _assign(reference_layer, weights, f"{name} weights")
    paths = [_relative_path(v) for v in _float_weights(reference_layer)]
    building = {key: value for key, value in call_kwargs.items() if key != "training"}
    probe = jax.eval_shape(lambda *args: reference_layer(*args, **building), *inputs)
    if not isinstance(probe, jax.ShapeDtypeStruct):
        raise TypeError(f"{name}: check needs a model that returns one array, received {type(probe).__name__}.")
    cotangent = _cotangent(tuple(probe.shape), seed + 1)
    with jax.enable_x64(True):
        if reference is None:
            oracle = _oracle_from_float64_model(build, inputs, call_kwargs)
        else:

            def oracle(w: Sequence[Any], *arguments: Any) -> Any:
                return reference(dict(zip(paths, w, strict=True)), *arguments)

        exact_of = _exact_function(oracle, inputs)
        exact = exact_of(weights, inputs, cotangent)
    return _Prepared(list(weights), paths, cotangent, exact_of, exact)


def _policy_rows(
    name: str,
    inputs: tuple[np.ndarray, ...],
    prepared: _Prepared,
    policy: str,
    got: dict[str, Any],
    *,
    bounded: Sequence[str],
    round_inputs: bool,
    group: str,
) -> list[dict[str, Any]]:
    """The rows of one (model, policy) from its measurement and the model's oracle and floor."""
    mode, _ = _quantization(policy)
    compute = _compute_dtype(policy)
    if compute not in prepared.on_rounded:
        rounded_w = [
            round_to(w, compute) if _rounds_in_compute(p) else w
            for w, p in zip(prepared.weights, prepared.paths, strict=True)
        ]
        rounded_x = [round_to(x, compute) if _is_float(x) and round_inputs else x for x in inputs]
        with jax.enable_x64(True):
            prepared.on_rounded[compute] = prepared.exact_of(rounded_w, rounded_x, prepared.cotangent)
    input_dtypes = [str(np.asarray(x).dtype) for x in inputs if _is_float(x)]
    measured = _quantities(got, prepared.exact, prepared.on_rounded[compute], compute, input_dtypes, round_inputs)
    rows = []
    for quantity, (error, floor) in measured.items():
        claimed = mode is None and quantity in bounded
        rows.append({
            "model": name, "policy": policy, "quantity": quantity, "error": error, "floor": floor,
            "bound": floor + FLOAT32_ALLOWANCE if claimed else None,
            "key": f"{group} | {name} | {policy} | {quantity}",
        })  # fmt: skip
    return rows


def _rows_for(
    name: str,
    build: Callable[[str], Any],
    inputs: Sequence[np.ndarray],
    policies: Sequence[str],
    *,
    reference: Callable[..., Any] | None,
    weights: Sequence[np.ndarray] | None,
    call_kwargs: Mapping[str, Any],
    bounded: Sequence[str],
    quantizable: bool,
    round_inputs: bool,
    forward_only: Sequence[str],
    seed: int,
    group: str,
) -> list[dict[str, Any]]:
    """Every row of one model, one policy after the other."""
    inputs = tuple(inputs)
    prepared = _prepare(name, build, inputs, reference, weights, call_kwargs, seed)
    rows = []
    for policy in policies:
        if _applies(policy, quantizable):
            only_forward = _forward_only(policy, forward_only)
            got = _measure(build, policy, inputs, prepared.weights, prepared.cotangent, call_kwargs, only_forward)
            rows += _policy_rows(
                name, inputs, prepared, policy, got, bounded=bounded, round_inputs=round_inputs, group=group
            )
    return rows
