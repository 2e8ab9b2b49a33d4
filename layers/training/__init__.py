"""Training: a pure, jitted train step for any layer, and checkpoints whose bits are exact."""

from ._checkpoint import checkpoint_metadata, restore_checkpoint, save_checkpoint
from ._fit import History, fit
from ._layer_checkpoint import restore_layer, save_layer
from ._train_step import TrainState, TrainStep, computes_in_float16, make_eval_step, make_train_step

__all__ = [
    "History",
    "TrainState",
    "TrainStep",
    "checkpoint_metadata",
    "computes_in_float16",
    "fit",
    "make_eval_step",
    "make_train_step",
    "restore_checkpoint",
    "restore_layer",
    "save_checkpoint",
    "save_layer",
]
