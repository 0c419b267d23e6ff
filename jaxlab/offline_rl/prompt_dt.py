"""Prompt-DT: batching, training, evaluation rollouts and the `prompt_dt` experiment.

Training follows Xu et al. 2022 ("Prompting Decision Transformer for Few-Shot
Policy Generalization") and their code (mxu34/prompt-dt). Each step draws, for
each of `tasks_per_batch` training tasks, `batch_size_per_task` segments of K
steps from that task's training shard and as many prompts from that task's
expert prompt shard. A segment picks an episode with probability proportional
to its length and a start step uniformly within it, and is left-padded when it
runs past the episode's end. A prompt is the stretch of `prompt_length` steps
that ends one step before the end of a random prompt episode, as in the
authors' `get_prompt`. The loss is the action MSE on valid steps; the optimizer
is AdamW with a linear warmup and global-norm clipping.

Evaluation rolls the policy out in the real environment on the held-out tasks,
prompted with a segment of that task's own expert prompt shard. Meta-World runs
through `metaworld_data.VectorEnv` (one jitted policy call per step for all
episodes); brax runs fully jitted (`lax.scan` over the episode with the
episodes vmapped).

States are normalized with the mean and standard deviation over all training
tasks (the authors' `average_state_mean`). With `data.hide_goal`, the goal
coordinates of a goal-observable observation are set to zero after
normalization, so the model has to infer the task from the prompt.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxlab.core import checkpoint as checkpoint_lib
from jaxlab.core import config as config_lib
from jaxlab.core import metrics as metrics_lib
from jaxlab.core import progress as progress_lib
from jaxlab.offline_rl import decision_transformer as dt

# Environment family (the part of `env` before "/") -> module with task_split (ValueError for an unknown
# task), check_noise (ValueError for an unknown noise level), collect_task and either VectorEnv (batched NumPy environments) or make_env and goals (a jittable environment).
SUITES = {
    "metaworld": "jaxlab.offline_rl.metaworld_data",
    "brax": "jaxlab.offline_rl.brax_tasks",
}

# Families whose observations contain the goal; their module's GOAL_SLICE locates it (Meta-World:
# obs[36:39], the goal position). Brax observations carry no goal.
GOAL_OBSERVABLE = ("metaworld",)

STD_FLOOR = 1e-6  # Added to state standard deviations, as in the Prompt-DT code.


# ----------------------------------------------------------------------------------------------------
# Data: per-task arrays stacked for sampling inside jit.


class TaskArrays(NamedTuple):
    """Episodes of N tasks padded to a common [N, E, T] layout.

    Attributes:
        observations: [N, E, T, obs_dim] normalized states (goal hidden when requested).
        actions: [N, E, T, act_dim].
        returns_to_go: [N, E, T], divided by the return scale.
        lengths: [N, E] int32 valid steps per episode; 0 marks an episode added as padding.
    """

    observations: jax.Array
    actions: jax.Array
    returns_to_go: jax.Array
    lengths: jax.Array


class Normalizer(NamedTuple):
    """State mean and standard deviation [obs_dim], and the dimensions zeroed after normalizing."""

    mean: np.ndarray
    std: np.ndarray
    hidden_dims: np.ndarray  # bool [obs_dim]

    def __call__(self, observations):
        normalized = (observations - self.mean) / self.std
        return normalized * (1.0 - self.hidden_dims.astype(np.float32))


def fit_normalizer(shards: list[dict[str, np.ndarray]], hidden: slice | None = None) -> Normalizer:
    """Compute state statistics over the valid steps of all shards; `hidden` selects dimensions to zero."""
    states = np.concatenate([shard["observations"][np.arange(shard["observations"].shape[1])[None, :]
                                                   < shard["lengths"][:, None]] for shard in shards])
    obs_dim = states.shape[-1]
    hidden_dims = np.zeros(obs_dim, bool)
    if hidden is not None:
        hidden_dims[hidden] = True
    return Normalizer(mean=states.mean(0).astype(np.float32),
                      std=(states.std(0) + STD_FLOOR).astype(np.float32), hidden_dims=hidden_dims)


def stack_tasks(shards: list[dict[str, np.ndarray]], normalizer: Normalizer, return_scale: float) -> TaskArrays:
    """Pad each shard to the largest episode count and length, normalize states and scale returns."""
    episodes = max(shard["lengths"].shape[0] for shard in shards)
    horizon = max(shard["rewards"].shape[1] for shard in shards)
    obs_dim = shards[0]["observations"].shape[-1]
    act_dim = shards[0]["actions"].shape[-1]
    count = len(shards)
    observations = np.zeros((count, episodes, horizon, obs_dim), np.float32)
    actions = np.zeros((count, episodes, horizon, act_dim), np.float32)
    returns_to_go = np.zeros((count, episodes, horizon), np.float32)
    lengths = np.zeros((count, episodes), np.int32)
    for index, shard in enumerate(shards):
        shard_episodes, shard_horizon = shard["rewards"].shape
        valid = np.arange(shard_horizon)[None, :] < shard["lengths"][:, None]
        observations[index, :shard_episodes, :shard_horizon] = np.where(
            valid[..., None], normalizer(shard["observations"]), 0.0)
        actions[index, :shard_episodes, :shard_horizon] = shard["actions"]
        returns_to_go[index, :shard_episodes, :shard_horizon] = shard["returns_to_go"] / return_scale
        lengths[index, :shard_episodes] = shard["lengths"]
    return TaskArrays(jnp.asarray(observations), jnp.asarray(actions), jnp.asarray(returns_to_go),
                      jnp.asarray(lengths))


def _take(observations, actions, returns_to_go, start, valid_steps, length: int) -> dt.Segment:
    """Cut `valid_steps` steps from `start` of one episode [T, ...] and left-pad them to `length` steps."""
    horizon = returns_to_go.shape[0]
    positions = jnp.arange(length)
    offset = length - valid_steps
    mask = positions >= offset
    source = jnp.clip(start + positions - offset, 0, horizon - 1)
    return dt.Segment(observations=jnp.where(mask[:, None], observations[source], 0.0),
                      actions=jnp.where(mask[:, None], actions[source], 0.0),
                      returns_to_go=jnp.where(mask, returns_to_go[source], 0.0),
                      timesteps=jnp.where(mask, start + positions - offset, 0).astype(jnp.int32),
                      mask=mask)


def sample_segments(task: TaskArrays, key: jax.Array, batch: int, length: int) -> dt.Segment:
    """Draw `batch` training segments of one task ([E, T] arrays) as Prompt-DT's `get_batch` does.

    The episode is drawn with probability proportional to its length, the start uniformly in
    [0, length_e - 1]; segments shorter than `length` are left-padded.
    """
    episode_key, start_key = jax.random.split(key)
    lengths = task.lengths.astype(jnp.float32)
    episodes = jax.random.categorical(episode_key, jnp.log(lengths), shape=(batch,))
    episode_lengths = task.lengths[episodes]
    starts = jnp.floor(jax.random.uniform(start_key, (batch,)) * episode_lengths).astype(jnp.int32)
    valid_steps = jnp.minimum(length, episode_lengths - starts)
    return jax.vmap(lambda e, s, v: _take(task.observations[e], task.actions[e], task.returns_to_go[e], s, v,
                                          length))(episodes, starts, valid_steps)


def sample_prompts(task: TaskArrays, key: jax.Array, batch: int, length: int) -> dt.Segment:
    """Draw `batch` prompts of one task: the `length` steps ending one step before a random episode's end.

    Prompt-DT's `get_prompt` starts at max(0, length_e - length - 1); episodes are drawn uniformly.
    """
    valid_episodes = (task.lengths > 0).astype(jnp.float32)
    episodes = jax.random.categorical(key, jnp.log(valid_episodes), shape=(batch,))
    episode_lengths = task.lengths[episodes]
    starts = jnp.maximum(0, episode_lengths - length - 1)
    valid_steps = jnp.minimum(length, episode_lengths - starts)
    return jax.vmap(lambda e, s, v: _take(task.observations[e], task.actions[e], task.returns_to_go[e], s, v,
                                          length))(episodes, starts, valid_steps)


def sample_batch(data: TaskArrays, prompts: TaskArrays, key: jax.Array, tasks_per_batch: int,
                 batch_per_task: int, context_length: int, prompt_length: int) -> tuple[dt.Segment, dt.Segment]:
    """Draw segments and same-task prompts for `tasks_per_batch` tasks drawn without replacement.

    Returns segments [tasks_per_batch * batch_per_task, K] and prompts [..., prompt_length].
    """
    task_key, segment_key, prompt_key = jax.random.split(key, 3)
    num_tasks = data.lengths.shape[0]
    if tasks_per_batch == num_tasks:
        tasks = jnp.arange(num_tasks)
    else:
        tasks = jax.random.choice(task_key, num_tasks, (tasks_per_batch,), replace=False)

    def per_task(task, segment_key, prompt_key):
        task_data = jax.tree.map(lambda x: x[task], data)
        task_prompts = jax.tree.map(lambda x: x[task], prompts)
        return (sample_segments(task_data, segment_key, batch_per_task, context_length),
                sample_prompts(task_prompts, prompt_key, batch_per_task, prompt_length))

    segments, prompt_segments = jax.vmap(per_task)(tasks, jax.random.split(segment_key, tasks_per_batch),
                                                   jax.random.split(prompt_key, tasks_per_batch))
    merge = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731 - [tasks, batch, ...] -> [tasks * batch, ...]
    return jax.tree.map(merge, segments), jax.tree.map(merge, prompt_segments)


# ----------------------------------------------------------------------------------------------------
# Training.


class TrainState(NamedTuple):
    params: Any
    opt_state: Any


def make_optimizer(learning_rate: float, warmup_steps: int, weight_decay: float,
                   grad_clip: float) -> optax.GradientTransformation:
    """AdamW with Prompt-DT's warmup lr * min((step + 1) / warmup_steps, 1) after global-norm clipping."""
    schedule = lambda step: learning_rate * jnp.minimum((step + 1) / warmup_steps, 1.0)  # noqa: E731
    return optax.chain(optax.clip_by_global_norm(grad_clip),
                       optax.adamw(schedule, weight_decay=weight_decay))


