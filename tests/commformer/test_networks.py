"""Graph-masked attention against a dense NumPy reference, and the policies' masking and shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.commformer import graph, networks


def _dense_attention_reference(params, query_input, key_value_input, mask, adjacency, num_heads, relation):
    """Masked multi-head attention written out with NumPy loops over heads, receivers and senders."""
    p = jax.tree.map(np.asarray, params)
    dense = lambda name, x: x @ p[name]["kernel"] + p[name]["bias"]
    num_agents, embed_dim = query_input.shape
    head_dim = embed_dim // num_heads
    q, k, v = dense("query", query_input), dense("key", key_value_input), dense("value", key_value_input)
    out = np.zeros((num_agents, embed_dim))
    for h in range(num_heads):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        scores = np.full((num_agents, num_agents), -np.inf)
        for i in range(num_agents):
            for j in range(num_agents):
                if mask[i, j] == 0:
                    continue
                qi, kj = q[i, cols], k[j, cols]
                if relation:
                    edge = p["edge_embedding"][int(adjacency[i, j])]  # Receiver i, sender j.
                    qi = qi + dense("relation_query", edge)[cols]
                    kj = kj + dense("relation_key", edge)[cols]
                scores[i, j] = qi @ kj / np.sqrt(head_dim)
        weights = np.exp(scores - scores.max(axis=1, keepdims=True))
        weights = weights / weights.sum(axis=1, keepdims=True)
        out[:, cols] = weights @ v[:, cols]
    return dense("output", out)


@pytest.mark.parametrize("num_heads, relation", [(1, True), (2, True), (2, False)])
def test_graph_attention_matches_dense_reference(num_heads, relation):
    num_agents, embed_dim = 5, 8
    keys = jax.random.split(jax.random.key(0), 4)
    query_input = jax.random.normal(keys[0], (num_agents, embed_dim))
    key_value_input = jax.random.normal(keys[1], (num_agents, embed_dim))
    alpha = jax.random.normal(keys[2], (num_agents, num_agents))
    adjacency = graph.top_k_graph(alpha, 2)  # Asymmetric, so reading A[j, i] instead of A[i, j] would differ.
    gates = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0])
    mask = graph.attention_mask(adjacency, gates) * networks.causal_mask(num_agents)

    module = networks.GraphAttention(num_heads, relation)
    params = module.init(keys[3], query_input, key_value_input, mask, adjacency)["params"]
    # Make the edge embeddings distinct and large, so that the relation term matters.
    if relation:
        params = dict(params, edge_embedding=jnp.array([[-2.0] * embed_dim, [3.0] * embed_dim]) * jnp.arange(
            1, embed_dim + 1) / embed_dim)
    actual = module.apply({"params": params}, query_input, key_value_input, mask, adjacency)
    expected = _dense_attention_reference(params, np.asarray(query_input), np.asarray(key_value_input),
                                          np.asarray(mask), np.asarray(adjacency), num_heads, relation)
    np.testing.assert_allclose(actual, expected, rtol=2e-4, atol=2e-5)


def test_commformer_decoder_is_causal():
    num_agents, num_actions = 4, 5
    model = networks.CommFormer(num_agents, num_actions, embed_dim=16, num_heads=2)
    obs = jax.random.normal(jax.random.key(0), (num_agents, 7))
    shifted = jax.nn.one_hot(jnp.array([0, 2, 3, 1]), num_actions + 1)
    adjacency = graph.full_graph(num_agents)
    params = model.init(jax.random.key(1), obs, shifted, adjacency, jnp.ones(num_agents))
    values, head, gate_logits = model.apply(params, obs, shifted, adjacency, jnp.ones(num_agents))
    assert values.shape == (num_agents,)
    assert head.shape == (num_agents, num_actions)
    assert gate_logits.shape == (num_agents,)

    # Changing the decoder input at position 2 may change heads 2 and 3 only.
    changed = shifted.at[2].set(jax.nn.one_hot(5, num_actions + 1))
    _, head_changed, _ = model.apply(params, obs, changed, adjacency, jnp.ones(num_agents))
    np.testing.assert_allclose(head_changed[:2], head[:2], rtol=1e-6)
    assert not np.allclose(head_changed[2:], head[2:])


def test_empty_graph_isolates_agents():
    num_agents = 3
    model = networks.CommFormer(num_agents, 4, embed_dim=8)
    obs = jax.random.normal(jax.random.key(0), (num_agents, 6))
    shifted = jax.nn.one_hot(jnp.zeros(num_agents, jnp.int32), 5)
    params = model.init(jax.random.key(1), obs, shifted, graph.full_graph(num_agents), jnp.ones(num_agents))
    empty = graph.empty_graph(num_agents)
    values, _, _ = model.apply(params, obs, shifted, empty, jnp.ones(num_agents))
    values_changed, _, _ = model.apply(params, obs.at[1].set(-obs[1] ** 2), shifted, empty, jnp.ones(num_agents))
    np.testing.assert_allclose(values_changed[np.array([0, 2])], values[np.array([0, 2])], rtol=1e-6)
    # With the full graph, agent 0's value depends on agent 1's observation.
    full = graph.full_graph(num_agents)
    values, _, _ = model.apply(params, obs, shifted, full, jnp.ones(num_agents))
    values_changed, _, _ = model.apply(params, obs.at[1].set(-obs[1] ** 2), shifted, full, jnp.ones(num_agents))
    assert not np.isclose(values_changed[0], values[0])
