"""The heterogeneous graph, the relational GAT layer and size-independent heads."""

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from jaxlab.vne import embedding, env, substrate
from jaxlab.vne.conal import graph, network

build_graph = jax.jit(graph.build_graph, static_argnames="hetero")
reset = jax.jit(env.reset, static_argnames="max_nodes")
step = jax.jit(env.step)


def _state_after_one_step(tiny_setup, request_index=0):
    """The reset state of a trace request (fewer than 5 nodes) and the state after one feasible step."""
    _, _, params, trace = tiny_setup
    requests = embedding.trace_requests(trace)
    index = int(np.flatnonzero(np.asarray(trace.num_nodes) == 3)[request_index])
    request = jax.tree.map(lambda leaf: leaf[index], requests)
    state = reset(jax.random.key(0), params, request=request)
    action = jnp.argmax(env.action_mask(state))
    stepped, _, _ = step(params, state, action)
    return params, state, stepped


def _dense_gat(params, nodes, senders, receivers, relation, bandwidth):
    """The relational GAT layer written with NumPy loops over receivers and relations."""
    p = jax.tree.map(np.asarray, params["params"])
    count, relations = nodes.shape[0], p["attention_source"].shape[0]
    width = p["attention_source"].shape[1]
    weights = p["relation_weights"]["kernel"]
    out = nodes @ p["root"]["kernel"] + p["root"]["bias"]
    for r in range(relations):
        projected = nodes @ weights[:, r * width:(r + 1) * width]
        for i in range(count):
            incoming = [e for e in range(len(senders)) if receivers[e] == i and relation[e] == r]
            if not incoming:
                continue
            scores = []
            for e in incoming:
                j = senders[e]
                score = (projected[j] @ p["attention_source"][r] + projected[i] @ p["attention_target"][r]
                         + p["attention_edge"][r] * bandwidth[e])
                scores.append(score if score > 0 else 0.2 * score)
            scores = np.exp(np.array(scores) - max(scores))
            alpha = scores / scores.sum()
            out[i] += sum(a * projected[senders[e]] for a, e in zip(alpha, incoming))
    return out


def test_gat_layer_matches_dense_reference():
    rng = np.random.default_rng(0)
    nodes = rng.normal(size=(6, 5)).astype(np.float32)
    senders = np.array([0, 1, 2, 3, 4, 5, 0, 2, 1, 1], np.int32)
    receivers = np.array([1, 0, 1, 1, 0, 0, 3, 3, 3, 2], np.int32)
    relation = np.array([0, 0, 0, 1, 1, 2, 2, 2, 0, 1], np.int32)
    bandwidth = rng.random(10).astype(np.float32)
    layer = network.RelationalGATLayer(features=4, num_relations=3)
    params = layer.init(jax.random.key(1), nodes, senders, receivers, relation, bandwidth)
    params = jax.tree.map(lambda leaf: leaf + 0.3 * jax.random.normal(jax.random.key(2), leaf.shape), params)
    got = np.asarray(jax.jit(layer.apply)(params, nodes, senders, receivers, relation, bandwidth))
    expected = _dense_gat(params, nodes, senders, receivers, relation, bandwidth)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_graph_relations_and_padding(tiny_setup):
    params, state, stepped = _state_after_one_step(tiny_setup)
    count = params.substrate.cpu_capacity.shape[0]
    g = build_graph(params.substrate, stepped)
    real = int(g.n_edge[0])
    relation = np.asarray(g.edges["relation"])[:real]
    links = int(np.asarray(stepped.request.link_valid).sum())
    assert np.sum(relation == graph.PHYSICAL) == 2 * params.substrate.edges.shape[0]
    assert np.sum(relation == graph.VIRTUAL) == 2 * links
    assert np.sum(relation == graph.MAPPING) == 1
    assert np.sum(relation == graph.MAPPING_REVERSE) == 1
    assert np.sum(relation == graph.IMAGINARY) == int(np.asarray(env.action_mask(stepped)).sum())
    padding_node = count + stepped.request.cpu.shape[0]
    assert np.all(np.asarray(g.senders)[real:] == padding_node)
    assert np.all(np.asarray(g.receivers)[real:] == padding_node)
    assert int(g.n_edge.sum()) == g.senders.shape[0]
    flat = build_graph(params.substrate, stepped, hetero=False)
    assert not np.isin(np.asarray(flat.edges["relation"])[:int(flat.n_edge[0])],
                       [graph.MAPPING, graph.IMAGINARY]).any()


