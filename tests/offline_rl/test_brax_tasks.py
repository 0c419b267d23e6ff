"""Tests of the brax task families: goals, splits, rewards, goal-free observations and truncation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.offline_rl import brax_tasks
from jaxlab.offline_rl import ppo_expert


@pytest.fixture(scope="module")
def cheetah():
    """The Cheetah-vel environment with its reset and step compiled once for the module."""
    env = brax_tasks.make_env("cheetah_vel")
    return env, jax.jit(env.reset), jax.jit(env.step)


def test_cheetah_goals_and_split():
    goals = brax_tasks.goals("cheetah_vel")
    assert goals.shape == (40, 1)
    assert goals.dtype == np.float32
    np.testing.assert_allclose(goals[:, 0], np.linspace(0.075, 3.0, 40), rtol=1e-6)
    train, test = brax_tasks.task_split("cheetah_vel")
    assert test == (2, 7, 15, 23, 26)
    assert len(train) == 35
    assert sorted(train + test) == list(range(40))


def test_ant_goals_and_split():
    goals = brax_tasks.goals("ant_dir")
    assert goals.shape == (50, 1)
    assert np.all((goals >= 0) & (goals < 2 * np.pi))
    np.testing.assert_array_equal(goals, brax_tasks.goals("ant_dir"))
    train, test = brax_tasks.task_split("ant_dir")
    assert test == (6, 17, 23, 30, 41)
    assert sorted(train + test) == list(range(50))
    assert brax_tasks.split_of("ant_dir", 17) == "test"
    assert brax_tasks.split_of("ant_dir", 18) == "train"


def test_goal_features():
    np.testing.assert_allclose(brax_tasks.goal_features("cheetah_vel", jnp.asarray([[1.5]])), [[1.5]])
    np.testing.assert_allclose(brax_tasks.goal_features("ant_dir", jnp.asarray([[np.pi / 2]])), [[0.0, 1.0]],
                               atol=1e-6)


def test_unknown_names_rejected():
    with pytest.raises(ValueError, match="hopper"):
        brax_tasks.task_split("hopper")
    with pytest.raises(ValueError, match="task_index=40"):
        brax_tasks.split_of("cheetah_vel", 40)
    with pytest.raises(ValueError, match="bullet"):
        brax_tasks.make_env("cheetah_vel", backend="bullet")
    with pytest.raises(ValueError, match="episode_length=0"):
        brax_tasks.make_env("cheetah_vel", episode_length=0)


def test_shard_spec_records_collection():
    spec = brax_tasks.shard_spec("cheetah_vel", 7, "medium", 10, 0, expert_key="abc")
    assert spec.env == "brax/cheetah_vel"
    assert spec.split == "test"
    assert spec.params["noise_std"] == ppo_expert.NOISE_LEVELS["medium"]
    assert spec.params["expert"] == "abc"
    assert spec.params["backend"] == brax_tasks.DEFAULT_BACKEND
    with pytest.raises(ValueError, match="loud"):
        brax_tasks.shard_spec("cheetah_vel", 7, "loud", 10, 0, expert_key="abc")


def test_collect_task_checks_arguments_before_training(tmp_path):
    # A bad noise level or task index must fail at once, not after the expert's hour of training.
    with pytest.raises(ValueError, match="random"):
        brax_tasks.collect_task("cheetah_vel", 7, "random", 10, 0, root=str(tmp_path))
    with pytest.raises(ValueError, match="task_index=40"):
        brax_tasks.collect_task("cheetah_vel", 40, "expert", 10, 0, root=str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_cheetah_obs_excludes_goal(cheetah):
    env, reset, _ = cheetah
    slow = reset(jax.random.PRNGKey(3), jnp.asarray([0.5]))
    fast = reset(jax.random.PRNGKey(3), jnp.asarray([2.5]))
    assert env.obs_size == 17
    assert env.action_size == 6
    assert slow.obs.shape == (17,)
    np.testing.assert_array_equal(slow.obs, fast.obs)
    assert float(fast.info["goal"][0]) == 2.5


def test_cheetah_reward_by_hand(cheetah):
    env, reset, step = cheetah
    goal = 1.2
    state = reset(jax.random.PRNGKey(0), jnp.asarray([goal]))
    action = jnp.asarray([0.5, -0.3, 0.2, 0.9, -1.0, 0.1])
    next_state = step(state, action)
    velocity = (next_state.pipeline_state.x.pos[0, 0] - state.pipeline_state.x.pos[0, 0]) / env.dt
    expected = -abs(float(velocity) - goal) - 0.05 * float(jnp.sum(action**2))
    assert float(next_state.reward) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert float(next_state.metrics["x_velocity"]) == pytest.approx(float(velocity), rel=1e-5, abs=1e-6)
    assert float(next_state.done) == 0.0
    assert float(next_state.info["steps"]) == 1.0


def test_cheetah_truncates_at_episode_length(cheetah):
    env, reset, step = cheetah
    state = reset(jax.random.PRNGKey(0), jnp.asarray([1.0]))
    # A reset state whose step counter is 199, so the next step is the episode's last.
    before_last = state.replace(info={**state.info, "steps": state.info["steps"] + env.episode_length - 1})
    last = step(before_last, jnp.zeros(6))
    assert env.episode_length == 200
    assert float(last.info["steps"]) == 200.0
    assert float(last.done) == 1.0
    assert float(last.info["truncated"]) == 1.0
    assert float(last.info["terminated"]) == 0.0


@pytest.mark.slow
def test_ant_reward_and_termination():
    env = brax_tasks.make_env("ant_dir")
    reset, step = jax.jit(env.reset), jax.jit(env.step)
    theta = 2.0
    state = reset(jax.random.PRNGKey(0), jnp.asarray([theta]))
    assert env.obs_size == 27
    action = jnp.full(8, 0.3)
    next_state = step(state, action)
    velocity = (next_state.pipeline_state.x.pos[0, :2] - state.pipeline_state.x.pos[0, :2]) / env.dt
    expected = float(velocity[0] * np.cos(theta) + velocity[1] * np.sin(theta)) - 0.5 * float(
        jnp.sum(action**2)) + 1.0
    assert float(next_state.reward) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    # Lift the torso above the 1.0 m healthy range: the step must terminate, not truncate.
    system = env.brax_env.sys
    lifted = env.brax_env.pipeline_init(system.init_q.at[2].set(2.0), jnp.zeros(system.qd_size()))
    fallen = step(next_state.replace(pipeline_state=lifted), jnp.zeros(8))
    assert float(fallen.info["terminated"]) == 1.0
    assert float(fallen.info["truncated"]) == 0.0
    assert float(fallen.done) == 1.0
