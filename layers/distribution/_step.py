"""The jitted train step under a distribution: `jax.jit` with the state's and the batch's shardings.

XLA's SPMD partitioner turns the one-device program into the sharded one: it gathers a sharded
weight where a product needs it (after the cast to the compute dtype, which runs on each shard),
reduces data-parallel gradients, reduce-scatters FSDP ones, and reduces every global quantity the
step computes (the loss, float8 amaxes, the loss scale's finite check) over the whole mesh, so
every device takes the same decision.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

from layers.distribution._distributions import Distribution
from layers.distribution._mesh import replicated
from layers.distribution._state import check_distribution, shard_batch, train_state_shardings

__all__ = ["ShardedStep"]


class ShardedStep:
    """`step.jitted` of a train step made with a distribution: `state, metrics = jitted(state, batch)`.

    The state is donated, as without a distribution. Batches may be host arrays or jax arrays
    placed anywhere: they are split over the batch axes first (`shard_batch`). A state placed
    elsewhere (restored on one device, made for another mesh) is moved onto this one.

    Attributes:
      distribution: the `Distribution`.

    Example:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> import layers
      >>> from layers import distribution, optimizers, training
      >>> model = layers.Dense(2)
      >>> _ = model(jnp.ones((1, 3)))
      >>> step = training.make_train_step(model, "mse", optimizers.SGD(0.1), distribution=distribution.FSDP())
      >>> type(step.jitted).__name__
      'ShardedStep'
      >>> state = step.init_state()
      >>> n = len(jax.devices())
      >>> state, metrics = step.jitted(state, (np.ones((4 * n, 3)), np.zeros((4 * n, 2))))
      >>> step.jitted.state_shardings(state).step.spec
      P()
    """

    def __init__(self, step: Any, distribution: Distribution) -> None:
        self._step = step
        self.distribution = check_distribution(distribution)
        self._compiled: dict[Any, tuple[Any, Any]] = {}

    def state_shardings(self, state: Any) -> Any:
        """The `TrainState` of `NamedSharding`s this step takes and returns for `state`."""
        return self._jitted(state)[1]

    def _jitted(self, state: Any) -> tuple[Any, Any]:
        # An edit of the layout map after this step was made changes the layouts from then on, in
        # init_state and here alike.
        layout_map = getattr(self.distribution, "layout_map", None)
        treedef = (jax.tree.structure(state), 0 if layout_map is None else layout_map._edits)
        if treedef not in self._compiled:
            shardings = train_state_shardings(self._step, state, self.distribution)
            mesh = self.distribution.device_mesh
            step = self._step

            def distributed_train_step(state: Any, batch: Any) -> Any:
                return step(state, batch)

            # The module name in HLO dumps and profiles: jit_distributed_train_step_FSDP, ...
            distributed_train_step.__name__ += f"_{type(self.distribution).__name__}"

            jitted = jax.jit(
                distributed_train_step,
                in_shardings=(shardings, NamedSharding(mesh, PartitionSpec(self.distribution.batch_dim_name))),
                out_shardings=(shardings, replicated(mesh)),
                donate_argnums=0,
            )
            self._compiled[treedef] = (jitted, shardings)
        return self._compiled[treedef]

    def _arguments(self, state: Any, batch: Any) -> tuple[Any, Any, Any]:
        jitted, shardings = self._jitted(state)
        return jitted, jax.device_put(state, shardings), shard_batch(batch, self.distribution)

    def __call__(self, state: Any, batch: Any) -> tuple[Any, dict[str, jax.Array]]:
        if any(isinstance(leaf, jax.Array) and leaf.is_deleted() for leaf in jax.tree.leaves(state)):
            # XLA crashes the process on a donated sharded buffer passed again; refuse it here.
            raise ValueError(
                "This TrainState was donated to an earlier step call and its buffers are gone: pass the state that "
                "call returned (`state, metrics = step.jitted(state, batch)`)."
            )
        jitted, _ = self._jitted(state)
        try:
            # The common case, a state this step returned and host batches: jit places them itself.
            return jitted(state, batch)
        except ValueError:
            # Arrays committed elsewhere (another mesh, one device), or a batch the mesh cannot
            # split (shard_batch names it): jit refuses them before running, so nothing was donated.
            pass
        # Outside the except block, so an error of the retry is not chained to the first one.
        jitted, state, batch = self._arguments(state, batch)
        return jitted(state, batch)

    def lower(self, state: Any, batch: Any) -> Any:
        """`jax.jit(...).lower` of the sharded step (for `.compile().as_text()` and HLO checks)."""
        jitted, state, batch = self._arguments(state, batch)
        return jitted.lower(state, batch)
