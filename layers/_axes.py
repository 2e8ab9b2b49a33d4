"""Axis arguments checked against an input shape (shared by normalization layers and ops)."""

from __future__ import annotations

from typing import Any


def check_axes_fit(owner: str, axes: tuple[int, ...], input_shape: Any) -> tuple[int, ...]:
    """Resolves `axes` for `input_shape`: raises unless each is in range, distinct and of known size.

    Returns:
      The sizes of `input_shape` along `axes`, in the order of `axes`.
    """
    shape = tuple(input_shape)
    rank = len(shape)
    bad = [axis for axis in axes if not -rank <= axis < rank]
    if bad:
        raise ValueError(
            f"{owner}: axis {bad[0]} is out of range for inputs of rank {rank} (input shape {shape}); "
            f"expected axes in [{-rank}, {rank - 1}]."
        )
    positive = [axis % rank for axis in axes]
    if len(set(positive)) != len(positive):
        raise ValueError(f"{owner}: axes {list(axes)} name the same input axis twice for input shape {shape}.")
    sizes = tuple(shape[axis] for axis in axes)
    if any(size is None for size in sizes):
        raise ValueError(
            f"{owner}: the input dimensions along axes {list(axes)} must be known to create the weights, "
            f"received input shape {shape}."
        )
    return sizes
