"""Goal-conditioned PPO experts for the brax task families, and the rollouts that collect their data.

The trainer is PPO (Schulman et al., 2017) with GAE (Schulman et al., 2016) and the usual
implementation choices (Huang et al., "The 37 Implementation Details of PPO", 2022):

- a batch of vmapped environments, each drawing a task goal uniformly from all of the family's
  tasks at every episode start (train and test tasks alike, because the expert only collects data);
- rollouts in `lax.scan` and a running observation normaliser;
- a Gaussian policy with a state-independent log standard deviation, whose samples are clipped to
  the action box [-1, 1] when sent to the environment;
- the clipped surrogate, an unclipped value loss, and advantages normalised per minibatch.

The policy and value networks read the normalised observation concatenated with the goal features
of `brax_tasks.goal_features`. Truncated episodes bootstrap from the value of their last
observation, and only terminations (the ant falling) cut the return.

An expert is trained once per configuration and stored in the jaxlab cache (`expert_artifact`).
Training checkpoints into a work directory, so a killed run resumes. It stops at
`total_env_steps` or after `max_minutes` of training time summed over restarts.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxlab.core import cache
from jaxlab.core import checkpoint as checkpoint_lib
from jaxlab.core import config as config_lib
from jaxlab.core import metrics as metrics_lib
from jaxlab.core import progress as progress_lib
from jaxlab.core.tree import tree_flatten_with_paths
from jaxlab.offline_rl import brax_tasks
from jaxlab.offline_rl import dataset

# Gaussian action-noise std added to the expert's mean action before clipping to [-1, 1], per noise level.
NOISE_LEVELS: dict[str, float] = {"expert": 0.1, "medium": 0.5, "noisy": 1.0}

EXPERT_VERSION = 1
_ARRAY_SEPARATOR = "."


# ---------------------------------------------------------------------------------------------------------
# Configuration.


def expert_config(name: str, variant: str = "cpu") -> ml_collections.ConfigDict:
    """Return the PPO expert configuration of task family `name`.

    Variants: "quick" (4 iterations, for tests and smoke runs), "cpu" (capped
    at 42 minutes for the cheetah and 55 for the ant on 2 CPU cores) and
    "default" (an accelerator run of paper size).
    """
    brax_tasks.check_name(name)
    config = ml_collections.ConfigDict()
    config.task = name
    config.backend = brax_tasks.DEFAULT_BACKEND  # brax physics pipeline; see brax_tasks' docstring.
    config.seed = 0  # Draws initial parameters, environment resets, goals and actions.
    config.num_envs = 128  # Environments stepped in parallel.
    config.unroll_length = 32  # Steps per environment per iteration; a batch is num_envs * unroll_length.
    config.num_minibatches = 8
    config.update_epochs = 4  # Passes over each batch.
    config.learning_rate = 3e-4  # Adam, linearly annealed to 0 over total_env_steps.
    config.max_grad_norm = 0.5
    config.gamma = 0.97  # Discount; the returns span about 1 / (1 - gamma) = 33 steps of 0.05 s.
    config.gae_lambda = 0.95
    config.clip_eps = 0.2
    config.value_coef = 0.5
    config.entropy_coef = 0.0
    config.init_log_std = -0.5  # Initial log standard deviation of every action dimension.
    config.hidden_sizes = (128, 128)  # Tanh MLP layers of the policy and of the value network.
    config.total_env_steps = 20_000_000  # Training stops here or at max_minutes, whichever comes first.
    config.max_minutes = 42.0  # Wall-clock cap on training time, summed over restarts.
    config.log_every = 10  # Iterations between metric lines.
    config.checkpoint_every = 50  # Iterations between checkpoints.
    config.eval_episodes = 4  # Deterministic evaluation episodes per task after training.

    if variant == "quick":
        config.num_envs = 16
        config.unroll_length = 16
        config.num_minibatches = 2
        config.update_epochs = 2
        config.hidden_sizes = (32, 32)
        config.total_env_steps = 16 * 16 * 4
        config.max_minutes = 5.0
        config.log_every = 1
        config.checkpoint_every = 2
        config.eval_episodes = 1
    elif variant == "cpu":
        if name == "ant_dir":
            # Ant-dir needs more samples than Cheetah-vel, so it gets a longer cap and more, smaller
            # iterations. NOTE: 64 environments and 55 minutes are guesses, not tuned.
            config.num_envs = 64
            config.max_minutes = 55.0
    elif variant == "default":
        config.num_envs = 2048
        config.unroll_length = 20
        config.num_minibatches = 32
        config.hidden_sizes = (256, 256)
        config.total_env_steps = 100_000_000 if name == "ant_dir" else 50_000_000
        config.max_minutes = 600.0
        config.checkpoint_every = 100
        config.eval_episodes = 10
    else:
        raise ValueError(f"Unknown expert variant {variant!r}; use 'quick', 'cpu' or 'default'.")
    return config


def validate_expert_config(config: Any, prefix: str = "") -> None:
    """Raise `ConfigError` for the first invalid field of an expert configuration (fields under `prefix`)."""
    field = lambda name: prefix + name  # noqa: E731
    config_lib.require_choice(config, field("task"), brax_tasks.TASK_NAMES)
    config_lib.require_choice(config, field("backend"), brax_tasks.BACKENDS)
    config_lib.require_int(config, field("seed"), min=0)
    num_envs = config_lib.require_int(config, field("num_envs"), min=1)
    unroll = config_lib.require_int(config, field("unroll_length"), min=1)
    config_lib.require(config, field("num_minibatches"),
                       lambda value: isinstance(value, int) and value >= 1 and (num_envs * unroll) % value == 0,
                       f"an int >= 1 dividing num_envs * unroll_length = {num_envs * unroll}")
    config_lib.require_int(config, field("update_epochs"), min=1)
    config_lib.require_float(config, field("learning_rate"), gt=0)
    config_lib.require_float(config, field("max_grad_norm"), gt=0)
    config_lib.require_float(config, field("gamma"), min=0, max=1)
    config_lib.require_float(config, field("gae_lambda"), min=0, max=1)
    config_lib.require_float(config, field("clip_eps"), gt=0, lt=1)
    config_lib.require_float(config, field("value_coef"), min=0)
    config_lib.require_float(config, field("entropy_coef"), min=0)
    config_lib.require_float(config, field("init_log_std"), min=-5, max=2)
    config_lib.require_list_of(config, field("hidden_sizes"), int, min_len=1, min=1)
    config_lib.require(config, field("total_env_steps"),
                       lambda value: isinstance(value, int) and value >= num_envs * unroll,
                       f"an int >= num_envs * unroll_length = {num_envs * unroll} (one iteration)")
    config_lib.require_float(config, field("max_minutes"), gt=0)
    config_lib.require_int(config, field("log_every"), min=1)
    config_lib.require_int(config, field("checkpoint_every"), min=1)
    config_lib.require_int(config, field("eval_episodes"), min=1)


def num_iterations(config: Any) -> int:
    return config.total_env_steps // (config.num_envs * config.unroll_length)


# ---------------------------------------------------------------------------------------------------------
# Networks, observation normalisation and the action distribution.


class MLP(nn.Module):
    """A tanh MLP with orthogonal initialisation; the output layer's scale is `output_scale`."""

    hidden_sizes: Sequence[int]
    output_size: int
    output_scale: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for size in self.hidden_sizes:
            x = jnp.tanh(nn.Dense(size, kernel_init=nn.initializers.orthogonal(np.sqrt(2.0)))(x))
        return nn.Dense(self.output_size, kernel_init=nn.initializers.orthogonal(self.output_scale))(x)


