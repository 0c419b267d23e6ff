"""Compare jaxlab's GRC and NRM ranking baselines with Virne 0.5.0 on the same substrate and request trace.

One substrate (a built-in topology with resources drawn from the seed) and one request trace per arrival
rate come from jaxlab, as in the `vne_baselines` experiment, so a seed gives the same inputs as that
config. Both are converted into Virne's `PhysicalNetwork` and `VirtualNetwork` objects, and Virne's
`grc_rank`/`nrm_rank` solvers run inside Virne's `SolutionStepEnvironment` event loop with its k-shortest
link mapping (k = 10). jaxlab's solvers run on the same inputs in the same process with k = 10 candidate
paths and no hop limit. The script reports acceptance rate and long-term R2C of both, per-request
agreement of their decisions, and per-request solve times (jaxlab's compile time excluded).

Virne and torch are not jaxlab dependencies; install them in a separate venv (see docs/benchmarks.md):

  python benchmarks/vne_virne.py
  python benchmarks/vne_virne.py --output=docs/benchmarks.md   # also record the results there
"""

from __future__ import annotations

import copy
import datetime
import functools
import importlib.metadata
import importlib.util
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from absl import app
from absl import flags
import jax
import ml_collections
import networkx as nx
import numpy as np

from jaxlab.vne import embedding as embedding_lib
from jaxlab.vne import experiment
from jaxlab.vne import requests as requests_lib
from jaxlab.vne import simulation
from jaxlab.vne import substrate as substrate_lib

SECTION_TITLE = "VNE baselines vs Virne"
VIRNE_VERSION = "0.5.0"
# jaxlab solver name -> Virne solver class in virne.solver.heuristic.node_rank.
SOLVER_CLASSES = {"grc_rank": "GRCRankSolver", "nrm_rank": "NRMRankSolver"}

_OUTPUT = flags.DEFINE_string(
    "output", None, f"Markdown file in which to add or replace the '{SECTION_TITLE}' section; print only if unset.")
_TOPOLOGY = flags.DEFINE_enum("topology", "wx100", sorted(substrate_lib.BUILTIN_TOPOLOGIES),
                              "Built-in substrate topology; node CPU and link bandwidth are drawn from U[50, 100].")
_ARRIVAL_RATES = flags.DEFINE_list("arrival_rates", ["0.14"],
                                   "Arrival rates (requests per time unit); one trace per rate.")
_NUM_REQUESTS = flags.DEFINE_integer("num_requests", 1000, "Requests per trace.")
_SOLVERS = flags.DEFINE_list("solvers", list(SOLVER_CLASSES), f"Solvers to compare, from {sorted(SOLVER_CLASSES)}.")
_K_PATHS = flags.DEFINE_integer("k_paths", 10, "Candidate paths per virtual link (Virne 0.5.0 defaults to 10).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the substrate resources and the request traces.")
_SCAN_REPEATS = flags.DEFINE_integer("scan_repeats", 7,
                                     "Timed runs of the compiled jaxlab simulation; the median and fastest are "
                                     "reported.")

PEER_SETUP_COMMANDS = (
    "python3 -m venv /tmp/virnevenv",
    "/tmp/virnevenv/bin/pip install torch==2.13.0     # the CPU build, not the default CUDA wheel",
    "/tmp/virnevenv/bin/pip install virne==0.5.0",
    "/tmp/virnevenv/bin/pip install -e .               # jaxlab and jax, from the repository root",
    "/tmp/virnevenv/bin/python benchmarks/vne_virne.py --output=docs/benchmarks.md",
)
PEER_SETUP = "\n".join("  " + command for command in PEER_SETUP_COMMANDS)

# Virne attribute settings. A substrate node has free CPU ("cpu", type resource) and its capacity
# ("max_cpu", type extrema), and a substrate link has "bw" and "max_bw" likewise. Virtual nodes and links
# carry the demands "cpu" and "bw". Values come from jaxlab, so no attribute is generative.
P_NODE_ATTRS = [{"name": "cpu", "owner": "node", "type": "resource"},
                {"name": "max_cpu", "owner": "node", "type": "extrema", "originator": "cpu"}]
P_LINK_ATTRS = [{"name": "bw", "owner": "link", "type": "resource"},
                {"name": "max_bw", "owner": "link", "type": "extrema", "originator": "bw"}]
