"""Shuffled minibatches over host arrays, reproducible from (seed, epoch).

The permutation of epoch `e` is drawn by NumPy's PCG64 from
`SeedSequence(seed, spawn_key=(e,))`. A run resumed at epoch `e` therefore
gets the same batches as an uninterrupted one, and the data order needs no
checkpointed state.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """Return the int64 permutation of `range(num_examples)` used in `epoch`."""
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be an int >= 0, got {epoch!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}.")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(epoch,)))
    return rng.permutation(num_examples)


def num_batches(num_examples: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Return how many batches `shuffled_batches` yields per epoch."""
    return num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)


def shuffled_batches(
    arrays: Sequence[np.ndarray],
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    drop_remainder: bool = True,
) -> Iterator[tuple[np.ndarray, ...]]:
    """Yield one epoch of shuffled minibatches, one slice of each array per batch.

    Args:
        arrays: arrays with the same leading dimension, e.g. (images, labels).
        batch_size: examples per batch.
        seed: data-order seed; the same (seed, epoch) gives the same batches.
        epoch: epoch number >= 0.
        drop_remainder: drop the last partial batch, so that every batch has
            the static shape a jitted step needs.

    Yields:
        tuples of NumPy arrays with leading dimension `batch_size` (the last
        may be shorter when `drop_remainder` is False). Pass them to a jitted
        function directly, or place them with `jax.device_put` first.
    """
    arrays = tuple(arrays)
    if not arrays:
        raise ValueError("shuffled_batches needs at least one array.")
    num_examples = len(arrays[0])
    for index, array in enumerate(arrays):
        if len(array) != num_examples:
            raise ValueError(f"arrays[{index}] has {len(array)} examples but arrays[0] has {num_examples}; "
                             "all arrays must share the leading dimension.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")
    if drop_remainder and batch_size > num_examples:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} examples, so dropping the "
                         "remainder would yield no batch; lower batch_size or set drop_remainder=False.")

    order = epoch_permutation(num_examples, seed, epoch)
    for batch in range(num_batches(num_examples, batch_size, drop_remainder)):
        rows = order[batch * batch_size:(batch + 1) * batch_size]
        yield tuple(array[rows] for array in arrays)