def make_train_chunk(model: dt.DecisionTransformer, optimizer: optax.GradientTransformation,
                     steps_per_call: int, tasks_per_batch: int, batch_per_task: int) -> Callable:
    """Build a jitted function that runs `steps_per_call` training steps under `lax.scan`.

    The returned `chunk(state, data, prompts, key, first_step)` draws step s's batch and dropout from
    `fold_in(key, s)`, so a run resumed at any chunk boundary repeats an uninterrupted run's steps.
    It returns the new state and the [steps_per_call] losses.
    """
    config = model.config

    def loss_fn(params, segment, prompt, dropout_key):
        predicted = model.apply({"params": params}, segment, prompt if config.use_prompt else None,
                                deterministic=False, rngs={"dropout": dropout_key})
        return dt.action_loss(predicted, segment.actions, segment.mask)

    def one_step(state: TrainState, step, data, prompts, key):
        step_key = jax.random.fold_in(key, step)
        batch_key, dropout_key = jax.random.split(step_key)
        segment, prompt = sample_batch(data, prompts, batch_key, tasks_per_batch, batch_per_task,
                                       config.context_length, config.prompt_length)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, segment, prompt, dropout_key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), opt_state), loss

    @jax.jit
    def chunk(state: TrainState, data: TaskArrays, prompts: TaskArrays, key: jax.Array, first_step):
        steps = first_step + jnp.arange(steps_per_call)
        return jax.lax.scan(lambda s, step: one_step(s, step, data, prompts, key), state, steps)

    return chunk


