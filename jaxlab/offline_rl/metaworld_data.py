"""Meta-World ML1 offline meta-RL data: goal tasks, splits, scripted-expert shards and a batched environment.

Goal tasks. For a task name such as "reach-v3", `metaworld.ML1(task_name, seed=ML1_SEED)` draws 50 train
goal tasks. They are our goal tasks 0..49 in ML1's order, and ML1's separate test goals are not used. Each
goal task fixes the object's initial position and the goal position. Tasks `TEST_TASK_INDICES` are held
out and the other 45 are the train split. The goals are independent draws, so any fixed five form an
unbiased held-out sample; the split is the same for every task name.

Goal observability. ML1 tasks carry `partially_observable=True`, which makes metaworld 3.1.1's
`SawyerXYZEnv._get_obs` write zeros in place of the goal. Each task is re-encoded with
`partially_observable=False` before `env.set_task`. Then `set_task` recomputes the observation space and
the goal position appears in the observation, where the scripted policies read it. The
observation has 39 floats: hand position (0:3), gripper opening (3), object positions and quaternions
padded to 14 (4:18), the same 18 values of the previous step (18:36) and the goal position (36:39).

Initial states. Within one goal task every reset starts from the same state: metaworld 3.1.1 resets
MuJoCo's data, then places the hand, the object and the goal deterministically from the task's frozen
random vector, and draws no random numbers. Episodes of one shard therefore differ only through the action
noise. That noise is drawn per episode from a NumPy generator seeded by (seed, task name, goal task,
noise level, episode index), so every episode is reproducible on its own and a shard does not depend on
how many environments collect it in parallel.

Actions. The scripted policy of `metaworld.policies.ENV_POLICY_MAP` gives an action that is clipped to the
action space [-1, 1]^4; Gaussian noise of the level's standard deviation (`NOISE_LEVELS`) is added and the
sum is clipped again. The level "random" has an infinite standard deviation and means actions drawn
uniformly from the action space, ignoring the policy. Clipped Gaussian noise with a very large deviation
would put almost all actions on the corners of the box, whereas uniform actions are the usual
random-policy baseline (as in D4RL). Shards store the clipped actions as sent to the environment.

Episodes last `MAX_EPISODE_STEPS` = 500 steps, Meta-World's horizon: `timeouts` is True at the last step and
`terminals` is always False, because Meta-World has no failure termination. `successes` holds
`info["success"]` of every step, and a shard's `goal` is the goal position (the observation's last three
entries).
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import math
import pickle
import time
import warnings
import zlib
from typing import Any

import metaworld
import metaworld.env_dict
import metaworld.policies
import numpy as np
from metaworld.types import Task

from jaxlab.offline_rl import dataset

ENV_PREFIX = "metaworld/"
COLLECTOR = "scripted"
NUM_GOAL_TASKS = 50
TEST_TASK_INDICES = (5, 15, 25, 35, 45)
MAX_EPISODE_STEPS = 500
# Seed of `metaworld.ML1`, which draws the 50 goals. It is fixed, so that goal task i is the same goal for
# every collection seed and every noise level.
ML1_SEED = 0
OBS_DIM = 39
ACT_DIM = 4
GOAL_SLICE = slice(36, 39)

# Gaussian action-noise standard deviation per level, in action units (the action space is [-1, 1]^4).
# "random" (infinite) draws actions uniformly from the action space instead.
NOISE_LEVELS: dict[str, float] = {
    "expert": 0.1,
    "medium": 0.5,
    "noisy": 1.0,
    "random": math.inf,
}

# The maximum number of environments per collection batch. More give no speed-up, because the
# environments step one after the other in Python.
MAX_COLLECT_ENVS = 10

# metaworld.policies.policy.move warns whenever a proportional response exceeds 1, which happens on most
# steps of most policies. The action is clipped to [-1, 1] anyway.
_POLICY_WARNING = r"Constant\(s\) may be too high"


def task_names() -> tuple[str, ...]:
    """Return the Meta-World v3 task names that have both an environment and a scripted policy."""
    policies = metaworld.policies.ENV_POLICY_MAP
    return tuple(sorted(name for name in metaworld.env_dict.ALL_V3_ENVIRONMENTS if name in policies))


def check_task_name(task_name: str) -> None:
    """Raise ValueError unless `task_name` has a Meta-World v3 environment and a scripted policy."""
    names = task_names()
    if task_name in names:
        return
    close = difflib.get_close_matches(str(task_name), names, n=5, cutoff=0.5)
    hint = f"close names: {', '.join(close)}" if close else f"known names: {', '.join(names)}"
    raise ValueError(f"Meta-World task {task_name!r} has no v3 environment with a scripted policy in "
                     f"metaworld {_version('metaworld')}; {hint}.")


def check_noise(noise: str) -> None:
    """Raise ValueError unless `noise` names a level of `NOISE_LEVELS`."""
    if noise not in NOISE_LEVELS:
        raise ValueError(f"invalid noise level {noise!r}; use one of {', '.join(NOISE_LEVELS)}.")


def check_task_index(task_index: int) -> None:
    """Raise ValueError unless `task_index` is an int in [0, NUM_GOAL_TASKS)."""
    if isinstance(task_index, bool) or not isinstance(task_index, (int, np.integer)) or not (
            0 <= task_index < NUM_GOAL_TASKS):
        raise ValueError(f"invalid task_index={task_index!r}; use a goal task index, an int in [0, {NUM_GOAL_TASKS}).")


def task_split(task_name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return (train indices, test indices) of the 50 goal tasks of `task_name`: 45 and 5."""
    check_task_name(task_name)
    train = tuple(i for i in range(NUM_GOAL_TASKS) if i not in TEST_TASK_INDICES)
    return train, TEST_TASK_INDICES


