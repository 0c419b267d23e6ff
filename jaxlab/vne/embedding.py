"""The embedding model under `jit`: pytrees of a substrate and a request, routing, node ranking, solvers.

Constraints of an embedding: each virtual node sits on a distinct substrate node with enough free CPU,
and each virtual link uses one candidate path whose every link has enough free bandwidth. A virtual link
takes the first candidate path (k shortest by hop count) that fits. All resources are int32, so that
allocating and releasing are exact.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.vne import requests as requests_lib
from jaxlab.vne import substrate as substrate_lib

SOLVERS = ("random_rank", "nrm_rank", "grc_rank")
# Global resource capacity (GRC): the PageRank-like fixed point r = (1 - d) c + d M r, iterated until the
# L2 norm of an update is below the tolerance or the iteration limit is reached.
GRC_DAMPING = 0.85
GRC_TOLERANCE = 1e-5
GRC_MAX_ITERATIONS = 200


class SubstrateArrays(NamedTuple):
    """A substrate as device arrays, with N nodes, E links, K candidate paths of at most H hops.

    Attributes:
        cpu_capacity: int32 [N], node CPU capacity.
        bw_capacity: int32 [E], link bandwidth capacity.
        edges: int32 [E, 2], the end nodes of each link.
        path_edges: int32 [N, N, K, H], link indices of the candidate paths, -1 after the last hop.
        path_hops: int32 [N, N, K], hop count of each candidate path, 0 where the path is missing.
    """

    cpu_capacity: jax.Array
    bw_capacity: jax.Array
    edges: jax.Array
    path_edges: jax.Array
    path_hops: jax.Array


class Resources(NamedTuple):
    """Free substrate resources: cpu int32 [N] and bw int32 [E]."""

    cpu: jax.Array
    bw: jax.Array


class Request(NamedTuple):
    """One virtual network request padded to V nodes and L = V (V - 1) / 2 link slots.

    Attributes:
        num_nodes: int32 [], n; virtual nodes n..V-1 are padding.
        cpu: int32 [V], CPU demand per virtual node, 0 in padding.
        link_src, link_dst: int32 [L], the virtual end nodes of each link slot.
        link_bw: int32 [L], bandwidth demand per link slot.
        link_valid: bool [L], which slots hold a real link.
    """

    num_nodes: jax.Array
    cpu: jax.Array
    link_src: jax.Array
    link_dst: jax.Array
    link_bw: jax.Array
    link_valid: jax.Array


class Embedding(NamedTuple):
    """The placement of one request.

    Attributes:
        placement: int32 [V], the substrate node of each virtual node, -1 if unplaced.
        link_path: int32 [L], the candidate path index k of each link slot, -1 if unrouted.
    """

    placement: jax.Array
    link_path: jax.Array


def substrate_arrays(substrate: substrate_lib.Substrate, paths: substrate_lib.CandidatePaths) -> SubstrateArrays:
    return SubstrateArrays(
        cpu_capacity=jnp.asarray(substrate.cpu, jnp.int32),
        bw_capacity=jnp.asarray(substrate.bw, jnp.int32),
        edges=jnp.asarray(substrate.edges, jnp.int32),
        path_edges=jnp.asarray(paths.edges, jnp.int32),
        path_hops=jnp.asarray(paths.hops, jnp.int32),
    )


def full_resources(substrate: SubstrateArrays) -> Resources:
    return Resources(cpu=substrate.cpu_capacity, bw=substrate.bw_capacity)


def trace_requests(trace: requests_lib.RequestTrace) -> Request:
    """Return all requests of a trace as one `Request` with a leading axis [R]."""
    return Request(
        num_nodes=jnp.asarray(trace.num_nodes, jnp.int32),
        cpu=jnp.asarray(trace.cpu, jnp.int32),
        link_src=jnp.asarray(trace.link_src, jnp.int32),
        link_dst=jnp.asarray(trace.link_dst, jnp.int32),
        link_bw=jnp.asarray(trace.link_bw, jnp.int32),
        link_valid=jnp.asarray(trace.link_valid, bool),
    )


def empty_embedding(max_nodes: int) -> Embedding:
    return Embedding(placement=jnp.full((max_nodes,), -1, jnp.int32),
                     link_path=jnp.full((requests_lib.max_links(max_nodes),), -1, jnp.int32))


def _node_mask(request: Request) -> jax.Array:
    return jnp.arange(request.cpu.shape[0]) < request.num_nodes


def _add_along_path(bw: jax.Array, path: jax.Array, amount: jax.Array) -> jax.Array:
    """Add `amount` to the bandwidth of every link of `path` (int32 [H], -1 after the last hop)."""
    on_path = path >= 0
    return bw.at[jnp.where(on_path, path, 0)].add(jnp.where(on_path, amount, 0))


def route_link(substrate: SubstrateArrays, bw: jax.Array, source: jax.Array, target: jax.Array,
               demand: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Reserve `demand` on the first candidate path from `source` to `target` that has enough bandwidth.

    Returns:
        (ok, path_index, bw): whether a path fits, its index k (-1 if none) and the bandwidth after
        reserving (unchanged if none fits).
    """
    paths = substrate.path_edges[source, target]  # [K, H]
    free = jnp.where(paths >= 0, bw[jnp.maximum(paths, 0)], jnp.iinfo(jnp.int32).max)
    fits = (substrate.path_hops[source, target] > 0) & (free.min(axis=1) >= demand)
    ok = fits.any()
    index = jnp.argmax(fits)
    bw = jnp.where(ok, _add_along_path(bw, paths[index], -demand), bw)
    return ok, jnp.where(ok, index, -1), bw


