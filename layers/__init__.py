"""layers: a Keras-style Layer API on top of the dtypepolicy engine.

Example:
  >>> import layers
  >>> layer = layers.Layer(name="identity")
  >>> layer.dtype_policy.name
  'float32'
"""

from layers import activations, constraints, initializers, ops, regularizers
from layers._input_spec import InputSpec
from layers._layer import Layer

__all__ = [
    "InputSpec",
    "Layer",
    "activations",
    "constraints",
    "initializers",
    "ops",
    "regularizers",
]