# ----------------------------------------------------------------------------------------------------
# Evaluation rollouts.


def push_step(context: dt.Segment, observations: jax.Array, returns_to_go: jax.Array,
              timestep: jax.Array) -> dt.Segment:
    """Shift the [n, K] context left by one step and write the new state with a zero action placeholder."""
    roll = lambda x: jnp.roll(x, -1, axis=1)  # noqa: E731
    return dt.Segment(observations=roll(context.observations).at[:, -1].set(observations),
                      actions=roll(context.actions).at[:, -1].set(0.0),
                      returns_to_go=roll(context.returns_to_go).at[:, -1].set(returns_to_go),
                      timesteps=roll(context.timesteps).at[:, -1].set(timestep),
                      mask=roll(context.mask).at[:, -1].set(True))


def make_policy_step(model: dt.DecisionTransformer) -> Callable:
    """Build `policy_step(params, context, prompt, obs, rtg, t) -> (actions [n, act_dim], context)`.

    `obs` is normalized, `rtg` scaled; the action is written into the context's last step.
    """
    def policy_step(params, context, prompt, observations, returns_to_go, timestep):
        context = push_step(context, observations, returns_to_go, timestep)
        actions = model.apply({"params": params}, context, prompt if model.config.use_prompt else None)[:, -1]
        return actions, context._replace(actions=context.actions.at[:, -1].set(actions))

    return policy_step


