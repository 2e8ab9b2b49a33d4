"""Dtype policies: immutable values that say how a layer stores, computes and outputs."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax

from dtypepolicy import _state
from dtypepolicy._dot_algorithms import default_algorithm, parse_algorithm
from dtypepolicy._dtypes import is_float
from dtypepolicy._parse import PlainSpec, parse_plain, plain_name


def _plain_spec(name: Any, what: str) -> PlainSpec:
    """The meaning of a plain policy name; None means the current default's."""
    if name is None:
        return current_default()._spec
    if not isinstance(name, str):
        raise TypeError(
            f"{what} must be a string or None, received {name!r} of type {type(name).__name__}. "
            f"Use dtypepolicy.get() to convert dtype objects."
        )
    return parse_plain(name)


def _check_algorithm(value: Any, compute: str) -> str | None:
    """A `dot_algorithm` argument: a preset name or a `jax.lax.DotAlgorithmPreset`."""
    if isinstance(value, jax.lax.DotAlgorithmPreset):
        value = value.name
    if not isinstance(value, str):
        raise TypeError(
            f"dot_algorithm must be a jax.lax.DotAlgorithmPreset or its name (e.g. 'BF16_BF16_F32'), received "
            f"{value!r} of type {type(value).__name__}."
        )
    return parse_algorithm(value, compute)


def _rebuild(cls: type, config: dict[str, Any]) -> Any:
    return cls.from_config(config)


