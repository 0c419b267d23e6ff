"""The constraint-aware heterogeneous graph of a VNE state, as a padded `jraph.GraphsTuple`.

One graph contains the N substrate nodes (indices 0..N-1), the V virtual node slots of the request (N..N+V-1)
and one padding node (N+V), with six relations:

- PHYSICAL: substrate links, both directions; edge feature = free bandwidth.
- VIRTUAL: virtual links, both directions; edge feature = bandwidth demand.
- MAPPING and MAPPING_REVERSE: placed virtual node -> its substrate node, and back; feature 1.
- IMAGINARY and IMAGINARY_REVERSE: current virtual node -> each feasible candidate substrate node, and back;
  feature 1.

Every state of a substrate has the same number of edge slots. Slots that hold no edge (missing virtual
links, unplaced nodes, infeasible candidates) join the padding node to itself and are sorted after the real
edges, so `n_node = [N + V, 1]` and `n_edge = [real edges, padding edges]` follow jraph's padding
convention and the shapes stay static under `jit`. Bandwidths are divided by the largest link capacity
of the substrate and CPU by the largest node capacity, so one model reads substrates of any size.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jraph

from jaxlab.vne import embedding as embedding_lib
from jaxlab.vne import env as env_lib

PHYSICAL, VIRTUAL, MAPPING, MAPPING_REVERSE, IMAGINARY, IMAGINARY_REVERSE = range(6)
NUM_RELATIONS = 6
SUBSTRATE_FEATURES = 7
VIRTUAL_FEATURES = 10
NODE_FEATURES = max(SUBSTRATE_FEATURES, VIRTUAL_FEATURES)
SUBSTRATE_NODE, VIRTUAL_NODE, PADDING_NODE = 0, 1, 2


class Augmentation(NamedTuple):
    """Extra edges of one contrastive view (path-bandwidth augmentation).

    Attributes:
        substrate_pairs: int32 [N, 2], substrate node pairs to join; used where `substrate_valid`.
        substrate_valid: bool [N], which pairs are non-edges of the substrate (the others are dropped).
        virtual_valid: bool [L], which virtual node pairs of the upper-triangle order (see `virtual_pairs`)
            get a zero-bandwidth virtual link.
    """

    substrate_pairs: jax.Array
    substrate_valid: jax.Array
    virtual_valid: jax.Array


def virtual_pairs(max_nodes: int) -> tuple[jax.Array, jax.Array]:
    """Return the V (V - 1) / 2 virtual node pairs (i < j) in upper-triangle order, int32 [L] each."""
    source, target = jnp.triu_indices(max_nodes, k=1)
    return source.astype(jnp.int32), target.astype(jnp.int32)


def substrate_degree(substrate: embedding_lib.SubstrateArrays) -> jax.Array:
    """Return the number of links at each substrate node, float32 [N]."""
    count = substrate.cpu_capacity.shape[0]
    ones = jnp.ones(substrate.edges.shape[0], jnp.float32)
    return jnp.zeros(count, jnp.float32).at[substrate.edges[:, 0]].add(ones).at[substrate.edges[:, 1]].add(ones)


def _scales(substrate: embedding_lib.SubstrateArrays) -> tuple[jax.Array, jax.Array]:
    cpu_scale = jnp.maximum(substrate.cpu_capacity.max(), 1).astype(jnp.float32)
    bw_scale = jnp.maximum(substrate.bw_capacity.max(), 1).astype(jnp.float32)
    return cpu_scale, bw_scale


def _request_adjacency(request: embedding_lib.Request) -> jax.Array:
    """Return bool [V, V], true where a real virtual link joins two virtual nodes."""
    size = request.cpu.shape[0]
    valid = request.link_valid
    return (jnp.zeros((size, size), bool).at[request.link_src, request.link_dst].max(valid)
            .at[request.link_dst, request.link_src].max(valid))


def node_features(substrate: embedding_lib.SubstrateArrays, state: env_lib.EnvState) -> tuple[jax.Array, jax.Array]:
    """Return the substrate features float32 [N, 7] and the virtual features float32 [V, 10].

    Substrate node: free CPU, request size, links to route at this step, hosts a node of this request,
    feasible for the current virtual node, degree, mean hop distance to the hosts of the current node's
    placed neighbours. Virtual node: CPU demand, request size, links to route at this step, placed,
    current, neighbour of the current node, and the min / max / sum / mean bandwidth demand of its links.
    Padding virtual nodes get zeros.
    """
    request = state.request
    size = request.cpu.shape[0]
    count = substrate.cpu_capacity.shape[0]
    cpu_scale, bw_scale = _scales(substrate)
    real = jnp.arange(size) < request.num_nodes
    placement = state.embedding.placement
    placed = (placement >= 0) & real
    current = env_lib.current_node(state)
    adjacency = _request_adjacency(request)
    neighbour = adjacency[current] & real
    placed_neighbour = neighbour & placed
    links_to_route = placed_neighbour.sum().astype(jnp.float32) / size
    request_size = request.num_nodes.astype(jnp.float32) / size

    hosts = jnp.zeros(count, bool).at[jnp.maximum(placement, 0)].max(placed)
    feasible = env_lib.action_mask(state)
    degree = substrate_degree(substrate)
    # Hop count of the shortest candidate path; pairs without one (and s == d) count as 0 hops.
    hops = substrate.path_hops[:, :, 0].astype(jnp.float32)
    max_hops = jnp.maximum(hops.max(), 1.0)
    neighbour_hosts = jnp.zeros(count, jnp.float32).at[jnp.maximum(placement, 0)].add(placed_neighbour)
    mean_distance = (hops @ neighbour_hosts) / jnp.maximum(neighbour_hosts.sum(), 1.0) / max_hops
    substrate_x = jnp.stack([
        state.resources.cpu.astype(jnp.float32) / cpu_scale,
        jnp.full(count, request_size),
        jnp.full(count, links_to_route),
        hosts.astype(jnp.float32),
        feasible.astype(jnp.float32),
        degree / jnp.maximum(degree.max(), 1.0),
        mean_distance,
    ], axis=1)

    bw_matrix = (jnp.zeros((size, size), jnp.float32)
                 .at[request.link_src, request.link_dst].add(jnp.where(request.link_valid, request.link_bw, 0))
                 .at[request.link_dst, request.link_src].add(jnp.where(request.link_valid, request.link_bw, 0)))
    bw_matrix = bw_matrix / bw_scale
    link_count = adjacency.sum(axis=1)
    link_min = jnp.where(link_count > 0, jnp.where(adjacency, bw_matrix, jnp.inf).min(axis=1), 0.0)
    link_max = jnp.where(adjacency, bw_matrix, 0.0).max(axis=1)
    link_sum = bw_matrix.sum(axis=1)
    link_mean = link_sum / jnp.maximum(link_count, 1)
    is_current = (jnp.arange(size) == current) & ~state.done
    virtual_x = jnp.stack([
        request.cpu.astype(jnp.float32) / cpu_scale,
        jnp.full(size, request_size),
        jnp.full(size, links_to_route),
        placed.astype(jnp.float32),
        is_current.astype(jnp.float32),
        neighbour.astype(jnp.float32),
        link_min,
        link_max,
        link_sum / size,
        link_mean,
    ], axis=1)
    return substrate_x, jnp.where(real[:, None], virtual_x, 0.0)


def _both_directions(source, target, feature, relation, reverse_relation, valid):
    senders = jnp.concatenate([source, target])
    receivers = jnp.concatenate([target, source])
    relations = jnp.concatenate([jnp.full(source.shape, relation), jnp.full(source.shape, reverse_relation)])
    return senders, receivers, jnp.concatenate([feature, feature]), relations, jnp.concatenate([valid, valid])


def build_graph(substrate: embedding_lib.SubstrateArrays, state: env_lib.EnvState, hetero: bool = True,
                augmentation: Augmentation | None = None) -> jraph.GraphsTuple:
    """Build the padded heterogeneous graph of one state.

    Args:
        substrate: the substrate arrays (N nodes, E links).
        state: the episode state (V virtual node slots, L link slots).
        hetero: include the mapping and imaginary relations (static). False gives two disconnected graphs,
            substrate and request, joined only through the readout.
        augmentation: extra edges of a contrastive view, or None (static choice: it adds 2N + 2L slots).

    Returns:
        a GraphsTuple with nodes {"features": float32 [N+V+1, 10] (substrate features in the first 7
        columns), "node_type": int32 [N+V+1]}, edges {"bandwidth": float32 [S, 1], "relation": int32 [S]},
        senders/receivers int32 [S], n_node [2], n_edge [2], globals None.
    """
    request = state.request
    size = request.cpu.shape[0]
    count = substrate.cpu_capacity.shape[0]
    padding_node = count + size
    _, bw_scale = _scales(substrate)
    substrate_x, virtual_x = node_features(substrate, state)
    features = jnp.zeros((padding_node + 1, NODE_FEATURES), jnp.float32)
    features = features.at[:count, :SUBSTRATE_FEATURES].set(substrate_x).at[count:padding_node].set(virtual_x)
    node_type = jnp.concatenate([jnp.full(count, SUBSTRATE_NODE), jnp.full(size, VIRTUAL_NODE),
                                 jnp.array([PADDING_NODE])]).astype(jnp.int32)

    groups = []
    physical_bw = state.resources.bw.astype(jnp.float32) / bw_scale
    groups.append(_both_directions(substrate.edges[:, 0], substrate.edges[:, 1], physical_bw, PHYSICAL, PHYSICAL,
                                   jnp.ones(substrate.edges.shape[0], bool)))
    groups.append(_both_directions(request.link_src + count, request.link_dst + count,
                                   request.link_bw.astype(jnp.float32) / bw_scale, VIRTUAL, VIRTUAL,
                                   request.link_valid))
    if hetero:
        placement = state.embedding.placement
        real = jnp.arange(size) < request.num_nodes
        virtual_ids = jnp.arange(size, dtype=jnp.int32) + count
        groups.append(_both_directions(virtual_ids, jnp.maximum(placement, 0), jnp.ones(size), MAPPING,
                                       MAPPING_REVERSE, (placement >= 0) & real))
        current = jnp.full(count, env_lib.current_node(state) + count, jnp.int32)
        groups.append(_both_directions(current, jnp.arange(count, dtype=jnp.int32), jnp.ones(count), IMAGINARY,
                                       IMAGINARY_REVERSE, env_lib.action_mask(state)))
    if augmentation is not None:
        pairs = augmentation.substrate_pairs
        unrouted = request.link_valid & (state.embedding.link_path < 0)
        smallest = jnp.where(unrouted, request.link_bw, jnp.iinfo(jnp.int32).max).min()
        # Just below the smallest unrouted demand: the added link looks present but cannot carry it.
        below = jnp.where(unrouted.any(), jnp.maximum(smallest - 1, 0), 0).astype(jnp.float32) / bw_scale
        groups.append(_both_directions(pairs[:, 0], pairs[:, 1], jnp.full(count, below), PHYSICAL, PHYSICAL,
                                       augmentation.substrate_valid))
        source, target = virtual_pairs(size)
        groups.append(_both_directions(source + count, target + count, jnp.zeros(source.shape), VIRTUAL, VIRTUAL,
                                       augmentation.virtual_valid))

    senders, receivers, bandwidth, relation, valid = (jnp.concatenate(parts) for parts in zip(*groups))
    senders = jnp.where(valid, senders, padding_node).astype(jnp.int32)
    receivers = jnp.where(valid, receivers, padding_node).astype(jnp.int32)
    bandwidth = jnp.where(valid, bandwidth, 0.0)
    order = jnp.argsort(~valid, stable=True)
    num_real = valid.sum().astype(jnp.int32)
    return jraph.GraphsTuple(
        nodes={"features": features, "node_type": node_type},
        edges={"bandwidth": bandwidth[order, None], "relation": relation[order].astype(jnp.int32)},
        senders=senders[order],
        receivers=receivers[order],
        globals=None,
        n_node=jnp.array([padding_node, 1], jnp.int32),
        n_edge=jnp.stack([num_real, valid.shape[0] - num_real]),
    )


def sample_augmentation(key: jax.Array, substrate: embedding_lib.SubstrateArrays,
                        state: env_lib.EnvState) -> Augmentation:
    """Draw the extra edges of one contrastive view of `state`.

    Virtual side: min(n, number of virtual links) non-adjacent pairs of real virtual nodes, chosen
    uniformly, get a zero-bandwidth link. Substrate side: N node pairs are drawn uniformly and those that
    are already linked are dropped. The rest get a link whose bandwidth is just below the smallest demand
    not yet routed (see `build_graph`).
    """
    request = state.request
    size = request.cpu.shape[0]
    count = substrate.cpu_capacity.shape[0]
    key_virtual, key_first, key_offset = jax.random.split(key, 3)

    source, target = virtual_pairs(size)
    real = jnp.arange(size) < request.num_nodes
    non_edge = real[source] & real[target] & ~_request_adjacency(request)[source, target]
    wanted = jnp.minimum(request.num_nodes, request.link_valid.sum())
    scores = jnp.where(non_edge, jax.random.uniform(key_virtual, source.shape), -1.0)
    rank = jnp.argsort(jnp.argsort(-scores))
    virtual_valid = non_edge & (rank < wanted)

    first = jax.random.randint(key_first, (count,), 0, count)
    second = (first + jax.random.randint(key_offset, (count,), 1, count)) % count
    linked = (jnp.zeros((count, count), bool).at[substrate.edges[:, 0], substrate.edges[:, 1]].set(True)
              .at[substrate.edges[:, 1], substrate.edges[:, 0]].set(True))
    pairs = jnp.stack([first, second], axis=1).astype(jnp.int32)
    return Augmentation(substrate_pairs=pairs, substrate_valid=~linked[first, second], virtual_valid=virtual_valid)
