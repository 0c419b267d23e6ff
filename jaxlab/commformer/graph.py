"""The communication graph and the temporal gates of CommFormer.

Conventions: an adjacency matrix `A` has shape [N, N] with rows as receivers and columns as senders, so
`A[i, j] = 1` means agent i receives from agent j. A graph built here never contains self-loops. The
attention mask (`attention_mask`) adds them, so every agent always attends to itself and, when its gate is
open, to exactly k other agents.

Source: Hu et al., "Learning Multi-Agent Communication from Graph Modeling Perspective", ICLR 2024
(arXiv:2405.08550) for the top-k graph; the gate follows the temporal gating of arXiv:2411.00382, whose
architecture is not published, so the gate here is a per-agent Gumbel-sigmoid of the current observation.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# Added to the diagonal of the logits so that top-k never selects a self-loop.
_EXCLUDED = -1e9


def num_links(num_agents: int, sparsity: float) -> int:
    """Return k, the number of incoming links per agent: max(floor(N * S), 1), at most N - 1.

    Raises:
        ValueError: if `num_agents` < 2 or `sparsity` is outside (0, 1].
    """
    if num_agents < 2:
        raise ValueError(f"num_agents={num_agents}; a communication graph needs at least 2 agents.")
    if not 0.0 < sparsity <= 1.0:
        raise ValueError(f"sparsity={sparsity}; expected a fraction in (0, 1].")
    return min(max(math.floor(num_agents * sparsity), 1), num_agents - 1)


def _straight_through(hard: jax.Array, soft: jax.Array) -> jax.Array:
    """Return `hard` in the forward pass and the gradient of `soft` in the backward pass.

    The brackets matter: soft - stop_gradient(soft) is exactly 0.0, so the forward value is exactly hard.
    """
    return hard + (soft - jax.lax.stop_gradient(soft))


def _exclude_diagonal(logits: jax.Array) -> jax.Array:
    return logits + _EXCLUDED * jnp.eye(logits.shape[-1], dtype=logits.dtype)


def _hard_top_k(scores: jax.Array, k: int) -> jax.Array:
    """Return a {0, 1} matrix with ones at the k largest entries of each row."""
    _, indices = jax.lax.top_k(scores, k)
    return jnp.sum(jax.nn.one_hot(indices, scores.shape[-1], dtype=scores.dtype), axis=-2)


def top_k_graph(alpha: jax.Array, k: int) -> jax.Array:
    """Return the deterministic graph: the k largest off-diagonal logits of each row, as a {0, 1} matrix.

    The value is hard, and the gradient is that of the row softmax of `alpha` (straight-through). Rollouts
    and evaluation ignore the gradient. PPO updates use this graph once alpha is frozen (post-stable phase).

    Args:
        alpha: graph logits, float [N, N], rows are receivers.
        k: incoming links per row, 1 <= k <= N - 1.
    """
    soft = jax.nn.softmax(_exclude_diagonal(alpha), axis=-1)
    hard = _hard_top_k(jax.lax.stop_gradient(soft), k)
    return _straight_through(hard, soft)


def gumbel_top_k_graph(key: jax.Array, alpha: jax.Array, k: int, temperature: float = 1.0) -> jax.Array:
    """Sample a graph with Gumbel-softmax top-k and a straight-through estimator.

    The forward value is the {0, 1} top-k of softmax((alpha + g) / temperature) over off-diagonal entries,
    g ~ Gumbel(0, 1); the backward pass uses the gradient of the softmax (Jang et al., 2017).
    """
    gumbel = jax.random.gumbel(key, alpha.shape, alpha.dtype)
    soft = jax.nn.softmax(_exclude_diagonal((alpha + gumbel) / temperature), axis=-1)
    hard = _hard_top_k(jax.lax.stop_gradient(soft), k)
    return _straight_through(hard, soft)


def full_graph(num_agents: int) -> jax.Array:
    """Return every off-diagonal link (the warm-up graph and the S = 1 baseline)."""
    return 1.0 - jnp.eye(num_agents)


def empty_graph(num_agents: int) -> jax.Array:
    """Return no links (the no-communication baseline: agents attend only to themselves)."""
    return jnp.zeros((num_agents, num_agents))


def attention_mask(adjacency: jax.Array, gates: jax.Array | None = None) -> jax.Array:
    """Return the attention mask M = I + diag(g) A, float [..., N, N], 1 where receiver i attends to j.

    A closed gate (g_i = 0) leaves agent i with its self-loop only. The self-loop weight is exactly 1 because
    `adjacency` has a zero diagonal. Attention multiplies its weights by this mask, which is how the
    straight-through gradients of the graph and the gates reach their logits.

    Args:
        adjacency: [..., N, N] graph without self-loops (values in {0, 1}, possibly with surrogate gradients).
        gates: optional [..., N] receive gates in {0, 1}.
    """
    if gates is not None:
        adjacency = adjacency * gates[..., :, None]
    return adjacency + jnp.eye(adjacency.shape[-1], dtype=adjacency.dtype)


def logistic_noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Draw Logistic(0, 1) noise log(u) - log(1 - u), the difference of two Gumbel(0, 1) variables."""
    uniform = jax.random.uniform(key, shape, minval=1e-6, maxval=1.0 - 1e-6)
    return jnp.log(uniform) - jnp.log1p(-uniform)


def gate_from_noise(logits: jax.Array, noise: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Return Gumbel-sigmoid gates for given logistic noise: 1[sigmoid((z + l) / temperature) > 0.5].

    The backward pass uses the gradient of the sigmoid (straight-through). Keeping the noise lets a PPO
    update recompute exactly the gates that the rollout sampled.
    """
    soft = jax.nn.sigmoid((logits + noise) / temperature)
    hard = (jax.lax.stop_gradient(soft) > 0.5).astype(logits.dtype)
    return _straight_through(hard, soft)


def gumbel_sigmoid_gate(key: jax.Array, logits: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Sample gates in {0, 1} with Gumbel-sigmoid (binary Concrete) and a straight-through estimator.

    Forward: 1[sigmoid((z + l) / temperature) > 0.5] with logistic noise l; backward: the gradient of the
    sigmoid (Maddison et al., 2017; Jang et al., 2017).
    """
    return gate_from_noise(logits, logistic_noise(key, logits.shape), temperature)


def deterministic_gate(logits: jax.Array) -> jax.Array:
    """Return 1[z > 0] with the sigmoid as its straight-through gradient (rollouts and evaluation)."""
    soft = jax.nn.sigmoid(logits)
    hard = (jax.lax.stop_gradient(logits) > 0).astype(logits.dtype)
    return _straight_through(hard, soft)