def link_mapping(substrate: SubstrateArrays, resources: Resources, request: Request,
                 placement: jax.Array) -> tuple[jax.Array, jax.Array, Resources]:
    """Route the virtual links in slot order; stop reserving after the first link that fails.

    Returns (ok, link_path int32 [L], resources after reserving).
    """

    def route_one(carry, slot):
        ok, bw = carry
        source = placement[request.link_src[slot]]
        target = placement[request.link_dst[slot]]
        routed, index, new_bw = route_link(substrate, bw, source, target, request.link_bw[slot])
        active = ok & request.link_valid[slot]
        bw = jnp.where(active, new_bw, bw)
        return (ok & (routed | ~request.link_valid[slot]), bw), jnp.where(active, index, -1)

    slots = jnp.arange(request.link_valid.shape[0])
    (ok, bw), link_path = jax.lax.scan(route_one, (jnp.bool_(True), resources.bw), slots)
    return ok, link_path, Resources(cpu=resources.cpu, bw=bw)


def node_mapping(resources: Resources, request: Request, node_order: jax.Array,
                 substrate_scores: jax.Array) -> tuple[jax.Array, jax.Array, Resources]:
    """Place virtual nodes in `node_order`, each on the highest-scored unused node with enough free CPU.

    Ties go to the lower node index. Returns (ok, placement int32 [V], resources after reserving CPU).
    """
    real = _node_mask(request)

    def place_one(carry, virtual):
        ok, cpu, used = carry
        feasible = (cpu >= request.cpu[virtual]) & ~used
        choice = jnp.argmax(jnp.where(feasible, substrate_scores, -jnp.inf))
        active = ok & real[virtual]
        placed = active & feasible.any()
        cpu = jnp.where(placed, cpu.at[choice].add(-request.cpu[virtual]), cpu)
        used = jnp.where(placed, used.at[choice].set(True), used)
        return (ok & (placed | ~real[virtual]), cpu, used), (virtual, jnp.where(placed, choice, -1))

    used = jnp.zeros(resources.cpu.shape, bool)
    (ok, cpu, _), (virtuals, choices) = jax.lax.scan(place_one, (jnp.bool_(True), resources.cpu, used), node_order)
    placement = jnp.full(request.cpu.shape, -1, jnp.int32).at[virtuals].set(choices.astype(jnp.int32))
    return ok, placement, Resources(cpu=cpu, bw=resources.bw)


def adjacent_bandwidth(num_nodes: int, edge_src: jax.Array, edge_dst: jax.Array, bw: jax.Array) -> jax.Array:
    """Return the sum of bandwidth over the links at each node, int32 [num_nodes]."""
    return (jnp.zeros(num_nodes, jnp.int32).at[edge_src].add(bw).at[edge_dst].add(bw))


def nrm_scores(cpu: jax.Array, adjacent_bw: jax.Array) -> jax.Array:
    """Node resource: CPU times the total bandwidth of the adjacent links, as float32."""
    return cpu.astype(jnp.float32) * adjacent_bw.astype(jnp.float32)


