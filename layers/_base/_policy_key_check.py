"""The check for `DTypePolicyMap` keys that match no layer of the model holding the map."""

from __future__ import annotations

import difflib
import warnings
from typing import Any


class UnmatchedPolicyKeyWarning(UserWarning):
    """A `DTypePolicyMap` key matched no layer path of the model holding the map (a typo?).

    Issued once, at the first call of the layer that holds the map; the message names each
    unmatched key and the closest path.

    Example:
      >>> import warnings
      >>> import layers
      >>> policy_map = dp.DTypePolicyMap("mixed_bfloat16", {"net/haed": "float32"})
      >>> model = layers.Sequential([layers.Dense(2, name="head")], dtype=policy_map, name="net")
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     _ = model(jnp.ones((1, 3)))
      >>> caught[0].category is UnmatchedPolicyKeyWarning
      True
      >>> "'net/haed' (did you mean 'net/head'?)" in str(caught[0].message)
      True
    """


def warn_unmatched_keys(layer: Any) -> None:
    """Warns (`UnmatchedPolicyKeyWarning`) about keys of the map `layer` holds that match no path."""
    paths = [entry.path for entry in layer._flatten_layers()]
    keys = layer._explicit_dtype.unmatched_keys(paths)
    if not keys:
        return
    hints = []
    for key in keys:
        close = difflib.get_close_matches(key, paths, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    shown = ", ".join(repr(path) for path in paths[:8]) + (", ..." if len(paths) > 8 else "")
    warnings.warn(
        f"DTypePolicyMap keys matched no layer of {layer.path!r} when it was first called: {', '.join(hints)}. "
        f"Layers they were meant for get the map's default policy instead. Layer paths: {shown}.",
        UnmatchedPolicyKeyWarning,
        stacklevel=5,
    )