class Normalizer(NamedTuple):
    """Running mean and variance of observations (Chan et al.'s parallel update); float32 [obs_size] each."""

    count: jax.Array
    mean: jax.Array
    var: jax.Array


def normalizer_init(size: int) -> Normalizer:
    return Normalizer(jnp.asarray(1e-4, jnp.float32), jnp.zeros(size, jnp.float32), jnp.ones(size, jnp.float32))


def normalizer_update(state: Normalizer, batch: jax.Array) -> Normalizer:
    """Fold a batch [..., obs_size] into the running statistics."""
    batch = batch.reshape(-1, batch.shape[-1])
    batch_count = batch.shape[0]
    batch_mean = batch.mean(axis=0)
    batch_var = batch.var(axis=0)
    total = state.count + batch_count
    delta = batch_mean - state.mean
    mean = state.mean + delta * batch_count / total
    m2 = state.var * state.count + batch_var * batch_count + delta**2 * state.count * batch_count / total
    return Normalizer(total, mean, m2 / total)


def normalize(state: Normalizer, obs: jax.Array) -> jax.Array:
    """Standardise observations and clip them to [-10, 10] so outliers cannot saturate the tanh layers."""
    return jnp.clip((obs - state.mean) / jnp.sqrt(state.var + 1e-8), -10.0, 10.0)


