"""Substrate generation, GML loading and candidate paths against networkx."""

import itertools

import networkx as nx
import numpy as np
import pytest

from jaxlab.vne import substrate


def test_waxman_is_connected_and_seeded():
    first = substrate.waxman(30, np.random.default_rng(7))
    second = substrate.waxman(30, np.random.default_rng(7))
    assert nx.is_connected(first.graph())
    np.testing.assert_array_equal(first.edges, second.edges)
    np.testing.assert_array_equal(first.cpu, second.cpu)
    np.testing.assert_array_equal(first.bw, second.bw)
    assert first.cpu.min() >= 50
    assert first.cpu.max() <= 100
    assert first.bw.min() >= 50
    assert first.bw.max() <= 100
    assert first.cpu.dtype == np.int32


@pytest.mark.parametrize("name,nodes,links", [("wx100", 100, 500), ("geant", 40, 61), ("brain", 161, 166)])
def test_builtin_topology_sizes(name, nodes, links):
    network = substrate.load_builtin(name, np.random.default_rng(0))
    assert network.num_nodes == nodes
    assert network.num_edges == links
    assert np.all(network.edges[:, 0] < network.edges[:, 1])


def test_malformed_gml_names_file(tmp_path):
    path = tmp_path / "broken.gml"
    path.write_text("graph [\n  node [ id 0 \n  edge [ source 0 target 1 ]\n")
    with pytest.raises(ValueError, match="invalid GML file .*broken.gml"):
        substrate.load_gml(path, np.random.default_rng(0))


def test_disconnected_gml_rejected(tmp_path):
    path = tmp_path / "split.gml"
    nodes = "".join(f"  node [ id {i} ]\n" for i in range(4))
    path.write_text(f"graph [\n{nodes}  edge [ source 0 target 1 ]\n  edge [ source 2 target 3 ]\n]\n")
    with pytest.raises(ValueError, match="disconnected .2 components"):
        substrate.load_gml(path, np.random.default_rng(0))


def test_self_loop_rejected():
    graph = nx.path_graph(3)
    graph.add_edge(1, 1)
    with pytest.raises(ValueError, match="self-loop on node 1"):
        substrate.from_graph(graph, np.random.default_rng(0))


def test_missing_gml_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        substrate.load_gml(tmp_path / "absent.gml", np.random.default_rng(0))


@pytest.mark.parametrize("k,max_hops", [(3, None), (5, 3)])
def test_candidate_paths_match_brute_force(k, max_hops):
    network = substrate.waxman(9, np.random.default_rng(11))
    graph = network.graph()
    paths = substrate.candidate_paths(network, k=k, max_hops=max_hops)
    for source, target in itertools.permutations(range(network.num_nodes), 2):
        lengths = sorted(len(p) - 1 for p in nx.all_simple_paths(graph, source, target))
        if max_hops is not None:
            lengths = [length for length in lengths if length <= max_hops]
        expected = lengths[:k] + [0] * (k - len(lengths[:k]))
        assert paths.hops[source, target].tolist() == expected, (source, target)
        for rank in range(k):
            hops = paths.hops[source, target, rank]
            edges = paths.edges[source, target, rank]
            assert np.all(edges[hops:] == -1)
            node = source
            for edge in edges[:hops]:
                u, v = network.edges[edge]
                assert node in (u, v)
                node = v if node == u else u
            if hops:
                assert node == target
