"""layers: a Keras-style Layer API and built-in layers on top of the dtypepolicy engine.

Example:
  >>> import layers
  >>> model = layers.Sequential([layers.Dense(8, activation="relu"), layers.Dense(2)], dtype="mixed_bfloat16")
  >>> model(np.ones((4, 3))).dtype
  dtype(bfloat16)
"""

from layers import activations, constraints, initializers, ops, regularizers
from layers._base._input_spec import InputSpec
from layers._base._layer import Layer
from layers._base._layer_serialization import deserialize, serialize
from layers._base._quantization import QuantizationDecision, QuantizationReport
from layers._base._summary import UnmatchedPolicyKeyWarning
from layers._builtin._activation import Activation
from layers._builtin._attention import MultiHeadAttention
from layers._builtin._batch_normalization import BatchNormalization
from layers._builtin._dense import Dense
from layers._builtin._dropout import Dropout
from layers._builtin._einsum_dense import EinsumDense
from layers._builtin._embedding import Embedding
from layers._builtin._normalization import LayerNormalization, RMSNormalization
from layers._builtin._sequential import Sequential
from layers._builtin._softmax import Softmax
from layers._builtin._transformer import TransformerBlock

__all__ = [
    "Activation",
    "BatchNormalization",
    "Dense",
    "Dropout",
    "EinsumDense",
    "Embedding",
    "InputSpec",
    "Layer",
    "LayerNormalization",
    "MultiHeadAttention",
    "QuantizationDecision",
    "QuantizationReport",
    "RMSNormalization",
    "Sequential",
    "Softmax",
    "TransformerBlock",
    "UnmatchedPolicyKeyWarning",
    "activations",
    "constraints",
    "deserialize",
    "initializers",
    "ops",
    "regularizers",
    "serialize",
]

# The training half needs the `train` extra (optax): imported on first use, so that
# `import layers` works without it.
_TRAINING_FAMILIES = ("distribution", "losses", "optimizers", "training")


def __getattr__(name: str):
    if name in _TRAINING_FAMILIES:
        import importlib

        return importlib.import_module(f"layers.{name}")
    raise AttributeError(f"module 'layers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, *_TRAINING_FAMILIES])