class Networks(NamedTuple):
    policy: MLP
    value: MLP
    task: str


def make_networks(config: Any, action_size: int) -> Networks:
    hidden = tuple(config.hidden_sizes)
    return Networks(MLP(hidden, action_size, 0.01), MLP(hidden, 1, 1.0), config.task)


def network_inputs(networks: Networks, normalizer: Normalizer, obs: jax.Array, goal: jax.Array) -> jax.Array:
    return jnp.concatenate([normalize(normalizer, obs), brax_tasks.goal_features(networks.task, goal)], axis=-1)


def policy_mean(networks: Networks, params: dict, normalizer: Normalizer, obs: jax.Array,
                goal: jax.Array) -> jax.Array:
    return networks.policy.apply(params["policy"], network_inputs(networks, normalizer, obs, goal))


def value(networks: Networks, params: dict, normalizer: Normalizer, obs: jax.Array, goal: jax.Array) -> jax.Array:
    return networks.value.apply(params["value"], network_inputs(networks, normalizer, obs, goal))[..., 0]


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, actions: jax.Array) -> jax.Array:
    z = (actions - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    return jnp.sum(log_std + 0.5 * jnp.log(2.0 * jnp.pi * jnp.e))


# ---------------------------------------------------------------------------------------------------------
# Advantages and losses.


def gae(rewards: jax.Array, values: jax.Array, next_values: jax.Array, terminations: jax.Array,
        dones: jax.Array, gamma: float, gae_lambda: float) -> tuple[jax.Array, jax.Array]:
    """Return (advantages, value targets) by GAE over a time-major batch [T, N].

    Args:
        rewards: r_t.
        values: V(s_t).
        next_values: V(s_{t+1}) of the observation the step produced, before
            any reset (so a truncated episode bootstraps from its last state).
        terminations: 1 where s_{t+1} is terminal (no bootstrap).
        dones: 1 where the episode ended at step t by termination or
            truncation, so the advantage trace stops there.
    """
    deltas = rewards + gamma * (1.0 - terminations) * next_values - values

    def backward(next_advantage, step):
        delta, done = step
        advantage = delta + gamma * gae_lambda * (1.0 - done) * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(values[0]), (deltas, dones), reverse=True)
    return advantages, advantages + values


def clipped_surrogate(log_probs: jax.Array, old_log_probs: jax.Array, advantages: jax.Array,
                      clip_eps: float) -> tuple[jax.Array, jax.Array]:
    """Return PPO's clipped policy loss (to minimise) and the fraction of samples outside the clip range."""
    ratio = jnp.exp(log_probs - old_log_probs)
    objective = jnp.minimum(ratio * advantages, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages)
    clip_fraction = jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32))
    return -jnp.mean(objective), clip_fraction


