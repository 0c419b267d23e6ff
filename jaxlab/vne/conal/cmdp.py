"""The constrained MDP of CONAL: a violation-tolerant step and an online request stream for training.

`step(..., tolerant=True)` places the current virtual node like `jaxlab.vne.env.step`, but a virtual link
that fits on no candidate path is still committed, on the candidate path with the smallest total
shortfall, and the step reports a positive cost. Bandwidth may then go negative inside the episode. Costs
follow CONAL's reference code, in units of bandwidth / 1000:

- a step that routes links: the largest violation over its links, where a link on a fitting path has
  violation -(smallest slack on the path) <= 0 and a link on an overloaded path has violation
  sum over the path of max(0, demand - free) > 0;
- a step that routes no link: -0.1;
- a failed or finished step: 0.

With `tolerant=False` the step is `jaxlab.vne.env.step` (strict: an unroutable link ends the episode) with
cost 0, which is what inference and the PPO-GAT baseline use.

`Stream` runs one online simulation per environment for training: requests drawn from the request
distribution arrive with integer Poisson gaps, stay for exponential lifetimes, and each finished episode
advances the clock to the next arrival, releasing the requests that departed. An embedding with a
violation is never kept on the substrate, so the online state only contains feasible embeddings.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlab.vne import embedding as embedding_lib
from jaxlab.vne import env as env_lib
from jaxlab.vne import requests as requests_lib

COST_SCALE = 1000.0  # Costs are bandwidth units / 1000, as in CONAL's reference code.
NO_LINK_COST = -0.1  # Cost of a step that routes no virtual link (-100 / 1000 in the reference code).
_BIG = jnp.iinfo(jnp.int32).max


class Episode(NamedTuple):
    """An episode of the constrained MDP.

    Attributes:
        env: the `jaxlab.vne.env.EnvState` of the request being embedded.
        violated: bool [], whether some step committed a link on an overloaded path.
        max_cost: float32 [], the largest step cost so far (-inf before the first step).
    """

    env: env_lib.EnvState
    violated: jax.Array
    max_cost: jax.Array


def start_episode(env_state: env_lib.EnvState) -> Episode:
    return Episode(env=env_state, violated=jnp.bool_(False), max_cost=jnp.float32(-jnp.inf))


def _add_along_path(bw: jax.Array, path: jax.Array, amount: jax.Array) -> jax.Array:
    on_path = path >= 0
    return bw.at[jnp.where(on_path, path, 0)].add(jnp.where(on_path, amount, 0))


def route_tolerant(substrate: embedding_lib.SubstrateArrays, bw: jax.Array, source: jax.Array, target: jax.Array,
                   demand: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Reserve `demand` on the first fitting candidate path, else on the least-violating one.

    Returns:
        (routed, path_index, violation, bw): whether any candidate path exists, the chosen index k (-1 if
        none), the link's violation (int32, see the module docstring) and the bandwidth after reserving.
    """
    paths = substrate.path_edges[source, target]  # [K, H]
    exists = substrate.path_hops[source, target] > 0
    on_path = paths >= 0
    free = jnp.where(on_path, bw[jnp.maximum(paths, 0)], _BIG)
    min_slack = (free - demand).min(axis=1)
    fits = exists & (min_slack >= 0)
    shortfall = jnp.where(on_path, jnp.maximum(demand - free, 0), 0).sum(axis=1)
    violation = jnp.where(min_slack >= 0, -min_slack, shortfall)
    least_violating = jnp.argmin(jnp.where(exists, shortfall, _BIG))
    index = jnp.where(fits.any(), jnp.argmax(fits), least_violating)
    routed = exists.any()
    bw = jnp.where(routed, _add_along_path(bw, paths[index], -demand), bw)
    return routed, jnp.where(routed, index, -1), violation[index], bw


