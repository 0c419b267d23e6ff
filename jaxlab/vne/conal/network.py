"""The CONAL network: a heterogeneous graph attention encoder with actor, critic, cost-critic and multiplier heads.

Each encoder layer runs one graph attention convolution (GAT, Velickovic et al. 2018, with the edge
attention term of GATv1 as PyTorch Geometric's `GATConv` adds it for an edge feature) per relation and sums
the relations, as a heterogeneous convolution does. The value, cost and multiplier heads read pooled
embeddings: mean and max over substrate nodes, the current virtual node and the mean over virtual nodes.
No parameter depends on the substrate size, so one model runs on substrates of any size.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from jaxlab.vne.conal import graph as graph_lib

LEAKY_SLOPE = 0.2  # Negative slope of the attention LeakyReLU, as in GAT.


class RelationalGATLayer(nn.Module):
    """One GAT convolution per relation, summed over relations, plus a root weight.

    For an edge j -> i of relation r with edge feature b (bandwidth):
        e_ij = LeakyReLU_0.2(a_src_r . W_r h_j + a_dst_r . W_r h_i + c_r b),
        alpha_ij = softmax of e_ij over the edges of relation r into i,
        out_i = W_root h_i + bias + sum_r sum_j alpha_ij W_r h_j.
    The root weight replaces GATConv's self-loops, so a node without incoming edges of a relation
    keeps its own features. Padding edges join the padding node to itself, so they reach no real node.

    Attributes:
        features: the output width D.
        num_relations: R, the number of relation types.
    """

    features: int
    num_relations: int = graph_lib.NUM_RELATIONS

    @nn.compact
    def __call__(self, nodes: jax.Array, senders: jax.Array, receivers: jax.Array, relation: jax.Array,
                 bandwidth: jax.Array) -> jax.Array:
        """Map node features [M, F] to [M, D] over edges (senders, receivers, relation int32 [S], bandwidth [S])."""
        count = nodes.shape[0]
        relations, width = self.num_relations, self.features
        projected = nn.Dense(relations * width, use_bias=False, name="relation_weights")(nodes)
        projected = projected.reshape(count, relations, width)
        init = nn.initializers.glorot_uniform()
        attention_source = self.param("attention_source", init, (relations, width))
        attention_target = self.param("attention_target", init, (relations, width))
        attention_edge = self.param("attention_edge", nn.initializers.normal(0.1), (relations,))

        source = projected[senders, relation]  # [S, D]
        target = projected[receivers, relation]
        logits = ((source * attention_source[relation]).sum(-1) + (target * attention_target[relation]).sum(-1)
                  + attention_edge[relation] * bandwidth)
        logits = nn.leaky_relu(logits, LEAKY_SLOPE)
        weights = jraph.segment_softmax(logits, receivers * relations + relation, num_segments=count * relations)
        messages = jax.ops.segment_sum(weights[:, None] * source, receivers, num_segments=count)
        return messages + nn.Dense(width, name="root")(nodes)


class HeteroGATEncoder(nn.Module):
    """Per-type input projections, `num_layers` relational GAT layers with LeakyReLU, and an input residual.

    Attributes:
        hidden: the embedding width D.
        num_layers: how many message-passing layers.
    """

    hidden: int
    num_layers: int = 3

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple) -> jax.Array:
        """Return node embeddings float32 [N + V + 1, D] of a graph from `graph.build_graph`."""
        features, node_type = graph.nodes["features"], graph.nodes["node_type"]
        substrate_input = nn.Dense(self.hidden, name="substrate_input")(features[:, :graph_lib.SUBSTRATE_FEATURES])
        virtual_input = nn.Dense(self.hidden, name="virtual_input")(features)
        inputs = jnp.where((node_type == graph_lib.SUBSTRATE_NODE)[:, None], substrate_input, virtual_input)
        hidden = inputs
        for index in range(self.num_layers):
            layer = RelationalGATLayer(self.hidden, name=f"gat_{index}")
            hidden = nn.leaky_relu(layer(hidden, graph.senders, graph.receivers, graph.edges["relation"],
                                         graph.edges["bandwidth"][:, 0]))
        return hidden + inputs


class Outputs(NamedTuple):
    """Network outputs for one state.

    Attributes:
        logits: float32 [N], unmasked action logits, one per substrate node.
        value: float32 [], the reward value V(s).
        cost_value: float32 [], the cost value V_c(s) (reachability or cumulative cost).
        multiplier: float32 [], the Lagrange multiplier lambda(s) = softplus(net(s)) >= 0.
    """

    logits: jax.Array
    value: jax.Array
    cost_value: jax.Array
    multiplier: jax.Array


class MLP(nn.Module):
    """Dense(hidden) -> LeakyReLU -> Dense(1)."""

    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(1, name="out")(nn.leaky_relu(nn.Dense(self.hidden, name="hidden")(x)))


class ConalNetwork(nn.Module):
    """Encoder plus heads. The multiplier head reads stop-gradient features, so only its loss trains it.

    Attributes:
        hidden: the embedding width D (128 in CONAL).
        num_layers: message-passing layers of the encoder (3 in CONAL).
    """

    hidden: int = 128
    num_layers: int = 3

    def setup(self):
        self.encoder = HeteroGATEncoder(self.hidden, self.num_layers)
        self.actor = MLP(self.hidden)
        self.critic = MLP(self.hidden)
        self.cost_critic = MLP(self.hidden)
        self.multiplier_head = MLP(self.hidden)

    def __call__(self, graph: jraph.GraphsTuple, num_substrate: int, current: jax.Array,
                 virtual_real: jax.Array) -> Outputs:
        """Evaluate all heads on one graph.

        Args:
            graph: from `graph.build_graph`.
            num_substrate: N (static), the number of substrate nodes.
            current: int32 [], the current virtual node.
            virtual_real: bool [V], the real virtual nodes of the request.
        """
        embeddings = self.encoder(graph)
        substrate = embeddings[:num_substrate]
        virtual = embeddings[num_substrate:num_substrate + virtual_real.shape[0]]
        current_embedding = virtual[current]
        logits = self.actor(jnp.concatenate(
            [substrate, jnp.broadcast_to(current_embedding, substrate.shape)], axis=1))[:, 0]
        virtual_mean = (jnp.where(virtual_real[:, None], virtual, 0.0).sum(0)
                        / jnp.maximum(virtual_real.sum(), 1))
        pooled = jnp.concatenate([substrate.mean(0), substrate.max(0), current_embedding, virtual_mean])
        multiplier = nn.softplus(self.multiplier_head(jax.lax.stop_gradient(pooled))[0])
        return Outputs(logits=logits, value=self.critic(pooled)[0], cost_value=self.cost_critic(pooled)[0],
                       multiplier=multiplier)

    def substrate_embeddings(self, graph: jraph.GraphsTuple, num_substrate: int) -> jax.Array:
        """Return the encoder's substrate node embeddings float32 [N, D] (for the contrastive loss)."""
        return self.encoder(graph)[:num_substrate]
