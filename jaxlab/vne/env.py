"""A functional VNE environment for learning solvers: one virtual node placed per step.

`reset` starts an episode for one request on given free resources, or draws a request from the VNR
distribution. `step` places the current virtual node on the chosen substrate node and immediately routes
its virtual links to the already placed neighbours (first fitting candidate path). Both are pure functions
of pytrees with static shapes, so they can be jitted and vmapped over many independent instances:

    state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    state, reward, done = jax.vmap(env.step, in_axes=(None, 0, 0))(params, state, actions)

An episode ends on success (all nodes placed and all links routed, reward = REV / COST), on failure
(an infeasible action or an unroutable link, reward 0), and `step` on a finished episode changes nothing.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlab.vne import embedding as embedding_lib


class EnvParams(NamedTuple):
    """Static description of the environment.

    Attributes:
        substrate: the substrate arrays (N nodes, E links, K paths of H hops).
        min_nodes, max_nodes: int32 [], the size range of drawn requests; max_nodes must not exceed V, the padded
            request size given to `reset`.
        link_prob: float32 [], the Erdos-Renyi link probability of drawn requests.
        max_cpu, max_bw: int32 [], drawn demands are uniform integers in [0, max_cpu] and [0, max_bw].
    """

    substrate: embedding_lib.SubstrateArrays
    min_nodes: jax.Array
    max_nodes: jax.Array
    link_prob: jax.Array
    max_cpu: jax.Array
    max_bw: jax.Array


class EnvState(NamedTuple):
    """One episode.

    Attributes:
        resources: free substrate resources, with the partial embedding of this request already reserved.
        initial_resources: the free resources at reset, which a failed episode leaves untouched.
        request: the request being embedded (V nodes, L link slots).
        embedding: the partial embedding; placement int32 [V], link_path int32 [L].
        node_order: int32 [V], the virtual nodes in placement order (NRM rank, padding last).
        step: int32 [], how many virtual nodes are placed.
        done: bool [].
        success: bool [], true once the whole request is embedded.
    """

    resources: embedding_lib.Resources
    initial_resources: embedding_lib.Resources
    request: embedding_lib.Request
    embedding: embedding_lib.Embedding
    node_order: jax.Array
    step: jax.Array
    done: jax.Array
    success: jax.Array


def make_params(substrate: embedding_lib.SubstrateArrays, min_nodes: int = 2, max_nodes: int = 10,
                link_prob: float = 0.5, max_cpu: int = 20, max_bw: int = 50) -> EnvParams:
    return EnvParams(substrate, jnp.int32(min_nodes), jnp.int32(max_nodes), jnp.float32(link_prob),
                     jnp.int32(max_cpu), jnp.int32(max_bw))


def sample_request(key: jax.Array, params: EnvParams, max_nodes: int) -> embedding_lib.Request:
    """Draw a connected Erdos-Renyi request padded to `max_nodes` (static) nodes, as `generate_trace` does.

    Link slots follow the fixed upper-triangle order of `max_nodes` nodes with `link_valid` marking real
    links, so real links need not come first (unlike trace files).
    """
    source, target = (jnp.asarray(index, jnp.int32) for index in jnp.triu_indices(max_nodes, k=1))
    key_size, key_links, key_cpu, key_bw = jax.random.split(key, 4)
    num_nodes = jax.random.randint(key_size, (), params.min_nodes, params.max_nodes + 1)
    real = jnp.arange(max_nodes) < num_nodes
    possible = real[source] & real[target]

    def draw_links(carry):
        key, _ = carry
        key, key_draw = jax.random.split(key)
        return key, possible & jax.random.bernoulli(key_draw, params.link_prob, possible.shape)

    def disconnected(carry):
        _, links = carry
        adjacency = jnp.zeros((max_nodes, max_nodes), bool).at[source, target].set(links).at[target, source].set(links)
        reached = jnp.zeros(max_nodes, bool).at[0].set(True)
        for _ in range(max_nodes):
            reached = reached | (adjacency & reached[:, None]).any(axis=0)
        return jnp.any(real & ~reached)

    _, links = jax.lax.while_loop(disconnected, draw_links, draw_links((key_links, None)))
    cpu = jnp.where(real, jax.random.randint(key_cpu, (max_nodes,), 0, params.max_cpu + 1), 0)
    bw = jnp.where(links, jax.random.randint(key_bw, links.shape, 0, params.max_bw + 1), 0)
    return embedding_lib.Request(num_nodes=num_nodes.astype(jnp.int32), cpu=cpu.astype(jnp.int32),
                                 link_src=jnp.where(links, source, 0), link_dst=jnp.where(links, target, 0),
                                 link_bw=bw.astype(jnp.int32), link_valid=links)


def reset(key: jax.Array, params: EnvParams, request: embedding_lib.Request | None = None,
          resources: embedding_lib.Resources | None = None, max_nodes: int = 10) -> EnvState:
    """Start an episode for `request` (drawn from `key` when None) on `resources` (full when None).

    `max_nodes` (static) is V, the padded size of drawn requests; a given request keeps its own padding.
    """
    if request is None:
        request = sample_request(key, params, max_nodes)
    if resources is None:
        resources = embedding_lib.full_resources(params.substrate)
    _, virtual_scores = embedding_lib.rank_scores("nrm_rank", params.substrate, resources, request, key)
    return EnvState(
        resources=resources,
        initial_resources=resources,
        request=request,
        embedding=embedding_lib.empty_embedding(request.cpu.shape[0]),
        node_order=embedding_lib.node_order_from_scores(virtual_scores),
        step=jnp.int32(0),
        done=jnp.bool_(False),
        success=jnp.bool_(False),
    )


def current_node(state: EnvState) -> jax.Array:
    """Return the virtual node that the next action places, int32 []."""
    return state.node_order[jnp.minimum(state.step, state.node_order.shape[0] - 1)]


def action_mask(state: EnvState) -> jax.Array:
    """Return the feasible substrate nodes for the current virtual node, bool [N].

    A node is feasible when it has enough free CPU and hosts no other node of this request. Links are not
    checked here, so a feasible action can still end the episode when a link finds no path. All false once
    the episode is done.
    """
    demand = state.request.cpu[current_node(state)]
    used = jnp.zeros(state.resources.cpu.shape, bool).at[jnp.maximum(state.embedding.placement, 0)].max(
        state.embedding.placement >= 0)
    return (state.resources.cpu >= demand) & ~used & ~state.done


def step(params: EnvParams, state: EnvState, action: jax.Array) -> tuple[EnvState, jax.Array, jax.Array]:
    """Place the current virtual node on substrate node `action` and route its links to placed neighbours.

    Returns (state, reward float32 [], done bool []). Reward is REV / COST of the request on success and 0
    otherwise. On failure the state's resources go back to `initial_resources`.
    """
    substrate = params.substrate
    request = state.request
    virtual = current_node(state)
    feasible = action_mask(state)[action]

    cpu = state.resources.cpu.at[action].add(-request.cpu[virtual])
    placement = state.embedding.placement.at[virtual].set(action)

    def route_one(carry, slot):
        ok, bw, link_path = carry
        other = jnp.where(request.link_src[slot] == virtual, request.link_dst[slot], request.link_src[slot])
        touches = request.link_valid[slot] & ((request.link_src[slot] == virtual) | (request.link_dst[slot] == virtual))
        active = ok & touches & (placement[other] >= 0)
        source = jnp.maximum(placement[request.link_src[slot]], 0)
        target = jnp.maximum(placement[request.link_dst[slot]], 0)
        routed, index, new_bw = embedding_lib.route_link(substrate, bw, source, target, request.link_bw[slot])
        bw = jnp.where(active, new_bw, bw)
        link_path = link_path.at[slot].set(jnp.where(active, index, link_path[slot]))
        return (ok & (routed | ~active), bw, link_path), None

    slots = jnp.arange(request.link_valid.shape[0])
    (links_ok, bw, link_path), _ = jax.lax.scan(
        route_one, (feasible, state.resources.bw, state.embedding.link_path), slots)

    ok = feasible & links_ok
    placed_all = state.step + 1 >= request.num_nodes
    success = ok & placed_all
    done = ~ok | placed_all
    advanced = EnvState(
        resources=embedding_lib.Resources(cpu=cpu, bw=bw),
        initial_resources=state.initial_resources,
        request=request,
        embedding=embedding_lib.Embedding(placement=placement, link_path=link_path),
        node_order=state.node_order,
        step=state.step + 1,
        done=done,
        success=success,
    )
    failed = advanced._replace(resources=state.initial_resources,
                               embedding=embedding_lib.empty_embedding(request.cpu.shape[0]))
    new_state = jax.tree.map(lambda good, bad: jnp.where(ok, good, bad), advanced, failed)
    new_state = jax.tree.map(lambda old, new: jnp.where(state.done, old, new), state, new_state)

    cost = embedding_lib.embedding_cost(substrate, request, new_state.embedding)
    revenue = embedding_lib.request_revenue(request)
    reward = jnp.where(success & ~state.done, revenue / jnp.maximum(cost, 1), 0.0).astype(jnp.float32)
    return new_state, reward, new_state.done