V_NODE_ATTRS = [{"name": "cpu", "owner": "node", "type": "resource"}]
V_LINK_ATTRS = [{"name": "bw", "owner": "link", "type": "resource"}]


def _raise_on_shell_command(*args, **kwargs):
    raise RuntimeError(f"virne tried to run a shell command while being imported: {args!r}; aborting")


def import_virne() -> types.SimpleNamespace:
    """Import the parts of Virne 0.5.0 that the heuristic solvers need, without its learning package.

    `virne/solver/__init__.py` imports `virne.solver.learning`, whose `__init__` runs `pip install` of
    the PyTorch Geometric extensions from a URL outside the package index when torch-scatter is missing.
    A stub module registered under that name first keeps that code from running, and the GRC and NRM
    solvers do not use the learning package. `os.system` raises during the import as a second guard.
    """
    if importlib.util.find_spec("virne") is None:
        raise SystemExit(f"virne is not installed in {sys.executable}.\nInstall Virne {VIRNE_VERSION} with jaxlab in "
                         f"a separate venv, then rerun with its python:\n{PEER_SETUP}")
    installed = importlib.metadata.version("virne")
    if installed != VIRNE_VERSION:
        raise SystemExit(f"virne {installed} is installed; this benchmark reads Virne {VIRNE_VERSION}'s API. "
                         f"Install it with:\n{PEER_SETUP}")

    stub = types.ModuleType("virne.solver.learning")
    stub.__path__ = []
    stub.__all__ = []
    sys.modules.setdefault("virne.solver.learning", stub)
    if sys.modules["virne.solver.learning"] is not stub:
        raise SystemExit("virne.solver.learning was imported before the stub was registered; run this script in a "
                         "fresh interpreter")
    system = os.system
    os.system = _raise_on_shell_command
    try:
        from virne.base import Controller, Counter, Recorder, SolutionStepEnvironment
        from virne.data import PhysicalNetwork, VirtualNetwork, VirtualNetworkRequestSimulator
        from virne.solver.heuristic import node_rank
    finally:
        os.system = system
    return types.SimpleNamespace(
        Controller=Controller, Counter=Counter, Recorder=Recorder, SolutionStepEnvironment=SolutionStepEnvironment,
        PhysicalNetwork=PhysicalNetwork, VirtualNetwork=VirtualNetwork,
        VirtualNetworkRequestSimulator=VirtualNetworkRequestSimulator,
        solver_classes={name: getattr(node_rank, cls) for name, cls in SOLVER_CLASSES.items()})


# ---------------------------------------------------------------------------------------------------
# Inputs: jaxlab substrate and traces, and their conversion into Virne objects.


def make_config(rates: list[float]) -> ml_collections.ConfigDict:
    """Return the `vne_baselines` settings that `experiment.build_topology` reads, for one topology."""
    config = ml_collections.ConfigDict()
    config.seed = _SEED.value
    config.k_paths = _K_PATHS.value
    config.max_hops = 0  # No hop limit, as in Virne 0.5.0's k-shortest link mapping.
    config.arrival_rates = {_TOPOLOGY.value: tuple(rates)}
    config.num_requests = _NUM_REQUESTS.value
    config.min_nodes = 2
    config.max_nodes = 10
    config.mean_lifetime = 500.0
    config.arrival_process = "poisson_gaps"  # Integer Poisson gaps with mean 1 / rate, as Virne 0.5.0 draws them.
    return config


def to_physical_network(virne, substrate: substrate_lib.Substrate):
    """Convert a substrate, adding nodes 0..N-1 and links in jaxlab's order so that both see the same graph."""
    graph = nx.Graph()
    for node, cpu in enumerate(substrate.cpu.tolist()):
        graph.add_node(node, cpu=cpu, max_cpu=cpu)
    for (u, v), bw in zip(substrate.edges.tolist(), substrate.bw.tolist()):
        graph.add_edge(u, v, bw=bw, max_bw=bw)
    return virne.PhysicalNetwork(graph, node_attrs_setting=copy.deepcopy(P_NODE_ATTRS),
                                 link_attrs_setting=copy.deepcopy(P_LINK_ATTRS))


