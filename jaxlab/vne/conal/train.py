"""Reachability-guided Lagrangian PPO for CONAL, with the whole update (rollout included) under one `jit`.

One update collects `rollout_steps` steps from each of `num_envs` vmapped online streams (`lax.scan`),
estimates reward advantages and reachability cost returns, and checks with a greedy copy of the policy
which episode starts it can solve feasibly (the adaptive reachability budget). It then takes `num_minibatches` PPO steps
on minibatches drawn with replacement, one contrastive step per minibatch and one multiplier step.

Losses, for a minibatch of states s with action a, probability ratio rho and normalised advantages A_r, A_c:

    actor      = -mean(min(rho A_r, clip(rho, 1 - eps, 1 + eps) A_r)) + mean(sg(lambda(s)) rho A_c)
    total      = actor + c_v mean((G - V)^2) + c_c mean((C - V_c)^2) - c_h mean(entropy)
    multiplier = -mean(lambda(s) flag (sg(V_c(s)) - budget))

where flag = 1 if the greedy copy embeds the episode's request without violation (0 otherwise, so an
instance the greedy copy cannot solve never raises lambda), and budget = the largest positive step cost of
the greedy copy's run. Without the adaptive budget, flag = 1 and budget = 0 everywhere.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlab.vne import env as env_lib
from jaxlab.vne.conal import cmdp
from jaxlab.vne.conal import graph as graph_lib
from jaxlab.vne.conal import losses
from jaxlab.vne.conal import network as network_lib

_NEG = -1e9  # Logit of a masked action: finite, so a state without feasible action gives no NaN.


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static settings of training; see configs/vne/conal.py for the meaning and defaults of each field."""

    hidden: int
    num_layers: int
    num_envs: int
    rollout_steps: int
    num_minibatches: int
    minibatch_size: int
    contrast_states: int
    greedy_capacity: int
    greedy_sync_every: int
    gamma: float
    gae_lambda: float
    clip_epsilon: float
    learning_rate: float
    multiplier_learning_rate: float
    contrast_learning_rate: float
    max_grad_norm: float
    weight_decay: float
    value_coef: float
    cost_value_coef: float
    entropy_coef: float
    contrast_coef: float
    hetero_graph: bool
    path_contrast: bool
    constrained: bool
    reachability: bool
    adaptive_budget: bool
    stream: cmdp.StreamConfig


class TrainState(NamedTuple):
    """Everything a resumed run needs.

    Attributes:
        params: network parameters.
        greedy_params: the greedy copy of the policy, re-synced every `greedy_sync_every` updates.
        main_opt, multiplier_opt, contrast_opt: optimizer states (all over the whole parameter tree).
        streams: `cmdp.Stream` with a leading axis [num_envs].
        episode_flag, episode_budget: float32 [num_envs], the greedy copy's verdict on the episode still
            running at the end of the last rollout.
        update: int32 [], the number of finished updates.
    """

    params: Any
    greedy_params: Any
    main_opt: Any
    multiplier_opt: Any
    contrast_opt: Any
    streams: cmdp.Stream
    episode_flag: jax.Array
    episode_budget: jax.Array
    update: jax.Array


class Transition(NamedTuple):
    """One rollout step of one environment (leaves gain leading axes [T, B] in the buffer)."""

    env_state: env_lib.EnvState
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    cost_value: jax.Array
    reward: jax.Array
    cost: jax.Array
    done: jax.Array
    accepted: jax.Array
    violated: jax.Array


def make_network(config: TrainConfig) -> network_lib.ConalNetwork:
    return network_lib.ConalNetwork(hidden=config.hidden, num_layers=config.num_layers)


