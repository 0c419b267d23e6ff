"""Cheetah-vel and Ant-dir, the brax meta-RL task families of Prompt-DT (Xu et al., 2022).

Both follow the MAML task definitions (Finn et al., 2017) on brax's `halfcheetah`
and `ant` systems, with 200-step episodes:

- `cheetah_vel`: 40 target forward velocities `linspace(0.075, 3, 40)` (m/s).
  Reward `-|v_x - v_goal| - 0.05 ||a||^2`, where `v_x` is the torso's forward
  velocity over one control step. The cheetah never terminates, so every
  episode ends by truncation at step 200.
- `ant_dir`: 50 directions `theta ~ U[0, 2 pi)` drawn from a fixed seed. Reward
  `v_xy . (cos theta, sin theta) - 0.5 ||a||^2 + 1`. The contact cost of the
  MuJoCo version (`5e-4 ||clip(cfrc_ext, -1, 1)||^2`) is dropped because
  brax's `ant` computes no contact forces. Like brax's `ant` (and gym's), an
  episode terminates when the torso height leaves [0.2, 1.0] m. The +1
  survival reward is paid on every step, the terminal one included.

The observation is brax's, without the goal: 17 numbers for the cheetah and 27
for the ant. The goal lives in `state.info["goal"]`, so a policy that must
know the task reads it from there (the PPO expert) or infers it from a prompt
(Prompt-DT).

Backend: brax offers four physics pipelines. On 2 shared CPU cores, a jitted
50-step scan of 128 vmapped environments with random actions ran at about
8,600 (`halfcheetah`) and 16,700 (`ant`) steps/s with `spring`, against
3,200 and 5,300 with `generalized`; `positional` and `mjx` were slower still
on `halfcheetah` (brax 0.12.3, jax 0.10.2; docs/offline_rl_brax.md has the
tables). The tasks therefore default to `spring`. Its physics differs from
MuJoCo's, so returns are not comparable with numbers reported on the
mujoco-py versions of these tasks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.offline_rl import dataset

TASK_NAMES = ("cheetah_vel", "ant_dir")
BACKENDS = ("spring", "generalized", "positional", "mjx")
DEFAULT_BACKEND = "spring"
EPISODE_LENGTH = 200
ENV_PREFIX = "brax/"

_CHEETAH_CTRL_COST = 0.05
_ANT_CTRL_COST = 0.5
_ANT_SURVIVE_REWARD = 1.0
_ANT_DIRECTION_SEED = 1337
_TEST_TASKS = {"cheetah_vel": (2, 7, 15, 23, 26), "ant_dir": (6, 17, 23, 30, 41)}
_NUM_TASKS = {"cheetah_vel": 40, "ant_dir": 50}
_BRAX_ENV = {"cheetah_vel": "halfcheetah", "ant_dir": "ant"}


def check_name(name: str) -> str:
    """Return `name`, or raise ValueError naming the task families."""
    if name not in TASK_NAMES:
        raise ValueError(f"Unknown brax task family {name!r}; use one of {list(TASK_NAMES)}.")
    return name


def check_noise(noise: str) -> str:
    """Return `noise`, or raise ValueError naming the PPO expert's noise levels."""
    from jaxlab.offline_rl import ppo_expert  # ppo_expert imports this module.

    if noise not in ppo_expert.NOISE_LEVELS:
        raise ValueError(f"Unknown noise level {noise!r}; use one of {sorted(ppo_expert.NOISE_LEVELS)}.")
    return noise


def num_tasks(name: str) -> int:
    return _NUM_TASKS[check_name(name)]