def to_virtual_network(virne, trace: requests_lib.RequestTrace, index: int):
    """Convert request `index`, adding its links in slot order, which Virne then uses as its link order."""
    n = int(trace.num_nodes[index])
    graph = nx.Graph()
    for node in range(n):
        graph.add_node(node, cpu=int(trace.cpu[index, node]))
    for slot in np.flatnonzero(trace.link_valid[index]):
        graph.add_edge(int(trace.link_src[index, slot]), int(trace.link_dst[index, slot]),
                       bw=int(trace.link_bw[index, slot]))
    return virne.VirtualNetwork(graph, node_attrs_setting=copy.deepcopy(V_NODE_ATTRS),
                                link_attrs_setting=copy.deepcopy(V_LINK_ATTRS), id=index,
                                arrival_time=float(trace.arrival_time[index]), lifetime=float(trace.lifetime[index]))


def to_request_simulator(virne, trace: requests_lib.RequestTrace, rate: float):
    """Wrap the converted requests in Virne's request simulator, which orders the events its own way."""
    setting = {
        "num_v_nets": trace.num_requests,
        "arrival_rate": {"distribution": "possion", "dtype": "float", "lam": rate, "reciprocal": True},
        "lifetime": {"distribution": "exponential", "dtype": "float", "scale": 500.0},
        "node_attrs_setting": copy.deepcopy(V_NODE_ATTRS),
        "link_attrs_setting": copy.deepcopy(V_LINK_ATTRS),
    }
    simulator = virne.VirtualNetworkRequestSimulator(setting)
    simulator.v_nets = [to_virtual_network(virne, trace, index) for index in range(trace.num_requests)]
    simulator.renew_events()
    return simulator


def simulation_info(num_substrate_nodes: int) -> dict[str, int]:
    """Attribute counts that Virne's environment and solvers read from their keyword arguments."""
    return {
        "p_net_setting_num_nodes": num_substrate_nodes,
        "p_net_setting_num_node_attrs": len(P_NODE_ATTRS),
        "p_net_setting_num_link_attrs": len(P_LINK_ATTRS),
        "p_net_setting_num_node_resource_attrs": 1,
        "p_net_setting_num_link_resource_attrs": 1,
        "p_net_setting_num_node_extrema_attrs": 1,
        "v_sim_setting_num_node_attrs": len(V_NODE_ATTRS),
        "v_sim_setting_num_link_attrs": len(V_LINK_ATTRS),
        "v_sim_setting_num_node_resource_attrs": 1,
        "v_sim_setting_num_link_resource_attrs": 1,
    }


# ---------------------------------------------------------------------------------------------------
# Runs.


def run_virne(virne, method: str, p_net, trace: requests_lib.RequestTrace, rate: float) -> dict[str, Any]:
    """Run one Virne solver through its `SolutionStepEnvironment` over the whole trace.

    Virne's `Environment.reset` would regenerate the requests, so this function performs the rest of
    reset itself: a fresh copy of the substrate, an empty recorder and the first event. Each request's
    solve time is the wall time of `solver.solve`; the environment's copying and bookkeeping are left out.
    """
    simulator = to_request_simulator(virne, trace, rate)
    info = simulation_info(p_net.num_nodes)
    with tempfile.TemporaryDirectory(prefix="virne_") as save_dir:
        options = dict(info, solver_name=method, run_id="jaxlab-benchmark", seed=_SEED.value, verbose=0,
                       if_save_records=False, k_shortest=_K_PATHS.value, shortest_method="k_shortest",
                       matching_mathod="greedy", reusable=False)
        controller = virne.Controller(copy.deepcopy(V_NODE_ATTRS), copy.deepcopy(V_LINK_ATTRS), **options)
        counter = virne.Counter(copy.deepcopy(V_NODE_ATTRS), copy.deepcopy(V_LINK_ATTRS), **options)
        recorder = virne.Recorder(counter, summary_dir=save_dir, save_dir=save_dir, if_temp_save_records=False,
                                  **options)
        env = virne.SolutionStepEnvironment(p_net, simulator, controller, recorder, counter, **options)
        solver = virne.solver_classes[method](controller, recorder, counter, **options)

        env.p_net = copy.deepcopy(env.init_p_net)
        recorder.reset()
        recorder.count_init_p_net_info(env.p_net)
        env.cumulative_reward = 0
        env.num_processed_v_nets = 0
        env.start_run_time = time.time()
        env.ready(event_id=0)

        solve_times = []
        started = time.perf_counter()
        done = False
        while not done:
            instance = env.get_observation()
            solve_started = time.perf_counter()
            solution = solver.solve(instance)
            solve_times.append(time.perf_counter() - solve_started)
            _, _, done, _ = env.step(solution)
        wall = time.perf_counter() - started

    summary = counter.summary_records(recorder.memory)
    arrivals = [record for record in recorder.memory if record["event_type"] == 1]
    accepted = np.zeros(trace.num_requests, bool)
    cost = np.zeros(trace.num_requests, np.float64)
    for record in arrivals:
        accepted[record["v_net_id"]] = bool(record["result"])
        cost[record["v_net_id"]] = record["v_net_cost"]
    return {
        "acceptance_rate": float(summary["acceptance_rate"]),
        "r2c": float(summary["long_term_r2c_ratio"]),
        "accepted": accepted,
        "cost": cost,
        "solve_ms": 1000.0 * np.asarray(solve_times),
        "wall_ms_per_request": 1000.0 * wall / trace.num_requests,
        "place_failures": int(summary["place_failure_count"]),
        "route_failures": int(summary["route_failure_count"]),
    }