def evaluate_state(network: network_lib.ConalNetwork, params, substrate, state: env_lib.EnvState,
                   hetero: bool) -> tuple[network_lib.Outputs, jax.Array]:
    """Run the network on one state; returns the outputs and the masked logits float32 [N]."""
    graph = graph_lib.build_graph(substrate, state, hetero=hetero)
    real = jnp.arange(state.request.cpu.shape[0]) < state.request.num_nodes
    outputs = network.apply(params, graph, substrate.cpu_capacity.shape[0], env_lib.current_node(state), real)
    masked = jnp.where(env_lib.action_mask(state), outputs.logits, _NEG)
    return outputs, masked


def greedy_action(masked_logits: jax.Array) -> jax.Array:
    return jnp.argmax(masked_logits).astype(jnp.int32)


def _labels(params, trained: str):
    """Label the top-level modules: `trained` (a module name or "main") gets 'train', the rest 'frozen'."""

    def label(name):
        if trained == "main":
            return "frozen" if name == "multiplier_head" else "train"
        return "train" if name == trained else "frozen"

    return {"params": {name: jax.tree.map(lambda _: label(name), sub) for name, sub in params["params"].items()}}


def make_optimizers(config: TrainConfig, params):
    """Return (main, multiplier, contrast) optax transformations; each updates only its own modules."""
    main = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.add_decayed_weights(config.weight_decay),
                       optax.adam(config.learning_rate))
    frozen = optax.set_to_zero()
    return (
        optax.multi_transform({"train": main, "frozen": frozen}, _labels(params, "main")),
        optax.multi_transform({"train": optax.adam(config.multiplier_learning_rate), "frozen": frozen},
                              _labels(params, "multiplier_head")),
        optax.multi_transform({"train": optax.adam(config.contrast_learning_rate), "frozen": frozen},
                              _labels(params, "encoder")),
    )


def stream_keys(key: jax.Array, num_envs: int) -> jax.Array:
    return jax.vmap(lambda index: jax.random.fold_in(key, index))(jnp.arange(num_envs))


@functools.partial(jax.jit, static_argnums=1)
def init_train_state(key: jax.Array, config: TrainConfig, env_params: env_lib.EnvParams) -> TrainState:
    """Initialise the network, the optimizers and `num_envs` streams; `key` is the run's root key."""
    key_params, key_streams = jax.random.split(key)
    network = make_network(config)
    streams = jax.vmap(cmdp.reset_stream, in_axes=(0, None, None))(
        stream_keys(key_streams, config.num_envs), env_params, config.stream)
    first = jax.tree.map(lambda leaf: leaf[0], streams.episode.env)
    graph = graph_lib.build_graph(env_params.substrate, first, hetero=config.hetero_graph)
    real = jnp.arange(first.request.cpu.shape[0]) < first.request.num_nodes
    params = network.init(key_params, graph, env_params.substrate.cpu_capacity.shape[0], env_lib.current_node(first),
                          real)
    main, multiplier, contrast = make_optimizers(config, params)
    ones = jnp.ones(config.num_envs, jnp.float32)
    greedy_params = jax.tree.map(jnp.copy, params)
    return TrainState(params=params, greedy_params=greedy_params, main_opt=main.init(params),
                      multiplier_opt=multiplier.init(params), contrast_opt=contrast.init(params), streams=streams,
                      episode_flag=ones, episode_budget=jnp.zeros_like(ones), update=jnp.int32(0))


def greedy_verdicts(network, params, env_params: env_lib.EnvParams, starts: env_lib.EnvState,
                    hetero: bool) -> tuple[jax.Array, jax.Array]:
    """Run the greedy policy with violation-tolerant steps from each start state [C].

    Returns (flag, budget) float32 [C]: flag = 1 when the run embeds the request without violation (the
    strict greedy run would then succeed with the same actions), budget = its largest positive step cost.
    """

    def run_one(state):
        def body(episode, _):
            _, masked = evaluate_state(network, params, env_params.substrate, episode.env, hetero)
            episode, _, _, _ = cmdp.step(env_params, episode, greedy_action(masked), tolerant=True)
            return episode, None

        episode, _ = jax.lax.scan(body, cmdp.start_episode(state), None, length=state.request.cpu.shape[0])
        feasible = episode.env.success & ~episode.violated
        return feasible.astype(jnp.float32), jnp.maximum(episode.max_cost, 0.0)

    return jax.vmap(run_one)(starts)


