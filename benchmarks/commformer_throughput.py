"""Training throughput (environment steps per second) of CommFormer and of a MAPPO trainer on SMAX 3m.

Run:
  python benchmarks/commformer_throughput.py [--env_steps=131072] [--write_doc]
  python benchmarks/commformer_throughput.py --env_steps=16384 --mappo_envs=32 --mappo_steps=64  # smoke run

The MAPPO trainer follows the recipe of JaxMARL's `baselines/MAPPO/mappo_rnn_smax.py` (written here from
its description, not copied): a GRU actor on each agent's observation with action masking and a GRU
critic on the world state plus a one-hot agent id, parameters shared across agents, 128 environments x 128
steps per update, 4 epochs x 4 minibatches, Adam with gradient clipping. CommFormer runs the `default`
config of configs/commformer/smax.py. Both train for the same number of environment steps (rounded to whole
updates) after one update that compiles; the table reports steps per second of the timed updates
(rollout and learning together) and their ratio. `--write_doc` puts the record into docs/commformer.md.
"""

import functools
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks import commformer_record  # noqa: E402
from jaxlab.commformer import envs, ppo, train  # noqa: E402
from jaxlab.core.config import load_config_file  # noqa: E402

_ENV_STEPS = flags.DEFINE_integer("env_steps", 131072, "Timed environment steps per trainer.")
_MAP = flags.DEFINE_string("map", "3m", "SMAX map.")
_MAPPO_ENVS = flags.DEFINE_integer("mappo_envs", 128, "MAPPO parallel environments.")
_MAPPO_STEPS = flags.DEFINE_integer("mappo_steps", 128, "MAPPO rollout length.")
_VARIANT = flags.DEFINE_string("variant", "", "Variant of configs/commformer/smax.py for CommFormer.")
_WRITE_DOC = flags.DEFINE_bool("write_doc", False, "Write the record into docs/commformer.md.")

_HIDDEN = 128  # FC and GRU widths of the JaxMARL SMAX recipe.


class RecurrentMLP(nn.Module):
    """Dense + ReLU, a GRU whose carry resets at episode starts, Dense + ReLU, then a linear output."""

    outputs: int

    @nn.compact
    def __call__(self, carry, inputs, resets):
        # inputs [T, B, D], resets [T, B]; returns (carry [B, H], outputs [T, B, outputs]).
        x = nn.relu(nn.Dense(_HIDDEN)(inputs))
        cell = nn.GRUCell(_HIDDEN)

        def step(cell, carry, xs):
            x, reset = xs
            carry = jnp.where(reset[:, None], 0.0, carry)
            return cell(carry, x)

        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False})
        carry, hidden = scan(cell, carry, (x, resets))
        return carry, nn.Dense(self.outputs)(nn.relu(nn.Dense(_HIDDEN)(hidden)))


