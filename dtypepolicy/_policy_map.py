"""DTypePolicyMap: per-layer policies keyed by layer path, exact match first, then regex."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from dtypepolicy._policy import DTypePolicy, current_default
from dtypepolicy._serialization import get, register_serializable, serialize


def _as_policy(value: Any, what: str) -> DTypePolicy:
    # A map inside a map is refused, also when it arrives serialized (get() rebuilds it).
    policy = None if value is None else get(value)
    if policy is None or isinstance(policy, DTypePolicyMap):
        nested = " (a DTypePolicyMap: maps do not nest)" if policy is not None else ""
        raise TypeError(
            f"{what} must be a dtype policy or something get() accepts other than a DTypePolicyMap, "
            f"received {value!r}{nested}."
        )
    return policy


class PolicyMatch(NamedTuple):
    """What a DTypePolicyMap gives one layer path: the policy, and the key that chose it.

    `DTypePolicyMap.explain` returns one per layer. It is a named tuple, so it unpacks as
    `policy, key = match` and compares equal to a plain `(policy, key)` tuple.

    Attributes:
      policy: the `DTypePolicy` the map gives the path.
      key: the map key that equals or fully matches the path; None when no key matched and the
        map's default policy applied.

    Example:
      >>> from types import SimpleNamespace as FakeLayer
      >>> policy_map = DTypePolicyMap("float32", {"head": "mixed_bfloat16"})
      >>> match = policy_map.explain(FakeLayer(path="head", sublayers=list))["head"]
      >>> isinstance(match, PolicyMatch), match.policy.name, match.key
      (True, 'mixed_bfloat16', 'head')
    """

    policy: DTypePolicy
    key: str | None  # None: no key matched, the map's default policy applied


def _layers_of(model: Any) -> list[Any]:
    """`model` then every layer inside it, each once. Duck-typed, so this package never imports `layers`."""
    sublayers = getattr(model, "sublayers", None)
    flatten = getattr(model, "_flatten_layers", None)
    if callable(sublayers):
        found = [model, *sublayers()]
    elif callable(flatten):  # older Layer API: includes the layer itself
        found = list(flatten())
        if not found or found[0] is not model:
            found.insert(0, model)
    else:
        raise TypeError(
            f"explain expects a layer (an object with .path and sublayers()), received {model!r} "
            f"of type {type(model).__name__}."
        )
    seen: set[int] = set()
    unique = [layer for layer in found if not (id(layer) in seen or seen.add(id(layer)))]
    for layer in unique:
        if not isinstance(getattr(layer, "path", None), str):
            raise TypeError(f"Layer {layer!r}'s path must be a string, received {getattr(layer, 'path', None)!r}.")
    return unique


@register_serializable
class DTypePolicyMap(Mapping):
    """An immutable map from layer paths to dtype policies.

    `policy_map[path]` returns the policy for a layer path: the entry whose key equals the
    path, else the single entry whose key, read as a regular expression, fully matches it,
    else the default policy. Two matching regex keys are an error.

    Args:
      default_policy: the policy for paths no key matches; None means the default policy
        current at lookup time.
      policy_map: a mapping from paths (or regexes over paths) to policies or anything
        `dtypepolicy.get` accepts.

    Example:
      >>> policy_map = DTypePolicyMap("mixed_bfloat16", {"encoder/.*/norm": "float32"})
      >>> policy_map["encoder/block_0/norm"].name, policy_map["encoder/block_0/dense"].name
      ('float32', 'mixed_bfloat16')
      >>> policy_map = policy_map | {"head": "float32"}  # maps are values: build a new one
    """

    __slots__ = ("_default", "_entries", "_patterns")

    def __init__(self, default_policy: Any = None, policy_map: Mapping[str, Any] | None = None) -> None:
        default = None if default_policy is None else _as_policy(default_policy, "default_policy")
        if policy_map is None:
            policy_map = {}
        if not isinstance(policy_map, Mapping):
            raise TypeError(
                f"policy_map must be a mapping from layer paths to policies, received "
                f"{policy_map!r} of type {type(policy_map).__name__}."
            )
        entries: dict[str, DTypePolicy] = {}
        patterns: dict[str, re.Pattern] = {}
        for path, value in policy_map.items():
            if not isinstance(path, str) or not path:
                raise TypeError(f"policy_map keys must be non-empty layer path strings, received {path!r}.")
            try:
                patterns[path] = re.compile(path)
            except re.error as error:
                raise ValueError(
                    f"policy_map key {path!r} is neither a layer path nor a valid regex: {error}."
                ) from None
            entries[path] = _as_policy(value, f"policy_map[{path!r}]")
        object.__setattr__(self, "_default", default)
        object.__setattr__(self, "_entries", entries)
        object.__setattr__(self, "_patterns", patterns)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"DTypePolicyMap is immutable; cannot set {key!r}.")

    def __setitem__(self, key: str, value: Any) -> None:
        raise TypeError(
            f"DTypePolicyMap is immutable; cannot set {key!r}. Build a new map instead: "
            f"policy_map = policy_map | {{{key!r}: policy}}."
        )

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"DTypePolicyMap is immutable; cannot delete {key!r}. Build a new map without it.")

    @property
    def default_policy(self) -> DTypePolicy:
        """The policy for unmatched paths (the current default when none was given)."""
        return current_default() if self._default is None else self._default

    @property
    def policy_map(self) -> dict[str, DTypePolicy]:
        """A copy of the entries."""
        return dict(self._entries)

    def _match(self, path: str) -> PolicyMatch:
        if not isinstance(path, str):
            raise TypeError(f"DTypePolicyMap keys are layer path strings, received {path!r}.")
        if path in self._entries:
            return PolicyMatch(self._entries[path], path)
        matches = [key for key, pattern in self._patterns.items() if pattern.fullmatch(path)]
        if len(matches) > 1:
            raise ValueError(
                f"Layer path {path!r} matches more than one DTypePolicyMap key: "
                f"{', '.join(repr(key) for key in matches)}. Make the keys exclusive or add an exact key."
            )
        if matches:
            return PolicyMatch(self._entries[matches[0]], matches[0])
        return PolicyMatch(self.default_policy, None)

    def __getitem__(self, path: str) -> DTypePolicy:
        return self._match(path).policy

    def explain(self, model: Any) -> dict[str, PolicyMatch]:
        """Returns, for `model` and every layer inside it, the policy this map gives it and why.

        Args:
          model: a layer: anything with a `path` and a `sublayers()` method (a `layers.Layer`).

        Returns:
          A dict from each layer path, the model first and then depth first, to a
          `PolicyMatch(policy, key)` named tuple: `key` is the map key that matched, None when
          the default policy applied. A sublayer given its own `dtype=` keeps that policy; this
          reports what the map assigns to its path.

        Example:
          >>> from types import SimpleNamespace as FakeLayer
          >>> head = FakeLayer(path="model/head", sublayers=list)
          >>> model = FakeLayer(path="model", sublayers=lambda: [head])
          >>> policy_map = DTypePolicyMap("mixed_bfloat16", {"model/h.*": "float32"})
          >>> {path: (policy.name, key) for path, (policy, key) in policy_map.explain(model).items()}
          {'model': ('mixed_bfloat16', None), 'model/head': ('float32', 'model/h.*')}
        """
        return {layer.path: self._match(layer.path) for layer in _layers_of(model)}

    def unmatched_keys(self, paths: Iterable[str]) -> list[str]:
        """Returns the keys, in map order, that equal or fully match none of `paths`.

        A key listed here changes no layer: often a typo such as `"lm/haed"`.

        Example:
          >>> policy_map = DTypePolicyMap(None, {"lm/haed": "float32", "lm/block_.*": "bfloat16"})
          >>> policy_map.unmatched_keys(["lm", "lm/block_0", "lm/head"])
          ['lm/haed']
        """
        if isinstance(paths, (str, bytes)):
            raise TypeError(f"unmatched_keys expects an iterable of layer paths, not a single string: {paths!r}.")
        paths = list(paths)
        for path in paths:
            if not isinstance(path, str):
                raise TypeError(f"unmatched_keys expects layer path strings, received {path!r}.")
        present = set(paths)
        return [
            key
            for key, pattern in self._patterns.items()
            if key not in present and not any(pattern.fullmatch(path) for path in paths)
        ]

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __or__(self, other: Mapping[str, Any]) -> DTypePolicyMap:
        if not isinstance(other, Mapping):
            return NotImplemented
        return DTypePolicyMap(self._default, {**self._entries, **other})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DTypePolicyMap):
            return NotImplemented
        return self._default == other._default and self._entries == other._entries

    def __hash__(self) -> int:
        return hash((self._default, frozenset(self._entries.items())))

    def __repr__(self) -> str:
        default = "current default" if self._default is None else self._default.name
        entries = ", ".join(f"{key!r}: {policy.name!r}" for key, policy in self._entries.items())
        return f"<DTypePolicyMap default={default} {{{entries}}}>"

    def __reduce__(self):
        return (type(self).from_config, (self.get_config(),))

    def get_config(self) -> dict[str, Any]:
        """Returns a JSON-ready dict; the map itself is never modified."""
        return {
            "default_policy": None if self._default is None else serialize(self._default),
            "policy_map": {key: serialize(policy) for key, policy in self._entries.items()},
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DTypePolicyMap:
        """Builds a map from the output of `get_config`."""
        if not isinstance(config, dict) or set(config) - {"default_policy", "policy_map"}:
            raise ValueError(
                f"Invalid DTypePolicyMap config {config!r}: expected a dict with keys "
                f"'default_policy' and 'policy_map'."
            )
        default = config.get("default_policy")
        entries = config.get("policy_map") or {}
        if not isinstance(entries, dict):
            raise ValueError(f"Invalid DTypePolicyMap config: 'policy_map' must be a dict, received {entries!r}.")
        return cls(default, entries)
