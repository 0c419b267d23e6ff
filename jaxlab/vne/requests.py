"""Virtual network request (VNR) streams: generation, trace files and validation.

A stream is a `RequestTrace`: NumPy arrays padded to `max_nodes` virtual nodes and the
max_nodes * (max_nodes - 1) / 2 possible virtual links, so that every solver and every jitted function
gets the same shapes. Generation is deterministic for a seed, and `save_trace`/`load_trace` keep a stream
in an `.npz` file so that different solvers see the same requests.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

TRACE_FORMAT_VERSION = 1
ARRIVAL_PROCESSES = ("poisson_gaps", "exponential_gaps")
_FIELDS = ("arrival_time", "lifetime", "num_nodes", "cpu", "link_src", "link_dst", "link_bw", "link_valid")


@dataclasses.dataclass(frozen=True)
class RequestTrace:
    """R requests padded to V = max_nodes virtual nodes and L = V * (V - 1) / 2 virtual links.

    Attributes:
        arrival_time: float64 [R], non-decreasing arrival times.
        lifetime: float64 [R], how long an accepted request keeps its resources.
        num_nodes: int32 [R], the number of virtual nodes n of each request (nodes 0..n-1 are real).
        cpu: int32 [R, V], the CPU demand of each virtual node; 0 in padding.
        link_src, link_dst: int32 [R, L], the endpoints (src < dst) of each virtual link; 0 in padding.
        link_bw: int32 [R, L], the bandwidth demand of each virtual link; 0 in padding.
        link_valid: bool [R, L], which link slots are real links. Real links come first.
    """

    arrival_time: np.ndarray
    lifetime: np.ndarray
    num_nodes: np.ndarray
    cpu: np.ndarray
    link_src: np.ndarray
    link_dst: np.ndarray
    link_bw: np.ndarray
    link_valid: np.ndarray

    @property
    def num_requests(self) -> int:
        return int(self.arrival_time.shape[0])

    @property
    def max_nodes(self) -> int:
        return int(self.cpu.shape[1])

    def revenue(self) -> np.ndarray:
        """Return REV = sum of CPU demands + sum of bandwidth demands of each request, int64 [R]."""
        return self.cpu.sum(1, dtype=np.int64) + np.where(self.link_valid, self.link_bw, 0).sum(1, dtype=np.int64)


def max_links(max_nodes: int) -> int:
    return max_nodes * (max_nodes - 1) // 2


def _connected(num_nodes: int, src: np.ndarray, dst: np.ndarray) -> bool:
    adjacency = scipy.sparse.coo_matrix((np.ones(len(src)), (src, dst)), shape=(num_nodes, num_nodes))
    count, _ = scipy.sparse.csgraph.connected_components(adjacency, directed=False)
    return count == 1


def generate_trace(
    seed: int,
    arrival_rate: float,
    num_requests: int = 1000,
    min_nodes: int = 2,
    max_nodes: int = 10,
    link_prob: float = 0.5,
    cpu_range: tuple[int, int] = (0, 20),
    bw_range: tuple[int, int] = (0, 50),
    mean_lifetime: float = 500.0,
    arrival_process: str = "poisson_gaps",
) -> RequestTrace:
    """Draw a request stream; the same arguments always give the same stream.

    Each request is an Erdos-Renyi graph G(n, link_prob), redrawn until connected, with n uniform in
    [min_nodes, max_nodes], integer CPU demands uniform in `cpu_range` and bandwidth demands uniform in
    `bw_range` (both inclusive). Lifetimes are exponential with mean `mean_lifetime`.

    Arrival times are cumulative sums of gaps. "poisson_gaps" draws integer gaps from a Poisson
    distribution with mean 1 / arrival_rate, as Virne 0.5.0 does; "exponential_gaps" draws exponential
    gaps with that mean, which makes arrivals a Poisson process of rate `arrival_rate`.
    """
    if arrival_process not in ARRIVAL_PROCESSES:
        raise ValueError(f"invalid arrival_process={arrival_process!r}; expected one of {ARRIVAL_PROCESSES}")
    if not arrival_rate > 0:
        raise ValueError(f"invalid arrival_rate={arrival_rate}; expected a positive rate")
    if not 1 <= min_nodes <= max_nodes:
        raise ValueError(f"invalid node range [{min_nodes}, {max_nodes}]; expected 1 <= min_nodes <= max_nodes")
    if num_requests < 1:
        raise ValueError(f"invalid num_requests={num_requests}; expected at least 1")
    if min(cpu_range + bw_range) < 0:
        raise ValueError(f"invalid demand ranges cpu={cpu_range}, bw={bw_range}; demands must be >= 0")

    rng = np.random.default_rng(seed)
    num_links = max_links(max_nodes)
    num_nodes = rng.integers(min_nodes, max_nodes + 1, size=num_requests).astype(np.int32)
    cpu = np.zeros((num_requests, max_nodes), np.int32)
    link_src = np.zeros((num_requests, num_links), np.int32)
    link_dst = np.zeros((num_requests, num_links), np.int32)
    link_bw = np.zeros((num_requests, num_links), np.int32)
    link_valid = np.zeros((num_requests, num_links), bool)
    for r, n in enumerate(num_nodes):
        upper_src, upper_dst = np.triu_indices(n, k=1)
        while True:
            keep = rng.random(len(upper_src)) < link_prob
            src, dst = upper_src[keep], upper_dst[keep]
            if n == 1 or _connected(n, src, dst):
                break
        cpu[r, :n] = rng.integers(cpu_range[0], cpu_range[1] + 1, size=n)
        count = len(src)
        link_src[r, :count], link_dst[r, :count] = src, dst
        link_bw[r, :count] = rng.integers(bw_range[0], bw_range[1] + 1, size=count)
        link_valid[r, :count] = True

    if arrival_process == "poisson_gaps":
        gaps = rng.poisson(1.0 / arrival_rate, size=num_requests).astype(np.float64)
    else:
        gaps = rng.exponential(1.0 / arrival_rate, size=num_requests)
    lifetime = rng.exponential(mean_lifetime, size=num_requests)
    trace = RequestTrace(np.cumsum(gaps), lifetime, num_nodes, cpu, link_src, link_dst, link_bw, link_valid)
    validate_trace(trace)
    return trace


def validate_trace(trace: RequestTrace, max_substrate_nodes: int | None = None) -> None:
    """Raise ValueError naming the first problem of a trace: shapes, demands, links or arrival order.

    Args:
        trace: the trace to check.
        max_substrate_nodes: when given, also reject requests with more virtual nodes than this, because
            at most one virtual node of a request may sit on each substrate node.
    """
    count = trace.arrival_time.shape[0]
    nodes = trace.cpu.shape[1] if trace.cpu.ndim == 2 else -1
    expected = {"arrival_time": (count,), "lifetime": (count,), "num_nodes": (count,), "cpu": (count, nodes)}
    for name in ("link_src", "link_dst", "link_bw", "link_valid"):
        expected[name] = (count, max_links(nodes))
    for name, shape in expected.items():
        if getattr(trace, name).shape != shape:
            raise ValueError(f"invalid trace: {name} has shape {getattr(trace, name).shape}; expected {shape}")
    if count == 0:
        raise ValueError("invalid trace: it has no requests")

    if not np.all(np.isfinite(trace.arrival_time)):
        raise ValueError("invalid trace: arrival_time contains NaN or infinite values")
    if np.any(trace.arrival_time < 0):
        r = int(np.argmax(trace.arrival_time < 0))
        raise ValueError(f"invalid trace: request {r} arrives at negative time {trace.arrival_time[r]}")
    out_of_order = np.flatnonzero(np.diff(trace.arrival_time) < 0)
    if out_of_order.size:
        r = int(out_of_order[0]) + 1
        raise ValueError(f"invalid trace: arrivals out of order, request {r} arrives at {trace.arrival_time[r]} "
                         f"before request {r - 1} at {trace.arrival_time[r - 1]}; sort requests by arrival time")
    if not np.all(np.isfinite(trace.lifetime)) or np.any(trace.lifetime <= 0):
        r = int(np.argmax(~(np.isfinite(trace.lifetime) & (trace.lifetime > 0))))
        raise ValueError(f"invalid trace: request {r} has lifetime {trace.lifetime[r]}; expected a positive number")

    for r in range(count):
        _validate_request(trace, r, max_substrate_nodes)


def _validate_request(trace: RequestTrace, r: int, max_substrate_nodes: int | None) -> None:
    n = int(trace.num_nodes[r])
    nodes = trace.cpu.shape[1]
    if not 1 <= n <= nodes:
        raise ValueError(f"invalid trace: request {r} has {n} virtual nodes; expected 1 to {nodes}")
    if max_substrate_nodes is not None and n > max_substrate_nodes:
        raise ValueError(f"request {r} is larger than the substrate: it has {n} virtual nodes but the substrate "
                         f"has {max_substrate_nodes} nodes, and each substrate node hosts at most one of them")
    cpu = trace.cpu[r]
    if np.any(cpu < 0):
        node = int(np.argmax(cpu < 0))
        raise ValueError(f"invalid trace: request {r} has negative CPU demand {cpu[node]} on virtual node {node}")
    if np.any(cpu[n:] != 0):
        raise ValueError(f"invalid trace: request {r} has CPU demand on padding nodes {n}..{nodes - 1}")

    valid = trace.link_valid[r]
    count = int(valid.sum())
    if not np.all(valid[:count]):
        raise ValueError(f"invalid trace: request {r} has padding link slots before real links")
    src, dst, bw = trace.link_src[r, :count], trace.link_dst[r, :count], trace.link_bw[r, :count]
    if np.any(bw < 0):
        link = int(np.argmax(bw < 0))
        raise ValueError(f"invalid trace: request {r} has negative bandwidth demand {bw[link]} on virtual link "
                         f"{link} ({src[link]}, {dst[link]})")
    if np.any(src >= dst) or np.any(src < 0) or np.any(dst >= n):
        link = int(np.argmax((src >= dst) | (src < 0) | (dst >= n)))
        raise ValueError(f"invalid trace: request {r} has virtual link ({src[link]}, {dst[link]}); expected "
                         f"0 <= src < dst < {n}")
    if len(set(zip(src.tolist(), dst.tolist()))) != count:
        raise ValueError(f"invalid trace: request {r} lists a virtual link twice")
    padding = ~valid
    if np.any(trace.link_bw[r][padding] != 0) or np.any(trace.link_src[r][padding] != 0) or np.any(
            trace.link_dst[r][padding] != 0):
        raise ValueError(f"invalid trace: request {r} has nonzero values in padding link slots")
    if n > 1 and not _connected(n, src, dst):
        raise ValueError(f"invalid trace: request {r} is not a connected graph")


def save_trace(path: str | os.PathLike[str], trace: RequestTrace) -> None:
    """Write a trace to an `.npz` file, after validating it."""
    validate_trace(trace)
    arrays = {name: getattr(trace, name) for name in _FIELDS}
    np.savez(path, format_version=np.int32(TRACE_FORMAT_VERSION), **arrays)


def load_trace(path: str | os.PathLike[str], max_substrate_nodes: int | None = None) -> RequestTrace:
    """Read and validate a trace written by `save_trace`.

    Raises:
        ValueError: if the file lacks a field, has another format version, or contains an invalid trace.
    """
    with np.load(path, allow_pickle=False) as data:
        missing = [name for name in ("format_version",) + _FIELDS if name not in data.files]
        if missing:
            raise ValueError(f"invalid trace file {os.fspath(path)}: missing arrays {missing}")
        version = int(data["format_version"])
        if version != TRACE_FORMAT_VERSION:
            raise ValueError(f"invalid trace file {os.fspath(path)}: format version {version}; "
                             f"expected {TRACE_FORMAT_VERSION}")
        dtypes = {"arrival_time": np.float64, "lifetime": np.float64, "link_valid": bool}
        arrays = {name: np.asarray(data[name]).astype(dtypes.get(name, np.int32)) for name in _FIELDS}
    trace = RequestTrace(**arrays)
    try:
        validate_trace(trace, max_substrate_nodes)
    except ValueError as error:
        raise ValueError(f"{error} (in trace file {os.fspath(path)})") from None
    return trace
