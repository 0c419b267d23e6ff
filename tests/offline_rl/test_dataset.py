"""Tests of the offline-RL shard format: round trip, validation and corruption detection."""

import numpy as np
import pytest

from jaxlab.core import cache
from jaxlab.offline_rl import dataset


def _arrays(episodes=3, horizon=6, obs_dim=4, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([horizon, horizon - 2, 1][:episodes], np.int32)
    valid = np.arange(horizon)[None, :] < lengths[:, None]
    rewards = np.where(valid, rng.normal(size=(episodes, horizon)), 0.0).astype(np.float32)
    timeouts = np.zeros((episodes, horizon), bool)
    timeouts[np.arange(episodes), lengths - 1] = True
    return {
        "observations": np.where(valid[..., None], rng.normal(size=(episodes, horizon, obs_dim)), 0).astype(np.float32),
        "actions": np.where(valid[..., None], rng.normal(size=(episodes, horizon, act_dim)), 0).astype(np.float32),
        "rewards": rewards,
        "terminals": np.zeros((episodes, horizon), bool),
        "timeouts": timeouts,
        "returns_to_go": dataset.returns_to_go(rewards, lengths),
        "successes": valid & (rewards > 0),
        "lengths": lengths,
        "goal": np.array([0.1, 0.2, 0.3], np.float32),
    }


def _spec(**overrides):
    fields = dict(env="test/pointmass", task_index=2, split="train", collector="random", noise="random",
                  episodes=3, seed=0, params={"scale": 1.0})
    fields.update(overrides)
    return dataset.ShardSpec(**fields)


def test_returns_to_go_zeroes_padding():
    rewards = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    rtg = dataset.returns_to_go(rewards, np.array([3, 2]))
    np.testing.assert_allclose(rtg, [[6.0, 5.0, 3.0], [9.0, 5.0, 0.0]])


def test_shard_round_trips_and_is_generated_once(tmp_path):
    calls = []

    def generate():
        calls.append(1)
        return _arrays()

    written = dataset.save_shard(_spec(), generate, root=tmp_path)
    again = dataset.save_shard(_spec(), generate, root=tmp_path)
    assert len(calls) == 1
    assert dataset.shard_exists(_spec(), root=tmp_path)
    loaded = dataset.load_shard(_spec(), root=tmp_path)
    for name in dataset.ARRAY_LAYOUT:
        np.testing.assert_array_equal(loaded[name], written[name])
        np.testing.assert_array_equal(again[name], written[name])
    stats = dataset.shard_statistics(loaded)
    assert stats["episodes"] == 3


@pytest.mark.parametrize("name,value,match", [
    ("rewards", lambda a: a["rewards"].astype(np.float64), "dtype"),
    ("lengths", lambda a: np.array([7, 1, 1], np.int32), "lengths"),
    ("observations", lambda a: np.where(True, np.nan, a["observations"]).astype(np.float32), "NaN"),
    ("returns_to_go", lambda a: a["returns_to_go"] + 1.0, "returns_to_go"),
    ("actions", lambda a: a["actions"][:2], "shape"),
])
def test_bad_arrays_are_rejected_before_anything_is_written(tmp_path, name, value, match):
    arrays = _arrays()
    arrays[name] = value(arrays)
    with pytest.raises(dataset.DatasetError, match=match):
        dataset.save_shard(_spec(), lambda: arrays, root=tmp_path)
    assert not dataset.shard_exists(_spec(), root=tmp_path)


def test_wrong_episode_count_is_rejected(tmp_path):
    with pytest.raises(dataset.DatasetError, match="episodes"):
        dataset.save_shard(_spec(episodes=5), _arrays, root=tmp_path)


def test_corrupt_file_is_detected_on_load(tmp_path):
    dataset.save_shard(_spec(), _arrays, root=tmp_path)
    directory = cache.artifact_dir(_spec().artifact(), tmp_path)
    with open(directory / "rewards.npy", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(cache.CacheError, match="rewards.npy"):
        dataset.load_shard(_spec(), root=tmp_path)


def test_invalid_spec_values_name_the_field():
    with pytest.raises(dataset.DatasetError, match="split"):
        _spec(split="valid")
    with pytest.raises(dataset.DatasetError, match="episodes"):
        _spec(episodes=0)


def test_mixed_observation_sizes_are_rejected(tmp_path):
    dataset.save_shard(_spec(), _arrays, root=tmp_path)
    other = _spec(task_index=3)
    dataset.save_shard(other, lambda: _arrays(obs_dim=5), root=tmp_path)
    with pytest.raises(dataset.DatasetError, match="observation size"):
        dataset.load_dataset([_spec(), other], root=tmp_path)
