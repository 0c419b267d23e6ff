"""Flax policies: the CommFormer encoder-decoder transformer and the MAPPO actor-critic baseline.

All modules work on one environment step of N agents (inputs [N, ...]); the trainer vmaps them over
environments and time. Both policies expose the same three methods, so the trainer handles them alike:

- `encode(obs, adjacency, gates) -> (representation [N, E], values [N])`, the critic;
- `decode(shifted_actions, representation, adjacency, gates) -> head [N, num_actions]`, action logits
  (discrete) or Normal means (continuous), where agent i may only use the actions of agents j < i;
- `gate_logits(obs) -> [N]`, the temporal gate logits from each agent's current observation.

CommFormer follows the Multi-Agent Transformer (Wen et al., NeurIPS 2022) with the graph-masked,
relation-enhanced attention of CommFormer (Hu et al., ICLR 2024). Differences from the CommFormer
reference code, all deliberate:
- the relation embedding of pair (i, j) is read from A[i, j] (receiver i, sender j); the reference reads
  A[j, i];
- scores are scaled once by 1/sqrt(head_dim); the reference scales the relation branch twice;
- the self-loop weight stays 1 because graphs carry no diagonal (see `graph.attention_mask`). With the
  reference's A + I, a diagonal picked by top-k doubled after the softmax;
- the relation embedding interpolates between its two rows by the (straight-through) edge value instead of
  truncating it to an integer index, so an edge value of 1 - 1e-7 cannot be read as "no edge";
- no dropout: rollouts and updates use the same deterministic network.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.commformer import graph

# Large negative score for masked attention entries; finite so that a fully masked row cannot give NaN.
_MASKED_SCORE = -1e9


class PerAgentDense(nn.Module):
    """A dense layer with its own weights per agent (or shared weights when `shared`).

    Input [N, D] -> output [N, features]; the kernel is [N, D, features] when not shared.
    """

    features: int
    num_agents: int
    shared: bool = False
    kernel_init: nn.initializers.Initializer = nn.initializers.orthogonal(0.01)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.shared:
            return nn.Dense(self.features, kernel_init=self.kernel_init)(x)
        kernel = self.param("kernel", lambda key, shape: jax.vmap(
            lambda k: self.kernel_init(k, shape[1:]))(jax.random.split(key, shape[0])),
            (self.num_agents, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.num_agents, self.features))
        return jnp.einsum("nd,ndf->nf", x, kernel) + bias


class GraphAttention(nn.Module):
    """Multi-head attention over agents, restricted by a mask and optionally relation-enhanced.

    Score of receiver i for sender j: (q_i + r^a_ij) . (k_j + r^b_ij) / sqrt(head_dim), where
    r^a_ij, r^b_ij are projections of the embedding of edge A[i, j]. Scores where mask = 0 are excluded,
    and the softmax weights are multiplied by the mask, which carries the straight-through gradients of
    the graph and the gates.
    """

    num_heads: int
    relation_enhanced: bool = True

    @nn.compact
    def __call__(self, query_input: jax.Array, key_value_input: jax.Array, mask: jax.Array,
                 adjacency: jax.Array) -> jax.Array:
        num_agents, embed_dim = query_input.shape
        head_dim = embed_dim // self.num_heads

        def heads(name: str, x: jax.Array) -> jax.Array:
            return nn.Dense(embed_dim, name=name)(x).reshape(num_agents, self.num_heads, head_dim)

        query, key, value = heads("query", query_input), heads("key", key_value_input), heads(
            "value", key_value_input)
        if self.relation_enhanced:
            edge_embedding = self.param("edge_embedding", nn.initializers.normal(1.0), (2, embed_dim))
            edge = adjacency[..., None]
            relation = (1.0 - edge) * edge_embedding[0] + edge * edge_embedding[1]  # [N, N, E]
            relation_query = nn.Dense(embed_dim, name="relation_query")(relation)
            relation_key = nn.Dense(embed_dim, name="relation_key")(relation)
            relation_query = relation_query.reshape(num_agents, num_agents, self.num_heads, head_dim)
            relation_key = relation_key.reshape(num_agents, num_agents, self.num_heads, head_dim)
            scores = jnp.einsum("ijhd,ijhd->hij", query[:, None] + relation_query, key[None, :] + relation_key)
        else:
            scores = jnp.einsum("ihd,jhd->hij", query, key)
        scores = scores / math.sqrt(head_dim)

        scores = jnp.where(mask > 0, scores, _MASKED_SCORE)
        weights = jax.nn.softmax(scores, axis=-1) * mask
        attended = jnp.einsum("hij,jhd->ihd", weights, value).reshape(num_agents, embed_dim)
        return nn.Dense(embed_dim, name="output")(attended)


class FeedForward(nn.Module):
    """Two dense layers with a GELU between them, as in MAT's blocks."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        embed_dim = x.shape[-1]
        return nn.Dense(embed_dim)(nn.gelu(nn.Dense(embed_dim)(x)))