def rollout_vector_env(model: dt.DecisionTransformer, params, env, prompt: dt.Segment, normalizer: Normalizer,
                       return_scale: float, target_return: float, max_steps: int,
                       policy_step: Callable | None = None) -> dict[str, np.ndarray]:
    """Run one episode in each of `env`'s batched environments; return per-episode returns and successes.

    `env` follows `metaworld_data.VectorEnv`: reset() -> obs [n, obs_dim]; step(actions) ->
    (obs, rewards, dones, successes). An episode counts its rewards until its first done, and succeeds if
    its success flag was set at any step until then. Pass `policy_step = jax.jit(make_policy_step(model))`
    to reuse one compiled policy across calls.
    """
    if policy_step is None:
        policy_step = jax.jit(make_policy_step(model))
    count = prompt.mask.shape[0]
    observations = np.asarray(env.reset(), np.float32)
    context = dt.empty_segment(count, model.config.context_length, model.config.obs_dim, model.config.act_dim)
    returns_to_go = np.full(count, target_return / return_scale, np.float32)
    episode_returns = np.zeros(count, np.float64)
    succeeded = np.zeros(count, bool)
    alive = np.ones(count, bool)
    for step in range(max_steps):
        actions, context = policy_step(params, context, prompt, normalizer(observations),
                                       returns_to_go, jnp.int32(step))
        observations, rewards, dones, successes = env.step(np.asarray(actions))
        observations = np.asarray(observations, np.float32)
        rewards = np.asarray(rewards, np.float64)
        episode_returns += np.where(alive, rewards, 0.0)
        succeeded |= alive & np.asarray(successes, bool)
        returns_to_go = (returns_to_go - rewards / return_scale).astype(np.float32)
        alive &= ~np.asarray(dones, bool)
        if not alive.any():
            break
    return {"returns": episode_returns, "successes": succeeded}