# ---------------------------------------------------------------------------------------------------------
# Training.


class TrainState(NamedTuple):
    """Everything one training iteration reads and writes; checkpoints restore it whole.

    Fields:
        params: {"policy", "value", "log_std" float32 [action_size]}.
        opt_state: optax state of the gradient clipping + Adam chain.
        normalizer: observation statistics.
        env_state: the batched environment state [num_envs, ...].
        first_state: each environment's first reset state, reused at every
            episode start with a newly drawn goal (brax's auto-reset scheme).
        episode_return: float32 [num_envs], the return of each running episode so far.
        iteration: int32 [], iterations done.
        key: the run's key; iteration i draws from fold_in(key, i).
    """

    params: dict
    opt_state: Any
    normalizer: Normalizer
    env_state: Any
    first_state: Any
    episode_return: jax.Array
    iteration: jax.Array
    key: jax.Array


class Transition(NamedTuple):
    obs: jax.Array
    goal: jax.Array
    action: jax.Array  # The unclipped Gaussian sample; the environment received its clip to [-1, 1].
    log_prob: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminated: jax.Array
    done: jax.Array


@dataclasses.dataclass(frozen=True)
class Trainer:
    """The compiled pieces of one PPO configuration: `init(key)` and `iterate(state) -> (state, metrics)`."""

    config: Any
    env: brax_tasks.TaskEnv
    networks: Networks
    optimizer: optax.GradientTransformation
    goals: jax.Array

    def init(self, key: jax.Array) -> TrainState:
        return self._jitted_init(key)

    @functools.cached_property
    def _jitted_init(self):
        return jax.jit(self._init)

    def _init(self, key: jax.Array) -> TrainState:
        config, env = self.config, self.env
        policy_key, value_key, goal_key, reset_key, run_key = jax.random.split(key, 5)
        inputs = jnp.zeros((1, env.obs_size + brax_tasks.goal_features(config.task, jnp.zeros((1, 1))).shape[-1]))
        params = {
            "policy": self.networks.policy.init(policy_key, inputs),
            "value": self.networks.value.init(value_key, inputs),
            "log_std": jnp.full((env.action_size,), config.init_log_std, jnp.float32),
        }
        goal_index = jax.random.randint(goal_key, (config.num_envs,), 0, self.goals.shape[0])
        first_state = jax.vmap(env.reset)(jax.random.split(reset_key, config.num_envs), self.goals[goal_index])
        return TrainState(params=params, opt_state=self.optimizer.init(params),
                          normalizer=normalizer_init(env.obs_size), env_state=first_state,
                          first_state=first_state, episode_return=jnp.zeros(config.num_envs),
                          iteration=jnp.zeros((), jnp.int32), key=run_key)

    def _restart_done(self, state, first_state, key: jax.Array):
        """Put the environments whose episode ended back at their first state, each with a new random goal."""
        goal_index = jax.random.randint(key, (self.config.num_envs,), 0, self.goals.shape[0])
        restarted = first_state.replace(info={**first_state.info, "goal": self.goals[goal_index]})
        done = state.done > 0

        def select(fresh, old):
            mask = done.reshape(done.shape + (1,) * (old.ndim - 1))
            return jnp.where(mask, fresh, old)

        return jax.tree_util.tree_map(select, restarted, state)

    def _rollout(self, state: TrainState, key: jax.Array):
        env, networks, params, normalizer = self.env, self.networks, state.params, state.normalizer

        def step(carry, step_key):
            env_state, episode_return = carry
            action_key, goal_key = jax.random.split(step_key)
            goal = env_state.info["goal"]
            mean = policy_mean(networks, params, normalizer, env_state.obs, goal)
            action = mean + jnp.exp(params["log_std"]) * jax.random.normal(action_key, mean.shape)
            log_prob = gaussian_log_prob(mean, params["log_std"], action)
            next_state = jax.vmap(env.step)(env_state, jnp.clip(action, -1.0, 1.0))
            transition = Transition(env_state.obs, goal, action, log_prob, next_state.reward, next_state.obs,
                                    next_state.info["terminated"], next_state.done)
            episode_return = episode_return + next_state.reward
            finished = (next_state.done > 0).astype(jnp.float32)
            stats = (jnp.sum(finished * episode_return), jnp.sum(finished))
            next_state = self._restart_done(next_state, state.first_state, goal_key)
            return (next_state, episode_return * (1.0 - finished)), (transition, stats)

        keys = jax.random.split(key, self.config.unroll_length)
        (env_state, episode_return), (transitions, stats) = jax.lax.scan(
            step, (state.env_state, state.episode_return), keys)
        return env_state, episode_return, transitions, stats

    def _loss(self, params: dict, normalizer: Normalizer, batch: dict):
        config, networks = self.config, self.networks
        mean = policy_mean(networks, params, normalizer, batch["obs"], batch["goal"])
        log_probs = gaussian_log_prob(mean, params["log_std"], batch["action"])
        advantages = batch["advantage"]
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss, clip_fraction = clipped_surrogate(log_probs, batch["log_prob"], advantages, config.clip_eps)
        values = value(networks, params, normalizer, batch["obs"], batch["goal"])
        value_loss = 0.5 * jnp.mean(jnp.square(values - batch["target"]))
        entropy = gaussian_entropy(params["log_std"])
        loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
        return loss, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                      "clip_fraction": clip_fraction}

    def _update(self, params: dict, opt_state: Any, normalizer: Normalizer, transitions: Transition,
                key: jax.Array):
        config, networks = self.config, self.networks
        values = value(networks, params, normalizer, transitions.obs, transitions.goal)
        next_values = value(networks, params, normalizer, transitions.next_obs, transitions.goal)
        advantages, targets = gae(transitions.reward, values, next_values, transitions.terminated,
                                  transitions.done, config.gamma, config.gae_lambda)
        batch = {"obs": transitions.obs, "goal": transitions.goal, "action": transitions.action,
                 "log_prob": transitions.log_prob, "advantage": advantages, "target": targets}
        size = config.num_envs * config.unroll_length
        batch = jax.tree_util.tree_map(lambda x: x.reshape((size,) + x.shape[2:]), batch)

        def minibatch_step(carry, minibatch):
            params, opt_state = carry
            grads, info = jax.grad(self._loss, has_aux=True)(params, normalizer, minibatch)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), info

        def epoch(carry, epoch_key):
            order = jax.random.permutation(epoch_key, size)
            shuffled = jax.tree_util.tree_map(
                lambda x: x[order].reshape((config.num_minibatches, -1) + x.shape[1:]), batch)
            return jax.lax.scan(minibatch_step, carry, shuffled)

        (params, opt_state), info = jax.lax.scan(epoch, (params, opt_state),
                                                 jax.random.split(key, config.update_epochs))
        return params, opt_state, jax.tree_util.tree_map(jnp.mean, info)

    def _iterate(self, state: TrainState) -> tuple[TrainState, dict]:
        rollout_key, update_key = jax.random.split(jax.random.fold_in(state.key, state.iteration))
        env_state, episode_return, transitions, (return_sum, episodes) = self._rollout(state, rollout_key)
        # The update uses the statistics the rollout used, so the stored log-probabilities stay consistent.
        params, opt_state, info = self._update(state.params, state.opt_state, state.normalizer, transitions,
                                               update_key)
        normalizer = normalizer_update(state.normalizer, transitions.obs)
        # The mean return of the episodes that ended in this rollout; 0 when none did.
        info.update(episode_return=return_sum.sum() / jnp.maximum(episodes.sum(), 1.0), episodes=episodes.sum(),
                    reward=transitions.reward.mean(), action_std=jnp.exp(params["log_std"]).mean())
        new_state = TrainState(params=params, opt_state=opt_state, normalizer=normalizer, env_state=env_state,
                               first_state=state.first_state, episode_return=episode_return,
                               iteration=state.iteration + 1, key=state.key)
        return new_state, info

    @functools.cached_property
    def iterate(self):
        return jax.jit(self._iterate, donate_argnums=0)