def _tolerant_step(params: env_lib.EnvParams, state: env_lib.EnvState,
                   action: jax.Array) -> tuple[env_lib.EnvState, jax.Array, jax.Array, jax.Array, jax.Array]:
    """`env.step` with violation-tolerant routing; returns (state, reward, done, cost, violated_now)."""
    substrate = params.substrate
    request = state.request
    virtual = env_lib.current_node(state)
    feasible = env_lib.action_mask(state)[action]
    cpu = state.resources.cpu.at[action].add(-request.cpu[virtual])
    placement = state.embedding.placement.at[virtual].set(action)

    def route_one(carry, slot):
        ok, bw, link_path, worst, any_link = carry
        source_node, target_node = request.link_src[slot], request.link_dst[slot]
        other = jnp.where(source_node == virtual, target_node, source_node)
        touches = request.link_valid[slot] & ((source_node == virtual) | (target_node == virtual))
        active = ok & touches & (placement[other] >= 0)
        source = jnp.maximum(placement[source_node], 0)
        target = jnp.maximum(placement[target_node], 0)
        routed, index, violation, new_bw = route_tolerant(substrate, bw, source, target, request.link_bw[slot])
        bw = jnp.where(active, new_bw, bw)
        link_path = link_path.at[slot].set(jnp.where(active, index, link_path[slot]))
        worst = jnp.where(active, jnp.maximum(worst, violation), worst)
        return (ok & (routed | ~active), bw, link_path, worst, any_link | active), None

    slots = jnp.arange(request.link_valid.shape[0])
    init = (feasible, state.resources.bw, state.embedding.link_path, -_BIG, jnp.bool_(False))
    (ok, bw, link_path, worst, any_link), _ = jax.lax.scan(route_one, init, slots)

    placed_all = state.step + 1 >= request.num_nodes
    success = ok & placed_all
    done = ~ok | placed_all
    advanced = state._replace(resources=embedding_lib.Resources(cpu=cpu, bw=bw),
                              embedding=embedding_lib.Embedding(placement=placement, link_path=link_path),
                              step=state.step + 1, done=done, success=success)
    failed = advanced._replace(resources=state.initial_resources,
                               embedding=embedding_lib.empty_embedding(request.cpu.shape[0]))
    new_state = jax.tree.map(lambda good, bad: jnp.where(ok, good, bad), advanced, failed)
    new_state = jax.tree.map(lambda old, new: jnp.where(state.done, old, new), state, new_state)

    live = ok & ~state.done
    cost = jnp.where(any_link, worst.astype(jnp.float32) / COST_SCALE, NO_LINK_COST)
    cost = jnp.where(live, cost, 0.0)
    violated_now = live & any_link & (worst > 0)
    revenue = embedding_lib.request_revenue(request)
    path_cost = embedding_lib.embedding_cost(substrate, request, new_state.embedding)
    reward = jnp.where(success & ~state.done, revenue / jnp.maximum(path_cost, 1), 0.0).astype(jnp.float32)
    return new_state, reward, new_state.done, cost.astype(jnp.float32), violated_now


def step(params: env_lib.EnvParams, episode: Episode, action: jax.Array,
         tolerant: bool) -> tuple[Episode, jax.Array, jax.Array, jax.Array]:
    """Take one action; returns (episode, reward float32 [], done bool [], cost float32 []).

    `tolerant` (static) selects the violation-tolerant step of training; False is the strict step.
    """
    if tolerant:
        env_state, reward, done, cost, violated_now = _tolerant_step(params, episode.env, action)
    else:
        env_state, reward, done = env_lib.step(params, episode.env, action)
        cost, violated_now = jnp.float32(0.0), jnp.bool_(False)
    live = ~episode.env.done
    max_cost = jnp.where(live, jnp.maximum(episode.max_cost, cost), episode.max_cost)
    return Episode(env=env_state, violated=episode.violated | violated_now, max_cost=max_cost), reward, done, cost


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """Static settings of the training request stream.

    Attributes:
        arrival_rate: requests per time unit; inter-arrival gaps are integer Poisson draws of mean 1 / rate.
        mean_lifetime: mean of the exponential lifetime of a request.
        requests_per_epoch: after this many requests the substrate starts empty again.
        max_active: size of the table of embedded requests that have not departed yet.
        max_nodes: V, the padded request size.
        tolerant: violation-tolerant training steps (CONAL) or strict steps (PPO-GAT).
    """

    arrival_rate: float
    mean_lifetime: float
    requests_per_epoch: int
    max_active: int
    max_nodes: int
    tolerant: bool