def split_of(task_index: int) -> str:
    """Return "test" for a held-out goal task and "train" otherwise."""
    check_task_index(task_index)
    return "test" if task_index in TEST_TASK_INDICES else "train"


def _version(package: str) -> str:
    return importlib.metadata.version(package)


@functools.cache
def _goal_tasks(task_name: str) -> tuple[Task, ...]:
    """Return ML1's 50 train tasks of `task_name`, re-encoded with the goal in the observation.

    Cached because `metaworld.ML1` takes about a second (it resets an environment 100 times).
    """
    check_task_name(task_name)
    tasks = []
    for task in metaworld.ML1(task_name, seed=ML1_SEED).train_tasks:
        data = pickle.loads(task.data)
        data["partially_observable"] = False
        tasks.append(Task(env_name=task.env_name, data=pickle.dumps(data)))
    if len(tasks) != NUM_GOAL_TASKS:
        raise RuntimeError(f"metaworld.ML1({task_name!r}) returned {len(tasks)} train tasks, but this module "
                           f"assumes {NUM_GOAL_TASKS}; check the installed metaworld version.")
    return tuple(tasks)


class ScriptedPolicy:
    """Meta-World's scripted policy for one task name, applied row by row to a batch of observations."""

    def __init__(self, task_name: str):
        check_task_name(task_name)
        self.task_name = task_name
        self._policy = metaworld.policies.ENV_POLICY_MAP[task_name]()

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        """Return the actions [n, ACT_DIM] float32 for observations [n, OBS_DIM], clipped to [-1, 1]."""
        observations = np.asarray(observations, np.float64)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_POLICY_WARNING)
            actions = [self._policy.get_action(row) for row in observations]
        return np.clip(np.asarray(actions, np.float32).reshape(len(observations), ACT_DIM), -1.0, 1.0)