def grc_scores(cpu: jax.Array, bandwidth_matrix: jax.Array, node_mask: jax.Array) -> jax.Array:
    """Global resource capacity: the fixed point of r = (1 - d) c + d M r.

    c is the CPU normalised to sum 1 over the real nodes (uniform if all CPU is 0), and M is the bandwidth
    matrix with each column normalised to sum 1 (columns of isolated nodes stay 0).
    """
    cpu = jnp.where(node_mask, cpu.astype(jnp.float32), 0.0)
    total = cpu.sum()
    uniform = node_mask / jnp.maximum(node_mask.sum(), 1)
    c = jnp.where(total > 0, cpu / jnp.where(total > 0, total, 1.0), uniform)
    column_sums = bandwidth_matrix.sum(axis=0)
    matrix = bandwidth_matrix / jnp.where(column_sums > 0, column_sums, 1.0)

    def not_converged(carry):
        _, delta, iteration = carry
        return (delta >= GRC_TOLERANCE) & (iteration < GRC_MAX_ITERATIONS)

    def iterate(carry):
        r, _, iteration = carry
        new_r = (1.0 - GRC_DAMPING) * c + GRC_DAMPING * matrix @ r
        return new_r, jnp.linalg.norm(new_r - r), iteration + 1

    r, _, _ = jax.lax.while_loop(not_converged, iterate, (c, jnp.float32(jnp.inf), 0))
    return r


def _request_bandwidth_matrix(request: Request) -> jax.Array:
    size = request.cpu.shape[0]
    bw = jnp.where(request.link_valid, request.link_bw, 0).astype(jnp.float32)
    return jnp.zeros((size, size), jnp.float32).at[request.link_src, request.link_dst].add(bw).at[
        request.link_dst, request.link_src].add(bw)


def _substrate_bandwidth_matrix(substrate: SubstrateArrays, bw: jax.Array) -> jax.Array:
    size = substrate.cpu_capacity.shape[0]
    source, target = substrate.edges[:, 0], substrate.edges[:, 1]
    bw = bw.astype(jnp.float32)
    return jnp.zeros((size, size), jnp.float32).at[source, target].add(bw).at[target, source].add(bw)


