"""`fit`: the common training loop around `make_train_step`, with a progress bar and a history."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np

from layers._base._layer import Layer
from layers.training._train_step import TrainState, make_train_step


@dataclasses.dataclass
class History:
    """What `fit` returns: per-epoch means of the step metrics, and the final state.

    Attributes:
      history: metric name -> one value per epoch (`history["loss"][-1]` is the last epoch's
        mean loss), as in Keras.
      state: the final `TrainState` (its values are also written back to the model).
      samples_per_second: per epoch, the training throughput (compilation included in epoch 1).

    Example:
      >>> import numpy as np, layers
      >>> from layers import training
      >>> model = layers.Sequential([layers.Dense(1)])
      >>> x = np.ones((8, 2), np.float32)
      >>> from layers import optimizers
      >>> history = training.fit(model, (x, 2 * x[:, :1]), "mse", optimizers.SGD(0.1), epochs=2, batch_size=4,
      ...                        verbose=False)
      >>> sorted(history.history), len(history.history["loss"]), len(history.samples_per_second)
      (['data_loss', 'loss'], 2, 2)
    """

    history: dict[str, list[float]]
    state: TrainState
    samples_per_second: list[float]


def _array_batches(arrays: tuple, batch_size: int, shuffle: bool, rng: np.random.Generator) -> Iterable[tuple]:
    count = len(arrays[0])
    order = rng.permutation(count) if shuffle else np.arange(count)
    for start in range(0, count, batch_size):
        index = order[start : start + batch_size]
        yield tuple(np.asarray(part)[index] for part in arrays)


def _is_arrays(data: Any) -> bool:
    return isinstance(data, tuple) and len(data) in (2, 3) and all(hasattr(part, "shape") for part in data)


def _check_batches_divide(samples: int, batch_size: int, distribution: Any) -> None:
    """Before any step: every batch of array data must split over the distribution's batch axis."""
    devices = distribution.batch_size_multiple
    last = samples % batch_size
    if batch_size % devices or last % devices:
        what = f"batch_size={batch_size}" if batch_size % devices else f"the last batch of {last} samples"
        raise ValueError(
            f"fit: the batch axis of {type(distribution).__name__} spans {devices} devices, so every batch must "
            f"divide by {devices}; {samples} samples in batches of {batch_size} give {what}. Use a batch_size and "
            f"a sample count that are multiples of {devices}."
        )


def _epoch_batches(data: Any, batch_size: int, shuffle: bool, rng: np.random.Generator) -> Callable[[], Iterable]:
    """A function giving one epoch's batches, for arrays `(x, y[, w])` or an iterable of batches."""
    if _is_arrays(data):
        sizes = {len(part) for part in data}
        if len(sizes) != 1:
            raise ValueError(
                f"fit: x, y (and sample_weight) must have the same number of samples, received "
                f"{[len(part) for part in data]}."
            )
        if not sizes.pop():
            raise ValueError("fit: the data holds no samples.")
        return lambda: _array_batches(data, batch_size, shuffle, rng)
    if callable(data):
        return data
    if isinstance(data, (list, tuple)):
        return lambda: data
    raise TypeError(
        f"fit: data must be a tuple of arrays (x, y) or (x, y, sample_weight), a list of such batches, or a "
        f"function returning an iterable of batches for each epoch; received {type(data).__name__}."
    )


def _add_weighted(sums: dict[str, float], pending: list[tuple[dict, int]]) -> None:
    """Moves `pending` step metrics to the host into `sums`, each weighted by its batch size.

    Weighted so that an epoch's value is a per-sample mean, as Keras reports it.
    """
    for metrics, size in jax.device_get(pending):
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + float(value) * size
    pending.clear()


def _progress(verbose: bool, epochs: int) -> Any:
    if not verbose:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("epoch {task.fields[epoch]}/" + str(epochs)),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:.0f} samples/s"),
        TimeElapsedColumn(),
    )