class VectorEnv:
    """A batch of goal-observable Meta-World environments on one goal task, stepped in lockstep.

    The environments step one after the other in Python. The batch lets the policy side (a scripted
    policy, a Decision Transformer) act on all observations at once. All environments are
    reset together, and `step` returns `dones` True for all of them at step `max_episode_steps`; step
    again only after `reset()`.

    Args:
        task_name: a Meta-World v3 task name with a scripted policy, e.g. "reach-v3".
        task_index: the goal task, in [0, 50).
        num_envs: the batch size n.
        seed: seeds environment i's generators with `seed + i`. Resets of metaworld 3.1.1 draw no random
            numbers once the goal task is set, so episodes that take the same actions repeat exactly.
        max_episode_steps: the episode length; 500 (Meta-World's horizon) unless shortened for tests.
    """

    def __init__(self, task_name: str, task_index: int, num_envs: int, seed: int, *,
                 max_episode_steps: int = MAX_EPISODE_STEPS):
        check_task_name(task_name)
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} must be an int >= 1.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed={seed!r} must be an int >= 0.")
        if (isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int)
                or not 1 <= max_episode_steps <= MAX_EPISODE_STEPS):
            raise ValueError(f"max_episode_steps={max_episode_steps!r} must be an int in [1, {MAX_EPISODE_STEPS}].")
        self.task_name = task_name
        self.num_envs = num_envs
        self.obs_dim = OBS_DIM
        self.act_dim = ACT_DIM
        self.max_episode_steps = max_episode_steps
        env_class = metaworld.env_dict.ALL_V3_ENVIRONMENTS[task_name]
        self._envs = []
        for i in range(num_envs):
            env = env_class()
            # An instance attribute: the env truncates at this step and rejects steps after it.
            env.max_path_length = max_episode_steps
            env.seed(seed + i)
            self._envs.append(env)
        self._steps: int | None = None
        self.set_task(task_index)

    def set_task(self, task_index: int) -> None:
        """Switch every environment to goal task `task_index`; call `reset()` before stepping."""
        check_task_index(task_index)
        task = _goal_tasks(self.task_name)[task_index]
        for env in self._envs:
            env.set_task(task)
        self.task_index = int(task_index)
        first_obs, _ = self._envs[0].reset()
        self.goal = np.asarray(first_obs[GOAL_SLICE], np.float32)
        self._steps = None

    def reset(self) -> np.ndarray:
        """Reset all environments and return the observations [n, obs_dim] float32."""
        observations = np.stack([env.reset()[0] for env in self._envs]).astype(np.float32)
        self._steps = 0
        return observations

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Apply actions [n, act_dim] (clipped to [-1, 1]) and return (obs, rewards, dones, successes).

        Returns observations [n, obs_dim] float32, rewards [n] float32, dones [n] bool (True at the last
        step of the episode, a time limit) and successes [n] bool (`info["success"]` of this step).
        """
        if self._steps is None:
            raise RuntimeError("VectorEnv.step was called before reset(); call reset() first.")
        if self._steps >= self.max_episode_steps:
            raise RuntimeError(f"the episode ended after {self.max_episode_steps} steps; call reset() before "
                               "stepping again.")
        actions = np.asarray(actions, np.float32)
        if actions.shape != (self.num_envs, self.act_dim):
            raise ValueError(f"actions have shape {actions.shape}; expected ({self.num_envs}, {self.act_dim}).")
        if not np.all(np.isfinite(actions)):
            raise ValueError("actions contain NaN or inf; check the policy's output.")
        actions = np.clip(actions, -1.0, 1.0)

        observations = np.empty((self.num_envs, self.obs_dim), np.float32)
        rewards = np.empty(self.num_envs, np.float32)
        dones = np.empty(self.num_envs, bool)
        successes = np.empty(self.num_envs, bool)
        for i, env in enumerate(self._envs):
            obs, reward, terminated, truncated, info = env.step(actions[i])
            observations[i] = obs
            rewards[i] = reward
            dones[i] = terminated or truncated
            successes[i] = bool(info["success"])
        self._steps += 1
        return observations, rewards, dones, successes


def shard_spec(task_name: str, task_index: int, noise: str, episodes: int, seed: int, *,
               episode_steps: int = MAX_EPISODE_STEPS) -> dataset.ShardSpec:
    """Return the identity of the shard of `episodes` scripted episodes on one goal task and noise level.

    The parameters record the noise, the episode length, the ML1 seed and the metaworld and MuJoCo
    versions, because each of them changes the data.
    """
    check_task_name(task_name)
    check_task_index(task_index)
    check_noise(noise)
    std = NOISE_LEVELS[noise]
    params: dict[str, Any] = {"action_noise": "uniform"} if math.isinf(std) else {
        "action_noise": "gaussian", "noise_std": std}
    params.update({"episode_steps": episode_steps, "ml1_seed": ML1_SEED, "observation": "goal_observable",
                   "metaworld": _version("metaworld"), "mujoco": _version("mujoco")})
    return dataset.ShardSpec(env=ENV_PREFIX + task_name, task_index=int(task_index), split=split_of(task_index),
                             collector=COLLECTOR, noise=noise, episodes=episodes, seed=seed, params=params)


def episode_rng(task_name: str, task_index: int, noise: str, seed: int, episode: int) -> np.random.Generator:
    """Return the generator of one episode's action noise (CRC32 of the names keeps it stable across runs)."""
    return np.random.default_rng([seed, zlib.crc32(task_name.encode()), task_index,
                                  zlib.crc32(noise.encode()), episode])


def _noise_table(task_name: str, task_index: int, noise: str, seed: int, episodes: range,
                 steps: int) -> np.ndarray:
    """Draw the action noise (Gaussian) or the actions themselves ("random") [len(episodes), steps, ACT_DIM]."""
    std = NOISE_LEVELS[noise]
    table = np.empty((len(episodes), steps, ACT_DIM), np.float32)
    for row, episode in enumerate(episodes):
        rng = episode_rng(task_name, task_index, noise, seed, episode)
        if math.isinf(std):
            table[row] = rng.uniform(-1.0, 1.0, (steps, ACT_DIM))
        else:
            table[row] = std * rng.standard_normal((steps, ACT_DIM))
    return table


