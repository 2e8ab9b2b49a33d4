"""Optimizers on optax with float32 master updates and slots, overwrite-with-gradient and loss scaling.

Example:
  >>> from layers import optimizers
  >>> w = dp.Variable(jnp.array([1.0, -1.0]))
  >>> opt = optimizers.SGD(learning_rate=0.5, momentum=0.9)
  >>> opt.apply([jnp.array([1.0, 1.0])], [w])
  >>> w.numpy().tolist(), opt.iterations
  ([0.5, -1.5], 1)
"""

from layers.optimizers._base import AccumulationState, Optimizer, OptimizerState
from layers.optimizers._loss_scale import LossScaleOptimizer, LossScaleState
from layers.optimizers._named import SGD, Adam, AdamW, Lion, RMSprop

__all__ = [
    "SGD",
    "AccumulationState",
    "Adam",
    "AdamW",
    "Lion",
    "LossScaleOptimizer",
    "LossScaleState",
    "Optimizer",
    "OptimizerState",
    "RMSprop",
]