def fit(
    model: Layer,
    data: Any,
    loss: Any,
    optimizer: Any,
    epochs: int = 1,
    *,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int = 0,
    verbose: bool = True,
    loss_scaling: bool | str = "auto",
    initial_state: TrainState | None = None,
    distribution: Any = None,
) -> History:
    """Trains `model` for `epochs` passes over `data` with one jitted step per batch.

    The trained values are written back to the model's variables at the end, also when a batch
    fails or the run is interrupted (the last good state), and the final state is returned too.
    A progress bar (rich) shows the running loss and samples/s.

    Args:
      model: a layer; built from the first batch if it is not built yet.
      data: `(x, y)` or `(x, y, sample_weight)` arrays (cut into batches of `batch_size`,
        shuffled each epoch when `shuffle`), a list of such batches, or a function returning
        an iterable of batches for each epoch.
      loss: a loss from `layers.losses`, its name, or a `loss(y_true, y_pred, sample_weight)` callable.
      optimizer: an optimizer from `layers.optimizers`.
      epochs: a positive number of passes.
      batch_size: samples per batch for array data.
      shuffle: shuffle array data each epoch (seeded by `seed`).
      seed: the seed of the shuffling.
      verbose: show the progress bar.
      loss_scaling: as in `make_train_step`.
      initial_state: continue from this state (`history.state` of an earlier `fit`, or a restored
        checkpoint); None starts a fresh one, with a new optimizer state (moments, iterations,
        schedule position and loss scale start over, as for a new optimizer).
      distribution: a `layers.distribution` `DataParallel`, `FSDP` or `ModelParallel`, as in
        `make_train_step`: the state lives on its mesh and each batch is split over its batch
        axis, so every batch (the last, smaller one of array data too) must divide by that axis.

    Returns:
      A `History`.

    Example:
      >>> import layers
      >>> from layers import optimizers, training
      >>> x = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
      >>> model = layers.Dense(1)
      >>> history = training.fit(model, (x, 3 * x), "mse", optimizers.SGD(0.5), epochs=20, verbose=False)
      >>> history.history["loss"][-1] < 1e-3, round(float(model.kernel.numpy()[0, 0]), 2)
      (True, 3.0)
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"fit: epochs must be a positive int, received {epochs!r}.")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"fit: batch_size must be a positive int, received {batch_size!r}.")
    batches = _epoch_batches(data, batch_size, shuffle, np.random.default_rng(seed))
    if distribution is not None and _is_arrays(data):
        _check_batches_divide(len(data[0]), batch_size, distribution)
    if not model.built:
        first = next(iter(batches()), None)
        if first is None:
            raise ValueError("fit: the data holds no batches.")
        model(first[0])
    step = make_train_step(model, loss, optimizer, loss_scaling=loss_scaling, distribution=distribution)
    state = step.init_state() if initial_state is None else initial_state
    history: dict[str, list[float]] = {}
    rates: list[float] = []
    progress = _progress(verbose, epochs)
    task = None
    if progress is not None:
        progress.start()
        task = progress.add_task("fit", total=None, epoch=1, loss=float("nan"), rate=0.0)
    try:
        for epoch in range(1, epochs + 1):
            sums: dict[str, float] = {}
            seen, samples, start = 0, 0, time.perf_counter()
            epoch_batches = list(batches())
            if progress is not None:
                progress.reset(task, total=len(epoch_batches), epoch=epoch, loss=float("nan"), rate=0.0)
            pending: list[tuple[dict, int]] = []  # metrics still on the device, and their batch sizes
            for batch in epoch_batches:
                state, metrics = step.jitted(state, batch)
                pending.append((metrics, len(batch[0])))
                seen += 1
                samples += len(batch[0])
                if progress is not None:  # the bar needs the loss now; without it, steps stay asynchronous
                    _add_weighted(sums, pending)
                    rate = samples / max(time.perf_counter() - start, 1e-9)
                    progress.update(task, advance=1, loss=sums["loss"] / samples, rate=rate)
            if not seen:
                raise ValueError(f"fit: epoch {epoch} had no batches.")
            _add_weighted(sums, pending)  # one transfer per epoch (waits for the last step)
            rates.append(samples / max(time.perf_counter() - start, 1e-9))
            for name, total in sums.items():
                history.setdefault(name, []).append(total / samples)
    finally:
        if progress is not None:
            progress.stop()
        # Also when a batch fails or the run is interrupted: the model keeps the last good state.
        step.write_back(state)
    return History(history, state, rates)
