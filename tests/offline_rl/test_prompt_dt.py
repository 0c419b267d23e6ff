"""Tests of Prompt-DT's batching, training, rollouts and the `prompt_dt` experiment on a toy point-mass suite.

The toy suite is this module itself (`task_split`, `collect_task`, `make_env`, `goals`): a point in the
plane that moves by 0.1 x action per step towards a per-task goal that the observation does not show.
"""

import json
import shutil
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.core import config as config_lib
from jaxlab.offline_rl import dataset
from jaxlab.offline_rl import decision_transformer as dt
from jaxlab.offline_rl import prompt_dt

CONFIG_PATH = "configs/offline_rl/prompt_dt.py"

# ---------------------------------------------------------------------------------------------------
# The toy suite.

EPISODE_STEPS = 12
NUM_TASKS = 6
GOAL_SLICE = slice(2, 4)  # Only the vector environment below is goal-observable.


def task_split(name):
    assert name == "point"
    return (0, 1, 2, 3), (4, 5)


def check_noise(noise):
    if noise != "expert":
        raise ValueError(f"the toy suite has only the noise level 'expert', got {noise!r}")


def goals(name):
    angles = 2 * np.pi * np.arange(NUM_TASKS) / NUM_TASKS
    return (0.5 * np.stack([np.cos(angles), np.sin(angles)], axis=1)).astype(np.float32)


class PointState(NamedTuple):
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    goal: jax.Array
    step: jax.Array


class PointEnv:
    obs_size, action_size, episode_length = 2, 2, EPISODE_STEPS

    def reset(self, key, goal):
        del key  # Every episode starts at the origin.
        return PointState(jnp.zeros(2), jnp.float32(0.0), jnp.float32(0.0), goal, jnp.int32(0))

    def step(self, state, action):
        position = state.obs + 0.1 * jnp.clip(action, -1.0, 1.0)
        step = state.step + 1
        reward = -jnp.linalg.norm(position - state.goal)
        return PointState(position, reward, (step >= EPISODE_STEPS).astype(jnp.float32), state.goal, step)


def make_env(name):
    assert name == "point"
    return PointEnv()


def collect_task(name, task_index, noise, episodes, seed, root=None):
    goal = goals(name)[task_index]
    spec = dataset.ShardSpec(env="toy/point", task_index=task_index, split="test" if task_index >= 4 else "train",
                             collector="greedy", noise=noise, episodes=episodes, seed=seed)

    def generate():
        rng = np.random.default_rng([seed, task_index])
        observations = np.zeros((episodes, EPISODE_STEPS, 2), np.float32)
        actions = np.zeros((episodes, EPISODE_STEPS, 2), np.float32)
        rewards = np.zeros((episodes, EPISODE_STEPS), np.float32)
        position = np.zeros((episodes, 2))
        for t in range(EPISODE_STEPS):
            action = np.clip((goal - position) / 0.1 + 0.1 * rng.standard_normal((episodes, 2)), -1, 1)
            observations[:, t], actions[:, t] = position, action
            position = position + 0.1 * action
            rewards[:, t] = -np.linalg.norm(position - goal, axis=1)
        lengths = np.full(episodes, EPISODE_STEPS, np.int32)
        timeouts = np.zeros((episodes, EPISODE_STEPS), bool)
        timeouts[:, -1] = True
        return {"observations": observations, "actions": actions, "rewards": rewards,
                "terminals": np.zeros_like(timeouts), "timeouts": timeouts,
                "returns_to_go": dataset.returns_to_go(rewards, lengths), "successes": np.zeros_like(timeouts),
                "lengths": lengths, "goal": goal}

    return dataset.save_shard(spec, generate, root)


class PointVectorEnv:
    """The point mass as a batched NumPy environment with the goal appended to the observation."""

    def __init__(self, goal, num_envs):
        self.goal, self.num_envs = np.asarray(goal), num_envs

    def reset(self):
        self.position, self.steps = np.zeros((self.num_envs, 2)), 0
        return self._obs()

    def _obs(self):
        return np.concatenate([self.position, np.broadcast_to(self.goal, self.position.shape)], 1).astype(np.float32)

    def step(self, actions):
        self.position = self.position + 0.1 * np.clip(actions, -1, 1)
        self.steps += 1
        distance = np.linalg.norm(self.position - self.goal, axis=1)
        return (self._obs(), (-distance).astype(np.float32), np.full(self.num_envs, self.steps >= EPISODE_STEPS),
                distance < 0.05)


# ---------------------------------------------------------------------------------------------------
# Batching.