def make_jax_rollout(model: dt.DecisionTransformer, env, normalizer: Normalizer, return_scale: float,
                     target_return: float, max_steps: int) -> Callable:
    """Build a jitted `rollout(params, prompt, goal, key) -> returns [n]` for a jittable task environment.

    `env` follows `brax_tasks.make_env`: reset(key, goal) -> state, step(state, action) -> state, with
    state.obs, state.reward and state.done. All n episodes (one per prompt row) run under one `lax.scan`
    over `max_steps` steps with the environment vmapped; rewards count until an episode's first done.
    """
    policy_step = make_policy_step(model)
    mean, std = jnp.asarray(normalizer.mean), jnp.asarray(normalizer.std)
    keep = 1.0 - jnp.asarray(normalizer.hidden_dims, jnp.float32)
    config = model.config

    @jax.jit
    def rollout(params, prompt: dt.Segment, goal: jax.Array, key: jax.Array) -> jax.Array:
        count = prompt.mask.shape[0]
        states = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, count), goal)
        context = dt.empty_segment(count, config.context_length, config.obs_dim, config.act_dim)
        carry = (states, context, jnp.full(count, target_return / return_scale, jnp.float32),
                 jnp.zeros(count, jnp.float32), jnp.ones(count, bool))

        def body(carry, step):
            states, context, returns_to_go, episode_returns, alive = carry
            observations = (states.obs - mean) / std * keep
            actions, context = policy_step(params, context, prompt, observations, returns_to_go, step)
            states = jax.vmap(env.step)(states, actions)
            rewards = states.reward.astype(jnp.float32)
            episode_returns = episode_returns + jnp.where(alive, rewards, 0.0)
            alive = alive & ~(states.done > 0)
            return (states, context, returns_to_go - rewards / return_scale, episode_returns, alive), None

        (_, _, _, episode_returns, _), _ = jax.lax.scan(body, carry, jnp.arange(max_steps, dtype=jnp.int32))
        return episode_returns

    return rollout


def summarize_tasks(per_task: dict[int, dict[str, np.ndarray]]) -> dict[str, Any]:
    """Mean return and success rate per task and over all episodes of all tasks."""
    tasks = {}
    for index, outcome in sorted(per_task.items()):
        tasks[str(index)] = {"return_mean": float(np.mean(outcome["returns"])),
                             "return_std": float(np.std(outcome["returns"]))}
        if "successes" in outcome:
            tasks[str(index)]["success_rate"] = float(np.mean(outcome["successes"]))
    all_returns = np.concatenate([outcome["returns"] for outcome in per_task.values()])
    summary = {"tasks": tasks, "return_mean": float(np.mean(all_returns)),
               "return_stderr": float(np.std(all_returns) / np.sqrt(len(all_returns)))}
    if all("successes" in outcome for outcome in per_task.values()):
        summary["success_rate"] = float(np.mean(np.concatenate([o["successes"] for o in per_task.values()])))
    return summary


# ----------------------------------------------------------------------------------------------------
# The experiment.


