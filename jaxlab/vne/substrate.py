"""Substrate (physical) networks: Waxman generation, GML loading, resources and candidate paths.

Everything here runs once per substrate on the host with NumPy and networkx. The embedding code under
`jit` only reads the arrays that `Substrate` and `CandidatePaths` hold.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from importlib import resources

import networkx as nx
import numpy as np

# Node CPU and link bandwidth of a substrate are integers drawn uniformly from [low, high], both inclusive.
DEFAULT_RESOURCE_RANGE = (50, 100)
# Topologies shipped in jaxlab/vne/data (see the README there for their origin).
BUILTIN_TOPOLOGIES = {"wx100": "Waxman100.gml", "geant": "Geant.gml", "brain": "Brain.gml"}
_MAX_WAXMAN_DRAWS = 1000


@dataclasses.dataclass(frozen=True)
class Substrate:
    """A substrate network with integer resources.

    Attributes:
        name: a label for tables and logs, such as "geant".
        edges: int32 array [E, 2]; link e joins nodes edges[e, 0] < edges[e, 1]. Nodes are 0..N-1.
        cpu: int32 array [N], the CPU capacity of each node.
        bw: int32 array [E], the bandwidth capacity of each link.
    """

    name: str
    edges: np.ndarray
    cpu: np.ndarray
    bw: np.ndarray

    @property
    def num_nodes(self) -> int:
        return int(self.cpu.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edges.shape[0])

    def graph(self) -> nx.Graph:
        """Return the topology as a networkx graph, with edge attribute "index" (row of `edges`)."""
        graph = nx.Graph()
        graph.add_nodes_from(range(self.num_nodes))
        for index, (u, v) in enumerate(self.edges.tolist()):
            graph.add_edge(u, v, index=index)
        return graph


@dataclasses.dataclass(frozen=True)
class CandidatePaths:
    """The k shortest simple paths (by hop count) between every ordered pair of substrate nodes.

    Attributes:
        edges: int32 array [N, N, K, H]; edges[s, d, k, :hops[s, d, k]] are the link indices of the k-th
            path from s to d, and the rest is -1. H is the largest hop count of any stored path.
        hops: int32 array [N, N, K], the hop count of each path; 0 marks a missing path (fewer than K
            paths within the hop limit, or s == d).
    """

    edges: np.ndarray
    hops: np.ndarray

    @property
    def k(self) -> int:
        return int(self.hops.shape[2])


def _check_topology(graph: nx.Graph, source: str) -> None:
    if graph.number_of_nodes() < 2:
        raise ValueError(f"invalid substrate {source}: it has {graph.number_of_nodes()} nodes; expected at least 2")
    loops = list(nx.selfloop_edges(graph))
    if loops:
        raise ValueError(f"invalid substrate {source}: self-loop on node {loops[0][0]}; remove self-loops")
    if not nx.is_connected(graph):
        parts = nx.number_connected_components(graph)
        raise ValueError(f"invalid substrate {source}: the network is disconnected ({parts} components); "
                         "every substrate node must reach every other")


def from_graph(graph: nx.Graph, rng: np.random.Generator, name: str = "substrate",
               resource_range: tuple[int, int] = DEFAULT_RESOURCE_RANGE) -> Substrate:
    """Build a `Substrate` from a connected graph, drawing node CPU and then link bandwidth from `rng`.

    Nodes are renumbered 0..N-1 in the graph's node order, and links keep the graph's edge order.

    Raises:
        ValueError: if the graph is disconnected, has a self-loop or fewer than 2 nodes.
    """
    _check_topology(graph, name)
    index = {node: i for i, node in enumerate(graph.nodes)}
    edges = np.array([sorted((index[u], index[v])) for u, v in graph.edges], np.int32).reshape(-1, 2)
    low, high = resource_range
    cpu = rng.integers(low, high + 1, size=len(index)).astype(np.int32)
    bw = rng.integers(low, high + 1, size=len(edges)).astype(np.int32)
    return Substrate(name=name, edges=edges, cpu=cpu, bw=bw)


def waxman(num_nodes: int, rng: np.random.Generator, alpha: float = 0.5, beta: float = 0.2,
           name: str | None = None, resource_range: tuple[int, int] = DEFAULT_RESOURCE_RANGE) -> Substrate:
    """Draw a connected Waxman graph with random resources, redrawing the graph until it is connected.

    Virne passes its (alpha, beta) = (0.5, 0.2) positionally to `networkx.waxman_graph(n, beta, alpha)`, so
    two nodes at distance d are linked with probability alpha * exp(-d / (beta * L)), L being the largest
    distance. This function keeps that convention so that its graphs match Virne's in distribution.
    """
    if num_nodes < 2:
        raise ValueError(f"invalid num_nodes={num_nodes}; a Waxman substrate needs at least 2 nodes")
    for _ in range(_MAX_WAXMAN_DRAWS):
        seed = int(rng.integers(0, 2**31 - 1))
        graph = nx.waxman_graph(num_nodes, beta=alpha, alpha=beta, seed=seed)
        if nx.is_connected(graph):
            return from_graph(graph, rng, name or f"waxman{num_nodes}", resource_range)
    raise ValueError(f"no connected Waxman graph with {num_nodes} nodes, alpha={alpha}, beta={beta} in "
                     f"{_MAX_WAXMAN_DRAWS} draws; increase alpha or beta")


def load_gml(path: str | os.PathLike[str], rng: np.random.Generator, name: str | None = None,
             resource_range: tuple[int, int] = DEFAULT_RESOURCE_RANGE) -> Substrate:
    """Read a topology from a GML file and draw its resources from `rng`.

    Nodes are identified by their GML `id`. Parallel links of a multigraph file collapse into one link.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the file is not valid GML, or the topology is disconnected or has a self-loop.
    """
    path = os.fspath(path)
    try:
        graph = nx.read_gml(path, label="id")
    except FileNotFoundError:
        raise
    except (nx.NetworkXError, ValueError, KeyError, UnicodeDecodeError) as error:
        raise ValueError(f"invalid GML file {path}: {error}") from None
    return from_graph(nx.Graph(graph), rng, name or os.path.splitext(os.path.basename(path))[0], resource_range)


def load_builtin(topology: str, rng: np.random.Generator) -> Substrate:
    """Load one of `BUILTIN_TOPOLOGIES` ("wx100", "geant", "brain") with resources drawn from `rng`."""
    if topology not in BUILTIN_TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}; expected one of {sorted(BUILTIN_TOPOLOGIES)}")
    data = resources.files("jaxlab.vne") / "data" / BUILTIN_TOPOLOGIES[topology]
    with resources.as_file(data) as path:
        return load_gml(path, rng, name=topology)


def candidate_paths(substrate: Substrate, k: int, max_hops: int | None = None) -> CandidatePaths:
    """Enumerate the k shortest simple paths by hop count between all node pairs (Yen's algorithm).

    Paths come in the order of `networkx.shortest_simple_paths`, which is also the order in which Virne's
    k-shortest link mapping tries them. Paths longer than `max_hops` are left out (None: no limit). Each
    direction is enumerated on its own, as Virne does for a virtual link: the paths from d to s are not in
    general the reversed paths from s to d, because networkx orders paths of equal length differently.
    """
    if k < 1:
        raise ValueError(f"invalid k={k}; expected at least 1 candidate path")
    if max_hops is not None and max_hops < 1:
        raise ValueError(f"invalid max_hops={max_hops}; expected at least 1, or None for no limit")
    graph = substrate.graph()
    n = substrate.num_nodes
    paths = {}
    for source, target in itertools.permutations(range(n), 2):
        found = []
        for path in nx.shortest_simple_paths(graph, source, target):
            if len(found) == k or (max_hops is not None and len(path) - 1 > max_hops):
                break
            found.append([graph.edges[u, v]["index"] for u, v in zip(path[:-1], path[1:])])
        paths[source, target] = found

    max_len = max((len(p) for found in paths.values() for p in found), default=1)
    edges = np.full((n, n, k, max_len), -1, np.int32)
    hops = np.zeros((n, n, k), np.int32)
    for (source, target), found in paths.items():
        for rank, path in enumerate(found):
            edges[source, target, rank, :len(path)] = path
            hops[source, target, rank] = len(path)
    return CandidatePaths(edges=edges, hops=hops)