class ActiveRequests(NamedTuple):
    """Embedded requests that have not departed, A table slots.

    Attributes:
        request: `Request` with a leading axis [A].
        embedding: `Embedding` with a leading axis [A]; empty in free slots.
        departure: float32 [A], departure time, +inf in free slots.
    """

    request: embedding_lib.Request
    embedding: embedding_lib.Embedding
    departure: jax.Array


class Stream(NamedTuple):
    """One online training simulation.

    Attributes:
        episode: the episode of the request being embedded.
        active: the embedded requests still on the substrate.
        lifetime: float32 [], the lifetime of the current request.
        clock: float32 [], the arrival time of the current request.
        epoch_requests: int32 [], requests drawn since the substrate was last emptied (current included).
        drawn: int32 [], requests drawn in total; request i uses fold_in(stream key, i).
        dropped: int32 [], feasible embeddings not kept because the table was full (should stay 0).
    """

    episode: Episode
    active: ActiveRequests
    lifetime: jax.Array
    clock: jax.Array
    epoch_requests: jax.Array
    drawn: jax.Array
    dropped: jax.Array


class StepInfo(NamedTuple):
    """Scalar outcome of one stream step.

    Attributes:
        reward, cost: float32 [], the step's reward and cost.
        done: bool [], whether the episode ended with this step.
        accepted: bool [], whether the finished embedding was feasible and kept.
        violated: bool [], whether the finished embedding broke a bandwidth capacity.
    """

    reward: jax.Array
    cost: jax.Array
    done: jax.Array
    accepted: jax.Array
    violated: jax.Array


def _empty_active(config: StreamConfig) -> ActiveRequests:
    size, nodes = config.max_active, config.max_nodes
    links = requests_lib.max_links(nodes)
    request = embedding_lib.Request(
        num_nodes=jnp.zeros(size, jnp.int32), cpu=jnp.zeros((size, nodes), jnp.int32),
        link_src=jnp.zeros((size, links), jnp.int32), link_dst=jnp.zeros((size, links), jnp.int32),
        link_bw=jnp.zeros((size, links), jnp.int32), link_valid=jnp.zeros((size, links), bool))
    empty = embedding_lib.empty_embedding(nodes)
    embedding = jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (size,) + leaf.shape), empty)
    return ActiveRequests(request=request, embedding=embedding, departure=jnp.full(size, jnp.inf, jnp.float32))


def release_departed(substrate: embedding_lib.SubstrateArrays, resources: embedding_lib.Resources,
                     active: ActiveRequests, clock: jax.Array) -> tuple[embedding_lib.Resources, ActiveRequests]:
    """Return the resources of every table entry that departs at or before `clock`, and free its slot."""
    due = active.departure <= clock
    request, embedding = active.request, active.embedding
    placed = (embedding.placement >= 0) & due[:, None]
    cpu = resources.cpu.at[jnp.maximum(embedding.placement, 0).ravel()].add(
        jnp.where(placed, request.cpu, 0).ravel())
    routed = (embedding.link_path >= 0) & due[:, None]
    source = jnp.take_along_axis(embedding.placement, request.link_src, axis=1)
    target = jnp.take_along_axis(embedding.placement, request.link_dst, axis=1)
    paths = substrate.path_edges[jnp.maximum(source, 0), jnp.maximum(target, 0), jnp.maximum(embedding.link_path, 0)]
    amount = jnp.broadcast_to(jnp.where(routed, request.link_bw, 0)[..., None], paths.shape)
    on_path = paths >= 0
    bw = resources.bw.at[jnp.where(on_path, paths, 0).ravel()].add(jnp.where(on_path, amount, 0).ravel())
    empty = embedding_lib.empty_embedding(embedding.placement.shape[1])
    embedding = jax.tree.map(lambda leaf, nothing: jnp.where(due.reshape((-1,) + (1,) * nothing.ndim), nothing, leaf),
                             embedding, empty)
    departure = jnp.where(due, jnp.inf, active.departure)
    return embedding_lib.Resources(cpu=cpu, bw=bw), active._replace(embedding=embedding, departure=departure)