class EncoderBlock(nn.Module):
    num_heads: int
    relation_enhanced: bool

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, adjacency: jax.Array) -> jax.Array:
        x = nn.LayerNorm()(x + GraphAttention(self.num_heads, self.relation_enhanced)(x, x, mask, adjacency))
        return nn.LayerNorm()(x + FeedForward()(x))


class DecoderBlock(nn.Module):
    num_heads: int
    relation_enhanced: bool

    @nn.compact
    def __call__(self, x: jax.Array, representation: jax.Array, mask: jax.Array,
                 adjacency: jax.Array) -> jax.Array:
        x = nn.LayerNorm()(x + GraphAttention(self.num_heads, self.relation_enhanced, name="self_attention")(
            x, x, mask, adjacency))
        # MAT's cross-attention: the encoder output queries the action stream, under the same mask.
        x = nn.LayerNorm()(representation + GraphAttention(
            self.num_heads, self.relation_enhanced, name="cross_attention")(representation, x, mask, adjacency))
        return nn.LayerNorm()(x + FeedForward()(x))


def causal_mask(num_agents: int) -> jax.Array:
    """Return the lower-triangular [N, N] mask: agent i may see agents 0..i."""
    return jnp.tril(jnp.ones((num_agents, num_agents)))


class GateNetwork(nn.Module):
    """The temporal gate: one logit per agent from its own observation (weights shared across agents).

    The output bias starts at `initial_logit` > 0, so training starts with gates mostly open.
    """

    hidden_dim: int
    initial_logit: float = 2.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        hidden = nn.relu(nn.Dense(self.hidden_dim)(obs))
        logits = nn.Dense(1, kernel_init=nn.initializers.orthogonal(0.01),
                          bias_init=nn.initializers.constant(self.initial_logit))(hidden)
        return logits[..., 0]


