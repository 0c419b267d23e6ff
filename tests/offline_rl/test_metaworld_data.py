"""Tests of the Meta-World ML1 data: splits, VectorEnv, scripted shards, caching and the collection experiment.

Episodes are cut to a few steps (`episode_steps`), and shards go to tmp_path, so the whole file takes seconds.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from jaxlab.core import config as config_lib
from jaxlab.offline_rl import collect_metaworld
from jaxlab.offline_rl import dataset
from jaxlab.offline_rl import metaworld_data

CONFIG_PATH = Path(__file__).resolve().parents[2] / "configs" / "offline_rl" / "collect_metaworld.py"
TASK = "reach-v3"
STEPS = 12


def _tiny_config(**overrides):
    config = config_lib.load_config_file(CONFIG_PATH, "quick")
    config.task_names = (TASK,)
    config.noise_levels = ("expert", "random")
    config.episodes = 2
    config.tasks = "test"
    config.max_tasks = 2
    config.episode_steps = STEPS
    for field, value in overrides.items():
        setattr(config, field, value)
    return config


def test_task_split_holds_out_five_fixed_goals():
    train, test = metaworld_data.task_split(TASK)
    assert test == metaworld_data.TEST_TASK_INDICES
    assert len(train) == 45
    assert sorted(train + test) == list(range(metaworld_data.NUM_GOAL_TASKS))
    assert metaworld_data.task_split("pick-place-v3") == (train, test)
    assert metaworld_data.split_of(test[0]) == "test"
    assert metaworld_data.split_of(train[0]) == "train"


def test_vector_env_shapes_and_episode_end():
    env = metaworld_data.VectorEnv(TASK, 3, num_envs=3, seed=0, max_episode_steps=4)
    obs = env.reset()
    assert (env.obs_dim, env.act_dim, env.max_episode_steps) == (39, 4, 4)
    assert obs.shape == (3, 39)
    assert obs.dtype == np.float32
    for step in range(4):
        obs, rewards, dones, successes = env.step(np.zeros((3, 4), np.float32))
        assert obs.shape == (3, 39)
        assert rewards.shape == (3,)
        assert rewards.dtype == np.float32
        assert dones.dtype == np.bool_
        assert successes.dtype == np.bool_
        assert dones.tolist() == [step == 3] * 3
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((3, 4)))
    env.reset()
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        env.step(np.zeros((2, 4)))


def test_vector_env_observes_its_goal():
    env = metaworld_data.VectorEnv(TASK, 0, num_envs=2, seed=0)
    assert env.max_episode_steps == 500
    obs = env.reset()
    np.testing.assert_array_equal(obs[:, 36:39], np.stack([env.goal, env.goal]))
    assert np.linalg.norm(env.goal) > 0.1
    first_goal = env.goal.copy()
    env.set_task(1)
    assert not np.allclose(env.goal, first_goal)
    np.testing.assert_array_equal(env.reset()[:, 36:39], np.stack([env.goal, env.goal]))


def test_collect_task_writes_a_loadable_shard(tmp_path):
    arrays = metaworld_data.collect_task(TASK, 5, "expert", 3, 0, root=tmp_path, episode_steps=STEPS)
    spec = metaworld_data.shard_spec(TASK, 5, "expert", 3, 0, episode_steps=STEPS)
    assert spec.split == "test"
    assert spec.env == "metaworld/reach-v3"
    assert dataset.shard_exists(spec, root=tmp_path)
    loaded = dataset.load_shard(spec, root=tmp_path)
    for name in dataset.ARRAY_LAYOUT:
        np.testing.assert_array_equal(loaded[name], arrays[name])
    assert loaded["observations"].shape == (3, STEPS, 39)
    assert loaded["actions"].shape == (3, STEPS, 4)
    assert np.all(np.abs(loaded["actions"]) <= 1.0)
    assert loaded["lengths"].tolist() == [STEPS] * 3
    assert not loaded["terminals"].any()
    assert loaded["timeouts"][:, -1].all()
    assert not loaded["timeouts"][:, :-1].any()
    np.testing.assert_allclose(loaded["returns_to_go"][:, 0], loaded["rewards"].sum(axis=1), rtol=1e-5)
    np.testing.assert_array_equal(loaded["goal"], loaded["observations"][0, 0, 36:39])


def test_expert_reaches_goal_and_flags_success(tmp_path):
    expert = metaworld_data.collect_task(TASK, 0, "expert", 2, 0, root=tmp_path, episode_steps=80)
    random = metaworld_data.collect_task(TASK, 0, "random", 2, 0, root=tmp_path, episode_steps=80)
    assert expert["successes"][:, -1].all()
    assert not expert["successes"][:, 0].any()
    assert expert["rewards"].sum() > random["rewards"].sum()


def test_collect_task_skips_a_cached_shard(tmp_path, monkeypatch):
    first = metaworld_data.collect_task(TASK, 0, "medium", 2, 0, root=tmp_path, episode_steps=STEPS)

    def fail(*args, **kwargs):
        raise AssertionError("a cached shard was collected again")

    monkeypatch.setattr(metaworld_data, "collect_episodes", fail)
    again = metaworld_data.collect_task(TASK, 0, "medium", 2, 0, root=tmp_path, episode_steps=STEPS)
    np.testing.assert_array_equal(again["actions"], first["actions"])


def test_collection_is_deterministic_and_seeded(tmp_path):
    first = metaworld_data.collect_task(TASK, 2, "medium", 3, 4, root=tmp_path / "a", episode_steps=STEPS)
    second = metaworld_data.collect_task(TASK, 2, "medium", 3, 4, root=tmp_path / "b", episode_steps=STEPS)
    for name in dataset.ARRAY_LAYOUT:
        np.testing.assert_array_equal(first[name], second[name])
    other_seed = metaworld_data.collect_task(TASK, 2, "medium", 3, 5, root=tmp_path / "a", episode_steps=STEPS)
    assert not np.array_equal(first["actions"], other_seed["actions"])
    # Episodes of one shard differ only through their own noise.
    assert not np.array_equal(first["actions"][0], first["actions"][1])


def test_collection_does_not_depend_on_batch_width():
    narrow = metaworld_data.VectorEnv(TASK, 2, num_envs=1, seed=0, max_episode_steps=STEPS)
    wide = metaworld_data.VectorEnv(TASK, 2, num_envs=2, seed=9, max_episode_steps=STEPS)
    one_by_one = metaworld_data.collect_episodes(narrow, "medium", 3, 4)
    in_pairs = metaworld_data.collect_episodes(wide, "medium", 3, 4)
    for name in dataset.ARRAY_LAYOUT:
        np.testing.assert_array_equal(one_by_one[name], in_pairs[name])


def test_bad_task_name_lists_close_names():
    with pytest.raises(ValueError, match="close names: pick-place-v3"):
        metaworld_data.VectorEnv("pick-and-place-v3", 0, 1, 0)
    with pytest.raises(ValueError, match="reach-v3"):
        metaworld_data.task_split("reach")


def test_bad_noise_level_and_task_index_are_rejected():
    with pytest.raises(ValueError, match="expert, medium, noisy, random"):
        metaworld_data.shard_spec(TASK, 0, "gaussian", 2, 0)
    with pytest.raises(ValueError, match="task_index=50"):
        metaworld_data.shard_spec(TASK, 50, "expert", 2, 0)


def test_shard_spec_records_what_changes_the_data():
    expert = metaworld_data.shard_spec(TASK, 0, "expert", 2, 0).params
    random = metaworld_data.shard_spec(TASK, 0, "random", 2, 0).params
    assert expert["noise_std"] == metaworld_data.NOISE_LEVELS["expert"]
    assert random["action_noise"] == "uniform"
    assert expert["episode_steps"] == 500
    short = metaworld_data.shard_spec(TASK, 0, "expert", 2, 0, episode_steps=STEPS)
    assert short.artifact().key != metaworld_data.shard_spec(TASK, 0, "expert", 2, 0).artifact().key


@pytest.mark.parametrize("variant", ["", "cpu", "quick"])
def test_every_variant_validates(variant):
    collect_metaworld.validate(config_lib.load_config_file(CONFIG_PATH, variant))


@pytest.mark.parametrize("field,value", [
    ("task_names", ("reach-v9",)),
    ("task_names", (TASK, TASK)),
    ("task_names", ()),
    ("noise_levels", ("expertt",)),
    ("noise_levels", ("expert", "expert")),
    ("episodes", 0),
    ("tasks", "validation"),
    ("max_tasks", 51),
    ("episode_steps", 501),
    ("seed", -1),
    ("num_workers", 0),
])
def test_validate_rejects_bad_values(field, value):
    config = _tiny_config(**{field: value})
    with pytest.raises(config_lib.ConfigError, match=field):
        collect_metaworld.validate(config)


def test_run_writes_statistics_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXLAB_DATA", str(tmp_path / "cache"))
    config = _tiny_config()
    collect_metaworld.validate(config)
    results = collect_metaworld.run(config, str(tmp_path / "run"))

    assert [(r["task_name"], r["noise"]) for r in results["records"]] == [(TASK, "expert"), (TASK, "random")]
    assert [s["task_index"] for s in results["shards"]] == [5, 5, 15, 15]
    assert {s["split"] for s in results["shards"]} == {"test"}
    expert_shards = [dataset.load_shard(metaworld_data.shard_spec(TASK, index, "expert", 2, 0, episode_steps=STEPS))
                     for index in (5, 15)]
    returns = np.concatenate([shard["rewards"].sum(axis=1) for shard in expert_shards])
    assert results["records"][0]["return_mean"] == pytest.approx(returns.mean(), rel=1e-5)
    assert results["records"][0]["episodes"] == 4
    assert results["records"][1]["noise_std"] is None
    assert "| reach-v3 | random | uniform |" in (tmp_path / "run" / "results.md").read_text()
    metric_lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(metric_lines) == 4

    def fail(*args, **kwargs):
        raise AssertionError("a cached shard was collected again")

    monkeypatch.setattr(metaworld_data, "collect_episodes", fail)
    rerun = collect_metaworld.run(config, str(tmp_path / "rerun"))
    assert json.dumps(rerun, sort_keys=True) == json.dumps(results, sort_keys=True)
    assert (tmp_path / "rerun" / "results.json").read_text() == (tmp_path / "run" / "results.json").read_text()


def test_run_collects_only_missing_shards(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXLAB_DATA", str(tmp_path / "cache"))
    collect_metaworld.run(_tiny_config(max_tasks=1), str(tmp_path / "first"))
    calls = []
    original = metaworld_data.collect_episodes

    def counting(vector_env, noise, episodes, seed):
        calls.append((vector_env.task_index, noise))
        return original(vector_env, noise, episodes, seed)

    monkeypatch.setattr(metaworld_data, "collect_episodes", counting)
    collect_metaworld.run(_tiny_config(max_tasks=2), str(tmp_path / "second"))
    assert calls == [(15, "expert"), (15, "random")]


def test_worker_processes_give_the_same_results(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXLAB_DATA", str(tmp_path / "serial_cache"))
    serial = collect_metaworld.run(_tiny_config(), str(tmp_path / "serial"))
    monkeypatch.setenv("JAXLAB_DATA", str(tmp_path / "parallel_cache"))
    parallel = collect_metaworld.run(_tiny_config(num_workers=2), str(tmp_path / "parallel"))
    assert json.dumps(parallel, sort_keys=True) == json.dumps(serial, sort_keys=True)
    spec = metaworld_data.shard_spec(TASK, 15, "expert", 2, 0, episode_steps=STEPS)
    assert dataset.shard_exists(spec, root=tmp_path / "parallel_cache")