def task_split(name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return (train task indices, test task indices) of the Prompt-DT split."""
    test = _TEST_TASKS[check_name(name)]
    train = tuple(index for index in range(num_tasks(name)) if index not in test)
    return train, test


def split_of(name: str, task_index: int) -> str:
    """Return "train" or "test" for one task index."""
    check_task_index(name, task_index)
    return "test" if task_index in _TEST_TASKS[name] else "train"


def check_task_index(name: str, task_index: int) -> int:
    count = num_tasks(name)
    if isinstance(task_index, bool) or not isinstance(task_index, (int, np.integer)) or not 0 <= task_index < count:
        raise ValueError(f"task_index={task_index!r} is invalid for {name}; use an int in [0, {count - 1}].")
    return int(task_index)


def goals(name: str) -> np.ndarray:
    """Return the task parameters, float32 [num_tasks, goal_dim].

    cheetah_vel: [40, 1] target velocities in m/s. ant_dir: [50, 1] direction
    angles in radians, measured from the +x axis towards +y.
    """
    if check_name(name) == "cheetah_vel":
        values = np.linspace(0.075, 3.0, _NUM_TASKS[name])
    else:
        values = np.random.default_rng(_ANT_DIRECTION_SEED).uniform(0.0, 2.0 * np.pi, _NUM_TASKS[name])
    return values.astype(np.float32)[:, None]


def goal_features(name: str, goal: jax.Array) -> jax.Array:
    """Map goals [..., 1] to the policy's goal input: the velocity itself, or (cos theta, sin theta)."""
    if check_name(name) == "cheetah_vel":
        return goal
    return jnp.concatenate([jnp.cos(goal), jnp.sin(goal)], axis=-1)


@dataclasses.dataclass(frozen=True)
class TaskEnv:
    """A brax environment with a task goal, as pure functions that jit and vmap.

    `reset(key, goal)` and `step(state, action)` return a `brax.envs.base.State`
    whose `obs` excludes the goal. `state.info` carries `goal` [goal_dim],
    `steps` (the step count, float32), `terminated` and `truncated` (float32
    flags of the last step). `state.done` is 1.0 when the episode has ended by
    either cause. `state.metrics["x_velocity"]` (and `y_velocity` for the ant)
    are the torso velocities the reward used. Stepping past `done` is not
    meaningful; callers reset.

    Attributes:
        name: "cheetah_vel" or "ant_dir".
        backend: the brax physics pipeline.
        episode_length: steps after which an episode is truncated.
    """

    name: str
    backend: str = DEFAULT_BACKEND
    episode_length: int = EPISODE_LENGTH
    brax_env: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def obs_size(self) -> int:
        return int(self.brax_env.observation_size)

    @property
    def action_size(self) -> int:
        return int(self.brax_env.action_size)

    @property
    def goal_size(self) -> int:
        return 1

    @property
    def dt(self) -> float:
        """Seconds of simulated time per control step."""
        return float(self.brax_env.dt)

    def reset(self, key: jax.Array, goal: jax.Array):
        state = self.brax_env.reset(key)
        zero = jnp.zeros((), jnp.float32)
        info = dict(state.info)
        info.update(goal=jnp.asarray(goal, jnp.float32).reshape(1), steps=zero, terminated=zero,
                    truncated=zero)
        metrics = {"x_velocity": zero, "y_velocity": zero}
        return state.replace(reward=zero, done=zero, info=info, metrics=metrics)

    def step(self, state, action: jax.Array):
        previous = state.pipeline_state
        next_state = self.brax_env.step(state, action)
        torso_velocity = (next_state.pipeline_state.x.pos[0] - previous.x.pos[0]) / self.dt
        goal = state.info["goal"]
        ctrl = jnp.sum(jnp.square(action))
        if self.name == "cheetah_vel":
            reward = -jnp.abs(torso_velocity[0] - goal[0]) - _CHEETAH_CTRL_COST * ctrl
            terminated = jnp.zeros((), jnp.float32)
        else:
            direction = jnp.stack([jnp.cos(goal[0]), jnp.sin(goal[0])])
            reward = jnp.dot(torso_velocity[:2], direction) - _ANT_CTRL_COST * ctrl + _ANT_SURVIVE_REWARD
            # brax's ant sets done = 1 - is_healthy (torso height outside [0.2, 1.0] m).
            terminated = jnp.asarray(next_state.done, jnp.float32)
        steps = state.info["steps"] + 1.0
        truncated = jnp.where((steps >= self.episode_length) & (terminated == 0.0), 1.0, 0.0)
        info = dict(next_state.info)
        info.update(goal=goal, steps=steps, terminated=terminated, truncated=truncated)
        metrics = {"x_velocity": torso_velocity[0], "y_velocity": torso_velocity[1]}
        return next_state.replace(reward=reward.astype(jnp.float32), done=jnp.maximum(terminated, truncated),
                                  info=info, metrics=metrics)


def make_env(name: str, backend: str = DEFAULT_BACKEND, episode_length: int = EPISODE_LENGTH) -> TaskEnv:
    """Build the task environment of family `name` on a brax physics `backend`."""
    from brax import envs  # Imported here so that reading goals and splits does not load brax.

    check_name(name)
    if backend not in BACKENDS:
        raise ValueError(f"Unknown brax backend {backend!r}; use one of {list(BACKENDS)}.")
    if isinstance(episode_length, bool) or not isinstance(episode_length, int) or episode_length < 1:
        raise ValueError(f"episode_length={episode_length!r} must be an int >= 1.")
    brax_env = envs.get_environment(_BRAX_ENV[name], backend=backend)
    return TaskEnv(name=name, backend=backend, episode_length=episode_length, brax_env=brax_env)


def env_id(name: str) -> str:
    """Return the dataset environment name, e.g. "brax/cheetah_vel"."""
    return ENV_PREFIX + check_name(name)


def shard_spec(name: str, task_index: int, noise: str, episodes: int, seed: int,
               expert_key: str | None = None, backend: str = DEFAULT_BACKEND) -> dataset.ShardSpec:
    """Return the identity of one task's shard collected by the PPO expert.

    Args:
        name: task family.
        task_index: index into `goals(name)`.
        noise: a key of `ppo_expert.NOISE_LEVELS`.
        episodes: episodes in the shard.
        seed: collection seed.
        expert_key: the cache key of the expert parameters; None uses the
            expert of `ppo_expert.expert_config(name)`.
        backend: the brax physics pipeline.
    """
    from jaxlab.offline_rl import ppo_expert  # ppo_expert imports this module.

    check_task_index(name, task_index)
    check_noise(noise)
    if expert_key is None:
        expert_key = ppo_expert.expert_artifact(ppo_expert.expert_config(name)).key
    params = {"backend": backend, "episode_length": EPISODE_LENGTH, "noise_std": ppo_expert.NOISE_LEVELS[noise],
              "expert": expert_key}
    return dataset.ShardSpec(env=env_id(name), task_index=int(task_index), split=split_of(name, task_index),
                             collector="ppo_expert", noise=noise, episodes=episodes, seed=seed, params=params)


def collect_task(name: str, task_index: int, noise: str, episodes: int, seed: int, root: str | None = None,
                 expert=None) -> dict[str, np.ndarray]:
    """Return one task's shard, collecting it with the PPO expert unless it is cached.

    Args:
        name, task_index, noise, episodes, seed: as in `shard_spec`.
        root: the cache root for the shard and the expert; `$JAXLAB_DATA` when None.
        expert: a `ppo_expert.Expert`; None trains or loads the expert of
            `ppo_expert.expert_config(name)` (a long run when it is not cached).
    """
    from jaxlab.offline_rl import ppo_expert  # ppo_expert imports this module.

    # Check the arguments first: training the expert can take an hour.
    check_task_index(name, task_index)
    check_noise(noise)
    if expert is None:
        expert = ppo_expert.load_or_train_expert(ppo_expert.expert_config(name), root=root)
    spec = shard_spec(name, task_index, noise, episodes, seed, expert_key=expert.key, backend=expert.env.backend)
    goal = goals(name)[task_index]
    key = jax.random.fold_in(jax.random.PRNGKey(seed), task_index)
    return dataset.save_shard(
        spec, lambda: ppo_expert.collect_episodes(expert, goal, ppo_expert.NOISE_LEVELS[noise], episodes, key),
        root)