def _ramp_tasks(lengths):
    """Tasks whose observation is (task, episode, step) and whose action is step / 100, for checking cuts."""
    lengths = np.asarray(lengths, np.int32)
    tasks, episodes = lengths.shape
    horizon = int(lengths.max())
    grid = np.stack(np.meshgrid(np.arange(tasks), np.arange(episodes), np.arange(horizon), indexing="ij"), -1)
    valid = np.arange(horizon)[None, None, :] < lengths[..., None]
    return prompt_dt.TaskArrays(observations=jnp.asarray(np.where(valid[..., None], grid, 0), jnp.float32),
                                actions=jnp.asarray(np.where(valid, grid[..., 2] / 100, 0)[..., None], jnp.float32),
                                returns_to_go=jnp.asarray(np.where(valid, lengths[..., None] - grid[..., 2], 0),
                                                          jnp.float32),
                                lengths=jnp.asarray(lengths))


def test_segments_stay_within_episodes():
    tasks = _ramp_tasks([[7, 3, 12, 0]])
    task = jax.tree.map(lambda x: x[0], tasks)
    segments = jax.jit(prompt_dt.sample_segments, static_argnums=(2, 3))(task, jax.random.key(0), 400, 5)
    observations, mask = np.asarray(segments.observations), np.asarray(segments.mask)
    timesteps = np.asarray(segments.timesteps)
    lengths = np.asarray(task.lengths)[observations[:, -1, 1].astype(int)]
    assert set(np.unique(observations[:, -1, 1]).astype(int)) == {0, 1, 2}  # Never the empty episode.
    # Valid steps are a contiguous tail: left padding.
    assert np.all(np.diff(mask.astype(int), axis=1) >= 0)
    assert np.all(mask[:, -1])
    valid_timesteps = np.where(mask, timesteps, 0)
    assert np.all(valid_timesteps < lengths[:, None])
    np.testing.assert_array_equal(np.where(mask, observations[..., 2], 0), valid_timesteps)
    both_valid = mask[:, 1:] & mask[:, :-1]
    np.testing.assert_array_equal(np.where(both_valid, np.diff(timesteps, axis=1), 1), 1)
    np.testing.assert_allclose(np.where(mask, segments.actions[..., 0], 0), valid_timesteps / 100, atol=1e-6)
    assert np.all(np.where(mask, 0, np.abs(observations).sum(-1)) == 0)
    # Starts cover every step of each episode, including the last one (one valid step).
    assert mask.sum(1).min() == 1
    starts = timesteps[np.arange(len(mask)), np.argmax(mask, axis=1)]
    assert set(starts[lengths == 12]) == set(range(12))


def test_prompts_end_one_step_before_episode_end():
    task = jax.tree.map(lambda x: x[0], _ramp_tasks([[10, 4, 0]]))
    prompts = jax.jit(prompt_dt.sample_prompts, static_argnums=(2, 3))(task, jax.random.key(1), 64, 5)
    episodes = np.asarray(prompts.observations[:, -1, 1]).astype(int)
    assert set(episodes) == {0, 1}
    for row, episode in enumerate(episodes):
        length = int(task.lengths[episode])
        start = max(0, length - 6)
        expected = np.arange(start, min(start + 5, length))
        assert np.asarray(prompts.mask[row]).sum() == len(expected)
        np.testing.assert_array_equal(np.asarray(prompts.timesteps[row])[-len(expected):], expected)


def test_batch_pairs_segments_with_same_task_prompts():
    data = _ramp_tasks([[9, 9], [8, 5], [6, 6], [7, 3]])
    sample = jax.jit(prompt_dt.sample_batch, static_argnums=(3, 4, 5, 6))
    segments, prompts = sample(data, data, jax.random.key(2), 3, 4, 5, 3)
    assert segments.observations.shape == (12, 5, 3)
    assert prompts.observations.shape == (12, 3, 3)
    segment_tasks = np.asarray(segments.observations[:, -1, 0]).reshape(3, 4)
    prompt_tasks = np.asarray(prompts.observations[:, -1, 0]).reshape(3, 4)
    np.testing.assert_array_equal(segment_tasks, prompt_tasks)
    assert len(set(segment_tasks[:, 0])) == 3  # Tasks are drawn without replacement.
    assert np.all(segment_tasks == segment_tasks[:, :1])


