"""Tests of the goal-conditioned PPO expert: GAE, the clipped loss, training, resume and shard collection.

Most tests run on a toy goal-conditioned environment with the `TaskEnv`
interface, which compiles in seconds; the brax-backed run is marked slow.
"""

import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.base import State

from jaxlab.core.config import ConfigError
from jaxlab.core.config import load_config_file
from jaxlab.offline_rl import brax_tasks
from jaxlab.offline_rl import collect_brax
from jaxlab.offline_rl import dataset
from jaxlab.offline_rl import ppo_expert


@dataclasses.dataclass(frozen=True)
class ToyVelocityEnv:
    """Reach the goal velocity in one step: v = 1.5 (a_0 + 1), reward -|v - goal|.

    The episode terminates when a_1 > 0.9, so noisy policies end episodes early.
    """

    episode_length: int = 8
    backend: str = "toy"
    obs_size: int = 2
    action_size: int = 2

    def reset(self, key, goal):
        zero = jnp.zeros((), jnp.float32)
        info = {"goal": jnp.asarray(goal, jnp.float32).reshape(1), "steps": zero, "terminated": zero,
                "truncated": zero}
        obs = jax.random.uniform(key, (self.obs_size,), minval=-0.1, maxval=0.1)
        return State(pipeline_state=None, obs=obs, reward=zero, done=zero, metrics={}, info=info)

    def step(self, state, action):
        velocity = 1.5 * (action[0] + 1.0)
        reward = -jnp.abs(velocity - state.info["goal"][0])
        terminated = (action[1] > 0.9).astype(jnp.float32)
        steps = state.info["steps"] + 1.0
        truncated = jnp.where((steps >= self.episode_length) & (terminated == 0.0), 1.0, 0.0)
        info = {**state.info, "steps": steps, "terminated": terminated, "truncated": truncated}
        obs = jnp.stack([velocity, steps / self.episode_length])
        return state.replace(obs=obs, reward=reward, done=jnp.maximum(terminated, truncated), info=info)


def _toy_config(**overrides):
    config = ppo_expert.expert_config("cheetah_vel", "quick")
    config.num_envs = 16
    config.unroll_length = 8
    config.num_minibatches = 2
    config.update_epochs = 4
    config.learning_rate = 3e-3
    config.total_env_steps = 16 * 8 * 40
    config.log_every = 5
    config.checkpoint_every = 10
    config.eval_episodes = 2
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture(scope="module")
def toy_trainer():
    """One trainer for every toy test, so its iteration compiles once."""
    return ppo_expert.make_trainer(_toy_config(), env=ToyVelocityEnv())


@pytest.fixture(scope="module")
def toy_expert(toy_trainer):
    state = toy_trainer.init(jax.random.PRNGKey(0))
    return ppo_expert.Expert(config=toy_trainer.config, env=toy_trainer.env, networks=toy_trainer.networks,
                             params=state.params, normalizer=state.normalizer, key="toy", summary={})


def _gae_reference(rewards, values, next_values, terminations, dones, gamma, lam):
    advantages = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[1])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * (1 - terminations[t]) * next_values[t] - values[t]
        running = delta + gamma * lam * (1 - dones[t]) * running
        advantages[t] = running
    return advantages


