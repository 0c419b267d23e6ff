"""Property tests of the embedding model: capacities hold, embeddings are valid, releases are exact."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from jaxlab.vne import embedding, requests, simulation, substrate

MAX_NODES = 5
NUM_REQUESTS = 30
_solve = jax.jit(embedding.solve, static_argnums=0)
_release = jax.jit(embedding.release)


@functools.lru_cache(maxsize=None)
def _topology(graph_seed):
    """A fixed 10-node Waxman topology per seed; resources are redrawn by each example."""
    return substrate.waxman(10, np.random.default_rng(graph_seed))


def _host_usage(network, paths, request, placement, link_path):
    """CPU and bandwidth that one embedding holds, recomputed with NumPy."""
    cpu = np.zeros(network.num_nodes, np.int64)
    bw = np.zeros(network.num_edges, np.int64)
    for node in range(int(request.num_nodes)):
        cpu[placement[node]] += request.cpu[node]
    for slot in np.flatnonzero(request.link_valid):
        source, target = placement[request.link_src[slot]], placement[request.link_dst[slot]]
        k = link_path[slot]
        for edge in paths.edges[source, target, k, :paths.hops[source, target, k]]:
            bw[edge] += request.link_bw[slot]
    return cpu, bw


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph_seed=st.sampled_from([0, 1]), resource_seed=st.integers(0, 2**16), trace_seed=st.integers(0, 2**16),
       low=st.integers(0, 40), rate=st.sampled_from([0.2, 1.0]),
       method=st.sampled_from(embedding.SOLVERS))
def test_online_run_keeps_every_constraint(graph_seed, resource_seed, trace_seed, low, rate, method):
    topology = _topology(graph_seed)
    rng = np.random.default_rng(resource_seed)
    network = substrate.from_graph(topology.graph(), rng, resource_range=(low, low + 40))
    paths = substrate.candidate_paths(network, k=3, max_hops=3)
    pad = 3 - paths.edges.shape[-1]
    paths = substrate.CandidatePaths(np.pad(paths.edges, [(0, 0)] * 3 + [(0, pad)], constant_values=-1), paths.hops)
    arrays = embedding.substrate_arrays(network, paths)
    trace = requests.generate_trace(trace_seed, rate, num_requests=NUM_REQUESTS, max_nodes=MAX_NODES,
                                    mean_lifetime=20.0)
    batch = embedding.trace_requests(trace)
    events = simulation.make_events(trace)
    # The key that `simulation.run_traces(..., seed=0)` hands to the first trace.
    key = jax.random.split(jax.random.fold_in(jax.random.key(0), embedding.SOLVERS.index(method)), 1)[0]

    resources = embedding.full_resources(arrays)
    active, accepted = {}, np.zeros(NUM_REQUESTS, bool)
    capacity_cpu, capacity_bw = network.cpu.astype(np.int64), network.bw.astype(np.int64)
    for kind, index in zip(np.asarray(events.kind), np.asarray(events.request)):
        request = jax.tree.map(lambda leaf: leaf[index], batch)
        if kind == simulation.ARRIVAL:
            ok, placed, resources = _solve(method, arrays, resources, request, jax.random.fold_in(key, index))
            if ok:
                assert embedding.check_embedding(network, paths, request, placed) == []
                active[index] = placed
                accepted[index] = True
            else:
                assert np.all(np.asarray(placed.placement) == -1)
        elif index in active:
            resources = _release(arrays, resources, request, active.pop(index))

        free_cpu, free_bw = np.asarray(resources.cpu), np.asarray(resources.bw)
        assert free_cpu.min() >= 0
        assert free_bw.min() >= 0
        used_cpu, used_bw = np.zeros_like(capacity_cpu), np.zeros_like(capacity_bw)
        for held, placed in active.items():
            request = jax.tree.map(lambda leaf: np.asarray(leaf[held]), batch)
            cpu, bw = _host_usage(network, paths, request, np.asarray(placed.placement), np.asarray(placed.link_path))
            used_cpu += cpu
            used_bw += bw
        np.testing.assert_array_equal(free_cpu, capacity_cpu - used_cpu)
        np.testing.assert_array_equal(free_bw, capacity_bw - used_bw)

    assert not active
    np.testing.assert_array_equal(np.asarray(resources.cpu), network.cpu)
    np.testing.assert_array_equal(np.asarray(resources.bw), network.bw)

    # The jitted scan over the same events accepts exactly the same requests and ends on full capacity.
    summaries, final = simulation.run_traces(method, arrays, [trace], seed=0)
    assert summaries[0]["accepted"] == accepted.sum()
    assert summaries[0]["acceptance_rate"] == accepted.mean()
    np.testing.assert_array_equal(np.asarray(final.cpu[0]), network.cpu)
    np.testing.assert_array_equal(np.asarray(final.bw[0]), network.bw)


def test_route_link_takes_first_fitting_path():
    network = substrate.from_graph(__import__("networkx").cycle_graph(4), np.random.default_rng(0))
    network = substrate.Substrate("ring", network.edges, network.cpu, np.array([10, 10, 10, 10], np.int32))
    paths = substrate.candidate_paths(network, k=2)
    arrays = embedding.substrate_arrays(network, paths)
    bw = jnp.asarray([10, 3, 10, 10], jnp.int32)  # Link 1 joins nodes 1 and 2.
    ok, index, after = embedding.route_link(arrays, bw, jnp.int32(0), jnp.int32(2), jnp.int32(5))
    assert bool(ok)
    taken = paths.edges[0, 2, int(index), :paths.hops[0, 2, int(index)]]
    assert 1 not in taken.tolist()
    assert int(np.asarray(after).sum()) == int(bw.sum()) - 5 * 2
    ok, index, after = embedding.route_link(arrays, bw, jnp.int32(0), jnp.int32(2), jnp.int32(11))
    assert not bool(ok)
    assert int(index) == -1
    np.testing.assert_array_equal(np.asarray(after), np.asarray(bw))


def test_grc_scores_match_power_iteration():
    rng = np.random.default_rng(0)
    cpu = rng.integers(50, 101, 6).astype(np.float32)
    matrix = np.triu(rng.integers(0, 2, (6, 6)) * rng.integers(50, 101, (6, 6)), 1).astype(np.float32)
    matrix = matrix + matrix.T
    matrix[0, 1] = matrix[1, 0] = 60.0  # No isolated node.
    matrix[:, 5] = matrix[5, :] = 0.0
    matrix[4, 5] = matrix[5, 4] = 70.0
    c = cpu / cpu.sum()
    normalised = matrix / matrix.sum(0)
    expected = c
    for _ in range(500):
        expected = 0.15 * c + 0.85 * normalised @ expected
    scores = embedding.grc_scores(jnp.asarray(cpu), jnp.asarray(matrix), jnp.ones(6, bool))
    np.testing.assert_allclose(np.asarray(scores), expected, rtol=1e-4)


@pytest.mark.parametrize("method", embedding.SOLVERS)
def test_solve_rejects_request_without_room(method, small_setup):
    network, paths, arrays, trace = small_setup
    request = jax.tree.map(lambda leaf: leaf[0], embedding.trace_requests(trace))
    empty = embedding.Resources(cpu=jnp.zeros_like(arrays.cpu_capacity), bw=arrays.bw_capacity)
    request = request._replace(cpu=jnp.where(jnp.arange(request.cpu.shape[0]) < request.num_nodes, 1, 0))
    ok, placed, after = _solve(method, arrays, empty, request, jax.random.key(0))
    assert not bool(ok)
    np.testing.assert_array_equal(np.asarray(after.cpu), 0)
    np.testing.assert_array_equal(np.asarray(after.bw), np.asarray(arrays.bw_capacity))
