"""The public `check`: a user's model under each policy against the same model in float64."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.precision._gate import _check_baseline_matches, _gate, load_baseline
from benchmarks.precision._measure import _assign, _built, _float_weights, _is_float
from benchmarks.precision._metric import QUANTITIES
from benchmarks.precision._policies import _check_policies
from benchmarks.precision._render import render
from benchmarks.precision._rows import _rows_for


@dataclasses.dataclass
class Result:
    """What `check` found: one row per (model, policy, quantity), and the failing ones.

    Each row is a dict with `model`, `policy`, `quantity`, `error`, `floor` (the one-rounding
    error), `bound` (floor + allowance, or None where none is claimed), `baseline` (None when
    there is none), `status` ("ok", "new", "FAIL bound", "FAIL baseline") and `key` (its
    baseline key).
    """

    rows: list[dict[str, Any]]

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The rows past their bound or their baseline."""
        return [row for row in self.rows if row["status"].startswith("FAIL")]

    @property
    def ok(self) -> bool:
        """True when no row fails."""
        return not self.failures

    @property
    def exit_code(self) -> int:
        """0 when every row passes, 1 otherwise: what a CI job returns."""
        return 0 if self.ok else 1

    def render(self) -> str:
        """The table of every row, then the failing rows."""
        return render({"rows": self.rows})


def check(
    model: Callable[[str], Any],
    inputs: Any,
    policies: Sequence[str] | str = ("float32", "mixed_bfloat16", "mixed_float16"),
    *,
    baseline: str | Path | Mapping[str, float] | None = None,
    weights: Sequence[Any] | None = None,
    call_kwargs: Mapping[str, Any] | None = None,
    bounded: Sequence[str] = (),
    forward_only: Sequence[str] = ("int8",),
    round_inputs: bool = True,
    name: str = "model",
    seed: int = 0,
) -> Result:
    """Checks a model's outputs and gradients under each policy against its float64 self.

    Args:
      model: `build(policy) -> layers.Layer`, a function that returns a fresh, unbuilt model under
        the policy it is given (the policy name, e.g. `lambda p: make_model(dtype=p)`). It is
        called once per policy, once with "float32" (for the weights) and once with "float64"
        (the oracle, inside `jax.enable_x64`).
      inputs: the call's positional arguments: one array, or a tuple or list of arrays (float32 data;
        integer arrays, such as token ids, are passed through and not differentiated).
      policies: policy names (or one comma-separated string).
      baseline: a baseline file (see `write_baseline`), a dict of errors, or None (no baseline).
      weights: values of the float trainable weights, in the model's `trainable_variables` order
        (float8 scaling state excluded), e.g. a trained model's; None draws seeded ones.
      call_kwargs: keyword arguments of every call (`{"training": True}`). The calls must be
        deterministic: a model with Dropout called with `training=True` is refused.
      bounded: the quantities ("output", "grad inputs", "grad weights") whose one-rounding bound
        to enforce. Default none: a whole model rounds many times, so it is gated by its baseline.
      forward_only: policy name prefixes measured without gradients (int8 is inference-only).
      round_inputs: whether the model reads its floating inputs in the compute dtype (True for
        a model whose first layer is a Dense or takes autocast inputs; False if it starts with a
        normalization layer), i.e. whether the one-rounding floor rounds them.
      name: the model's name in the table and in baseline keys.
      seed: the seed of the drawn weights and of the cotangent.

    Returns:
      A `Result`: `.rows`, `.failures`, `.ok`, `.exit_code`, `.render()`.

    Raises:
      ValueError: an unknown policy or quantity name, weights that do not fit the model, a
        baseline file that is not one. FileNotFoundError: a baseline path that does not exist.
    """
    from layers import Layer

    policies = _check_policies(policies)
    bounded = (bounded,) if isinstance(bounded, str) else tuple(bounded)
    for quantity in bounded:
        if quantity not in QUANTITIES:
            raise ValueError(f"bounded names unknown quantity {quantity!r}; expected some of {QUANTITIES}.")
    if isinstance(model, Layer) or (isinstance(model, type) and issubclass(model, Layer)):
        what = f"the layer class {model.__name__}" if isinstance(model, type) else f"a {type(model).__name__} layer"
        raise TypeError(
            f"model must be a function build(policy) -> layers.Layer that builds a fresh model under each policy, "
            f"received {what}; pass e.g. `lambda policy: layers.Dense(4, dtype=policy)`."
        )
    if not callable(model):
        raise TypeError(
            f"model must be a function build(policy) -> layers.Layer, received {model!r} of type "
            f"{type(model).__name__}."
        )
    if isinstance(baseline, str | Path):
        baseline = load_baseline(baseline)
    inputs = tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)
    inputs = tuple(np.asarray(x, np.float32) if _is_float(x) else np.asarray(x) for x in inputs)
    call_kwargs = dict(call_kwargs or {})
    _check_deterministic(model, inputs, call_kwargs)
    rows = _rows_for(
        name, model, inputs, policies, reference=None, weights=weights, call_kwargs=call_kwargs,
        bounded=bounded, quantizable=True, round_inputs=round_inputs, forward_only=forward_only, seed=seed,
        group="check",
    )  # fmt: skip
    _check_baseline_matches(rows, baseline, f"model {name!r}")
    _gate(rows, baseline)
    return Result(rows)


def _check_deterministic(build: Callable[[str], Any], inputs: tuple, call_kwargs: Mapping[str, Any]) -> None:
    """Two builds with the same weights must give the same output, or errors measure randomness."""
    first = _built(build, "float32", inputs, call_kwargs)
    second = _built(build, "float32", inputs, call_kwargs)
    weights = [np.asarray(v.value) for v in _float_weights(first)]
    _assign(second, weights, "check")
    outputs = [np.asarray(layer(*inputs, **call_kwargs)) for layer in (first, second)]
    if not np.array_equal(outputs[0], outputs[1], equal_nan=True):
        raise ValueError(
            f"check needs a deterministic model: two builds with the same weights gave different outputs for "
            f"call_kwargs={dict(call_kwargs)!r} (a Dropout or other random layer called with training=True?). "
            "Measure it with training=False, or seed its random layers inside build."
        )