def make_trainer(config: Any, env: Any = None) -> Trainer:
    """Build the environment, networks and optimiser of an expert configuration.

    `env` replaces the brax task environment by another object with the
    `brax_tasks.TaskEnv` interface, such as a toy environment in tests.
    """
    if env is None:
        env = brax_tasks.make_env(config.task, config.backend)
    networks = make_networks(config, env.action_size)
    total_updates = num_iterations(config) * config.update_epochs * config.num_minibatches
    schedule = optax.linear_schedule(config.learning_rate, 0.0, max(total_updates, 1))
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(schedule, eps=1e-5))
    return Trainer(config=config, env=env, networks=networks, optimizer=optimizer,
                   goals=jnp.asarray(brax_tasks.goals(config.task)))


def train(config: Any, workdir: str, trainer: Trainer | None = None) -> tuple[TrainState, dict[str, Any]]:
    """Train (or resume) PPO in `workdir` until `total_env_steps` or `max_minutes`; return the state and a summary.

    `workdir` receives `checkpoints/` and `metrics.jsonl`. The time cap counts
    the seconds spent in training iterations (compilation included) summed over
    restarts, so a resumed run stops at the same total budget.
    """
    validate_expert_config(config)
    trainer = trainer or make_trainer(config)
    total = num_iterations(config)
    batch = config.num_envs * config.unroll_length
    cap_s = 60.0 * config.max_minutes

    state = trainer.init(jax.random.PRNGKey(config.seed))
    elapsed_s = 0.0
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
    if checkpointer.latest_step() is not None:
        restored = checkpointer.restore({"state": state, "elapsed_s": np.zeros((), np.float64)})
        state, elapsed_s = restored["state"], float(restored["elapsed_s"])
        logging.info("Resumed PPO for %s at iteration %d after %.1f minutes of training.", config.task,
                     int(state.iteration), elapsed_s / 60)
    iteration = int(state.iteration)
    writer = metrics_lib.MetricWriter(workdir, resume_from_step=iteration)
    bar = progress_lib.progress(total, desc=f"ppo {config.task}", unit="iter", initial=iteration)
    session_start, session_steps = time.monotonic(), 0
    last_info: dict[str, float] = {}
    while iteration < total and elapsed_s < cap_s:
        start = time.monotonic()
        state, info = trainer.iterate(state)
        info = {key: float(value) for key, value in jax.device_get(info).items()}
        iteration += 1
        session_steps += batch
        elapsed_s += time.monotonic() - start
        if info["episodes"] > 0:
            last_info = info
        stop = iteration >= total or elapsed_s >= cap_s
        if iteration % config.log_every == 0 or stop:
            rate = session_steps / max(time.monotonic() - session_start, 1e-9)
            writer.write_scalars(iteration, {**info, "env_steps": iteration * batch, "env_steps_per_s": rate,
                                             "train_minutes": elapsed_s / 60})
        if iteration % config.checkpoint_every == 0 or stop:
            checkpointer.save(iteration, {"state": state, "elapsed_s": np.asarray(elapsed_s)})
        bar.update(1)
        bar.set_postfix(ret=f"{info['episode_return']:.1f}", minutes=f"{elapsed_s / 60:.1f}")
    bar.close()
    writer.close()
    checkpointer.close()

    stopped_by = "total_env_steps" if iteration >= total else "max_minutes"
    summary = {"iterations": iteration, "env_steps": iteration * batch, "train_minutes": elapsed_s / 60,
               "stopped_by": stopped_by,
               "env_steps_per_s": session_steps / max(time.monotonic() - session_start, 1e-9),
               "last_train_episode_return": last_info.get("episode_return", float("nan"))}
    logging.info("PPO for %s stopped by %s: %s", config.task, stopped_by, summary)
    return state, summary