def rank_scores(method: str, substrate: SubstrateArrays, resources: Resources, request: Request,
                key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Score substrate nodes [N] and virtual nodes [V] for one ranking method; higher goes first.

    Substrate scores use the free resources. Padding virtual nodes get -inf.
    """
    real = _node_mask(request)
    if method == "random_rank":
        key_substrate, key_virtual = jax.random.split(key)
        substrate_scores = jax.random.uniform(key_substrate, resources.cpu.shape)
        virtual_scores = jax.random.uniform(key_virtual, request.cpu.shape)
    elif method == "nrm_rank":
        link_bw = jnp.where(request.link_valid, request.link_bw, 0)
        virtual_adjacent = adjacent_bandwidth(request.cpu.shape[0], request.link_src, request.link_dst, link_bw)
        virtual_scores = nrm_scores(request.cpu, virtual_adjacent)
        substrate_adjacent = adjacent_bandwidth(resources.cpu.shape[0], substrate.edges[:, 0], substrate.edges[:, 1],
                                                resources.bw)
        substrate_scores = nrm_scores(resources.cpu, substrate_adjacent)
    elif method == "grc_rank":
        virtual_scores = grc_scores(request.cpu, _request_bandwidth_matrix(request), real)
        substrate_scores = grc_scores(resources.cpu, _substrate_bandwidth_matrix(substrate, resources.bw),
                                      jnp.ones(resources.cpu.shape, bool))
    else:
        raise ValueError(f"unknown solver {method!r}; expected one of {SOLVERS}")
    return substrate_scores, jnp.where(real, virtual_scores, -jnp.inf)


def node_order_from_scores(virtual_scores: jax.Array) -> jax.Array:
    """Return virtual nodes by decreasing score; ties keep index order and padding (-inf) goes last."""
    return jnp.argsort(-virtual_scores, stable=True).astype(jnp.int32)


def solve(method: str, substrate: SubstrateArrays, resources: Resources, request: Request,
          key: jax.Array) -> tuple[jax.Array, Embedding, Resources]:
    """Embed one request with a two-stage ranking heuristic: all nodes by rank, then the link mapping.

    Returns (ok, embedding, resources). On failure the embedding is empty and the resources are the input
    resources, because a rejected request reserves nothing.
    """
    substrate_scores, virtual_scores = rank_scores(method, substrate, resources, request, key)
    order = node_order_from_scores(virtual_scores)
    nodes_ok, placement, after_nodes = node_mapping(resources, request, order, substrate_scores)
    links_ok, link_path, after_links = link_mapping(substrate, after_nodes, request, jnp.maximum(placement, 0))
    ok = nodes_ok & links_ok
    empty = empty_embedding(request.cpu.shape[0])
    embedding = jax.tree.map(lambda done, nothing: jnp.where(ok, done, nothing),
                             Embedding(placement, link_path), empty)
    resources = jax.tree.map(lambda new, old: jnp.where(ok, new, old), after_links, resources)
    return ok, embedding, resources


def release(substrate: SubstrateArrays, resources: Resources, request: Request, embedding: Embedding) -> Resources:
    """Return the CPU and bandwidth that `embedding` reserves for `request`; an empty embedding is a no-op."""
    placed = embedding.placement >= 0
    cpu = resources.cpu.at[jnp.where(placed, embedding.placement, 0)].add(jnp.where(placed, request.cpu, 0))

    def release_link(bw, slot):
        routed = embedding.link_path[slot] >= 0
        source = embedding.placement[request.link_src[slot]]
        target = embedding.placement[request.link_dst[slot]]
        path = substrate.path_edges[jnp.maximum(source, 0), jnp.maximum(target, 0), jnp.maximum(embedding.link_path[slot], 0)]
        return _add_along_path(bw, path, jnp.where(routed, request.link_bw[slot], 0)), None

    bw, _ = jax.lax.scan(release_link, resources.bw, jnp.arange(embedding.link_path.shape[0]))
    return Resources(cpu=cpu, bw=bw)


def embedding_cost(substrate: SubstrateArrays, request: Request, embedding: Embedding) -> jax.Array:
    """COST = sum of CPU demands + sum over links of bandwidth demand times path hops, int32 []."""
    placed = embedding.placement >= 0
    routed = embedding.link_path >= 0
    source = jnp.maximum(embedding.placement[request.link_src], 0)
    target = jnp.maximum(embedding.placement[request.link_dst], 0)
    hops = substrate.path_hops[source, target, jnp.maximum(embedding.link_path, 0)]
    return jnp.where(placed, request.cpu, 0).sum() + jnp.where(routed, request.link_bw * hops, 0).sum()


def request_revenue(request: Request) -> jax.Array:
    """REV = sum of CPU demands + sum of bandwidth demands, int32 []."""
    return request.cpu.sum() + jnp.where(request.link_valid, request.link_bw, 0).sum()


def check_embedding(substrate: substrate_lib.Substrate, paths: substrate_lib.CandidatePaths,
                    request: Request, embedding: Embedding) -> list[str]:
    """List every constraint an accepted embedding breaks, checked on the host with NumPy (for tests).

    Checks: every real node placed on a distinct substrate node, every real link on an existing candidate
    path from its source's host to its target's host. Capacity is checked by the caller on the totals.
    """
    request = jax.tree.map(np.asarray, request)
    placement = np.asarray(embedding.placement)
    link_path = np.asarray(embedding.link_path)
    n = int(request.num_nodes)
    problems = []
    hosts = placement[:n]
    if np.any(hosts < 0) or np.any(hosts >= substrate.num_nodes):
        problems.append(f"unplaced virtual node in {hosts.tolist()}")
    elif len(set(hosts.tolist())) != n:
        problems.append(f"two virtual nodes share a substrate node: {hosts.tolist()}")
    if np.any(placement[n:] != -1):
        problems.append("padding node placed")
    for slot in np.flatnonzero(request.link_valid):
        k = link_path[slot]
        source, target = placement[request.link_src[slot]], placement[request.link_dst[slot]]
        if k < 0 or paths.hops[source, target, k] == 0:
            problems.append(f"virtual link {slot} not routed")
            continue
        edges = paths.edges[source, target, k, :paths.hops[source, target, k]]
        walk = {int(source)}
        for edge in edges:
            walk ^= set(substrate.edges[edge].tolist())
        if walk != {int(target)}:
            problems.append(f"virtual link {slot} path does not join {source} and {target}")
    return problems