def _arrive(key: jax.Array, params: env_lib.EnvParams, config: StreamConfig,
            resources: embedding_lib.Resources) -> tuple[Episode, jax.Array]:
    key_request, key_lifetime = jax.random.split(key)
    request = env_lib.sample_request(key_request, params, config.max_nodes)
    env_state = env_lib.reset(key_request, params, request=request, resources=resources)
    lifetime = config.mean_lifetime * jax.random.exponential(key_lifetime)
    return start_episode(env_state), lifetime.astype(jnp.float32)


def _gap(key: jax.Array, config: StreamConfig) -> jax.Array:
    return jax.random.poisson(jax.random.fold_in(key, 1), 1.0 / config.arrival_rate).astype(jnp.float32)


def reset_stream(key: jax.Array, params: env_lib.EnvParams, config: StreamConfig) -> Stream:
    """Start a stream on the empty substrate with its first request; `key` is the stream's own key."""
    request_key = jax.random.fold_in(key, 0)
    episode, lifetime = _arrive(request_key, params, config, embedding_lib.full_resources(params.substrate))
    return Stream(episode=episode, active=_empty_active(config), lifetime=lifetime,
                  clock=_gap(request_key, config), epoch_requests=jnp.int32(1), drawn=jnp.int32(1),
                  dropped=jnp.int32(0))


def stream_step(key: jax.Array, params: env_lib.EnvParams, config: StreamConfig, stream: Stream,
                action: jax.Array) -> tuple[Stream, StepInfo]:
    """Take `action` in the current episode; when it ends, keep or drop the embedding and start the next request.

    `key` is the stream's own key (the same at every call); request i is drawn from fold_in(key, i).
    """
    episode, reward, done, cost = step(params, stream.episode, action, config.tolerant)
    env_state = episode.env
    accepted = done & env_state.success & ~episode.violated

    # Keep a feasible embedding in the table, or give its resources back when the table is full.
    free_slot = jnp.argmax(stream.active.departure == jnp.inf)
    has_slot = stream.active.departure[free_slot] == jnp.inf
    keep = accepted & has_slot
    resources = jax.tree.map(lambda kept, initial: jnp.where(keep, kept, initial), env_state.resources,
                             env_state.initial_resources)
    active = stream.active

    def put(table, item):
        return table.at[free_slot].set(jnp.where(keep, item, table[free_slot]))

    active = ActiveRequests(
        request=jax.tree.map(put, active.request, env_state.request),
        embedding=jax.tree.map(put, active.embedding, env_state.embedding),
        departure=put(active.departure, stream.clock + stream.lifetime),
    )

    # The next arrival: a new epoch empties the substrate, otherwise departures up to its time are released.
    request_key = jax.random.fold_in(key, stream.drawn)
    new_epoch = stream.epoch_requests >= config.requests_per_epoch
    clock = jnp.where(new_epoch, 0.0, stream.clock) + _gap(request_key, config)
    resources = jax.tree.map(lambda full, now: jnp.where(new_epoch, full, now),
                             embedding_lib.full_resources(params.substrate), resources)
    active = jax.tree.map(lambda empty, now: jnp.where(new_epoch, empty, now), _empty_active(config), active)
    resources, active = release_departed(params.substrate, resources, active, clock)
    next_episode, lifetime = _arrive(request_key, params, config, resources)
    advanced = Stream(episode=next_episode, active=active, lifetime=lifetime, clock=clock,
                      epoch_requests=jnp.where(new_epoch, 1, stream.epoch_requests + 1),
                      drawn=stream.drawn + 1, dropped=stream.dropped + (accepted & ~has_slot))
    continuing = stream._replace(episode=episode)
    stream = jax.tree.map(lambda new, same: jnp.where(done, new, same), advanced, continuing)
    info = StepInfo(reward=reward, cost=cost, done=done, accepted=accepted, violated=done & episode.violated)
    return stream, info