def test_padding_does_not_change_embeddings(tiny_setup):
    params, _, stepped = _state_after_one_step(tiny_setup)
    count = params.substrate.cpu_capacity.shape[0]
    size = int(stepped.request.num_nodes)
    padded = build_graph(params.substrate, stepped)
    real_edges = int(padded.n_edge[0])
    real_nodes = count + size
    unpadded = jraph.GraphsTuple(
        nodes=jax.tree.map(lambda leaf: leaf[:real_nodes], padded.nodes),
        edges=jax.tree.map(lambda leaf: leaf[:real_edges], padded.edges),
        senders=padded.senders[:real_edges], receivers=padded.receivers[:real_edges], globals=None,
        n_node=jnp.array([real_nodes]), n_edge=jnp.array([real_edges]))
    assert int(unpadded.senders.max()) < real_nodes
    repadded = jraph.pad_with_graphs(unpadded, n_node=real_nodes + 7, n_edge=real_edges + 13, n_graph=2)

    encoder = network.HeteroGATEncoder(hidden=16, num_layers=3)
    weights = encoder.init(jax.random.key(0), padded)
    apply = jax.jit(encoder.apply)
    from_padded = np.asarray(apply(weights, padded))[:real_nodes]
    from_unpadded = np.asarray(apply(weights, unpadded))
    from_repadded = np.asarray(apply(weights, repadded))[:real_nodes]
    np.testing.assert_allclose(from_padded, from_unpadded, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(from_repadded, from_unpadded, rtol=1e-5, atol=1e-5)


def _builtin_state(topology):
    network_ = substrate.load_builtin(topology, np.random.default_rng(0))
    n = network_.num_nodes
    # Direct links as the only candidate paths: enough for features and quick to build on 161 nodes.
    paths = substrate.CandidatePaths(edges=np.full((n, n, 1, 1), -1, np.int32), hops=np.zeros((n, n, 1), np.int32))
    for index, (u, v) in enumerate(network_.edges.tolist()):
        paths.edges[u, v, 0, 0] = paths.edges[v, u, 0, 0] = index
        paths.hops[u, v, 0] = paths.hops[v, u, 0] = 1
    params = env.make_params(embedding.substrate_arrays(network_, paths), max_nodes=5)
    return params, reset(jax.random.key(4), params, max_nodes=5)


def test_heads_run_on_any_substrate_size(tiny_setup):
    params, state, _ = _state_after_one_step(tiny_setup)
    model = network.ConalNetwork(hidden=16, num_layers=2)
    apply = jax.jit(model.apply, static_argnums=2)
    real = jnp.arange(5) < state.request.num_nodes
    weights = model.init(jax.random.key(0), build_graph(params.substrate, state), 12, env.current_node(state),
                         real)
    for topology, size in (("geant", 40), ("wx100", 100), ("brain", 161)):
        big_params, big_state = _builtin_state(topology)
        real = jnp.arange(5) < big_state.request.num_nodes
        outputs = apply(weights, build_graph(big_params.substrate, big_state), size,
                              env.current_node(big_state), real)
        assert outputs.logits.shape == (size,), topology
        assert np.isfinite(np.asarray(outputs.logits)).all(), topology
        assert float(outputs.multiplier) >= 0.0, topology
        assert np.isfinite([float(outputs.value), float(outputs.cost_value)]).all(), topology


def test_augmentation_adds_only_non_edges(tiny_setup):
    params, _, stepped = _state_after_one_step(tiny_setup)
    augmentation = jax.jit(graph.sample_augmentation)(jax.random.key(3), params.substrate, stepped)
    linked = {tuple(sorted(e)) for e in np.asarray(params.substrate.edges).tolist()}
    pairs = np.asarray(augmentation.substrate_pairs)[np.asarray(augmentation.substrate_valid)]
    assert len(pairs) > 0
    assert all(tuple(sorted(p)) not in linked and p[0] != p[1] for p in pairs.tolist())
    source, target = (np.asarray(x) for x in graph.virtual_pairs(5))
    chosen = np.asarray(augmentation.virtual_valid)
    request = jax.tree.map(np.asarray, stepped.request)
    existing = {(s, d) for s, d, v in zip(request.link_src, request.link_dst, request.link_valid) if v}
    n = int(request.num_nodes)
    assert chosen.sum() == min(n, len(existing), n * (n - 1) // 2 - len(existing))
    assert all((s, d) not in existing and d < n for s, d in zip(source[chosen], target[chosen]))
    view = build_graph(params.substrate, stepped, augmentation=augmentation)
    plain = build_graph(params.substrate, stepped)
    assert int(view.n_edge[0]) == int(plain.n_edge[0]) + 2 * len(pairs) + 2 * int(chosen.sum())
