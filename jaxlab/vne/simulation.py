"""Event-driven online VNE simulation: arrivals and departures of a trace as one `lax.scan`.

Events are sorted by time. At equal times departures come before arrivals, so a request that leaves at t
frees its resources for one arriving at t. A departure of a rejected request does nothing. The whole run
is one jitted function, so it can be vmapped over traces of equal shape (an arrival-rate sweep).
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.vne import embedding as embedding_lib
from jaxlab.vne import requests as requests_lib

DEPARTURE, ARRIVAL = 0, 1


class Events(NamedTuple):
    """2R events of a trace in processing order: kind int32 [2R] (DEPARTURE or ARRIVAL), request int32 [2R]."""

    kind: jax.Array
    request: jax.Array


class SimulationState(NamedTuple):
    """The scan carry.

    Attributes:
        resources: free substrate resources.
        embeddings: `Embedding` with a leading axis [R], where each request sits (empty if rejected).
        accepted: bool [R].
    """

    resources: embedding_lib.Resources
    embeddings: embedding_lib.Embedding
    accepted: jax.Array


def make_events(trace: requests_lib.RequestTrace) -> Events:
    """Order the arrivals and departures of a trace (ties: departures first, then by request index)."""
    count = trace.num_requests
    times = np.concatenate([trace.arrival_time + trace.lifetime, trace.arrival_time])
    kinds = np.concatenate([np.full(count, DEPARTURE), np.full(count, ARRIVAL)]).astype(np.int32)
    ids = np.concatenate([np.arange(count), np.arange(count)]).astype(np.int32)
    order = np.lexsort((ids, kinds, times))
    return Events(kind=jnp.asarray(kinds[order]), request=jnp.asarray(ids[order]))


def simulate(method: str, substrate: embedding_lib.SubstrateArrays, requests: embedding_lib.Request,
             events: Events, key: jax.Array) -> tuple[SimulationState, jax.Array]:
    """Run a trace through one solver, starting from the full substrate.

    Args:
        method: one of `embedding.SOLVERS` (static).
        substrate: the substrate arrays.
        requests: all requests of the trace, with a leading axis [R].
        events: from `make_events`.
        key: randomness of the solver, folded with the request index per arrival.

    Returns:
        (final state, cost int32 [R]); the cost of a rejected request is 0.
    """
    count, max_nodes = requests.cpu.shape
    empty = embedding_lib.empty_embedding(max_nodes)
    state = SimulationState(
        resources=embedding_lib.full_resources(substrate),
        embeddings=jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (count,) + leaf.shape), empty),
        accepted=jnp.zeros(count, bool),
    )

    def arrive(state, index):
        request = jax.tree.map(lambda leaf: leaf[index], requests)
        ok, embedding, resources = embedding_lib.solve(method, substrate, state.resources, request,
                                                       jax.random.fold_in(key, index))
        embeddings = jax.tree.map(lambda all_, one: all_.at[index].set(one), state.embeddings, embedding)
        cost = embedding_lib.embedding_cost(substrate, request, embedding)
        return SimulationState(resources, embeddings, state.accepted.at[index].set(ok)), jnp.where(ok, cost, 0)

    def depart(state, index):
        request = jax.tree.map(lambda leaf: leaf[index], requests)
        embedding = jax.tree.map(lambda leaf: leaf[index], state.embeddings)
        resources = embedding_lib.release(substrate, state.resources, request, embedding)
        embeddings = jax.tree.map(lambda all_, one: all_.at[index].set(one), state.embeddings, empty)
        return SimulationState(resources, embeddings, state.accepted), jnp.int32(0)

    def process(state, event):
        kind, index = event
        state, cost = jax.lax.cond(kind == ARRIVAL, arrive, depart, state, index)
        return state, (index, cost)

    state, (indices, costs) = jax.lax.scan(process, state, (events.kind, events.request))
    cost = jnp.zeros(count, jnp.int32).at[indices].add(costs)
    return state, cost


@functools.partial(jax.jit, static_argnums=0)
def simulate_batch(method: str, substrate: embedding_lib.SubstrateArrays, requests: embedding_lib.Request,
                   events: Events, keys: jax.Array) -> tuple[SimulationState, jax.Array]:
    """`simulate` vmapped over a leading axis of requests, events and keys (one trace per entry)."""
    return jax.vmap(functools.partial(simulate, method, substrate))(requests, events, keys)


def summarize(trace: requests_lib.RequestTrace, accepted: np.ndarray, cost: np.ndarray) -> dict[str, float]:
    """Compute acceptance rate, revenue, cost, long-term R2C, LRC and LAR of one simulated trace.

    REV and COST are summed over accepted requests. LRC = sum(REV * lifetime) / sum(COST * lifetime), and
    LAR = sum(REV * lifetime) / T with T the last arrival time (as Virne's counter defines them).
    """
    accepted = np.asarray(accepted, bool)
    revenue = np.where(accepted, trace.revenue(), 0).astype(np.float64)
    cost = np.where(accepted, np.asarray(cost), 0).astype(np.float64)
    total_revenue, total_cost = revenue.sum(), cost.sum()
    weighted_revenue = float((revenue * trace.lifetime).sum())
    weighted_cost = float((cost * trace.lifetime).sum())
    horizon = float(trace.arrival_time[-1])
    return {
        "acceptance_rate": float(accepted.mean()),
        "accepted": int(accepted.sum()),
        "requests": int(accepted.size),
        "revenue": float(total_revenue),
        "cost": float(total_cost),
        "r2c": float(total_revenue / total_cost) if total_cost > 0 else 0.0,
        "lrc": weighted_revenue / weighted_cost if weighted_cost > 0 else 0.0,
        "lar": weighted_revenue / horizon if horizon > 0 else 0.0,
    }


def run_traces(method: str, substrate: embedding_lib.SubstrateArrays, traces: list[requests_lib.RequestTrace],
               seed: int) -> tuple[list[dict[str, Any]], embedding_lib.Resources]:
    """Simulate several equally shaped traces in one vmapped call and summarise each.

    Each summary adds `solve_time_ms`: the wall time of the call (compilation excluded, because a first
    call compiles and a second one is timed) divided by the number of requests in all traces.

    Returns the summaries and the final free resources [T, ...] of each trace.
    """
    requests = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[embedding_lib.trace_requests(t) for t in traces])
    events = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[make_events(t) for t in traces])
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), embedding_lib.SOLVERS.index(method)), len(traces))
    compiled = simulate_batch.lower(method, substrate, requests, events, keys).compile()
    started = time.perf_counter()
    state, cost = jax.block_until_ready(compiled(substrate, requests, events, keys))
    elapsed = time.perf_counter() - started
    accepted, cost = np.asarray(state.accepted), np.asarray(cost)
    per_request_ms = 1000.0 * elapsed / sum(t.num_requests for t in traces)
    summaries = []
    for index, trace in enumerate(traces):
        summary = summarize(trace, accepted[index], cost[index])
        summary["solve_time_ms"] = per_request_ms
        summaries.append(summary)
    return summaries, state.resources