def make_mappo(map_name: str, num_envs: int, rollout_length: int, lr: float = 2e-3, epochs: int = 4,
               minibatches: int = 4, clip_eps: float = 0.2, max_grad_norm: float = 0.5):
    """Return (init(key) -> state, update(state) -> state) of the MAPPO recipe on a SMAX map."""
    envs.import_jaxmarl()
    from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario

    env = HeuristicEnemySMAX(scenario=map_name_to_scenario(map_name))
    agents, num_agents = env.agents, env.num_agents
    num_actions = env.action_space(agents[0]).n
    actors = num_envs * num_agents
    actor, critic = RecurrentMLP(num_actions), RecurrentMLP(1)
    tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr, eps=1e-5))

    def arrays(obs, state):
        local = jnp.stack([obs[a] for a in agents], 1).reshape(actors, -1)  # Environment-major.
        world = jnp.repeat(obs["world_state"][:, None], num_agents, 1)
        world = jnp.concatenate([world, jnp.broadcast_to(jnp.eye(num_agents), world.shape[:2] + (num_agents,))], -1)
        avail = jax.vmap(env.get_avail_actions)(state)
        avail = jnp.stack([avail[a] for a in agents], 1).reshape(actors, -1)
        return local, world.reshape(actors, -1), avail

    def init(key):
        key_actor, key_critic, key_env = jax.random.split(key, 3)
        obs, env_state = jax.vmap(env.reset)(jax.random.split(key_env, num_envs))
        local, world, _ = arrays(obs, env_state)
        carry = jnp.zeros((actors, _HIDDEN))
        resets = jnp.zeros((1, actors), bool)
        params = {"actor": actor.init(key_actor, carry, local[None], resets),
                  "critic": critic.init(key_critic, carry, world[None], resets)}
        return dict(params=params, opt=tx.init(params), env_state=env_state, obs=obs,
                    done=jnp.zeros((actors,), bool), carry=(carry, carry), key=key)

    def update(state, _):
        key, key_rollout, key_epochs = jax.random.split(state["key"], 3)
        params = state["params"]

        def env_step(carry, step_key):
            env_state, obs, done, (actor_carry, critic_carry) = carry
            local, world, avail = arrays(obs, env_state)
            actor_carry, logits = actor.apply(params["actor"], actor_carry, local[None], done[None])
            critic_carry, value = critic.apply(params["critic"], critic_carry, world[None], done[None])
            logits = ppo.masked_logits(logits[0], avail)
            key_action, key_env = jax.random.split(step_key)
            action = jax.random.categorical(key_action, logits)
            log_prob = jax.nn.log_softmax(logits)[jnp.arange(actors), action]
            actions = action.reshape(num_envs, num_agents)
            obs, env_state, reward, dones, _ = jax.vmap(env.step)(
                jax.random.split(key_env, num_envs), env_state, {a: actions[:, i] for i, a in enumerate(agents)})
            reward = jnp.stack([reward[a] for a in agents], 1).reshape(actors)
            all_done = jnp.repeat(dones["__all__"], num_agents)
            transition = (local, world, avail, done, action, log_prob, value[0, :, 0], reward, all_done)
            return (env_state, obs, all_done, (actor_carry, critic_carry)), transition

        initial_carry = state["carry"]
        rollout, traj = jax.lax.scan(env_step, (state["env_state"], state["obs"], state["done"], initial_carry),
                                     jax.random.split(key_rollout, rollout_length))
        env_state, obs, done, last_carry = rollout
        local, world, avail, resets, actions, old_log_probs, values, rewards, dones = traj
        _, last_world, _ = arrays(obs, env_state)
        _, last_value = critic.apply(params["critic"], last_carry[1], last_world[None], done[None])
        advantages, targets = ppo.gae(rewards, values, dones, last_value[0, :, 0], 0.99, 0.95)

        def loss_fn(params, batch):
            local, world, avail, resets, actions, old_log_probs, values, advantages, targets, c0, c1 = batch
            _, logits = actor.apply(params["actor"], c0, local, resets)
            _, new_values = critic.apply(params["critic"], c1, world, resets)
            logits = ppo.masked_logits(logits, avail)
            log_probs = ppo.categorical_log_prob(logits, avail, actions)
            entropy = ppo.categorical_entropy(logits, avail).mean()
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            policy_loss, _ = ppo.clipped_policy_loss(log_probs, old_log_probs, advantages, clip_eps)
            new_values = new_values[..., 0]
            clipped = values + jnp.clip(new_values - values, -clip_eps, clip_eps)
            value_loss = 0.5 * jnp.mean(jnp.maximum((new_values - targets) ** 2, (clipped - targets) ** 2))
            return policy_loss + 0.5 * value_loss - 0.01 * entropy

        def epoch(carry, epoch_key):
            params, opt = carry
            order = jax.random.permutation(epoch_key, actors).reshape(minibatches, -1)
            sequences = (local, world, avail, resets, actions, old_log_probs, values, advantages, targets)

            def minibatch(carry, indices):
                params, opt = carry
                batch = tuple(x[:, indices] for x in sequences) + (initial_carry[0][indices],
                                                                    initial_carry[1][indices])
                grads = jax.grad(loss_fn)(params, batch)
                updates, opt = tx.update(grads, opt, params)
                return (optax.apply_updates(params, updates), opt), None

            return jax.lax.scan(minibatch, (params, opt), order)[0], None

        (params, opt), _ = jax.lax.scan(epoch, (params, state["opt"]), jax.random.split(key_epochs, epochs))
        return dict(params=params, opt=opt, env_state=env_state, obs=obs, done=done, carry=last_carry, key=key), None

    return init, update, num_envs * rollout_length


def _time_updates(update_chunk, state, num_updates: int) -> float:
    """Compile and run one update, then return the seconds of `num_updates` more."""
    state = jax.block_until_ready(update_chunk(state, 1))
    start = time.perf_counter()
    jax.block_until_ready(update_chunk(state, num_updates))
    return time.perf_counter() - start


def main(argv):
    del argv
    rows = []

    config = load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs", "commformer", "smax.py"),
                              _VARIANT.value)
    config.env.name = _MAP.value
    config.train.updates_per_chunk = 1
    trainer = train.make_train(config)
    num_updates = max(_ENV_STEPS.value // trainer.env_steps_per_update, 1)

    @functools.partial(jax.jit, static_argnums=1)
    def commformer_chunk(state, length):
        return jax.lax.scan(lambda s, _: (trainer.run_chunk(s)[0], None), state, None, length=length)[0]

    seconds = _time_updates(commformer_chunk, trainer.init(jax.random.key(0)), num_updates)
    rows.append(("CommFormer (this repo, graph learned, gating on)", num_updates * trainer.env_steps_per_update,
                 seconds))

    mappo_init, mappo_update, steps_per_update = make_mappo(_MAP.value, _MAPPO_ENVS.value, _MAPPO_STEPS.value)
    num_updates = max(_ENV_STEPS.value // steps_per_update, 1)

    @functools.partial(jax.jit, static_argnums=1)
    def mappo_chunk(state, length):
        return jax.lax.scan(mappo_update, state, None, length=length)[0]

    seconds = _time_updates(mappo_chunk, mappo_init(jax.random.key(0)), num_updates)
    rows.append(("MAPPO, JaxMARL recipe (GRU actor, world-state critic)", num_updates * steps_per_update, seconds))

    lines = [commformer_record.record_header(), "",
             "| trainer | env steps timed | seconds | env steps/s |", "| --- | --- | --- | --- |"]
    for name, steps, seconds in rows:
        lines.append(f"| {name} | {steps} | {seconds:.1f} | {steps / seconds:,.0f} |")
    ratio = (rows[0][1] / rows[0][2]) / (rows[1][1] / rows[1][2])
    lines += ["", f"CommFormer / MAPPO throughput ratio: {ratio:.2f} (map {_MAP.value}, CommFormer variant "
              f"'{_VARIANT.value or 'default'}', MAPPO {_MAPPO_ENVS.value} envs x {_MAPPO_STEPS.value} steps)."]
    record = "\n".join(lines)
    print(record)
    if _WRITE_DOC.value:
        commformer_record.replace_section("throughput", record)


if __name__ == "__main__":
    app.run(main)