def multiplier_loss(network, params, substrate, states: env_lib.EnvState, flags: jax.Array, budgets: jax.Array,
                    hetero: bool) -> jax.Array:
    """-mean(lambda(s) * flag * (sg(V_c(s)) - budget)) over a batch of states."""
    outputs, _ = jax.vmap(lambda state: evaluate_state(network, params, substrate, state, hetero))(states)
    gap = jax.lax.stop_gradient(outputs.cost_value) - budgets
    return -jnp.mean(outputs.multiplier * flags * gap)


def _normalise(x: jax.Array) -> jax.Array:
    return (x - x.mean()) / (x.std() + 1e-8)


def _ppo_loss(params, network, config: TrainConfig, substrate, batch: Transition, returns, cost_returns):
    outputs, masked = jax.vmap(lambda state: evaluate_state(network, params, substrate, state,
                                                            config.hetero_graph))(batch.env_state)
    log_probs = jax.nn.log_softmax(masked)
    log_prob = jnp.take_along_axis(log_probs, batch.action[:, None], axis=1)[:, 0]
    entropy = -(jnp.exp(log_probs) * log_probs).sum(1)
    ratio = jnp.exp(log_prob - batch.log_prob)
    advantages = _normalise(returns - jax.lax.stop_gradient(outputs.value))
    clipped = jnp.clip(ratio, 1.0 - config.clip_epsilon, 1.0 + config.clip_epsilon)
    reward_loss = -jnp.mean(jnp.minimum(ratio * advantages, clipped * advantages))
    value_loss = jnp.mean((returns - outputs.value) ** 2)
    total = reward_loss + config.value_coef * value_loss - config.entropy_coef * entropy.mean()
    metrics = {"reward_loss": reward_loss, "value_loss": value_loss, "entropy": entropy.mean()}
    if config.constrained:
        cost_advantages = _normalise(cost_returns - jax.lax.stop_gradient(outputs.cost_value))
        cost_loss = jnp.mean(jax.lax.stop_gradient(outputs.multiplier) * ratio * cost_advantages)
        cost_value_loss = jnp.mean((cost_returns - outputs.cost_value) ** 2)
        total = total + cost_loss + config.cost_value_coef * cost_value_loss
        metrics.update(cost_loss=cost_loss, cost_value_loss=cost_value_loss, multiplier=outputs.multiplier.mean())
    return total, metrics


def _contrast_loss(params, network, config: TrainConfig, substrate, states: env_lib.EnvState, key: jax.Array):
    def embed(state, key):
        augmentation = graph_lib.sample_augmentation(key, substrate, state)
        graph = graph_lib.build_graph(substrate, state, hetero=config.hetero_graph, augmentation=augmentation)
        return network.apply(params, graph, substrate.cpu_capacity.shape[0], method="substrate_embeddings")

    count = states.step.shape[0]
    key_first, key_second = jax.random.split(key)
    first = jax.vmap(embed)(states, jax.random.split(key_first, count))
    second = jax.vmap(embed)(states, jax.random.split(key_second, count))
    width = first.shape[-1]
    return config.contrast_coef * losses.barlow_twins_loss(first.reshape(-1, width), second.reshape(-1, width))


def _assign_verdicts(is_start, flags_at, budgets_at, carry_flag, carry_budget):
    """Give every transition [T, B] the verdict of its episode's start (or the carried one before the first start)."""
    steps = is_start.shape[0]
    start_time = jax.lax.cummax(jnp.where(is_start, jnp.arange(steps)[:, None], -1), axis=0)
    columns = jnp.arange(is_start.shape[1])[None, :]
    safe = jnp.maximum(start_time, 0)
    flags = jnp.where(start_time >= 0, flags_at[safe, columns], carry_flag[None, :])
    budgets = jnp.where(start_time >= 0, budgets_at[safe, columns], carry_budget[None, :])
    return flags, budgets