# ---------------------------------------------------------------------------------------------------------
# The trained expert: cache storage, evaluation and data collection.


def expert_artifact(config: Any) -> cache.ArtifactSpec:
    """Build the cache identity of an expert from every field that changes the trained weights."""
    params = {key: value for key, value in config.to_dict().items()
              if key not in ("seed", "log_every", "checkpoint_every", "eval_episodes")}
    return cache.ArtifactSpec(f"offline_rl/brax_expert/{config.task}", EXPERT_VERSION, params, seed=config.seed)


@dataclasses.dataclass(frozen=True, eq=False)
class Expert:
    """A trained goal-conditioned policy.

    Attributes:
        config: its expert configuration.
        env: the task environment it was trained on.
        networks: the network modules.
        params: {"policy", "log_std"}.
        normalizer: the observation statistics at the end of training.
        key: the cache key of its artefact, recorded in the shards it collects.
        summary: the training summary of `train`.
    """

    config: Any
    env: brax_tasks.TaskEnv
    networks: Networks
    params: dict
    normalizer: Normalizer
    key: str
    summary: dict

    @functools.cached_property
    def rollout(self):
        """The jitted `rollout(goals [B, 1], keys [B], noise_std) -> dict of [B, T, ...]` arrays."""
        return jax.jit(functools.partial(_rollout_episodes, self.env, self.networks, self.params,
                                         self.normalizer))