class CommFormer(nn.Module):
    """The CommFormer policy: graph-masked encoder with per-agent values, graph-and-causal-masked decoder.

    Attributes:
      num_agents: N.
      num_actions: discrete actions, or the continuous action dimension.
      discrete: categorical heads when True, Normal means when False.
      embed_dim: E, the model width.
      num_heads: attention heads (E must be divisible by it).
      num_blocks: encoder and decoder blocks each.
      share_actor: one action head for all agents instead of one per agent.
      relation_enhanced: add the edge embeddings to queries and keys.
    """

    num_agents: int
    num_actions: int
    discrete: bool = True
    embed_dim: int = 64
    num_heads: int = 1
    num_blocks: int = 1
    share_actor: bool = False
    relation_enhanced: bool = True

    def setup(self):
        self.obs_norm = nn.LayerNorm()
        self.obs_embed = nn.Dense(self.embed_dim)
        self.encoder_norm = nn.LayerNorm()
        self.encoder_blocks = [EncoderBlock(self.num_heads, self.relation_enhanced)
                               for _ in range(self.num_blocks)]
        self.value_hidden = nn.Dense(self.embed_dim)
        self.value_norm = nn.LayerNorm()
        self.value_head = PerAgentDense(1, self.num_agents, kernel_init=nn.initializers.orthogonal(1.0))

        self.action_embed = nn.Dense(self.embed_dim, use_bias=False)
        self.action_norm = nn.LayerNorm()
        self.decoder_blocks = [DecoderBlock(self.num_heads, self.relation_enhanced)
                               for _ in range(self.num_blocks)]
        self.head_hidden = nn.Dense(self.embed_dim)
        self.head_norm = nn.LayerNorm()
        self.action_head = PerAgentDense(self.num_actions, self.num_agents, shared=self.share_actor)
        if not self.discrete:
            self.log_std = self.param("log_std", nn.initializers.zeros, (self.num_actions,))
        self.gate = GateNetwork(self.embed_dim)

    def encode(self, obs: jax.Array, adjacency: jax.Array, gates: jax.Array) -> tuple[jax.Array, jax.Array]:
        mask = graph.attention_mask(adjacency, gates)
        x = self.encoder_norm(nn.gelu(self.obs_embed(self.obs_norm(obs))))
        for block in self.encoder_blocks:
            x = block(x, mask, adjacency)
        values = self.value_head(self.value_norm(nn.gelu(self.value_hidden(x))))[:, 0]
        return x, values

    def decode(self, shifted_actions: jax.Array, representation: jax.Array, adjacency: jax.Array,
               gates: jax.Array) -> jax.Array:
        mask = graph.attention_mask(adjacency, gates) * causal_mask(self.num_agents)
        x = self.action_norm(nn.gelu(self.action_embed(shifted_actions)))
        for block in self.decoder_blocks:
            x = block(x, representation, mask, adjacency)
        return self.action_head(self.head_norm(nn.gelu(self.head_hidden(x))))

    def gate_logits(self, obs: jax.Array) -> jax.Array:
        return self.gate(obs)

    def action_std(self) -> jax.Array:
        """Return the Normal standard deviation 0.5 * sigmoid(log_std) as in MAT, float [num_actions]."""
        return 0.5 * jax.nn.sigmoid(self.log_std)

    def __call__(self, obs: jax.Array, shifted_actions: jax.Array, adjacency: jax.Array,
                 gates: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Teacher-forced pass: values [N], head [N, num_actions] and gate logits [N]."""
        representation, values = self.encode(obs, adjacency, gates)
        head = self.decode(shifted_actions, representation, adjacency, gates)
        return values, head, self.gate_logits(obs)


class MAPPO(nn.Module):
    """MAPPO (Yu et al., 2022): decentralised MLP actors and a centralised MLP critic, without communication.

    Actor weights are shared across agents, which see their own observation and a one-hot agent id. The
    critic of agent i reads the concatenated observations of all agents and the id of i. Graphs, gates and
    previous actions are accepted for a common interface and ignored.
    """

    num_agents: int
    num_actions: int
    discrete: bool = True
    hidden_dims: Sequence[int] = (64, 64)

    def setup(self):
        self.actor_layers = [nn.Dense(d, kernel_init=nn.initializers.orthogonal(math.sqrt(2)))
                             for d in self.hidden_dims]
        self.actor_head = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(0.01))
        self.critic_layers = [nn.Dense(d, kernel_init=nn.initializers.orthogonal(math.sqrt(2)))
                              for d in self.hidden_dims]
        self.critic_head = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))
        if not self.discrete:
            self.log_std = self.param("log_std", nn.initializers.zeros, (self.num_actions,))
        self.gate = GateNetwork(8)

    def encode(self, obs: jax.Array, adjacency: jax.Array, gates: jax.Array) -> tuple[jax.Array, jax.Array]:
        del adjacency, gates
        agent_ids = jnp.eye(self.num_agents)
        joint = jnp.broadcast_to(obs.reshape(1, -1), (self.num_agents, obs.size))
        x = jnp.concatenate([joint, agent_ids], axis=-1)
        for layer in self.critic_layers:
            x = nn.relu(layer(x))
        values = self.critic_head(x)[:, 0]
        return jnp.concatenate([obs, agent_ids], axis=-1), values

    def decode(self, shifted_actions: jax.Array, representation: jax.Array, adjacency: jax.Array,
               gates: jax.Array) -> jax.Array:
        del shifted_actions, adjacency, gates
        x = representation
        for layer in self.actor_layers:
            x = nn.relu(layer(x))
        return self.actor_head(x)

    def gate_logits(self, obs: jax.Array) -> jax.Array:
        return self.gate(obs)

    def action_std(self) -> jax.Array:
        return 0.5 * jax.nn.sigmoid(self.log_std)

    def __call__(self, obs: jax.Array, shifted_actions: jax.Array, adjacency: jax.Array,
                 gates: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        representation, values = self.encode(obs, adjacency, gates)
        head = self.decode(shifted_actions, representation, adjacency, gates)
        return values, head, self.gate_logits(obs)
