"""The jitted CommFormer trainer: rollouts in vmapped JaxMARL environments, GAE and bi-level PPO updates.

`make_train(config)` returns a `Trainer`. Its `train_chunk(state)` runs `config.train.updates_per_chunk`
PPO updates in one `lax.scan` under `jit`, so the Python shell (`experiment.run`) can log, evaluate and
checkpoint between chunks. `Trainer.train(key)` runs all chunks in one pure function that can be jitted or
vmapped over seeds. Randomness of update u is `fold_in(state.key, u)`, so a resumed run replays the same draws.

One PPO update: roll out `rollout_length` steps in `num_envs` environments, acting autoregressively over
agents with the deterministic top-k graph; compute GAE; then run `num_epochs` epochs of `num_minibatches`
minibatches. With a learned graph, epoch e (0-based) with (e + 1) % `alpha_period` == 0 steps only the graph
logits alpha, the other epochs only the network weights (first-order bi-level optimisation as in
CommFormer); during warm-up and after the post-stable point alpha is frozen and every epoch steps the weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxlab.commformer import envs as envs_lib
from jaxlab.commformer import graph as graph_lib
from jaxlab.commformer import networks
from jaxlab.commformer import ppo

GRAPH_MODES = ("learned", "full", "none")
MODEL_KINDS = ("commformer", "mappo")
FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


class TrainState(NamedTuple):
    """Everything a chunk of training reads and writes; a pytree of arrays that checkpoints restore.

    Fields:
      params: {"weights": the Flax parameters of the policy (gate network included),
               "alpha": float32 [N, N] graph logits, rows are receivers}.
      weights_opt_state: optax state of the weights optimiser (gradient clipping + Adam).
      alpha_opt_state: optax state of the graph-logit optimiser (Adam).
      value_norm: running statistics of value targets.
      env_state: `envs.EnvState` batched over environments [E, ...].
      episode_return: float32 [E], the agent-mean return of each environment's current episode so far.
      update: int32 [], the number of PPO updates done.
      key: uint32 [2], the run's root key; update u draws from fold_in(key, u).
    """

    params: dict
    weights_opt_state: Any
    alpha_opt_state: Any
    value_norm: ppo.ValueNormState
    env_state: envs_lib.EnvState
    episode_return: jax.Array
    update: jax.Array
    key: jax.Array


class Transition(NamedTuple):
    """One rollout step of E environments (time is the leading axis once stacked by `lax.scan`).

    Fields: obs float32 [E, N, obs_dim]; avail float32 [E, N, num_actions]; actions int32 [E, N] or float32
    [E, N, num_actions]; log_probs float32 [E, N] (joint autoregressive policy, per agent); values float32
    [E, N] (normalised); gate_noise float32 [E, N] (the logistic noise of the gate sample); gates float32
    [E, N] in {0, 1}; active float32 [E, N] (1 for agents alive at this step); rewards float32 [E, N];
    dones bool [E]; wins bool [E]; returns float32 [E] (the agent-mean return of the episode that ended at
    this step, 0 elsewhere).
    """

    obs: jax.Array
    avail: jax.Array
    actions: jax.Array
    log_probs: jax.Array
    values: jax.Array
    gate_noise: jax.Array
    gates: jax.Array
    active: jax.Array
    rewards: jax.Array
    dones: jax.Array
    wins: jax.Array
    returns: jax.Array


@dataclasses.dataclass(frozen=True)
class Trainer:
    """The pure functions of one training configuration.

    Attributes:
      env: the environment.
      model: the Flax policy module.
      num_links: k, incoming links per agent of the learned graph (0 for the fixed graphs).
      num_updates: PPO updates in the whole run (a multiple of `updates_per_chunk`).
      num_chunks: `num_updates / updates_per_chunk`.
      env_steps_per_update: `num_envs * rollout_length` environment steps (each of N agents).
      init: key -> TrainState.
      run_chunk: TrainState -> (TrainState, metrics), metrics being float32 [updates_per_chunk] arrays; the
        pure function that `train` scans.
      train_chunk: `run_chunk` under `jit` (with `FAST_COMPILE_OPTIONS` when `train.fast_compile`).
      evaluate: jitted (params, update, key) -> dict of float32 scalars: win_rate, episode_return,
        gate_rate (the fraction of alive agents' steps with an open gate) over `eval_episodes` episodes with
        greedy actions, the deterministic graph and gates.
      graph: (params, update) -> the deterministic graph used at that update (for plots).
      collect: (state, key) -> a rollout and its advantages, see `make_train` (not jitted; for tests).
      run_epoch: one PPO epoch of the bi-level schedule (not jitted; for tests).
      loss: (params, batch, advantages, targets, update, key) -> (loss, diagnostics) (not jitted).
    """

    env: envs_lib.MultiAgentEnv
    model: Any
    num_links: int
    num_updates: int
    num_chunks: int
    env_steps_per_update: int
    init: Callable[[jax.Array], TrainState]
    run_chunk: Callable[[TrainState], tuple[TrainState, dict]]
    train_chunk: Callable[[TrainState], tuple[TrainState, dict]]
    evaluate: Callable[[dict, jax.Array, jax.Array], dict]
    graph: Callable[[dict, jax.Array], jax.Array]
    collect: Callable[..., tuple]
    run_epoch: Callable[..., tuple]
    loss: Callable[..., tuple]

    def train(self, key: jax.Array) -> tuple[TrainState, dict]:
        """Run the whole training as one pure function: init, then a scan over all chunks."""
        def chunk(state, _):
            return self.run_chunk(state)

        state, metrics = jax.lax.scan(chunk, self.init(key), None, length=self.num_chunks)
        return state, jax.tree.map(lambda x: x.reshape(-1), metrics)


def build_model(config: ml_collections.ConfigDict, env: envs_lib.MultiAgentEnv):
    """Return the Flax policy named by `config.model.kind`."""
    if config.model.kind == "mappo":
        return networks.MAPPO(env.num_agents, env.num_actions, env.discrete,
                              hidden_dims=(config.model.embed_dim, config.model.embed_dim))
    return networks.CommFormer(env.num_agents, env.num_actions, env.discrete, config.model.embed_dim,
                               config.model.num_heads, config.model.num_blocks, config.model.share_actor,
                               config.model.relation_enhanced)


def make_train(config: ml_collections.ConfigDict) -> Trainer:
    """Build the trainer of a validated config (see `experiment.validate` for the fields)."""
    env = envs_lib.make_env(config.env.name, config.env.continuous_actions)
    model = build_model(config, env)
    num_agents = env.num_agents
    ppo_config, graph_config, gating_config = config.ppo, config.graph, config.gating
    learned_graph = config.model.kind == "commformer" and graph_config.mode == "learned"
    num_links = graph_lib.num_links(num_agents, graph_config.sparsity) if learned_graph else 0
    autoregressive = config.model.kind == "commformer"
    gating = config.model.kind == "commformer" and gating_config.enabled
    env_steps_per_update = ppo_config.num_envs * ppo_config.rollout_length
    updates_per_chunk = config.train.updates_per_chunk
    num_chunks = max(config.train.total_env_steps // (env_steps_per_update * updates_per_chunk), 1)
    num_updates = num_chunks * updates_per_chunk
    post_stable_update = int(graph_config.post_stable_fraction * num_updates) if graph_config.post_stable \
        else num_updates + 1
    batch_size = ppo_config.num_envs * ppo_config.rollout_length
    minibatch_size = batch_size // ppo_config.num_minibatches

    weights_tx = optax.chain(optax.clip_by_global_norm(ppo_config.max_grad_norm),
                             optax.adam(ppo_config.lr, eps=1e-5))
    alpha_tx = optax.adam(graph_config.alpha_lr, eps=1e-5)

    # --- graphs and gates -------------------------------------------------------------------------------

    def alpha_trainable(update: jax.Array) -> jax.Array:
        return jnp.asarray(learned_graph) & (update >= graph_config.warmup_updates) & (
            update < post_stable_update)

    def fixed_graph() -> jax.Array:
        if config.model.kind == "commformer" and graph_config.mode == "full":
            return graph_lib.full_graph(num_agents)
        return graph_lib.empty_graph(num_agents)

    def deterministic_graph(params: dict, update: jax.Array) -> jax.Array:
        if not learned_graph:
            return fixed_graph()
        exact = graph_lib.top_k_graph(params["alpha"], num_links)
        return jnp.where(update < graph_config.warmup_updates, graph_lib.full_graph(num_agents), exact)

    def training_graph(params: dict, update: jax.Array, key: jax.Array) -> jax.Array:
        if not learned_graph:
            return fixed_graph()
        sampled = graph_lib.gumbel_top_k_graph(key, params["alpha"], num_links, graph_config.gumbel_temperature)
        sampled = jnp.where(alpha_trainable(update), sampled, graph_lib.top_k_graph(params["alpha"], num_links))
        return jnp.where(update < graph_config.warmup_updates, graph_lib.full_graph(num_agents), sampled)

    def gates_from_noise(weights: dict, obs: jax.Array, noise: jax.Array) -> jax.Array:
        """Gumbel-sigmoid gates [N] with given logistic noise; all ones without gating."""
        if not gating:
            return jnp.ones(obs.shape[:-1])
        logits = model.apply(weights, obs, method=model.gate_logits)
        return graph_lib.gate_from_noise(logits, noise, gating_config.temperature)

    def greedy_gates(weights: dict, obs: jax.Array) -> jax.Array:
        if not gating:
            return jnp.ones(obs.shape[:-1])
        return graph_lib.deterministic_gate(model.apply(weights, obs, method=model.gate_logits))

    # --- acting ----------------------------------------------------------------------------------------

    start_width = env.num_actions + 1 if env.discrete else env.num_actions

    def embed_action(action: jax.Array) -> jax.Array:
        if env.discrete:
            return jax.nn.one_hot(action + 1, start_width)
        return action

    def shifted_actions(actions: jax.Array) -> jax.Array:
        """Decoder input [N, width]: a start token, then the actions of agents 0..N-2."""
        start = jnp.zeros((1, start_width)).at[0, 0].set(1.0 if env.discrete else 0.0)
        return jnp.concatenate([start, jax.vmap(embed_action)(actions[:-1])], axis=0)

    def log_prob_and_entropy(weights, head, avail, actions):
        if env.discrete:
            return ppo.categorical_log_prob(head, avail, actions), ppo.categorical_entropy(head, avail)
        std = model.apply(weights, method=model.action_std)
        return ppo.normal_log_prob(head, std, actions), ppo.normal_entropy(std, head.shape[:-1])

    def sample_action(weights, head, avail, key, greedy):
        if env.discrete:
            logits = ppo.masked_logits(head, avail)
            return jnp.where(greedy, jnp.argmax(logits, -1), jax.random.categorical(key, logits)).astype(jnp.int32)
        std = model.apply(weights, method=model.action_std)
        return jnp.where(greedy, head, head + std * jax.random.normal(key, head.shape))

    def act(weights, obs, avail, adjacency, gates, key, greedy):
        """Choose joint actions of one environment; return (actions, log_probs [N], values [N])."""
        representation, values = model.apply(weights, obs, adjacency, gates, method=model.encode)
        empty_actions = (jnp.zeros((num_agents,), jnp.int32) if env.discrete
                         else jnp.zeros((num_agents, env.num_actions)))

        if not autoregressive:
            head = model.apply(weights, shifted_actions(empty_actions), representation, adjacency, gates,
                               method=model.decode)
            actions = jax.vmap(lambda h, a, k: sample_action(weights, h, a, k, greedy))(
                head, avail, jax.random.split(key, num_agents))
            log_probs, _ = log_prob_and_entropy(weights, head, avail, actions)
            return actions, log_probs, values

        def choose(carry, agent):
            decoder_input, actions = carry
            head = model.apply(weights, decoder_input, representation, adjacency, gates,
                               method=model.decode)[agent]
            action = sample_action(weights, head, avail[agent], jax.random.fold_in(key, agent), greedy)
            log_prob, _ = log_prob_and_entropy(weights, head, avail[agent], action)
            decoder_input = decoder_input.at[agent + 1].set(embed_action(action), mode="drop")
            return (decoder_input, actions.at[agent].set(action)), log_prob

        start = shifted_actions(empty_actions).at[1:].set(0.0)
        (_, actions), log_probs = jax.lax.scan(choose, (start, empty_actions), jnp.arange(num_agents))
        return actions, log_probs, values

    # --- rollout ---------------------------------------------------------------------------------------

    def rollout_step(carry, step_key):
        params, env_state, episode_return, update = carry
        weights = params["weights"]
        adjacency = deterministic_graph(params, update)
        key_gate, key_act, key_env = jax.random.split(step_key, 3)
        noise = graph_lib.logistic_noise(key_gate, env_state.obs.shape[:2])
        gates = jax.vmap(gates_from_noise, (None, 0, 0))(weights, env_state.obs, noise)
        actions, log_probs, values = jax.vmap(act, (None, 0, 0, None, 0, 0, None))(
            weights, env_state.obs, env_state.avail, adjacency, gates,
            jax.random.split(key_act, ppo_config.num_envs), False)
        next_env_state, out = jax.vmap(env.step)(jax.random.split(key_env, ppo_config.num_envs), env_state,
                                                 actions)
        episode_return = episode_return + out.reward.mean(-1)
        transition = Transition(env_state.obs, env_state.avail, actions, log_probs, values, noise, gates,
                                jax.vmap(env.active)(env_state), out.reward, out.done, out.won,
                                jnp.where(out.done, episode_return, 0.0))
        episode_return = jnp.where(out.done, 0.0, episode_return)
        return (params, next_env_state, episode_return, update), transition

    # --- losses ----------------------------------------------------------------------------------------

    def loss_fn(params, batch, advantages, targets, update, key):
        """PPO loss of a minibatch of B samples (each N agents); returns (loss, diagnostics)."""
        weights = params["weights"]
        adjacency = training_graph(params, update, key)

        def forward(obs, avail, actions, noise):
            gates = gates_from_noise(weights, obs, noise)
            values, head, _ = model.apply(weights, obs, shifted_actions(actions), adjacency, gates)
            log_probs, entropy = log_prob_and_entropy(weights, head, avail, actions)
            return values, log_probs, entropy, gates

        values, log_probs, entropy, gates = jax.vmap(forward)(batch.obs, batch.avail, batch.actions,
                                                              batch.gate_noise)
        # Dead agents' samples carry no learning signal. Unmasked, their value loss backpropagates through
        # LayerNorms of all-zero features, and each one scales the gradient by 1 / sqrt(epsilon).
        active = batch.active if ppo_config.active_masks else None
        policy_loss, clip_fraction = ppo.clipped_policy_loss(log_probs, batch.log_probs, advantages,
                                                             ppo_config.clip_eps, active)
        value_loss = ppo.clipped_value_loss(values, batch.values, targets, ppo_config.clip_eps,
                                            ppo_config.huber_delta, active)
        entropy = ppo.masked_mean(entropy, active)
        # A dead agent takes no-ops whatever it receives, so under active masks its gate neither costs nor counts.
        gate_rate = ppo.masked_mean(gates, active)
        loss = (policy_loss + ppo_config.value_coef * value_loss - ppo_config.entropy_coef * entropy
                + (gating_config.cost * gate_rate if gating else 0.0))
        return loss, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                      "clip_fraction": clip_fraction, "train_gate_rate": gate_rate}

    # --- one PPO update --------------------------------------------------------------------------------

    def select(flag, if_true, if_false):
        return jax.tree.map(lambda a, b: jnp.where(flag, a, b), if_true, if_false)

    def collect(state: TrainState, key: jax.Array):
        """Roll out, then return (env_state, episode_return, value_norm, batch, advantages, targets, traj).

        `batch` holds the B = num_envs * rollout_length samples of the rollout, each of N agents;
        `advantages` (normalised over the batch's active agents) and `targets` (value targets in normalised units) are
        float32 [B, N].
        """
        key_rollout, key_last = jax.random.split(key)
        carry = (state.params, state.env_state, state.episode_return, state.update)
        carry, traj = jax.lax.scan(rollout_step, carry, jax.random.split(key_rollout, ppo_config.rollout_length))
        _, env_state, episode_return, _ = carry

        # Bootstrap value of the state after the rollout, with freshly sampled gates.
        weights = state.params["weights"]
        adjacency = deterministic_graph(state.params, state.update)
        last_gates = jax.vmap(gates_from_noise, (None, 0, 0))(
            weights, env_state.obs, graph_lib.logistic_noise(key_last, env_state.obs.shape[:2]))
        _, last_values = jax.vmap(lambda o, g: model.apply(weights, o, adjacency, g, method=model.encode))(
            env_state.obs, last_gates)

        value_norm = state.value_norm
        advantages, returns = ppo.gae(traj.rewards, ppo.denormalize(value_norm, traj.values),
                                      traj.dones[..., None], ppo.denormalize(value_norm, last_values),
                                      ppo_config.gamma, ppo_config.gae_lambda)
        value_norm = ppo.value_norm_update(value_norm, returns, ppo_config.value_norm_beta)
        targets = ppo.normalize(value_norm, returns)
        advantages = ppo.normalize_advantages(advantages, traj.active if ppo_config.active_masks else None)

        flat = lambda x: x.reshape((batch_size,) + x.shape[2:])
        return (env_state, episode_return, value_norm, jax.tree.map(flat, traj), flat(advantages), flat(targets),
                traj)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def run_epoch(params, weights_opt, alpha_opt, batch, advantages, targets, update, epoch, key):
        """Run one PPO epoch over all minibatches; return ((params, weights_opt, alpha_opt), diagnostics).

        Epochs with (epoch + 1) % alpha_period == 0 step only alpha while alpha is trainable; all other
        epochs step only the weights. The optimiser state of the untouched set does not advance.
        """
        is_alpha_epoch = alpha_trainable(update) & ((epoch + 1) % graph_config.alpha_period == 0)
        epoch_key = jax.random.fold_in(key, epoch)
        order = jax.random.permutation(jax.random.fold_in(epoch_key, 0), batch_size)
        order = order.reshape(ppo_config.num_minibatches, minibatch_size)

        def minibatch_step(carry, minibatch):
            params, weights_opt, alpha_opt = carry
            indices, index = minibatch
            take = lambda x: x[indices]
            graph_key = jax.random.fold_in(jax.random.fold_in(epoch_key, 1), index)
            (loss, diagnostics), grads = grad_fn(params, jax.tree.map(take, batch), advantages[indices],
                                                 targets[indices], update, graph_key)

            weight_updates, new_weights_opt = weights_tx.update(grads["weights"], weights_opt, params["weights"])
            new_weights = optax.apply_updates(params["weights"], weight_updates)
            alpha_updates, new_alpha_opt = alpha_tx.update(grads["alpha"], alpha_opt, params["alpha"])
            new_alpha = optax.apply_updates(params["alpha"], alpha_updates)
            weights, weights_opt = select(is_alpha_epoch, (params["weights"], weights_opt),
                                          (new_weights, new_weights_opt))
            alpha, alpha_opt = select(is_alpha_epoch, (new_alpha, new_alpha_opt), (params["alpha"], alpha_opt))
            diagnostics = dict(diagnostics, loss=loss, grad_norm=optax.tree.norm(grads["weights"]),
                               alpha_grad_norm=optax.tree.norm(grads["alpha"]))
            return ({"weights": weights, "alpha": alpha}, weights_opt, alpha_opt), diagnostics

        return jax.lax.scan(minibatch_step, (params, weights_opt, alpha_opt),
                            (order, jnp.arange(ppo_config.num_minibatches)))

    def update_step(state: TrainState, _):
        update_key = jax.random.fold_in(state.key, state.update)
        key_collect, key_epochs = jax.random.split(update_key)
        env_state, episode_return, value_norm, batch, advantages, targets, traj = collect(state, key_collect)

        def epoch_step(carry, epoch):
            return run_epoch(*carry, batch, advantages, targets, state.update, epoch, key_epochs)

        (params, weights_opt, alpha_opt), diagnostics = jax.lax.scan(
            epoch_step, (state.params, state.weights_opt_state, state.alpha_opt_state),
            jnp.arange(ppo_config.num_epochs))

        episodes = jnp.sum(traj.dones)
        metrics = {name: jnp.mean(value) for name, value in diagnostics.items()}
        metrics.update(
            episodes=episodes.astype(jnp.float32),
            win_rate=jnp.sum(traj.wins) / jnp.maximum(episodes, 1),
            episode_return=jnp.sum(traj.returns) / jnp.maximum(episodes, 1),
            gate_rate=ppo.masked_mean(traj.gates, traj.active),
            alpha_trainable=alpha_trainable(state.update).astype(jnp.float32),
            param_norm=optax.tree.norm(params["weights"]),
        )
        new_state = TrainState(params, weights_opt, alpha_opt, value_norm, env_state, episode_return,
                               state.update + 1, state.key)
        return new_state, metrics

    # --- init, chunks and evaluation -------------------------------------------------------------------

    def init(key: jax.Array) -> TrainState:
        key_params, key_env = jax.random.split(key)
        dummy_actions = (jnp.zeros((num_agents,), jnp.int32) if env.discrete
                         else jnp.zeros((num_agents, env.num_actions)))
        weights = model.init(key_params, jnp.zeros((num_agents, env.obs_dim)), shifted_actions(dummy_actions),
                             graph_lib.full_graph(num_agents), jnp.ones((num_agents,)))
        # Equal logits: the deterministic top-k then prefers lower sender indices until alpha is trained.
        params = {"weights": weights, "alpha": jnp.zeros((num_agents, num_agents))}
        env_state = jax.vmap(env.reset)(jax.random.split(key_env, ppo_config.num_envs))
        return TrainState(params, weights_tx.init(weights), alpha_tx.init(params["alpha"]), ppo.value_norm_init(),
                          env_state, jnp.zeros((ppo_config.num_envs,)), jnp.zeros((), jnp.int32),
                          jax.random.key_data(jax.random.fold_in(key, 1)))

    def train_chunk(state: TrainState) -> tuple[TrainState, dict]:
        return jax.lax.scan(update_step, state, None, length=updates_per_chunk)

    def evaluate(params: dict, update: jax.Array, key: jax.Array) -> dict:
        num_envs = config.train.eval_episodes
        weights = params["weights"]
        adjacency = deterministic_graph(params, update)
        key_reset, key_run = jax.random.split(key)
        env_state = jax.vmap(env.reset)(jax.random.split(key_reset, num_envs))

        def step(carry, step_key):
            env_state, running, episode_return, won, gate_sum, gate_count = carry
            gates = jax.vmap(greedy_gates, (None, 0))(weights, env_state.obs)
            alive_in_episode = running[:, None] * jax.vmap(env.active)(env_state)
            actions, _, _ = jax.vmap(act, (None, 0, 0, None, 0, 0, None))(
                weights, env_state.obs, env_state.avail, adjacency, gates,
                jax.random.split(step_key, num_envs), True)
            env_state, out = jax.vmap(env.step)(jax.random.split(jax.random.fold_in(step_key, 1), num_envs),
                                                env_state, actions)
            episode_return = episode_return + running * out.reward.mean(-1)
            won = won | (running & out.won)
            gate_sum = gate_sum + jnp.sum(alive_in_episode * gates)
            gate_count = gate_count + jnp.sum(alive_in_episode)
            running = running & ~out.done
            return (env_state, running, episode_return, won, gate_sum, gate_count), None

        carry = (env_state, jnp.ones((num_envs,), bool), jnp.zeros((num_envs,)), jnp.zeros((num_envs,), bool),
                 jnp.zeros(()), jnp.zeros(()))
        carry, _ = jax.lax.scan(step, carry, jax.random.split(key_run, env.episode_length))
        _, _, episode_return, won, gate_sum, gate_count = carry
        return {"win_rate": jnp.mean(won.astype(jnp.float32)), "episode_return": jnp.mean(episode_return),
                "gate_rate": gate_sum / jnp.maximum(gate_count, 1.0)}

    # XLA's CPU backend spends most of a short run compiling. Without its optimisation passes, compilation
    # was about 4x faster and the compiled code about 6x slower on 2 CPU cores, which suits tests and demos.
    compiler_options = FAST_COMPILE_OPTIONS if config.train.fast_compile else None
    return Trainer(env=env, model=model, num_links=num_links, num_updates=num_updates, num_chunks=num_chunks,
                   env_steps_per_update=env_steps_per_update, init=init, run_chunk=train_chunk,
                   train_chunk=jax.jit(train_chunk, compiler_options=compiler_options),
                   evaluate=jax.jit(evaluate, compiler_options=compiler_options), graph=deterministic_graph, collect=collect, run_epoch=run_epoch,
                   loss=loss_fn)