def _expert_arrays(params: dict, normalizer: Normalizer) -> dict[str, np.ndarray]:
    tree = {"params": {"policy": params["policy"], "log_std": params["log_std"]}, "normalizer": normalizer}
    items, _ = tree_flatten_with_paths(tree)
    return {path.replace("/", _ARRAY_SEPARATOR): np.asarray(leaf) for path, leaf in items}


def _expert_from_arrays(config: Any, arrays: dict[str, np.ndarray], key: str, summary: dict) -> Expert:
    env = brax_tasks.make_env(config.task, config.backend)
    networks = make_networks(config, env.action_size)
    goal_size = brax_tasks.goal_features(config.task, jnp.zeros((1, 1))).shape[-1]
    template = {
        "params": {"policy": networks.policy.init(jax.random.PRNGKey(0), jnp.zeros((1, env.obs_size + goal_size))),
                   "log_std": jnp.zeros(env.action_size)},
        "normalizer": normalizer_init(env.obs_size),
    }
    items, treedef = tree_flatten_with_paths(template)
    names = [path.replace("/", _ARRAY_SEPARATOR) for path, _ in items]
    missing = sorted(set(names) - set(arrays))
    if missing:
        raise cache.CacheError(f"The stored expert for {config.task} lacks arrays {missing}; delete its cache "
                               "directory so that it is retrained.")
    tree = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(arrays[name]) for name in names])
    return Expert(config=config, env=env, networks=networks, params=tree["params"],
                  normalizer=tree["normalizer"], key=key, summary=summary)


def load_or_train_expert(config: Any, root: str | None = None, workdir: str | None = None) -> Expert:
    """Return the cached expert of `config`, training it first when it is absent.

    Args:
        config: an expert configuration (`expert_config`).
        root: the cache root; `$JAXLAB_DATA` when None.
        workdir: where training checkpoints and metrics go; None uses a
            directory under the cache root named after the expert, so a killed
            training run resumes on the next call either way.
    """
    validate_expert_config(config)
    spec = expert_artifact(config)

    def generate():
        run_dir = workdir or os.fspath(cache.cache_root() if root is None else root)
        if workdir is None:
            run_dir = os.path.join(run_dir, "offline_rl", "brax_expert_runs", f"{config.task}-{spec.key}")
        state, summary = train(config, run_dir)
        return _expert_arrays(state.params, state.normalizer), {"summary": summary}

    arrays, metadata = cache.load_or_build_arrays(spec, generate, root)
    return _expert_from_arrays(config, arrays, spec.key, metadata["summary"])