def collect_episodes(vector_env: VectorEnv, noise: str, episodes: int, seed: int) -> dict[str, np.ndarray]:
    """Run `episodes` scripted episodes on `vector_env`'s goal task and return them as shard arrays.

    Episodes run in batches of `vector_env.num_envs`; surplus environments of the last batch step too and
    are discarded. Each episode's noise comes from `episode_rng`, so the result does not depend on the batch
    size.
    """
    check_noise(noise)
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes={episodes!r} must be an int >= 1.")
    task_name, task_index = vector_env.task_name, vector_env.task_index
    uniform = math.isinf(NOISE_LEVELS[noise])
    policy = None if uniform else ScriptedPolicy(task_name)
    steps, width = vector_env.max_episode_steps, vector_env.num_envs

    observations = np.zeros((episodes, steps, OBS_DIM), np.float32)
    actions = np.zeros((episodes, steps, ACT_DIM), np.float32)
    rewards = np.zeros((episodes, steps), np.float32)
    successes = np.zeros((episodes, steps), bool)
    for start in range(0, episodes, width):
        stop = min(start + width, episodes)
        count, batch = stop - start, slice(start, stop)
        noise_table = np.zeros((width, steps, ACT_DIM), np.float32)
        noise_table[:count] = _noise_table(task_name, task_index, noise, seed, range(start, stop), steps)
        obs = vector_env.reset()
        for t in range(steps):
            if uniform:
                action = noise_table[:, t]
            else:
                action = np.clip(policy(obs) + noise_table[:, t], -1.0, 1.0)
            observations[batch, t] = obs[:count]
            actions[batch, t] = action[:count]
            obs, reward, _, success = vector_env.step(action)
            rewards[batch, t] = reward[:count]
            successes[batch, t] = success[:count]

    lengths = np.full(episodes, steps, np.int32)
    timeouts = np.zeros((episodes, steps), bool)
    timeouts[:, -1] = True
    return {
        "observations": observations,
        "actions": actions,
        "rewards": rewards,
        "terminals": np.zeros((episodes, steps), bool),
        "timeouts": timeouts,
        "returns_to_go": dataset.returns_to_go(rewards, lengths),
        "successes": successes,
        "lengths": lengths,
        "goal": vector_env.goal.copy(),
    }


def collect_task(task_name: str, task_index: int, noise: str, episodes: int, seed: int,
                 root: str | None = None, *, episode_steps: int = MAX_EPISODE_STEPS,
                 vector_env: VectorEnv | None = None) -> dict[str, np.ndarray]:
    """Return the shard of one goal task and noise level, collecting and caching it first if absent.

    Args:
        task_name: a Meta-World v3 task name with a scripted policy, e.g. "pick-place-v3".
        task_index: the goal task, in [0, 50).
        noise: a key of `NOISE_LEVELS`.
        episodes: episodes in the shard.
        seed: the collection seed (the action noise); the goals do not depend on it.
        root: the cache root; `$JAXLAB_DATA` (or ~/.cache/jaxlab) when None.
        episode_steps: the episode length; shorter than 500 only in tests.
        vector_env: environments of `task_name` to reuse (switched to `task_index` in place) instead of
            building new ones, which saves about 0.1 s per environment per shard.
    """
    spec = shard_spec(task_name, task_index, noise, episodes, seed, episode_steps=episode_steps)
    if vector_env is not None and (vector_env.task_name != task_name
                                   or vector_env.max_episode_steps != episode_steps):
        raise ValueError(f"vector_env runs {vector_env.task_name!r} for {vector_env.max_episode_steps} steps, "
                         f"but the shard asks for {task_name!r} and {episode_steps} steps.")

    def generate() -> dict[str, np.ndarray]:
        env = vector_env
        if env is None:
            env = VectorEnv(task_name, task_index, collect_width(episodes), seed, max_episode_steps=episode_steps)
        elif env.task_index != task_index:
            env.set_task(task_index)
        return collect_episodes(env, noise, episodes, seed)

    return dataset.save_shard(spec, generate, root)


def collect_goal_task(task_name: str, task_index: int, noises: tuple[str, ...], episodes: int, seed: int,
                      root: str | None = None, *, episode_steps: int = MAX_EPISODE_STEPS) -> list[tuple[str, float]]:
    """Collect the shards of one goal task, one per noise level, with one `VectorEnv`.

    A process-pool worker of the collection experiment; it imports no JAX. Returns (noise level, seconds)
    per shard, where the seconds include reading shards that were already cached.
    """
    vector_env = VectorEnv(task_name, task_index, collect_width(episodes), seed, max_episode_steps=episode_steps)
    timings = []
    for noise in noises:
        start = time.perf_counter()
        collect_task(task_name, task_index, noise, episodes, seed, root, episode_steps=episode_steps,
                     vector_env=vector_env)
        timings.append((noise, time.perf_counter() - start))
    return timings


def collect_width(episodes: int) -> int:
    """Return the batch size that splits `episodes` into equal batches of at most MAX_COLLECT_ENVS."""
    batches = -(-episodes // MAX_COLLECT_ENVS)
    return -(-episodes // batches)