def run_jaxlab_scan(method: str, arrays: embedding_lib.SubstrateArrays,
                    trace: requests_lib.RequestTrace) -> dict[str, Any]:
    """Run the compiled `lax.scan` simulation and time it: median wall time of a run divided by requests."""
    requests = jax.tree.map(lambda leaf: leaf[None], embedding_lib.trace_requests(trace))
    events = jax.tree.map(lambda leaf: leaf[None], simulation.make_events(trace))
    keys = jax.random.split(jax.random.fold_in(jax.random.key(_SEED.value), embedding_lib.SOLVERS.index(method)), 1)
    compiled = simulation.simulate_batch.lower(method, arrays, requests, events, keys).compile()
    timings = []
    for _ in range(_SCAN_REPEATS.value):
        started = time.perf_counter()
        state, cost = jax.block_until_ready(compiled(arrays, requests, events, keys))
        timings.append(time.perf_counter() - started)
    accepted, cost = np.asarray(state.accepted[0]), np.asarray(cost[0])
    summary = simulation.summarize(trace, accepted, cost)
    return {
        "acceptance_rate": summary["acceptance_rate"],
        "r2c": summary["r2c"],
        "accepted": accepted,
        "cost": cost.astype(np.float64),
        "scan_ms_per_request": 1000.0 * statistics.median(timings) / trace.num_requests,
        "fastest_scan_ms_per_request": 1000.0 * min(timings) / trace.num_requests,
    }


def run_jaxlab_per_request(method: str, arrays: embedding_lib.SubstrateArrays,
                           trace: requests_lib.RequestTrace) -> dict[str, Any]:
    """Replay the trace from Python with one jitted `solve` call per arrival, timing each call.

    Events come in jaxlab's order, and departures call a jitted `release`. One warm-up solve before the
    replay compiles both functions, so compile time is excluded.
    """
    solve = jax.jit(functools.partial(embedding_lib.solve, method))
    release = jax.jit(embedding_lib.release)
    requests = embedding_lib.trace_requests(trace)
    events = simulation.make_events(trace)
    base_key = jax.random.fold_in(jax.random.key(_SEED.value), embedding_lib.SOLVERS.index(method))

    def request_at(index):
        return jax.tree.map(lambda leaf: leaf[index], requests)

    resources = embedding_lib.full_resources(arrays)
    warm_ok, warm_embedding, warm_resources = solve(arrays, resources, request_at(0), base_key)
    jax.block_until_ready(release(arrays, warm_resources, request_at(0), warm_embedding))

    accepted = np.zeros(trace.num_requests, bool)
    placed = {}
    solve_times = []
    for kind, index in zip(np.asarray(events.kind).tolist(), np.asarray(events.request).tolist()):
        request = request_at(index)
        if kind == simulation.ARRIVAL:
            key = jax.random.fold_in(base_key, index)
            started = time.perf_counter()
            ok, embedding, resources = jax.block_until_ready(solve(arrays, resources, request, key))
            solve_times.append(time.perf_counter() - started)
            accepted[index] = bool(ok)
            placed[index] = embedding
        else:
            resources = release(arrays, resources, request, placed.pop(index))
    return {"accepted": accepted, "solve_ms": 1000.0 * np.asarray(solve_times)}


