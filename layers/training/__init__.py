"""Training helpers: checkpoints of any pytree of arrays and of a layer's variables, bits exact."""

from ._checkpoint import checkpoint_metadata, restore_checkpoint, save_checkpoint
from ._layer_checkpoint import restore_layer, save_layer

__all__ = [
    "checkpoint_metadata",
    "restore_checkpoint",
    "restore_layer",
    "save_checkpoint",
    "save_layer",
]
