"""LayoutMap: variable-path regexes -> `PartitionSpec`s on one mesh (Keras 3's `LayoutMap`, on jax.sharding)."""

from __future__ import annotations

import re
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any

from jax.sharding import Mesh, PartitionSpec

from layers.distribution._mesh import check_mesh, partition_spec

__all__ = ["LayoutMap"]


class LayoutMap(MutableMapping):
    """Maps variable paths to `PartitionSpec`s: which mesh axis shards which dimension.

    Keys are variable paths (`"model/block/mlp_in/kernel"`) or regexes that must match a whole
    path (`re.fullmatch`, like `dtypepolicy.DTypePolicyMap`; Keras 3 uses `re.search`, so write
    `".*mlp_in/kernel"` where Keras takes `"mlp_in/kernel"`). Values are a `PartitionSpec` or a
    tuple of mesh axis names and None, one entry per leading dimension (`(None, "model")` shards a
    Dense kernel's output dimension over the "model" axis); missing trailing entries replicate.
    Each layout is checked against the mesh when it is set.

    `layout_map[path]` is the layout for a variable path: the exact key, else the one regex that
    matches; two matching regexes are a ValueError naming both; no match is None (replicated).
    A model-parallel or FSDP distribution applies the map to the variables and to the optimizer
    slots that mirror them.

    Args:
      device_mesh: the `jax.sharding.Mesh` the axis names refer to.
      strict: when the map is applied to a model, a key that matches none of its variables is a
        ValueError (a typo would otherwise leave a large kernel silently replicated).

    Example:
      >>> import jax
      >>> from jax.sharding import PartitionSpec as P
      >>> from layers.distribution import DeviceMesh, LayoutMap
      >>> layout_map = LayoutMap(DeviceMesh((1, len(jax.devices())), ("batch", "model")))
      >>> layout_map[".*mlp_in/kernel"] = (None, "model")
      >>> layout_map[".*mlp_out/kernel"] = P("model", None)
      >>> layout_map["block/mlp_in/kernel"], layout_map["block/mlp_in/bias"]
      (P(None, 'model'), None)
    """

    def __init__(self, device_mesh: Mesh, strict: bool = True) -> None:
        self.device_mesh = check_mesh(device_mesh, "LayoutMap")
        if not isinstance(strict, bool):
            raise TypeError(f"LayoutMap strict must be a bool, received {strict!r}.")
        self.strict = strict
        self._layouts: dict[str, PartitionSpec] = {}
        self._patterns: dict[str, re.Pattern] = {}
        self._edits = 0  # steps made with this map lay their state out again after an edit

    def __setitem__(self, key: str, layout: Any) -> None:
        if not isinstance(key, str) or not key:
            raise TypeError(f"LayoutMap keys are variable paths or regexes (non-empty str), received {key!r}.")
        try:
            pattern = re.compile(key)
        except re.error as error:
            raise ValueError(f"LayoutMap key {key!r} is not a valid regex ({error}).") from None
        spec = partition_spec(layout, self.device_mesh, f"LayoutMap[{key!r}]")
        self._patterns[key] = pattern
        self._layouts[key] = spec
        self._edits += 1

    def __getitem__(self, path: str) -> PartitionSpec | None:
        if path in self._layouts:
            return self._layouts[path]
        matches = self.matching_keys(path)
        if len(matches) > 1:
            raise ValueError(
                f"LayoutMap: variable path {path!r} matches more than one key: {matches[0]!r} and {matches[1]!r}; "
                f"make the regexes exclusive or add the exact path as a key."
            )
        return self._layouts[matches[0]] if matches else None

    def matching_keys(self, path: str) -> list[str]:
        """The keys whose regex matches the whole `path`, in insertion order."""
        return [key for key, pattern in self._patterns.items() if pattern.fullmatch(path)]

    def unmatched_keys(self, paths: Sequence[str]) -> list[str]:
        """The keys that match none of `paths` (neither exactly nor as a regex)."""
        return [k for k, p in self._patterns.items() if not any(k == path or p.fullmatch(path) for path in paths)]

    def __delitem__(self, key: str) -> None:
        del self._layouts[key]
        del self._patterns[key]
        self._edits += 1

    def __contains__(self, key: object) -> bool:
        return key in self._layouts

    def __iter__(self) -> Iterator[str]:
        return iter(self._layouts)

    def __len__(self) -> int:
        return len(self._layouts)

    def __repr__(self) -> str:
        return f"LayoutMap({dict(self.device_mesh.shape)}, {self._layouts!r}, strict={self.strict})"