# ---------------------------------------------------------------------------------------------------
# Diagnostics of behavioural differences.


def zero_cpu_requests(trace: requests_lib.RequestTrace) -> int:
    """Count requests whose CPU demands are all 0, on which the two GRC implementations rank differently.

    Virne 0.5.0 divides the CPU vector by its sum without a guard, so such a request gets NaN GRC scores
    and its virtual nodes keep their index order. jaxlab uses uniform CPU weights there instead.
    """
    return int(sum(trace.cpu[index, :trace.num_nodes[index]].sum() == 0 for index in range(trace.num_requests)))


def compare_decisions(ours: np.ndarray, theirs: np.ndarray) -> dict[str, Any]:
    differ = np.flatnonzero(ours != theirs)
    return {"same_fraction": float(1.0 - differ.size / ours.size),
            "first_difference": int(differ[0]) if differ.size else None,
            "differences": int(differ.size)}


# ---------------------------------------------------------------------------------------------------
# Report.


def verdict(results: list[dict[str, Any]]) -> str:
    """State the largest differences and the slowest GRC speed-up against the agreement and speed goals."""
    acceptance = max(abs(r["delta_acceptance"]) for r in results)
    r2c = max(abs(r["delta_r2c"]) for r in results)
    text = (f"Largest differences: {100 * acceptance:.1f} points of acceptance (goal: at most 2) and {r2c:.4f} of "
            f"R2C (goal: at most 0.02).")
    grc = [r for r in results if r["solver"] == "grc_rank"]
    if grc:
        scan = min(r["virne"]["solve_ms"].mean() / r["jaxlab"]["scan_ms_per_request"] for r in grc)
        solve = min(np.median(r["virne"]["solve_ms"]) / np.median(r["per_request"]["solve_ms"]) for r in grc)
        text += (f" Smallest GRC speed-up over Virne: {scan:.0f}× for the scan and {solve:.0f}× for the jitted "
                 f"`solve` (goal: at least 20×).")
    return text


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_report(results: list[dict[str, Any]], context: dict[str, Any]) -> str:
    lines = [
        f"## {SECTION_TITLE}",
        "",
        f"Command: `{context['command']}`",
        "",
        f"Date: {context['date']}",
        "",
        f"Machine: {context['machine']}",
        "",
        f"Versions: {context['versions']}",
        "",
        context["setup"],
        "",
        "Δ is jaxlab minus Virne.",
        "",
        "| Solver | η | jaxlab acceptance | Virne acceptance | Δ (points) | jaxlab R2C | Virne R2C | Δ R2C "
        "| same decisions | first different request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        first = "none" if r["decisions"]["first_difference"] is None else str(r["decisions"]["first_difference"])
        lines.append(
            f"| {r['solver']} | {r['rate']:g} | {r['jaxlab']['acceptance_rate']:.3f} | "
            f"{r['virne']['acceptance_rate']:.3f} | {100 * r['delta_acceptance']:+.1f} | {r['jaxlab']['r2c']:.4f} | "
            f"{r['virne']['r2c']:.4f} | {r['delta_r2c']:+.4f} | {100 * r['decisions']['same_fraction']:.1f}% | "
            f"{first} |")
    lines += [
        "",
        "Per-request solve time in milliseconds. Virne `solve` and jaxlab jitted `solve`: median over the "
        "arrivals of the trace, mean in brackets. jaxlab scan: median run, fastest run in brackets. The scan "
        "ratio divides Virne's mean by the scan's median, and the `solve` ratio divides the medians:",
        "",
        "| Solver | η | Virne `solve` | jaxlab scan / requests | jaxlab jitted `solve` | Virne / jaxlab scan "
        "| Virne / jaxlab `solve` |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        virne_ms, solve_ms = r["virne"]["solve_ms"], r["per_request"]["solve_ms"]
        scan_ms, fastest_ms = r["jaxlab"]["scan_ms_per_request"], r["jaxlab"]["fastest_scan_ms_per_request"]
        lines.append(
            f"| {r['solver']} | {r['rate']:g} | {np.median(virne_ms):.2f} ({virne_ms.mean():.2f}) | "
            f"{scan_ms:.3f} ({fastest_ms:.3f}) | "
            f"{np.median(solve_ms):.3f} ({solve_ms.mean():.3f}) | {virne_ms.mean() / scan_ms:.0f}× | "
            f"{np.median(virne_ms) / np.median(solve_ms):.0f}× |")
    lines += ["", verdict(results), "", context["notes"]]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the section titled SECTION_TITLE in the Markdown file `path`, or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    heading = f"## {SECTION_TITLE}"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == heading), None)
    if start is None:
        path.write_text(text.rstrip("\n") + "\n\n" + section)
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tail = "".join(lines[end:])
    path.write_text("".join(lines[:start]) + section + ("\n" + tail if tail else ""))


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments {argv[1:]}; the script takes flags only")
    unknown = sorted(set(_SOLVERS.value) - set(SOLVER_CLASSES))
    if unknown:
        raise app.UsageError(f"invalid --solvers {unknown}; expected names from {sorted(SOLVER_CLASSES)}")
    try:
        rates = sorted(float(rate) for rate in _ARRIVAL_RATES.value)
    except ValueError as error:
        raise app.UsageError(f"invalid --arrival_rates {_ARRIVAL_RATES.value}: {error}") from None
    if not rates or min(rates) <= 0:
        raise app.UsageError(f"invalid --arrival_rates {_ARRIVAL_RATES.value}; expected positive rates")

    virne = import_virne()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()

    config = make_config(rates)
    substrate, arrays, traces = experiment.build_topology(config, _TOPOLOGY.value)
    p_net = to_physical_network(virne, substrate)
    print(f"{_TOPOLOGY.value}: {substrate.num_nodes} nodes, {substrate.num_edges} links; "
          f"{len(traces)} trace(s) of {_NUM_REQUESTS.value} requests", flush=True)

    results = []
    for rate, trace in zip(rates, traces):
        for method in _SOLVERS.value:
            virne_result = run_virne(virne, method, p_net, trace, rate)
            jaxlab_result = run_jaxlab_scan(method, arrays, trace)
            per_request = run_jaxlab_per_request(method, arrays, trace)
            if not np.array_equal(per_request["accepted"], jaxlab_result["accepted"]):
                raise RuntimeError(f"{method}, rate {rate:g}: the per-request replay and the scan accepted "
                                   "different requests; the two jaxlab paths must agree")
            result = {
                "solver": method, "rate": rate, "virne": virne_result, "jaxlab": jaxlab_result,
                "per_request": per_request,
                "delta_acceptance": jaxlab_result["acceptance_rate"] - virne_result["acceptance_rate"],
                "delta_r2c": jaxlab_result["r2c"] - virne_result["r2c"],
                "decisions": compare_decisions(jaxlab_result["accepted"], virne_result["accepted"]),
            }
            results.append(result)
            print(f"{method} η={rate:g}: acceptance jaxlab {jaxlab_result['acceptance_rate']:.3f} "
                  f"Virne {virne_result['acceptance_rate']:.3f}; R2C jaxlab {jaxlab_result['r2c']:.4f} "
                  f"Virne {virne_result['r2c']:.4f}; same decisions {result['decisions']}; "
                  f"Virne solve {virne_result['solve_ms'].mean():.2f} ms, jaxlab scan "
                  f"{jaxlab_result['scan_ms_per_request']:.3f} ms, jaxlab solve "
                  f"{np.median(per_request['solve_ms']):.3f} ms per request", flush=True)

    zero_cpu = [zero_cpu_requests(trace) for trace in traces]
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    print(f"requests with all-zero CPU per trace: {zero_cpu}; {elapsed:.0f} s", flush=True)

    argv_text = " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in
                         ("jax", "jaxlib", "numpy", "networkx", "virne", "torch"))
    context = {
        "command": f"python benchmarks/vne_virne.py {argv_text}".rstrip(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y"),
        "machine": (f"{cpu_model()}, {os.cpu_count()} cores, JAX on {jax.devices()[0]}. Load average (1 min) "
                    f"{load_before:.2f} before and {load_after:.2f} after the run, which took {elapsed:.0f} s."
                    + (" Other processes shared the CPUs (load above the core count), so the times are noisy."
                       if max(load_before, load_after) > os.cpu_count() else "")),
        "versions": f"Python {platform.python_version()}, {versions}.",
        "setup": "Peer setup:\n\n```sh\n" + "\n".join(PEER_SETUP_COMMANDS) + "\n```\n\n" + SETUP_TEMPLATE.format(
            topology=_TOPOLOGY.value, nodes=substrate.num_nodes, links=substrate.num_edges, seed=_SEED.value,
            requests=_NUM_REQUESTS.value, k=_K_PATHS.value, repeats=_SCAN_REPEATS.value),
        "notes": NOTES_TEMPLATE.format(zero_cpu=", ".join(str(count) for count in zero_cpu)),
    }
    report = format_report(results, context)
    print(report)
    if _OUTPUT.value:
        write_section(Path(_OUTPUT.value), report)
        print(f"Wrote the '{SECTION_TITLE}' section to {_OUTPUT.value}.")


SETUP_TEMPLATE = """\
Setup: substrate {topology} ({nodes} nodes, {links} links) with node CPU and link bandwidth drawn from \
U[50, 100], and one trace of {requests} requests per arrival rate η. jaxlab builds both with seed {seed} \
exactly as the `vne_baselines` config does, with Poisson inter-arrival gaps as in Virne 0.5.0 and \
lifetimes exponential with mean 500. Virne gets them as a `PhysicalNetwork` (node attributes `cpu`, \
`max_cpu`; link attributes `bw`, `max_bw`; nodes and links in jaxlab's order) and one `VirtualNetwork` \
per request (`cpu`, `bw`; links in jaxlab's slot order), inside its `VirtualNetworkRequestSimulator`, \
which orders the events. Virne's `GRCRankSolver`/`NRMRankSolver` run in its `SolutionStepEnvironment` \
with `shortest_method="k_shortest"`, `k_shortest={k}`; jaxlab's `grc_rank`/`nrm_rank` use {k} \
candidate paths and no hop limit. Acceptance and long-term R2C (ΣREV/ΣCOST) are Virne's \
`Counter.summary_records` and jaxlab's `simulation.summarize`. "same decisions" is the share of \
requests that both accept or both reject.

Times: Virne `solve` is the wall time of `solver.solve(instance)` per arrival, without the environment's \
copying and bookkeeping. jaxlab scan is the wall time of the compiled `lax.scan` simulation of the whole \
trace, departures included, divided by its requests, over {repeats} runs. jaxlab jitted `solve` is one \
`jax.jit(embedding.solve)` call per arrival, replayed from Python with `block_until_ready`. Compile \
time is excluded from both jaxlab numbers: the scan is compiled before timing, and one warm-up call \
compiles `solve`."""

NOTES_TEMPLATE = """\
Differences between the two simulators, read from Virne 0.5.0's source. The benchmark keeps both \
simulators as they are:

- Candidate paths: both take the first k paths of `networkx.shortest_simple_paths(graph, s, t)` in \
the direction of each virtual link, on the same graph with nodes and links in jaxlab's order, so they \
try the same paths in the same order.
- Event ties: Virne sorts the list of all arrivals followed by all departures by time with Python's \
stable sort, so at equal times arrivals go first. jaxlab processes departures first. With integer \
arrival times and continuous lifetimes such ties have probability 0.
- GRC precision: Virne iterates in float64 without an iteration limit and jaxlab in float32 with at \
most 200 iterations, both until the L2 change is below 1e-5. Near-equal substrate scores can therefore \
rank differently.
- GRC on requests whose CPU demands are all 0: Virne divides by the zero sum, gets NaN scores and keeps \
the virtual nodes in index order, whereas jaxlab uses uniform CPU weights. Such requests per trace: \
{zero_cpu}. A virtual node whose links all demand 0 bandwidth is no such case: its row of networkx's \
normalised sparse matrix stores no entries and stays 0, as jaxlab's column does.
- Revenue and cost agree: both count REV = ΣCPU + ΣBW and COST = ΣCPU + ΣBW × hops of accepted \
requests. Both place virtual nodes greedily by rank (ties to the lower index) and route virtual links \
in slot order on the first candidate path with enough bandwidth."""


if __name__ == "__main__":
    app.run(main)