def test_gae_matches_numpy():
    rng = np.random.default_rng(0)
    shape = (12, 3)
    rewards, values, next_values = (rng.normal(size=shape).astype(np.float32) for _ in range(3))
    terminations = (rng.random(shape) < 0.1).astype(np.float32)
    truncations = (rng.random(shape) < 0.1).astype(np.float32)
    dones = np.maximum(terminations, truncations)
    advantages, targets = ppo_expert.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(next_values),
                                         jnp.asarray(terminations), jnp.asarray(dones), 0.9, 0.8)
    expected = _gae_reference(rewards, values, next_values, terminations, dones, 0.9, 0.8)
    np.testing.assert_allclose(advantages, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(targets, expected + values, rtol=1e-5, atol=1e-5)


def test_gae_truncation_bootstraps():
    # One truncated step: the target is r + gamma V(s'), not r.
    advantages, _ = ppo_expert.gae(jnp.ones((1, 1)), jnp.zeros((1, 1)), jnp.full((1, 1), 2.0),
                                   jnp.zeros((1, 1)), jnp.ones((1, 1)), 0.5, 0.9)
    assert float(advantages[0, 0]) == pytest.approx(2.0)


def test_clipped_surrogate_clips_ratio():
    old = jnp.zeros(4)
    log_probs = jnp.log(jnp.asarray([1.5, 1.5, 0.5, 1.0]))
    advantages = jnp.asarray([1.0, -1.0, -1.0, 2.0])
    loss, clip_fraction = ppo_expert.clipped_surrogate(log_probs, old, advantages, 0.2)
    # Positive advantage: ratio 1.5 is capped at 1.2. Negative advantage: min picks the worse, unclipped 1.5
    # and clipped 0.8. Ratio 1 contributes its advantage.
    expected = -np.mean([1.2 * 1.0, 1.5 * -1.0, 0.8 * -1.0, 2.0])
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(clip_fraction) == pytest.approx(0.75)


def test_clipped_surrogate_gradient_zero_when_clipped():
    grad = jax.grad(lambda lp: ppo_expert.clipped_surrogate(lp, jnp.zeros(1), jnp.ones(1), 0.2)[0])(
        jnp.log(jnp.asarray([1.5])))
    assert float(grad[0]) == 0.0


def test_normalizer_matches_numpy():
    rng = np.random.default_rng(1)
    batches = [rng.normal(3.0, 2.0, size=(50, 4)).astype(np.float32) for _ in range(3)]
    state = ppo_expert.normalizer_init(4)
    for batch in batches:
        state = ppo_expert.normalizer_update(state, jnp.asarray(batch))
    stacked = np.concatenate(batches)
    np.testing.assert_allclose(state.mean, stacked.mean(axis=0), rtol=1e-3)
    np.testing.assert_allclose(state.var, stacked.var(axis=0), rtol=1e-3)


def test_training_improves_toy_return(toy_trainer):
    state = toy_trainer.init(jax.random.PRNGKey(0))
    returns = []
    for _ in range(ppo_expert.num_iterations(toy_trainer.config)):
        state, info = toy_trainer.iterate(state)
        returns.append(float(info["reward"]))
    # The mean per-step reward starts near -E|1.5 - goal| (about -0.8) and approaches 0.
    assert np.mean(returns[-5:]) > np.mean(returns[:5]) + 0.3


def test_train_resumes_identically(tmp_path, toy_trainer):
    config = toy_trainer.config
    total = ppo_expert.num_iterations(config)
    full_state, full_summary = ppo_expert.train(config, str(tmp_path / "full"), trainer=toy_trainer)
    resumed_dir = tmp_path / "resumed"
    ppo_expert.train(config, str(resumed_dir), trainer=toy_trainer)
    # Drop the last checkpoint, as if the run had been killed two iterations before the end.
    shutil.rmtree(resumed_dir / "checkpoints" / str(total))
    resumed_state, resumed_summary = ppo_expert.train(config, str(resumed_dir), trainer=toy_trainer)
    assert full_summary["iterations"] == total
    assert resumed_summary["iterations"] == total
    for full, resumed in zip(jax.tree_util.tree_leaves(full_state.params),
                             jax.tree_util.tree_leaves(resumed_state.params)):
        np.testing.assert_array_equal(np.asarray(full), np.asarray(resumed))
    with open(resumed_dir / "metrics.jsonl") as f:
        metric_steps = [json.loads(line)["step"] for line in f]
    assert metric_steps == sorted(set(metric_steps))


def test_train_stops_at_time_cap(tmp_path, toy_trainer):
    config = _toy_config(max_minutes=1e-6)
    _, summary = ppo_expert.train(config, str(tmp_path), trainer=toy_trainer)
    assert summary["stopped_by"] == "max_minutes"
    assert summary["iterations"] == 1


def test_collect_writes_valid_shard(tmp_path, toy_expert):
    shard = brax_tasks.collect_task("cheetah_vel", 2, "noisy", 6, seed=3, root=str(tmp_path), expert=toy_expert)
    dataset.validate_shard(shard)
    spec = brax_tasks.shard_spec("cheetah_vel", 2, "noisy", 6, 3, expert_key="toy", backend="toy")
    assert spec.split == "test"
    np.testing.assert_array_equal(dataset.load_shard(spec, str(tmp_path))["rewards"], shard["rewards"])
    np.testing.assert_allclose(shard["goal"], brax_tasks.goals("cheetah_vel")[2])
    lengths = shard["lengths"]
    rows = np.arange(len(lengths))
    # Noise of std 1 makes a_1 > 0.9 likely within 8 steps, so some episodes terminate early.
    assert np.any(lengths < 8)
    assert np.all(shard["terminals"][rows, lengths - 1] | shard["timeouts"][rows, lengths - 1])
    assert np.all(shard["timeouts"][rows, lengths - 1] == (lengths == 8))
    assert shard["terminals"].sum() + shard["timeouts"].sum() == len(lengths)
    padding = np.arange(8)[None, :] >= lengths[:, None]
    assert np.all(shard["observations"][padding] == 0)
    assert np.all(shard["rewards"][padding] == 0)
    assert np.all(np.abs(shard["actions"]) <= 1.0)


def test_evaluate_expert_shape(toy_expert):
    returns = ppo_expert.evaluate_expert(toy_expert, 2, seed=0)
    assert returns.shape == (40, 2)
    assert np.all(np.isfinite(returns))


@pytest.mark.parametrize("field, value", [
    ("num_minibatches", 3), ("gamma", 1.5), ("hidden_sizes", ()), ("total_env_steps", 10),
    ("backend", "bullet"), ("task", "hopper"), ("max_minutes", 0.0),
])
def test_expert_config_errors(field, value):
    config = ppo_expert.expert_config("cheetah_vel", "quick")
    config[field] = value
    with pytest.raises(ConfigError, match=field):
        ppo_expert.validate_expert_config(config)


def test_expert_config_variants():
    for name in brax_tasks.TASK_NAMES:
        for variant in ("quick", "cpu", "default"):
            ppo_expert.validate_expert_config(ppo_expert.expert_config(name, variant))
    with pytest.raises(ValueError, match="fast"):
        ppo_expert.expert_config("cheetah_vel", "fast")


@pytest.mark.slow
def test_brax_expert_trains_and_loads(tmp_path):
    config = ppo_expert.expert_config("cheetah_vel", "quick")
    expert = ppo_expert.load_or_train_expert(config, root=str(tmp_path))
    assert expert.summary["iterations"] == ppo_expert.num_iterations(config)
    again = ppo_expert.load_or_train_expert(config, root=str(tmp_path))
    for first, second in zip(jax.tree_util.tree_leaves(expert.params), jax.tree_util.tree_leaves(again.params)):
        np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    assert again.key == expert.key


CONFIG_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "offline_rl", "collect_brax.py")


