"""Distribution: data-parallel, FSDP and model-parallel training on jax.sharding meshes (Keras 3's names)."""

from ._distributions import FSDP, DataParallel, Distribution, ModelParallel
from ._layout_map import LayoutMap
from ._mesh import DeviceMesh
from ._state import shard_batch, shard_train_state, train_state_shardings
from ._step import ShardedStep

__all__ = [
    "FSDP",
    "DataParallel",
    "DeviceMesh",
    "Distribution",
    "LayoutMap",
    "ModelParallel",
    "ShardedStep",
    "shard_batch",
    "shard_train_state",
    "train_state_shardings",
]