def make_train_step(config: TrainConfig, root_key: jax.Array):
    """Return a jitted `train_step(state, env_params) -> (state, metrics)` doing one full update."""
    network = make_network(config)
    key_streams = jax.random.split(root_key)[1]
    keys_of_streams = stream_keys(key_streams, config.num_envs)
    key_updates = jax.random.fold_in(root_key, 1)

    def policy_step(params, env_params, streams, key):
        outputs, masked = jax.vmap(lambda state: evaluate_state(network, params, env_params.substrate, state,
                                                                config.hetero_graph))(streams.episode.env)
        actions = jax.random.categorical(key, masked).astype(jnp.int32)
        log_probs = jnp.take_along_axis(jax.nn.log_softmax(masked), actions[:, None], axis=1)[:, 0]
        return outputs, actions, log_probs

    def rollout(params, env_params, streams, key):
        def body(streams, step_key):
            outputs, actions, log_probs = policy_step(params, env_params, streams, step_key)
            new_streams, info = jax.vmap(cmdp.stream_step, in_axes=(0, None, None, 0, 0))(
                keys_of_streams, env_params, config.stream, streams, actions)
            transition = Transition(env_state=streams.episode.env, action=actions, log_prob=log_probs,
                                    value=outputs.value, cost_value=outputs.cost_value, reward=info.reward,
                                    cost=info.cost, done=info.done, accepted=info.accepted, violated=info.violated)
            return new_streams, transition

        return jax.lax.scan(body, streams, jax.random.split(key, config.rollout_steps))

    def verdicts(state, env_params, buffer):
        """Flags and budgets [T, B] from the greedy copy, the new carry, and how many starts went unchecked."""
        steps, envs = buffer.done.shape
        is_start = buffer.env_state.step == 0
        if not (config.constrained and config.adaptive_budget):
            ones = jnp.ones((steps, envs), jnp.float32)
            return ones, jnp.zeros_like(ones), state.episode_flag, state.episode_budget, jnp.int32(0)
        flat_start = is_start.reshape(-1)
        chosen = jnp.argsort(~flat_start, stable=True)[:config.greedy_capacity]
        starts = jax.tree.map(lambda leaf: leaf.reshape((-1,) + leaf.shape[2:])[chosen], buffer.env_state)
        flag, budget = greedy_verdicts(network, state.greedy_params, env_params, starts, config.hetero_graph)
        checked = flat_start[chosen]
        # Starts beyond the capacity are not checked and count as solvable with budget 0 (as without ARB).
        flags_at = jnp.ones(steps * envs, jnp.float32).at[chosen].set(jnp.where(checked, flag, 1.0))
        budgets_at = jnp.zeros(steps * envs, jnp.float32).at[chosen].set(jnp.where(checked, budget, 0.0))
        flags, budgets = _assign_verdicts(is_start, flags_at.reshape(steps, envs), budgets_at.reshape(steps, envs),
                                          state.episode_flag, state.episode_budget)
        unchecked = flat_start.sum() - checked.sum()
        return flags, budgets, flags[-1], budgets[-1], unchecked.astype(jnp.int32)

    @jax.jit
    def train_step(state: TrainState, env_params: env_lib.EnvParams) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(key_updates, state.update)
        key_rollout, key_minibatch, key_contrast, key_multiplier = jax.random.split(key, 4)
        greedy_params = jax.tree.map(lambda new, old: jnp.where(state.update % config.greedy_sync_every == 0, new, old),
                                     state.params, state.greedy_params)
        state = state._replace(greedy_params=greedy_params)
        substrate = env_params.substrate

        streams, buffer = rollout(state.params, env_params, state.streams, key_rollout)
        last_outputs, _, _ = policy_step(state.params, env_params, streams, key_rollout)
        _, returns = losses.reward_advantages(buffer.reward, buffer.value, buffer.done, last_outputs.value,
                                              config.gamma, config.gae_lambda)
        cost_return_fn = losses.reachability_returns if config.reachability else losses.cumulative_cost_returns
        cost_returns = cost_return_fn(buffer.cost, buffer.done, last_outputs.cost_value)
        flags, budgets, carry_flag, carry_budget, unchecked = verdicts(state, env_params, buffer)

        size = config.num_envs * config.rollout_steps
        flat = jax.tree.map(lambda leaf: leaf.reshape((size,) + leaf.shape[2:]),
                            (buffer, returns, cost_returns, flags, budgets))
        main_tx, multiplier_tx, contrast_tx = make_optimizers(config, state.params)

        def minibatch_step(carry, index):
            params, main_opt, contrast_opt = carry
            picks = jax.random.randint(jax.random.fold_in(key_minibatch, index), (config.minibatch_size,), 0, size)
            batch, batch_returns, batch_cost_returns, _, _ = jax.tree.map(lambda leaf: leaf[picks], flat)
            grads, metrics = jax.grad(_ppo_loss, has_aux=True)(params, network, config, substrate, batch,
                                                               batch_returns, batch_cost_returns)
            updates, main_opt = main_tx.update(grads, main_opt, params)
            params = optax.apply_updates(params, updates)
            if config.path_contrast:
                states = jax.tree.map(lambda leaf: leaf[:config.contrast_states], batch.env_state)
                contrast, contrast_grads = jax.value_and_grad(_contrast_loss)(
                    params, network, config, substrate, states, jax.random.fold_in(key_contrast, index))
                updates, contrast_opt = contrast_tx.update(contrast_grads, contrast_opt, params)
                params = optax.apply_updates(params, updates)
                metrics["contrast_loss"] = contrast
            return (params, main_opt, contrast_opt), metrics

        (params, main_opt, contrast_opt), metrics = jax.lax.scan(
            minibatch_step, (state.params, state.main_opt, state.contrast_opt), jnp.arange(config.num_minibatches))
        metrics = jax.tree.map(jnp.mean, metrics)

        multiplier_opt = state.multiplier_opt
        if config.constrained:
            picks = jax.random.randint(key_multiplier, (config.minibatch_size,), 0, size)
            batch, _, _, batch_flags, batch_budgets = jax.tree.map(lambda leaf: leaf[picks], flat)
            loss, grads = jax.value_and_grad(multiplier_loss, argnums=1)(
                network, params, substrate, batch.env_state, batch_flags, batch_budgets, config.hetero_graph)
            updates, multiplier_opt = multiplier_tx.update(grads, multiplier_opt, params)
            params = optax.apply_updates(params, updates)
            metrics.update(multiplier_loss=loss, feasible_flag=flags.mean(), budget=budgets.mean(),
                           unchecked_starts=unchecked)

        episodes = buffer.done.sum()
        metrics.update(
            episodes=episodes,
            acceptance=buffer.accepted.sum() / jnp.maximum(episodes, 1),
            violation_rate=buffer.violated.sum() / jnp.maximum(episodes, 1),
            episode_reward=buffer.reward.sum() / jnp.maximum(episodes, 1),
            mean_cost=buffer.cost.mean(),
            dropped=streams.dropped.sum(),
        )
        new_state = TrainState(params=params, greedy_params=state.greedy_params, main_opt=main_opt,
                               multiplier_opt=multiplier_opt, contrast_opt=contrast_opt, streams=streams,
                               episode_flag=carry_flag, episode_budget=carry_budget, update=state.update + 1)
        return new_state, metrics

    return train_step