class DTypePolicy:
    """How a layer stores its variables and runs its computation.

    Args:
      name: a policy name: `"float32"`, `"bfloat16"`, `"mixed_bfloat16"` (float32 variables,
        bfloat16 compute), `"mixed_float16"`, any dtype name (`"int32"`), or the explicit form
        `"params=float32,compute=bfloat16,output=float32"` (keys `p`/`c`/`o`, dtypes such as
        `f32`/`bf16`/`f16`; `dot=<algorithm>` or `acc=<dtype>` choose the matrix-product
        algorithm). `None` copies the current default policy.
      dot_algorithm: the matrix-product algorithm, a `jax.lax.DotAlgorithmPreset` or its name;
        None keeps the name's (by default: 16-bit operands accumulated in float32, or full
        float32 products for a float32 policy).

    Policies are immutable and compare by meaning; `name` is the canonical spelling.

    Example:
      >>> policy = DTypePolicy("p=f32,c=bf16")
      >>> policy.name, policy.variable_dtype, policy.compute_dtype
      ('mixed_bfloat16', 'float32', 'bfloat16')
      >>> policy == DTypePolicy("mixed_bfloat16")
      True
    """

    __slots__ = ("_spec",)

    def __init__(self, name: str | None = None, dot_algorithm: Any = None) -> None:
        spec = _plain_spec(name, "DTypePolicy name")
        if dot_algorithm is not None:
            spec = dataclasses.replace(spec, dot=_check_algorithm(dot_algorithm, spec.compute))
        object.__setattr__(self, "_spec", spec)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; cannot set {key!r}. Create a new policy.")

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; cannot delete {key!r}.")

    @property
    def name(self) -> str:
        """The canonical policy name."""
        return plain_name(self._spec)

    @property
    def variable_dtype(self) -> str:
        """The dtype variables are stored in."""
        return self._spec.variable

    @property
    def compute_dtype(self) -> str:
        """The dtype layer computations run in."""
        return self._spec.compute

    @property
    def output_dtype(self) -> str | None:
        """The dtype floating outputs are cast to, or None to leave them as computed."""
        return self._spec.output

    @property
    def quantization_mode(self) -> str | None:
        """The quantization mode (`"int8"`, `"float8"`), None for plain policies."""
        return None

    @property
    def dot_algorithm(self) -> str | None:
        """The matrix-product algorithm, a `jax.lax.DotAlgorithmPreset` name (None: not floating).

        16-bit compute defaults to its operands with float32 accumulation (`"BF16_BF16_F32"`), and
        float32 to full float32 products (`"F32_F32_F32"`, never TF32 or bf16 passes).
        """
        return self._spec.dot or default_algorithm(self._spec.compute)

    def _key(self) -> tuple:
        return (type(self), self._spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DTypePolicy):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f'<{type(self).__name__} "{self.name}">'

    def __reduce__(self):
        return (_rebuild, (type(self), self.get_config()))

    def __copy__(self) -> DTypePolicy:
        return self

    def __deepcopy__(self, memo: dict) -> DTypePolicy:
        return self

    def get_config(self) -> dict[str, Any]:
        """Returns a JSON-ready dict that `from_config` turns back into an equal policy."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DTypePolicy:
        """Builds a policy from the output of `get_config`."""
        if not isinstance(config, dict):
            raise TypeError(f"{cls.__name__}.from_config expects a dict, received {config!r}.")
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(config) - accepted)
        if unknown:
            raise ValueError(
                f"Invalid config for {cls.__name__}: unknown keys {unknown} in {config!r}. "
                f"Expected keys among {sorted(accepted)}."
            )
        return cls(**config)


def _check_choice(value: Any, what: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, one of {choices}; received {value!r}.")
    if value not in choices:
        raise ValueError(f"{what} must be one of {choices}; received {value!r}.")
    return value


class QuantizedDTypePolicy(DTypePolicy):
    """A plain source policy plus an integer quantization mode (`"int8"`, `"int4"`).

    Args:
      mode: `"int8"` or `"int4"`.
      source_name: the plain policy the layer's float parts follow; None copies the
        current default.

    Example:
      >>> policy = QuantizedDTypePolicy("int8", "mixed_bfloat16")
      >>> policy.name, policy.compute_dtype, policy.quantization_mode
      ('int8_from_mixed_bfloat16', 'bfloat16', 'int8')
    """

    __slots__ = ("_mode",)
    _MODES: tuple[str, ...] = ("int8", "int4")

    def __init__(self, mode: str, source_name: str | None = None) -> None:
        mode = _check_choice(mode, f"{type(self).__name__} mode", self._MODES)
        spec = _plain_spec(source_name, "source_name")
        if not is_float(spec.compute):
            raise ValueError(
                f"Policy {f'{mode}_from_{plain_name(spec)}'!r} is not supported: a quantized layer computes in "
                f"its source policy's compute dtype, which must be floating; received {spec.compute!r}. Use a "
                f"floating source such as mixed_bfloat16 or float32."
            )
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "_mode", mode)

    @property
    def name(self) -> str:
        """The canonical name, `"<mode>_from_<source>"`."""
        return f"{self._mode}_from_{self.source_name}"

    @property
    def source_name(self) -> str:
        """The canonical name of the plain source policy."""
        return plain_name(self._spec)

    @property
    def quantization_mode(self) -> str:
        """The quantization mode."""
        return self._mode

    def _key(self) -> tuple:
        return (type(self), self._spec, self._mode)

    def get_config(self) -> dict[str, Any]:
        """Returns a JSON-ready dict that `from_config` turns back into an equal policy."""
        return {"mode": self._mode, "source_name": self.source_name}


class QuantizedFloat8DTypePolicy(QuantizedDTypePolicy):
    """Float8 training on top of a plain source policy, with delayed or current scaling.

    Args:
      mode: `"float8"`.
      source_name: the plain policy for the master weights and non-float8 math.
      amax_history_length: how many past amax values each scale looks back on (delayed recipe).
      margin: extra power-of-two headroom; the scale is multiplied by `2**margin`.
      recipe: `"delayed"` (the default, as in Keras and Transformer Engine: each scale comes from
        a history of past amaxes, kept in six state variables) or `"current"` (each tensor's scale
        comes from its own amax in the same step; no state). The name of a current-scaling policy
        is `"float8_current_from_<source>"`.

    Example:
      >>> policy = QuantizedFloat8DTypePolicy("float8", "mixed_bfloat16", amax_history_length=16)
      >>> policy.name, policy.amax_history_length, policy.recipe
      ('float8_from_mixed_bfloat16', 16, 'delayed')
      >>> QuantizedFloat8DTypePolicy(source_name="mixed_bfloat16", recipe="current").name
      'float8_current_from_mixed_bfloat16'
    """

    __slots__ = ("_amax_history_length", "_margin", "_recipe")
    _MODES = ("float8",)
    _RECIPES = ("delayed", "current")

    def __init__(
        self,
        mode: str = "float8",
        source_name: str | None = None,
        amax_history_length: int = 1024,
        margin: int = 0,
        recipe: str = "delayed",
    ) -> None:
        if isinstance(amax_history_length, bool) or not isinstance(amax_history_length, int):
            raise TypeError(f"amax_history_length must be an int, received {amax_history_length!r}.")
        if amax_history_length < 1:
            raise ValueError(f"amax_history_length must be at least 1, received {amax_history_length}.")
        if isinstance(margin, bool) or not isinstance(margin, int):
            raise TypeError(f"margin must be an int, received {margin!r}.")
        if not 0 <= margin <= 127:  # 2**127 is the largest power of two float32 holds
            raise ValueError(f"margin must lie in [0, 127], received {margin}.")
        recipe = _check_choice(recipe, "float8 recipe", self._RECIPES)
        if recipe == "current" and amax_history_length != 1024:
            raise ValueError(
                f"amax_history_length applies to the delayed recipe only: current scaling keeps no history. "
                f"Received amax_history_length={amax_history_length} with recipe='current'."
            )
        super().__init__(mode, source_name)
        object.__setattr__(self, "_amax_history_length", amax_history_length)
        object.__setattr__(self, "_margin", margin)
        object.__setattr__(self, "_recipe", recipe)

    @property
    def name(self) -> str:
        """The canonical name: `"float8_from_<source>"`, or `"float8_current_from_<source>"`."""
        mode = self._mode if self._recipe == "delayed" else f"{self._mode}_{self._recipe}"
        return f"{mode}_from_{self.source_name}"

    @property
    def amax_history_length(self) -> int | None:
        """Length of each amax history window; None for current scaling, which keeps none."""
        return self._amax_history_length if self._recipe == "delayed" else None

    @property
    def margin(self) -> int:
        """Power-of-two headroom applied when computing scales."""
        return self._margin

    @property
    def recipe(self) -> str:
        """How scales are chosen: `"delayed"` (from past amaxes) or `"current"` (from this step's)."""
        return self._recipe

    def _key(self) -> tuple:
        return (*super()._key(), self.amax_history_length, self._margin, self._recipe)

    def get_config(self) -> dict[str, Any]:
        """Returns a JSON-ready dict that `from_config` turns back into an equal policy."""
        config = {**super().get_config(), "margin": self._margin, "recipe": self._recipe}
        if self._recipe == "delayed":
            config["amax_history_length"] = self._amax_history_length
        return config


_FLOAT32_POLICY = DTypePolicy("float32")


def current_default() -> DTypePolicy:
    """The default policy in force in this context (float32 when nothing was set)."""
    policy = _state.current()
    return _FLOAT32_POLICY if policy is None else policy
