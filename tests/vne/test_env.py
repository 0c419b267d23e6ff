"""The functional environment under jit and vmap: masks, resource accounting and episode ends."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.vne import embedding, env

BATCH = 64


def _random_masked_action(key, mask):
    """A uniformly random feasible node, or node 0 when none is feasible."""
    logits = jnp.where(mask, 0.0, -jnp.inf)
    return jnp.where(mask.any(), jax.random.categorical(key, logits), 0)


def test_sampled_requests_are_connected_and_in_range(small_setup):
    _, _, arrays, _ = small_setup
    params = env.make_params(arrays, max_nodes=5)
    batch = jax.jit(jax.vmap(lambda key: env.sample_request(key, params, 5)))(jax.random.split(jax.random.key(1), 200))
    batch = jax.tree.map(np.asarray, batch)
    nodes = batch.num_nodes
    assert nodes.min() >= 2
    assert nodes.max() <= 5
    assert batch.cpu.max() <= 20
    assert batch.link_bw.max() <= 50
    for r in range(200):
        links = batch.link_valid[r]
        reached = {0}
        for _ in range(5):
            for src, dst in zip(batch.link_src[r][links], batch.link_dst[r][links]):
                if src in reached or dst in reached:
                    reached |= {int(src), int(dst)}
        assert reached == set(range(nodes[r])), r


def test_vmapped_episodes_keep_constraints(small_setup):
    network, paths, arrays, _ = small_setup
    params = env.make_params(arrays, max_nodes=5)
    reset = jax.jit(jax.vmap(lambda key: env.reset(key, params, max_nodes=5)))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def play(state, key):
        keys = jax.random.split(key, BATCH)
        actions = jax.vmap(_random_masked_action)(keys, jax.vmap(env.action_mask)(state))
        return jax.vmap(env.step, in_axes=(None, 0, 0))(params, state, actions)

    state = reset(jax.random.split(jax.random.key(0), BATCH))
    assert np.all(np.asarray(state.step) == 0)
    done_before = np.zeros(BATCH, bool)
    total_reward = np.zeros(BATCH)
    for step_index in range(5):
        previous = state
        state, reward, done = play(state, jax.random.key(100 + step_index))
        done = np.asarray(done)
        assert np.all(done >= done_before), "an episode came back to life"
        # A finished episode is left unchanged by further steps.
        for leaf_before, leaf_after in zip(jax.tree.leaves(previous), jax.tree.leaves(state)):
            np.testing.assert_array_equal(np.asarray(leaf_before)[done_before], np.asarray(leaf_after)[done_before])
        assert np.asarray(state.resources.cpu).min() >= 0
        assert np.asarray(state.resources.bw).min() >= 0
        total_reward += np.asarray(reward)
        done_before = done
    assert done_before.all(), "every episode ends after max_nodes steps"

    success = np.asarray(state.success)
    assert 0 < success.sum() < BATCH, "the test should see both successes and failures"
    for i in range(BATCH):
        one = jax.tree.map(lambda leaf: leaf[i], state)
        if success[i]:
            assert embedding.check_embedding(network, paths, one.request, one.embedding) == []
            cost = int(embedding.embedding_cost(arrays, one.request, one.embedding))
            revenue = int(embedding.request_revenue(one.request))
            np.testing.assert_allclose(total_reward[i], revenue / max(cost, 1), rtol=1e-6)
            released = embedding.release(arrays, one.resources, one.request, one.embedding)
            np.testing.assert_array_equal(np.asarray(released.cpu), network.cpu)
            np.testing.assert_array_equal(np.asarray(released.bw), network.bw)
        else:
            assert total_reward[i] == 0.0
            np.testing.assert_array_equal(np.asarray(one.resources.cpu), network.cpu)
            np.testing.assert_array_equal(np.asarray(one.resources.bw), network.bw)


def test_masked_out_action_fails_episode(small_setup):
    _, _, arrays, trace = small_setup
    params = env.make_params(arrays, max_nodes=5)
    request = jax.tree.map(lambda leaf: leaf[0], embedding.trace_requests(trace))
    no_cpu = embedding.Resources(cpu=jnp.zeros_like(arrays.cpu_capacity), bw=arrays.bw_capacity)
    request = request._replace(cpu=request.cpu.at[:].set(jnp.where(jnp.arange(5) < request.num_nodes, 1, 0)))
    state = jax.jit(env.reset)(jax.random.key(0), params, request, no_cpu)
    assert not np.asarray(env.action_mask(state)).any()
    state, reward, done = jax.jit(env.step)(params, state, jnp.int32(0))
    assert bool(done)
    assert not bool(state.success)
    assert float(reward) == 0.0
    np.testing.assert_array_equal(np.asarray(state.resources.cpu), 0)
