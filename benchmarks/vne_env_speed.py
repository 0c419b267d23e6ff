"""Steps per second of the vmapped VNE environment (256 instances, WX100, k = 10)."""
import time
import jax, jax.numpy as jnp, numpy as np
from jaxlab.vne import embedding, env, substrate
network = substrate.load_builtin("wx100", np.random.default_rng(0))
arrays = embedding.substrate_arrays(network, substrate.candidate_paths(network, k=10))
params = env.make_params(arrays)
batch = 256
reset = jax.jit(jax.vmap(lambda key: env.reset(key, params)))

@jax.jit
def rollout(key):
    state = reset(jax.random.split(key, batch))
    def body(state, key):
        masks = jax.vmap(env.action_mask)(state)
        actions = jax.random.categorical(key, jnp.where(masks, 0.0, -jnp.inf), shape=(batch,))
        actions = jnp.where(masks.any(axis=1), actions, 0)
        state, reward, done = jax.vmap(env.step, in_axes=(None, 0, 0))(params, state, actions)
        return state, reward
    state, rewards = jax.lax.scan(body, state, jax.random.split(key, 10))
    return state.success.sum(), rewards.sum()
jax.block_until_ready(rollout(jax.random.key(0)))
runs = 20
start = time.perf_counter()
for i in range(runs):
    jax.block_until_ready(rollout(jax.random.key(i + 1)))
elapsed = time.perf_counter() - start
print(f"{runs * 10 * batch / elapsed:.0f} env steps/s ({batch} instances x 10 steps per rollout, resets included)")
