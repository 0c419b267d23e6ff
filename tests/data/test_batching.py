"""Tests of seeded minibatch iteration."""

import numpy as np
import pytest

from jaxlab.data import batching


def _epoch(seed, epoch, **kwargs):
    x = np.arange(10) * 10
    y = np.arange(10)
    return list(batching.shuffled_batches((x, y), 3, seed=seed, epoch=epoch, **kwargs))


def test_batches_cover_epoch_once_and_keep_pairs():
    batches = _epoch(0, 0, drop_remainder=False)
    assert [len(y) for _, y in batches] == [3, 3, 3, 1]
    labels = np.concatenate([y for _, y in batches])
    assert sorted(labels.tolist()) == list(range(10))
    for x, y in batches:
        np.testing.assert_array_equal(x, y * 10)


def test_drop_remainder_gives_static_shapes():
    batches = _epoch(0, 0)
    assert [len(y) for _, y in batches] == [3, 3, 3]
    assert batching.num_batches(10, 3) == 3
    assert batching.num_batches(10, 3, drop_remainder=False) == 4


def test_order_is_keyed_by_seed_and_epoch():
    first = np.concatenate([y for _, y in _epoch(0, 0)])
    np.testing.assert_array_equal(first, np.concatenate([y for _, y in _epoch(0, 0)]))
    assert not np.array_equal(first, np.concatenate([y for _, y in _epoch(0, 1)]))
    assert not np.array_equal(first, np.concatenate([y for _, y in _epoch(1, 0)]))


def test_bad_arguments_rejected():
    x = np.zeros(5)
    with pytest.raises(ValueError, match=r"arrays\[1\] has 4 examples"):
        next(batching.shuffled_batches((x, np.zeros(4)), 2, seed=0, epoch=0))
    with pytest.raises(ValueError, match="batch_size 6 exceeds the 5 examples"):
        next(batching.shuffled_batches((x,), 6, seed=0, epoch=0))
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        next(batching.shuffled_batches((x,), 2, seed=0, epoch=-1))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        next(batching.shuffled_batches((x,), 0, seed=0, epoch=0))
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        next(batching.shuffled_batches((x,), 2, seed=-1, epoch=0))