def _collect_config(variant="quick"):
    return load_config_file(CONFIG_PATH, variant)


def test_collector_run_resumes(tmp_path, toy_expert, monkeypatch):
    monkeypatch.setattr(ppo_expert, "load_or_train_expert", lambda config, root=None, workdir=None: toy_expert)
    config = _collect_config()
    config.data_root = str(tmp_path / "data")
    first = collect_brax.run(config, str(tmp_path / "run"))
    with open(tmp_path / "run" / "results.json") as f:
        written = json.load(f)
    assert sorted(written["shards"]) == ["expert", "noisy"]
    assert sorted(written["shards"]["expert"]) == ["0", "2"]
    assert written["shards"]["expert"]["2"]["split"] == "test"
    assert written["shards"]["noisy"]["0"]["episodes"] == 2
    assert len(written["expert_eval"]["per_task_return"]) == 40
    assert first["collect_env_steps_per_s"] > 0
    for noise in ("expert", "noisy"):
        spec = brax_tasks.shard_spec("cheetah_vel", 0, noise, 2, 0, expert_key="toy", backend="toy")
        dataset.load_shard(spec, config.data_root)

    # A rerun finds every shard and the evaluation, so it builds nothing and reports the same statistics.
    second = collect_brax.run(config, str(tmp_path / "run"))
    assert second["collect_env_steps_per_s"] is None
    assert second["shards"] == first["shards"]


@pytest.mark.parametrize("field, value", [
    ("task", "hopper"), ("noise_levels", ("expert", "random")), ("tasks", (0, 40)), ("episodes", 0),
    ("expert.task", "ant_dir"), ("expert.num_envs", 0),
])
def test_collector_config_errors(field, value):
    config = _collect_config()
    collect_brax.validate(config)
    if "." in field:
        group, name = field.split(".")
        config[group][name] = value
    else:
        config[field] = value
    with pytest.raises(ConfigError, match=field.split(".")[-1]):
        collect_brax.validate(config)


def test_collector_config_variants():
    for variant in ("quick", "cpu_cheetah_vel", "cpu_ant_dir", "default_cheetah_vel", "default_ant_dir"):
        collect_brax.validate(_collect_config(variant))
    with pytest.raises(ValueError, match="huge"):
        _collect_config("huge")


@pytest.mark.slow
def test_collector_quick_run_on_brax(tmp_path):
    config = _collect_config()
    config.data_root = str(tmp_path / "data")
    results = collect_brax.run(config, str(tmp_path / "run"))
    assert results["backend"] == brax_tasks.DEFAULT_BACKEND
    assert results["expert_training"]["iterations"] == ppo_expert.num_iterations(config.expert)
    stats = results["shards"]["expert"]["0"]
    assert stats["episodes"] == 2
    assert stats["mean_length"] == 200