def test_normalizer_hides_goal_dimensions():
    observations = np.arange(24, dtype=np.float32).reshape(1, 3, 8) % 5
    shards = [{"observations": observations.reshape(1, 3, 8), "lengths": np.array([2], np.int32)}]
    normalizer = prompt_dt.fit_normalizer(shards, slice(-3, None))
    normalized = normalizer(observations[0, :2])
    np.testing.assert_array_equal(normalized[:, -3:], 0.0)
    np.testing.assert_allclose(normalized[:, :5].mean(0), 0.0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Training and rollouts.


def _small_model(use_prompt=True, obs_dim=2):
    return dt.DecisionTransformer(dt.DTConfig(obs_dim=obs_dim, act_dim=2, hidden_size=16, num_layers=1,
                                              context_length=4, prompt_length=3, max_timestep=EPISODE_STEPS,
                                              dropout=0.0, use_prompt=use_prompt))


def test_train_chunk_lowers_loss_and_resumes_identically(tmp_path):
    shards = [collect_task("point", task, "expert", 4, 0, root=tmp_path) for task in range(4)]
    normalizer = prompt_dt.fit_normalizer(shards)
    data = prompt_dt.stack_tasks(shards, normalizer, 10.0)
    model = _small_model()
    optimizer = prompt_dt.make_optimizer(1e-2, 1, 1e-4, 1.0)
    params = dt.init_params(model.config, jax.random.key(0))
    state = prompt_dt.TrainState(params, optimizer.init(params))
    chunk = prompt_dt.make_train_chunk(model, optimizer, steps_per_call=40, tasks_per_batch=2, batch_per_task=4)
    key = jax.random.key(1)

    first, losses_a = chunk(state, data, data, key, jnp.int32(0))
    second, losses_b = chunk(first, data, data, key, jnp.int32(40))
    assert float(losses_b[-10:].mean()) < 0.3 * float(losses_a[:10].mean())
    # Steps 40-79 draw their batches from the step number, so replaying them gives the same state.
    again, losses_again = chunk(first, data, data, key, jnp.int32(40))
    np.testing.assert_array_equal(losses_again, losses_b)
    jax.tree.map(np.testing.assert_array_equal, again.params, second.params)


def test_vector_and_jitted_rollouts_agree():
    model = _small_model(obs_dim=4)
    params = dt.init_params(model.config, jax.random.key(3))
    goal = goals("point")[1]
    shard = collect_task_in_memory(goal)
    # The jitted point env has no goal in its observation; append it so both see the same inputs.
    normalizer = prompt_dt.Normalizer(np.zeros(4, np.float32), np.ones(4, np.float32), np.zeros(4, bool))
    prompt_task = prompt_dt.stack_tasks([shard], normalizer, 10.0)
    prompt = prompt_dt.sample_prompts(jax.tree.map(lambda x: x[0], prompt_task), jax.random.key(4), 3, 3)

    vector = prompt_dt.rollout_vector_env(model, params, PointVectorEnv(goal, 3), prompt, normalizer, 10.0,
                                          target_return=-1.0, max_steps=EPISODE_STEPS)

    class GoalObservable(PointEnv):
        def reset(self, key, goal):
            state = super().reset(key, goal)
            return state._replace(obs=jnp.concatenate([state.obs, goal]))

        def step(self, state, action):
            inner = super().step(state._replace(obs=state.obs[:2]), action)
            return inner._replace(obs=jnp.concatenate([inner.obs, state.goal]))

    rollout = prompt_dt.make_jax_rollout(model, GoalObservable(), normalizer, 10.0, target_return=-1.0,
                                         max_steps=EPISODE_STEPS + 5)
    jitted = rollout(params, prompt, jnp.asarray(goal), jax.random.key(5))
    assert vector["returns"].shape == (3,)
    np.testing.assert_allclose(np.asarray(jitted), vector["returns"], rtol=1e-4, atol=1e-4)
    assert np.all(vector["returns"] < 0)


def collect_task_in_memory(goal):
    """Two greedy episodes towards `goal` with the goal appended to the observation, as shard arrays."""
    position, rows, actions, rewards = np.zeros(2), [], [], []
    for _ in range(EPISODE_STEPS):
        action = np.clip((goal - position) / 0.1, -1, 1)
        rows.append(np.concatenate([position, goal]))
        actions.append(action)
        position = position + 0.1 * action
        rewards.append(-np.linalg.norm(position - goal))
    rewards = np.array([rewards] * 2, np.float32)
    lengths = np.full(2, EPISODE_STEPS, np.int32)
    return {"observations": np.array([rows] * 2, np.float32), "actions": np.array([actions] * 2, np.float32),
            "returns_to_go": dataset.returns_to_go(rewards, lengths), "rewards": rewards, "lengths": lengths}


def test_summary_averages_episodes_over_tasks():
    summary = prompt_dt.summarize_tasks({
        3: {"returns": np.array([1.0, 3.0]), "successes": np.array([True, False])},
        7: {"returns": np.array([5.0, 7.0]), "successes": np.array([True, True])},
    })
    assert summary["return_mean"] == 4.0
    assert summary["success_rate"] == 0.75
    assert summary["tasks"]["7"] == {"return_mean": 6.0, "return_std": 1.0, "success_rate": 1.0}


# ---------------------------------------------------------------------------------------------------
# The experiment.


def _toy_config(**train_overrides):
    config = config_lib.load_config_file(CONFIG_PATH, "quick")
    config.env = "toy/point"
    config.data.episodes = 4
    config.data.prompt_episodes = 2
    config.data.num_train_tasks = 0
    config.data.num_test_tasks = 0
    config.data.return_scale = 10.0
    config.data.hide_goal = False
    config.model.hidden_size = 16
    config.model.num_layers = 1
    config.model.context_length = 4
    config.model.prompt_length = 3
    config.model.max_timestep = EPISODE_STEPS
    config.train.num_steps = 40
    config.train.batch_size_per_task = 4
    config.train.tasks_per_batch = 2
    config.train.steps_per_call = 10
    config.train.checkpoint_every = 20
    config.train.log_every = 10
    config.eval.episodes = 2
    config.eval.max_steps = EPISODE_STEPS
    config.eval.target_return = -1.0
    for field, value in train_overrides.items():
        config.train[field] = value
    return config


@pytest.fixture
def toy_suite(monkeypatch, tmp_path):
    monkeypatch.setitem(prompt_dt.SUITES, "toy", __name__)
    monkeypatch.setenv("JAXLAB_DATA", str(tmp_path / "data"))


def test_experiment_runs_and_resumes(toy_suite, tmp_path):
    config = _toy_config()
    prompt_dt.validate(config)
    workdir = tmp_path / "run"
    full = prompt_dt.run(config, str(workdir))
    assert set(full["test"]["tasks"]) == {"4", "5"}
    assert np.isfinite(full["test"]["return_mean"])
    assert full["final_train_action_mse"] is not None
    written = json.loads((workdir / "results.json").read_text())
    assert written["test"] == full["test"]

    # Drop the final checkpoint and results as if the run had been killed after step 20; the rerun
    # resumes from the step-20 checkpoint and must end where the uninterrupted run ended.
    shutil.rmtree(workdir / "checkpoints" / "40")
    (workdir / "results.json").unlink()
    resumed = prompt_dt.run(config, str(workdir))
    assert resumed["test"] == full["test"]
    assert resumed["final_train_action_mse"] == full["final_train_action_mse"]
    logged = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert logged == [10, 20, 30, 40]


@pytest.mark.slow
def test_baseline_runs_without_prompt(toy_suite, tmp_path):
    config = _toy_config(num_steps=10, checkpoint_every=10)
    config.model.use_prompt = False
    results = prompt_dt.run(config, str(tmp_path / "baseline"))
    assert results["use_prompt"] is False
    assert np.isfinite(results["test"]["return_mean"])


@pytest.mark.parametrize("variant", ["quick", "metaworld_reach_cpu", "cheetah_vel_cpu", "default_metaworld_reach",
                                     "default_cheetah_vel"])
def test_variants_validate(variant):
    prompt_dt.validate(config_lib.load_config_file(CONFIG_PATH, variant))


@pytest.mark.parametrize("field, value, message", [
    ("env", "gym/hopper", "family"),
    ("env", "metaworld/", "family"),
    ("env", "metaworld/reachh-v3", "close names: reach-v3"),
    ("env", "brax/cheetah_velo", "cheetah_vel"),
    ("data.noise", "random", "noise level of brax"),
    ("data.prompt_noise", "Expert", "noise level of brax"),
    ("data.hide_goal", True, "contain no goal"),
    ("model.hidden_size", 102, "multiple of model.num_heads"),
    ("model.activation", "swish", "gelu"),
    ("train.num_steps", 75, "multiple of train.steps_per_call"),
    ("train.checkpoint_every", 30, "multiple of train.steps_per_call"),
    ("train.tasks_per_batch", 20, "data.num_train_tasks"),
    ("eval.episodes", 0, ">= 1"),
    ("eval.max_steps", 0, ">= 1"),
    ("data.return_scale", 0.0, "> 0"),
])
def test_validate_names_bad_field(field, value, message):
    config = config_lib.load_config_file(CONFIG_PATH, "cheetah_vel_cpu")
    config.model.num_heads = 4
    config.data.num_train_tasks = 10
    node = config
    *parents, leaf = field.split(".")
    for parent in parents:
        node = node[parent]
    node[leaf] = value
    with pytest.raises(config_lib.ConfigError, match=message) as error:
        prompt_dt.validate(config)
    assert error.value.field == field


def test_unknown_variant_is_rejected():
    with pytest.raises(Exception, match="unknown variant"):
        config_lib.load_config_file(CONFIG_PATH, "huge")
