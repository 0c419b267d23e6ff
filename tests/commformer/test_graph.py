"""Top-k communication graphs, straight-through gradients and temporal gates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.commformer import graph


@pytest.mark.parametrize("num_agents, sparsity, expected", [(3, 0.4, 1), (5, 0.4, 2), (10, 0.4, 4), (3, 1.0, 2),
                                                            (8, 0.05, 1), (11, 0.5, 5)])
def test_num_links(num_agents, sparsity, expected):
    assert graph.num_links(num_agents, sparsity) == expected


@pytest.mark.parametrize("num_agents, sparsity", [(1, 0.5), (3, 0.0), (3, 1.5)])
def test_num_links_rejects_invalid(num_agents, sparsity):
    with pytest.raises(ValueError):
        graph.num_links(num_agents, sparsity)


@pytest.mark.parametrize("num_agents, sparsity", [(3, 0.4), (5, 0.4), (8, 0.6), (10, 1.0)])
def test_top_k_graphs_skip_diagonal(num_agents, sparsity):
    k = graph.num_links(num_agents, sparsity)
    key = jax.random.key(0)
    for trial in range(5):
        alpha = jax.random.normal(jax.random.fold_in(key, trial), (num_agents, num_agents))
        # A dominant diagonal: the reference implementation's top-k would pick every self-loop here.
        alpha = alpha + 100.0 * jnp.eye(num_agents)
        sampled = graph.gumbel_top_k_graph(jax.random.fold_in(key, 100 + trial), alpha, k)
        for adjacency in (graph.top_k_graph(alpha, k), sampled):
            adjacency = np.asarray(adjacency)
            np.testing.assert_array_equal(np.diag(adjacency), 0.0)
            np.testing.assert_array_equal(adjacency.sum(axis=1), k)
            assert set(np.unique(adjacency)) <= {0.0, 1.0}
            mask = np.asarray(graph.attention_mask(jnp.asarray(adjacency)))
            np.testing.assert_array_equal(np.diag(mask), 1.0)
            np.testing.assert_array_equal(mask.sum(axis=1), k + 1)


def test_top_k_graph_picks_largest_logits():
    alpha = jnp.array([[0.0, 3.0, 1.0, 2.0],
                       [5.0, 0.0, 4.0, -1.0],
                       [0.0, 0.0, 9.0, 1.0],
                       [2.0, 1.0, 3.0, 7.0]])
    expected = np.array([[0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]], np.float32)
    expected[2] = [1, 0, 0, 1]  # Row 2 ties 0 and 1 at 0.0; the lower index wins.
    np.testing.assert_array_equal(graph.top_k_graph(alpha, 2), expected)


def test_straight_through_gradients_reach_alpha():
    num_agents, k = 4, 2
    alpha = jax.random.normal(jax.random.key(1), (num_agents, num_agents))
    weights = jax.random.normal(jax.random.key(2), (num_agents, num_agents))
    key = jax.random.key(3)
    gumbel = jax.random.gumbel(key, alpha.shape)

    def surrogate(a):  # The softmax whose gradient the estimator passes through.
        return jnp.sum(weights * jax.nn.softmax(a + gumbel - 1e9 * jnp.eye(num_agents), axis=-1))

    grad = jax.grad(lambda a: jnp.sum(weights * graph.gumbel_top_k_graph(key, a, k)))(alpha)
    assert np.all(np.isfinite(grad))
    assert np.abs(np.asarray(grad)).sum() > 0
    np.testing.assert_allclose(grad, jax.grad(surrogate)(alpha), rtol=1e-5, atol=1e-7)

    exact_grad = jax.grad(lambda a: jnp.sum(weights * graph.top_k_graph(a, k)))(alpha)
    np.testing.assert_allclose(
        exact_grad, jax.grad(lambda a: jnp.sum(weights * jax.nn.softmax(a - 1e9 * jnp.eye(num_agents), -1)))(alpha),
        rtol=1e-5, atol=1e-7)


def test_attention_mask_with_closed_gates():
    adjacency = graph.full_graph(3)
    mask = np.asarray(graph.attention_mask(adjacency, jnp.array([1.0, 0.0, 1.0])))
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 1, 0], [1, 1, 1]])


def test_gumbel_sigmoid_gate_forward_and_gradient():
    logits = jnp.linspace(-3.0, 3.0, 64)
    key = jax.random.key(4)
    gates = np.asarray(graph.gumbel_sigmoid_gate(key, logits, temperature=0.5))
    assert set(np.unique(gates)) <= {0.0, 1.0}

    uniform = jax.random.uniform(key, logits.shape, minval=1e-6, maxval=1 - 1e-6)
    noise = jnp.log(uniform) - jnp.log1p(-uniform)
    np.testing.assert_array_equal(gates, (logits + noise > 0).astype(np.float32))

    weights = jnp.arange(64.0)
    grad = jax.grad(lambda z: jnp.sum(weights * graph.gumbel_sigmoid_gate(key, z, 0.5)))(logits)
    expected = jax.grad(lambda z: jnp.sum(weights * jax.nn.sigmoid((z + noise) / 0.5)))(logits)
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


def test_deterministic_gate_thresholds_at_zero():
    logits = jnp.array([-2.0, -0.1, 0.1, 5.0])
    np.testing.assert_array_equal(graph.deterministic_gate(logits), [0.0, 0.0, 1.0, 1.0])
    grad = jax.grad(lambda z: jnp.sum(graph.deterministic_gate(z)))(logits)
    np.testing.assert_allclose(grad, jax.nn.sigmoid(logits) * (1 - jax.nn.sigmoid(logits)), rtol=1e-6)