def _rollout_episodes(env: brax_tasks.TaskEnv, networks: Networks, params: dict, normalizer: Normalizer,
                      goals: jax.Array, keys: jax.Array, noise_std: jax.Array) -> dict[str, jax.Array]:
    """Run one episode per goal with actions clip(mean + noise_std * N(0, I), -1, 1).

    Steps after an episode's end are still simulated (the batch moves in
    lockstep) and flagged by `alive` = 0.
    """
    reset_keys, action_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    state = jax.vmap(env.reset)(reset_keys, goals)

    def step(carry, step_keys):
        state, alive = carry
        mean = policy_mean(networks, params, normalizer, state.obs, goals)
        noise = jax.vmap(lambda key: jax.random.normal(key, (env.action_size,)))(step_keys)
        action = jnp.clip(mean + noise_std * noise, -1.0, 1.0)
        next_state = jax.vmap(env.step)(state, action)
        output = {"obs": state.obs, "action": action, "reward": next_state.reward, "alive": alive,
                  "terminated": next_state.info["terminated"], "truncated": next_state.info["truncated"]}
        return (next_state, alive * (1.0 - next_state.done)), output

    step_keys = jax.vmap(lambda key: jax.random.split(key, env.episode_length), out_axes=1)(action_keys)
    _, outputs = jax.lax.scan(step, (state, jnp.ones(goals.shape[0])), step_keys)
    return jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), outputs)


def _episodes_to_shard(outputs: dict[str, np.ndarray], goal: np.ndarray) -> dict[str, np.ndarray]:
    """Turn lockstep rollout outputs into the zero-padded arrays of `dataset`."""
    alive = np.asarray(outputs["alive"]) > 0
    lengths = alive.sum(axis=1).astype(np.int32)
    rewards = np.where(alive, outputs["reward"], 0.0).astype(np.float32)
    return {
        "observations": np.where(alive[..., None], outputs["obs"], 0.0).astype(np.float32),
        "actions": np.where(alive[..., None], outputs["action"], 0.0).astype(np.float32),
        "rewards": rewards,
        "terminals": alive & (np.asarray(outputs["terminated"]) > 0),
        "timeouts": alive & (np.asarray(outputs["truncated"]) > 0),
        "returns_to_go": dataset.returns_to_go(rewards, lengths),
        "successes": np.zeros(alive.shape, bool),
        "lengths": lengths,
        "goal": np.asarray(goal, np.float32).reshape(-1),
    }


def collect_episodes(expert: Expert, goal: np.ndarray, noise_std: float, episodes: int,
                     key: jax.Array) -> dict[str, np.ndarray]:
    """Roll out `episodes` episodes of the expert on one goal and return them as shard arrays."""
    goals = jnp.tile(jnp.asarray(goal, jnp.float32).reshape(1, -1), (episodes, 1))
    outputs = jax.device_get(expert.rollout(goals, jax.random.split(key, episodes), jnp.float32(noise_std)))
    return _episodes_to_shard(outputs, goal)


def evaluate_expert(expert: Expert, episodes_per_task: int, seed: int) -> np.ndarray:
    """Return the deterministic (mean-action) episode returns, float [num_tasks, episodes_per_task]."""
    task_goals = brax_tasks.goals(expert.config.task)
    num_tasks = task_goals.shape[0]
    goals = jnp.repeat(jnp.asarray(task_goals), episodes_per_task, axis=0)
    keys = jax.random.split(jax.random.PRNGKey(seed), num_tasks * episodes_per_task)
    outputs = jax.device_get(expert.rollout(goals, keys, jnp.float32(0.0)))
    returns = np.sum(np.where(outputs["alive"] > 0, outputs["reward"], 0.0), axis=1)
    return returns.reshape(num_tasks, episodes_per_task)
