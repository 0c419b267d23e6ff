"""Strict online evaluation of a trained CONAL policy on request traces.

The event loop is that of `jaxlab.vne.simulation` (arrivals and departures in time order, one `lax.scan`),
with the learned policy in place of a ranking heuristic. Each arrival is one strict episode with greedy
actions (`jaxlab.vne.env.step`). An accepted request therefore never exceeds a capacity, and a request with
a link that fits on no candidate path is rejected with its resources untouched.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.vne import embedding as embedding_lib
from jaxlab.vne import env as env_lib
from jaxlab.vne import requests as requests_lib
from jaxlab.vne import simulation
from jaxlab.vne.conal import network as network_lib
from jaxlab.vne.conal import train


def embed_request(network: network_lib.ConalNetwork, params, env_params: env_lib.EnvParams,
                  resources: embedding_lib.Resources, request: embedding_lib.Request,
                  hetero: bool) -> env_lib.EnvState:
    """Embed one request greedily with strict steps; returns the final episode state."""
    state = env_lib.reset(jax.random.key(0), env_params, request=request, resources=resources)

    def act(state):
        _, masked = train.evaluate_state(network, params, env_params.substrate, state, hetero)
        state, _, _ = env_lib.step(env_params, state, train.greedy_action(masked))
        return state

    return jax.lax.while_loop(lambda state: ~state.done, act, state)


@functools.partial(jax.jit, static_argnums=(0, 5))
def simulate_policy(network: network_lib.ConalNetwork, params, env_params: env_lib.EnvParams,
                    requests: embedding_lib.Request, events: simulation.Events,
                    hetero: bool) -> tuple[simulation.SimulationState, jax.Array, jax.Array]:
    """Run one trace through the policy from the full substrate.

    Returns (final state, cost int32 [R] (0 when rejected), smallest free resource int32 [] over all
    arrivals, which is negative only if an embedding broke a capacity).
    """
    substrate = env_params.substrate
    count, max_nodes = requests.cpu.shape
    empty = embedding_lib.empty_embedding(max_nodes)
    state = simulation.SimulationState(
        resources=embedding_lib.full_resources(substrate),
        embeddings=jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (count,) + leaf.shape), empty),
        accepted=jnp.zeros(count, bool),
    )

    def arrive(carry, index):
        state, lowest = carry
        request = jax.tree.map(lambda leaf: leaf[index], requests)
        final = embed_request(network, params, env_params, state.resources, request, hetero)
        ok = final.success
        embedding = jax.tree.map(lambda done, nothing: jnp.where(ok, done, nothing), final.embedding, empty)
        resources = jax.tree.map(lambda new, old: jnp.where(ok, new, old), final.resources, state.resources)
        embeddings = jax.tree.map(lambda all_, one: all_.at[index].set(one), state.embeddings, embedding)
        cost = jnp.where(ok, embedding_lib.embedding_cost(substrate, request, embedding), 0)
        lowest = jnp.minimum(lowest, jnp.minimum(resources.cpu.min(), resources.bw.min()))
        return (simulation.SimulationState(resources, embeddings, state.accepted.at[index].set(ok)), lowest), cost

    def depart(carry, index):
        state, lowest = carry
        request = jax.tree.map(lambda leaf: leaf[index], requests)
        embedding = jax.tree.map(lambda leaf: leaf[index], state.embeddings)
        resources = embedding_lib.release(substrate, state.resources, request, embedding)
        embeddings = jax.tree.map(lambda all_, one: all_.at[index].set(one), state.embeddings, empty)
        return (simulation.SimulationState(resources, embeddings, state.accepted), lowest), jnp.int32(0)

    def process(carry, event):
        kind, index = event
        carry, cost = jax.lax.cond(kind == simulation.ARRIVAL, arrive, depart, carry, index)
        return carry, (index, cost)

    lowest = jnp.iinfo(jnp.int32).max
    (state, lowest), (indices, costs) = jax.lax.scan(process, (state, jnp.int32(lowest)),
                                                     (events.kind, events.request))
    return state, jnp.zeros(count, jnp.int32).at[indices].add(costs), lowest


def run_traces(network: network_lib.ConalNetwork, params, env_params: env_lib.EnvParams,
               traces: list[requests_lib.RequestTrace], hetero: bool) -> tuple[list[dict[str, Any]], list[int]]:
    """Simulate each trace (one after another) and summarise it as `simulation.summarize` does.

    Each summary adds `solve_time_ms`, the wall time per request of that trace's run, compilation
    excluded (traces of one length share one ahead-of-time compilation). Returns the summaries and, per trace,
    the smallest free resource seen (>= 0 for a strictly feasible run).
    """
    summaries, lowest_free = [], []
    compiled = {}
    for trace in traces:
        requests = embedding_lib.trace_requests(trace)
        events = simulation.make_events(trace)
        if trace.num_requests not in compiled:
            compiled[trace.num_requests] = simulate_policy.lower(network, params, env_params, requests, events,
                                                                 hetero).compile()
        started = time.perf_counter()
        state, cost, lowest = jax.block_until_ready(compiled[trace.num_requests](params, env_params, requests, events))
        elapsed = time.perf_counter() - started
        summary = simulation.summarize(trace, np.asarray(state.accepted), np.asarray(cost))
        summary["solve_time_ms"] = 1000.0 * elapsed / trace.num_requests
        summaries.append(summary)
        lowest_free.append(int(lowest))
    return summaries, lowest_free
