"""The violation-tolerant step, the training stream and strict policy inference."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.vne import embedding, env, simulation
from jaxlab.vne.conal import cmdp, evaluate, graph, network

reset = jax.jit(env.reset, static_argnames="max_nodes")
cmdp_step = jax.jit(cmdp.step, static_argnames="tolerant")


def _linked_request(tiny_setup):
    """A trace request with a link from its first NRM-ordered node, and that node's state placed feasibly."""
    _, _, params, trace = tiny_setup
    requests = embedding.trace_requests(trace)
    for index in range(trace.num_requests):
        request = jax.tree.map(lambda leaf: leaf[index], requests)
        if int(request.num_nodes) >= 2 and int(jnp.where(request.link_valid, request.link_bw, 0).max()) > 5:
            break
    state = reset(jax.random.key(0), params, request=request)
    episode = cmdp.start_episode(state)
    episode, _, _, cost = cmdp_step(params, episode, jnp.argmax(env.action_mask(state)), tolerant=True)
    assert float(cost) == np.float32(cmdp.NO_LINK_COST)
    return params, episode


def test_route_tolerant_picks_least_violating_path(tiny_setup):
    network_, paths, params, _ = tiny_setup
    substrate = params.substrate
    source, target = next((s, t) for s in range(12) for t in range(12) if paths.hops[s, t, 1] > 0)
    bw = np.asarray(np.random.default_rng(0).integers(0, 6, size=network_.num_edges), np.int32)
    demand = 10
    shortfalls = []
    for k in range(paths.k):
        if paths.hops[source, target, k] == 0:
            shortfalls.append(np.inf)
            continue
        edges = paths.edges[source, target, k, :paths.hops[source, target, k]]
        shortfalls.append(np.maximum(demand - bw[edges], 0).sum())
    best = int(np.argmin(shortfalls))
    routed, index, violation, new_bw = jax.jit(cmdp.route_tolerant)(substrate, jnp.asarray(bw), source, target,
                                                                    jnp.int32(demand))
    assert bool(routed)
    assert int(index) == best
    assert int(violation) == shortfalls[best] > 0
    expected = bw.copy()
    expected[paths.edges[source, target, best, :paths.hops[source, target, best]]] -= demand
    np.testing.assert_array_equal(np.asarray(new_bw), expected)


def test_route_tolerant_reports_slack_when_path_fits(tiny_setup):
    _, paths, params, _ = tiny_setup
    source, target = 0, int(np.flatnonzero(paths.hops[0, :, 0] > 0)[0])
    bw = params.substrate.bw_capacity
    routed, index, violation, _ = jax.jit(cmdp.route_tolerant)(params.substrate, bw, source, target, jnp.int32(3))
    edges = paths.edges[source, target, 0, :paths.hops[source, target, 0]]
    assert bool(routed)
    assert int(index) == 0
    assert int(violation) == -int((np.asarray(bw)[edges] - 3).min())


def test_tolerant_step_commits_with_cost_where_strict_fails(tiny_setup):
    params, episode = _linked_request(tiny_setup)
    starved = episode._replace(env=episode.env._replace(
        resources=episode.env.resources._replace(bw=jnp.ones_like(episode.env.resources.bw))))
    action = jnp.argmax(env.action_mask(starved.env))

    tolerant, _, done, cost = cmdp_step(params, starved, action, tolerant=True)
    assert float(cost) > 0.0
    assert bool(tolerant.violated)
    assert int(tolerant.env.step) == 2
    assert np.asarray(tolerant.env.resources.bw).min() < 0
    assert float(tolerant.max_cost) == float(cost)
    assert bool(done) == (int(episode.env.request.num_nodes) == 2)

    strict, reward, done, cost = cmdp_step(params, starved, action, tolerant=False)
    assert bool(done)
    assert not bool(strict.env.success)
    assert float(reward) == 0.0
    assert float(cost) == 0.0
    np.testing.assert_array_equal(np.asarray(strict.env.resources.bw), np.asarray(starved.env.initial_resources.bw))


def test_stream_keeps_only_feasible_embeddings(tiny_setup):
    _, _, params, _ = tiny_setup
    config = cmdp.StreamConfig(arrival_rate=0.5, mean_lifetime=20.0, requests_per_epoch=1000, max_active=32,
                               max_nodes=5, tolerant=True)
    key = jax.random.key(7)

    @jax.jit
    def run(stream):
        def body(stream, step_key):
            mask = env.action_mask(stream.episode.env)
            action = jax.random.categorical(step_key, jnp.where(mask, 0.0, -1e9))
            stream, info = cmdp.stream_step(key, params, config, stream, action)
            low = jnp.minimum(stream.episode.env.resources.cpu.min(), stream.episode.env.initial_resources.bw.min())
            return stream, (info, low)

        return jax.lax.scan(body, stream, jax.random.split(jax.random.key(8), 150))

    stream, (info, low) = run(jax.jit(cmdp.reset_stream, static_argnums=2)(key, params, config))
    info = jax.tree.map(np.asarray, info)
    assert info.done.sum() > 20
    assert info.accepted.sum() > 0
    assert info.violated.sum() > 0, "random actions on a scarce substrate should violate sometimes"
    assert not np.any(info.accepted & info.violated)
    assert np.asarray(low).min() >= 0, "an episode started on resources left negative by a violating embedding"

    released, active = jax.jit(cmdp.release_departed)(params.substrate, stream.episode.env.initial_resources,
                                                      stream.active, jnp.float32(jnp.inf))
    assert np.isinf(np.asarray(active.departure)).all()
    np.testing.assert_array_equal(np.asarray(released.cpu), np.asarray(params.substrate.cpu_capacity))
    np.testing.assert_array_equal(np.asarray(released.bw), np.asarray(params.substrate.bw_capacity))


def test_strict_inference_never_violates(tiny_setup):
    network_, _, params, trace = tiny_setup
    model = network.ConalNetwork(hidden=16, num_layers=2)
    state = reset(jax.random.key(0), params, max_nodes=5)
    real = jnp.arange(5) < state.request.num_nodes
    weights = model.init(jax.random.key(1), graph.build_graph(params.substrate, state), 12, env.current_node(state),
                         real)
    requests = embedding.trace_requests(trace)
    events = simulation.make_events(trace)
    final, cost, lowest = evaluate.simulate_policy(model, weights, params, requests, events, True)
    accepted = np.asarray(final.accepted)
    assert 0 < accepted.sum() < trace.num_requests
    assert int(lowest) >= 0
    # Every request has departed by the end of the trace, so all capacity is free again.
    np.testing.assert_array_equal(np.asarray(final.resources.cpu), network_.cpu)
    np.testing.assert_array_equal(np.asarray(final.resources.bw), network_.bw)
    assert np.all(np.asarray(cost)[~accepted] == 0)
    assert np.all(np.asarray(cost)[accepted] > 0)