def load_suite(env: str):
    """Import the data and environment module of `env` ("family/name"); return (module, name)."""
    family, _, name = env.partition("/")
    return importlib.import_module(SUITES[family]), name


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` naming the first invalid field of a `prompt_dt` config."""
    config_lib.require_int(config, "seed", min=0)
    env = config_lib.require(
        config, "env", lambda e: isinstance(e, str) and e.partition("/")[0] in SUITES and bool(e.partition("/")[2]),
        f"'<family>/<task>' with a family in {sorted(SUITES)}, e.g. 'metaworld/reach-v3' or 'brax/cheetah_vel'")
    family = env.partition("/")[0]
    # The task name and noise levels are checked here, because collecting data or training a brax expert
    # for a misspelled one could run for an hour before failing.
    suite, name = load_suite(env)
    try:
        suite.task_split(name)
    except ValueError as error:
        raise config_lib.ConfigError("env", env, f"a known task: {error}") from None
    for field in ("data.noise", "data.prompt_noise"):
        noise = config_lib.require_str(config, field)
        try:
            suite.check_noise(noise)
        except ValueError as error:
            raise config_lib.ConfigError(field, noise, f"a noise level of {family}: {error}") from None

    config_lib.require_str(config, "data.noise")
    config_lib.require_int(config, "data.episodes", min=1)
    config_lib.require_int(config, "data.seed", min=0)
    config_lib.require_str(config, "data.prompt_noise")
    config_lib.require_int(config, "data.prompt_episodes", min=1)
    config_lib.require_int(config, "data.prompt_seed", min=0)
    config_lib.require_int(config, "data.num_train_tasks", min=0)
    config_lib.require_int(config, "data.num_test_tasks", min=0)
    config_lib.require_float(config, "data.return_scale", gt=0.0)
    if config_lib.require_bool(config, "data.hide_goal") and family not in GOAL_OBSERVABLE:
        raise config_lib.ConfigError("data.hide_goal", True, f"False, because {family} observations contain no goal")
    config_lib.require_str(config, "data.root", nonempty=False)

    config_lib.require_int(config, "model.hidden_size", min=1)
    config_lib.require_int(config, "model.num_layers", min=1)
    heads = config_lib.require_int(config, "model.num_heads", min=1)
    config_lib.require(config, "model.hidden_size", lambda h: h % heads == 0,
                       f"a multiple of model.num_heads={heads}")
    config_lib.require_int(config, "model.context_length", min=1)
    config_lib.require_int(config, "model.prompt_length", min=1)
    config_lib.require_int(config, "model.max_timestep", min=1)
    config_lib.require_float(config, "model.dropout", min=0.0, lt=1.0)
    config_lib.require_choice(config, "model.activation", tuple(dt.ACTIVATIONS))
    config_lib.require_bool(config, "model.use_prompt")

    config_lib.require_int(config, "train.num_steps", min=1)
    config_lib.require_int(config, "train.batch_size_per_task", min=1)
    tasks_per_batch = config_lib.require_int(config, "train.tasks_per_batch", min=0)
    num_train_tasks = config.data.num_train_tasks
    if num_train_tasks and tasks_per_batch > num_train_tasks:
        raise config_lib.ConfigError("train.tasks_per_batch", tasks_per_batch,
                                     f"an int <= data.num_train_tasks={num_train_tasks}, or 0 for all tasks")
    config_lib.require_float(config, "train.learning_rate", gt=0.0, max=1.0)
    config_lib.require_int(config, "train.warmup_steps", min=1)
    config_lib.require_float(config, "train.weight_decay", min=0.0, max=1.0)
    config_lib.require_float(config, "train.grad_clip", gt=0.0)
    steps_per_call = config_lib.require_int(config, "train.steps_per_call", min=1)
    config_lib.require(config, "train.num_steps", lambda n: n % steps_per_call == 0,
                       f"a multiple of train.steps_per_call={steps_per_call}")
    config_lib.require(config, "train.checkpoint_every",
                       lambda n: isinstance(n, int) and not isinstance(n, bool) and n >= 1
                       and n % steps_per_call == 0,
                       f"a positive multiple of train.steps_per_call={steps_per_call}")
    config_lib.require_int(config, "train.log_every", min=1)

    config_lib.require_int(config, "eval.episodes", min=1)
    # Meta-World episodes end after 500 steps (metaworld_data.MAX_EPISODE_STEPS).
    config_lib.require_int(config, "eval.max_steps", min=1, max=500 if family == "metaworld" else None)
    config_lib.require_float(config, "eval.target_return")


def model_config(config: ml_collections.ConfigDict, obs_dim: int, act_dim: int) -> dt.DTConfig:
    model = config.model
    return dt.DTConfig(obs_dim=obs_dim, act_dim=act_dim, hidden_size=model.hidden_size,
                       num_layers=model.num_layers, num_heads=model.num_heads,
                       context_length=model.context_length, prompt_length=model.prompt_length,
                       max_timestep=model.max_timestep, dropout=float(model.dropout),
                       activation=model.activation, use_prompt=model.use_prompt)


def _choose_tasks(config, suite, name) -> tuple[list[int], list[int]]:
    train, test = suite.task_split(name)
    train, test = list(train), list(test)
    if config.data.num_train_tasks:
        if config.data.num_train_tasks > len(train):
            raise config_lib.ConfigError("data.num_train_tasks", config.data.num_train_tasks,
                                         f"an int <= {len(train)}, the training tasks of {config.env}, or 0")
        train = train[:config.data.num_train_tasks]
    if config.data.num_test_tasks:
        if config.data.num_test_tasks > len(test):
            raise config_lib.ConfigError("data.num_test_tasks", config.data.num_test_tasks,
                                         f"an int <= {len(test)}, the held-out tasks of {config.env}, or 0")
        test = test[:config.data.num_test_tasks]
    return train, test


def collect_shards(config, suite, name, train_tasks, test_tasks) -> tuple[list, list, list]:
    """Load or collect the training shards and the prompt shards of training and held-out tasks."""
    root = config.data.root or None
    jobs = ([("train", t) for t in train_tasks] + [("prompt", t) for t in train_tasks]
            + [("prompt", t) for t in test_tasks])
    shards = {"train": {}, "prompt": {}}
    with progress_lib.progress(len(jobs), desc=f"shards of {config.env}", unit="shard") as bar:
        for kind, task in jobs:
            if kind == "train":
                arrays = suite.collect_task(name, task, config.data.noise, config.data.episodes, config.data.seed,
                                            root=root)
            else:
                arrays = suite.collect_task(name, task, config.data.prompt_noise, config.data.prompt_episodes,
                                            config.data.prompt_seed, root=root)
            shards[kind][task] = arrays
            bar.update(1)
    return ([shards["train"][t] for t in train_tasks], [shards["prompt"][t] for t in train_tasks],
            [shards["prompt"][t] for t in test_tasks])


def evaluation_prompts(prompt_shard, normalizer, config, key) -> dt.Segment:
    """Draw one prompt per evaluation episode from a held-out task's expert prompt shard."""
    task = stack_tasks([prompt_shard], normalizer, config.data.return_scale)
    return sample_prompts(jax.tree.map(lambda x: x[0], task), key, config.eval.episodes, config.model.prompt_length)


def evaluate(config, suite, name, model, params, normalizer, test_tasks, test_prompt_shards) -> dict[str, Any]:
    """Roll out on each held-out task and summarize returns (and success for Meta-World)."""
    key = jax.random.fold_in(jax.random.key(config.seed), 2)
    per_task = {}
    rollout = policy_step = None
    if hasattr(suite, "make_env"):
        env = suite.make_env(name)
        goals = np.asarray(suite.goals(name), np.float32)
        rollout = make_jax_rollout(model, env, normalizer, config.data.return_scale, config.eval.target_return,
                                   config.eval.max_steps)
    else:
        # One compiled policy serves every held-out task.
        policy_step = jax.jit(make_policy_step(model))
    with progress_lib.progress(len(test_tasks), desc="evaluate held-out tasks", unit="task") as bar:
        for task, prompt_shard in zip(test_tasks, test_prompt_shards):
            task_key = jax.random.fold_in(key, task)
            prompt = evaluation_prompts(prompt_shard, normalizer, config, jax.random.fold_in(task_key, 0))
            if rollout is not None:
                returns = rollout(params, prompt, jnp.asarray(goals[task]), jax.random.fold_in(task_key, 1))
                per_task[task] = {"returns": np.asarray(returns, np.float64)}
            else:
                env = suite.VectorEnv(name, task, config.eval.episodes, config.seed,
                                      max_episode_steps=config.eval.max_steps)
                per_task[task] = rollout_vector_env(model, params, env, prompt, normalizer,
                                                    config.data.return_scale, config.eval.target_return,
                                                    config.eval.max_steps, policy_step)
            bar.update(1)
    return summarize_tasks(per_task)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Collect or load the shards, train (resuming from `workdir/checkpoints`), evaluate, write results."""
    suite, name = load_suite(config.env)
    train_tasks, test_tasks = _choose_tasks(config, suite, name)
    train_shards, train_prompt_shards, test_prompt_shards = collect_shards(config, suite, name, train_tasks,
                                                                           test_tasks)
    normalizer = fit_normalizer(train_shards, suite.GOAL_SLICE if config.data.hide_goal else None)
    data = stack_tasks(train_shards, normalizer, config.data.return_scale)
    prompts = stack_tasks(train_prompt_shards, normalizer, config.data.return_scale)
    longest = int(max(int(np.max(shard["lengths"])) for shard in train_shards + test_prompt_shards))
    if longest > config.model.max_timestep:
        logging.warning("Episodes have up to %d steps but model.max_timestep is %d; later timesteps share the "
                        "last embedding row.", longest, config.model.max_timestep)
    obs_dim, act_dim = data.observations.shape[-1], data.actions.shape[-1]
    model = dt.DecisionTransformer(model_config(config, obs_dim, act_dim))
    logging.info("Prompt-DT on %s: %d training tasks %s, %d held-out tasks %s, use_prompt=%s, hide_goal=%s.",
                 config.env, len(train_tasks), train_tasks, len(test_tasks), test_tasks, config.model.use_prompt,
                 config.data.hide_goal)

    root_key = jax.random.key(config.seed)
    params = dt.init_params(model.config, jax.random.fold_in(root_key, 0))
    train = config.train
    optimizer = make_optimizer(train.learning_rate, train.warmup_steps, train.weight_decay, train.grad_clip)
    state = TrainState(params, optimizer.init(params))
    tasks_per_batch = train.tasks_per_batch or len(train_tasks)
    chunk = make_train_chunk(model, optimizer, train.steps_per_call, tasks_per_batch, train.batch_size_per_task)
    train_key = jax.random.fold_in(root_key, 1)

    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
    start_step = checkpointer.latest_step() or 0
    if start_step:
        state = TrainState(**checkpointer.restore(state._asdict()))
        logging.info("Resumed from checkpoint step %d.", start_step)
    writer = metrics_lib.MetricWriter(workdir, resume_from_step=start_step)

    losses, chunk_times = [], []
    description = f"{'Prompt-DT' if config.model.use_prompt else 'DT'} on {config.env}"
    with progress_lib.progress(train.num_steps, desc=description, unit="step", initial=start_step) as bar:
        for first in range(start_step, train.num_steps, train.steps_per_call):
            started = time.perf_counter()
            state, chunk_losses = chunk(state, data, prompts, train_key, jnp.int32(first))
            chunk_losses = np.asarray(chunk_losses)
            chunk_times.append(time.perf_counter() - started)
            if not np.all(np.isfinite(chunk_losses)):
                raise FloatingPointError(f"non-finite training loss in steps {first + 1}-{first + len(chunk_losses)}; "
                                         "lower train.learning_rate or train.grad_clip")
            losses.extend(chunk_losses.tolist())
            done = first + train.steps_per_call
            bar.update(train.steps_per_call)
            bar.set_postfix(loss=f"{chunk_losses[-1]:.4f}")
            for offset, loss in enumerate(chunk_losses):
                step = first + offset + 1
                if step % train.log_every == 0 or step == train.num_steps:
                    writer.write_scalars(step, {"train/action_mse": float(loss)})
            if done % train.checkpoint_every == 0 or done == train.num_steps:
                checkpointer.save(done, state._asdict())
    writer.close()
    checkpointer.close()

    evaluation = evaluate(config, suite, name, model, state.params, normalizer, test_tasks, test_prompt_shards)
    # The first chunk includes compilation, so the speed counts the later ones only.
    steady = chunk_times[1:]
    results = {
        "experiment": config.experiment,
        "env": config.env,
        "use_prompt": config.model.use_prompt,
        "hide_goal": config.data.hide_goal,
        "seed": config.seed,
        "train_tasks": train_tasks,
        "test_tasks": test_tasks,
        "num_steps": train.num_steps,
        "final_train_action_mse": _final_loss(workdir),
        "parameters": int(sum(np.size(leaf) for leaf in jax.tree.leaves(state.params))),
        "steps_per_second": (len(steady) * train.steps_per_call / sum(steady)) if steady else None,
        "test": evaluation,
    }
    logging.info("Held-out return %.2f%s.", evaluation["return_mean"],
                 f", success rate {evaluation['success_rate']:.3f}" if "success_rate" in evaluation else "")
    metrics_lib.write_results(workdir, results)
    return results


def _final_loss(workdir: str) -> float | None:
    """Read the last logged training loss back from metrics.jsonl, so a resumed run reports it too."""
    last = None
    with open(os.path.join(workdir, metrics_lib.METRICS_FILE)) as file:
        for line in file:
            record = json.loads(line)
            if "train/action_mse" in record:
                last = record["train/action_mse"]
    return last
