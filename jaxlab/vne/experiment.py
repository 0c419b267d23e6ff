"""The `vne_baselines` experiment: online VNE with ranking heuristics over substrates and arrival rates.

For each topology, one substrate (resources drawn from the seed) and one request trace per arrival rate
are built, and every solver runs all traces of the topology in one vmapped simulation. Outputs in the
workdir: `results.json` (one record per topology, solver and rate), `results.md`, `acceptance_vs_rate.png`
(topologies with two or more rates), `traces/<topology>_rate<r>.npz` (the request streams, for other
simulators), `metrics.jsonl` and TensorBoard events (one step per topology and solver), and `checkpoints/`.
A rerun resumes after the last finished topology and solver; finished records, solve times included, are
restored from the checkpoint rather than measured again.
"""

from __future__ import annotations

import os
import zlib
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from jaxlab.core import checkpoint as checkpoint_lib
from jaxlab.core import config as config_lib
from jaxlab.core import metrics as metrics_lib
from jaxlab.vne import embedding as embedding_lib
from jaxlab.vne import requests as requests_lib
from jaxlab.vne import simulation
from jaxlab.vne import substrate as substrate_lib

METRICS = ("acceptance_rate", "accepted", "revenue", "cost", "r2c", "lrc", "lar", "solve_time_ms")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` naming the first invalid field of a `vne_baselines` config."""
    config_lib.require_int(config, "seed", min=0)
    topologies = config_lib.require_list_of(config, "topologies", str, min_len=1,
                                            choices=sorted(substrate_lib.BUILTIN_TOPOLOGIES))
    if len(set(topologies)) != len(topologies):
        raise config_lib.ConfigError("topologies", tuple(topologies), "a list without repeated topologies")
    for topology in topologies:
        config_lib.require_list_of(config, f"arrival_rates.{topology}", float, min_len=1, increasing=True)
        config_lib.require(config, f"arrival_rates.{topology}", lambda rates: min(rates) > 0,
                           "a list of positive arrival rates")
    solvers = config_lib.require_list_of(config, "solvers", str, min_len=1, choices=embedding_lib.SOLVERS)
    if len(set(solvers)) != len(solvers):
        raise config_lib.ConfigError("solvers", tuple(solvers), "a list without repeated solvers")
    config_lib.require_int(config, "num_requests", min=1, max=1_000_000)
    min_nodes = config_lib.require_int(config, "min_nodes", min=1, max=64)
    config_lib.require_int(config, "max_nodes", min=min_nodes, max=64)
    config_lib.require_choice(config, "arrival_process", requests_lib.ARRIVAL_PROCESSES)
    config_lib.require_float(config, "mean_lifetime", gt=0.0)
    config_lib.require_int(config, "k_paths", min=1, max=64)
    config_lib.require_int(config, "max_hops", min=0)


def _stable_seed(seed: int, *labels: str) -> list[int]:
    """Derive NumPy seed entropy from the run seed and the labels (CRC32, so it is stable across processes)."""
    return [seed] + [zlib.crc32(label.encode()) for label in labels]


def _trace_name(topology: str, rate: float) -> str:
    return f"{topology}_rate{rate:g}"


def build_topology(config: ml_collections.ConfigDict, topology: str, trace_dir: str | None = None):
    """Build the substrate arrays and the request traces (one per arrival rate) of a topology.

    Traces are written to `trace_dir` when given, and read back from there when a file already exists.
    """
    substrate = substrate_lib.load_builtin(topology, np.random.default_rng(_stable_seed(config.seed, topology)))
    paths = substrate_lib.candidate_paths(substrate, config.k_paths, config.max_hops or None)
    traces = []
    for rate in config.arrival_rates[topology]:
        path = os.path.join(trace_dir, _trace_name(topology, rate) + ".npz") if trace_dir else None
        if path and os.path.exists(path):
            traces.append(requests_lib.load_trace(path, max_substrate_nodes=substrate.num_nodes))
            continue
        trace = requests_lib.generate_trace(
            _stable_seed(config.seed, topology, f"{rate:g}"), rate, num_requests=config.num_requests,
            min_nodes=config.min_nodes, max_nodes=config.max_nodes, mean_lifetime=config.mean_lifetime,
            arrival_process=config.arrival_process)
        requests_lib.validate_trace(trace, max_substrate_nodes=substrate.num_nodes)
        if path:
            requests_lib.save_trace(path, trace)
        traces.append(trace)
    return substrate, embedding_lib.substrate_arrays(substrate, paths), traces


def _write_summary(workdir: str, config, records: list[dict[str, Any]]) -> None:
    columns = ["topology", "solver", "arrival_rate", "acceptance_rate", "r2c", "lrc", "lar", "solve_time_ms"]
    title = f"VNE baselines, {config.num_requests} requests per trace, k = {config.k_paths} candidate paths"
    metrics_lib.write_markdown_table(os.path.join(workdir, "results.md"), records, columns, title=title)

    series = []
    for topology in config.topologies:
        if len(config.arrival_rates[topology]) < 2:
            continue
        for solver in config.solvers:
            points = [r for r in records if r["topology"] == topology and r["solver"] == solver]
            series.append({"x": [r["arrival_rate"] for r in points], "y": [r["acceptance_rate"] for r in points],
                           "label": f"{solver} ({topology})"})
    if series:
        metrics_lib.plot_lines(os.path.join(workdir, "acceptance_vs_rate.png"), series,
                               xlabel="arrival rate (requests per time unit)", ylabel="acceptance rate",
                               title="Acceptance rate versus arrival rate")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Simulate every topology, solver and arrival rate, resuming from `workdir/checkpoints` when present."""
    units = [(topology, solver) for topology in config.topologies for solver in config.solvers]
    max_rates = max(len(config.arrival_rates[topology]) for topology in config.topologies)
    values = np.zeros((len(units), max_rates, len(METRICS)), np.float64)
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
    finished = checkpointer.latest_step() or 0
    if finished:
        values = np.asarray(checkpointer.restore({"values": values}, step=finished)["values"])
        logging.info("Resumed from checkpoint %d (%d of %d topology-solver units done).", finished, finished,
                     len(units))

    writer = metrics_lib.MetricWriter(workdir, resume_from_step=finished - 1)
    trace_dir = os.path.join(workdir, "traces")
    os.makedirs(trace_dir, exist_ok=True)
    built = {}
    for index, (topology, solver) in enumerate(units):
        if index < finished:
            continue
        if topology not in built:
            built = {topology: build_topology(config, topology, trace_dir)}
        substrate, arrays, traces = built[topology]
        summaries, _ = simulation.run_traces(solver, arrays, traces, config.seed)
        for rate_index, summary in enumerate(summaries):
            values[index, rate_index] = [summary[name] for name in METRICS]
            logging.info("%s %s rate %g: acceptance %.3f, R2C %.3f, %.3f ms per request", topology, solver,
                         config.arrival_rates[topology][rate_index], summary["acceptance_rate"], summary["r2c"],
                         summary["solve_time_ms"])
        writer.write_scalars(index, {
            "mean_acceptance_rate": float(np.mean([s["acceptance_rate"] for s in summaries])),
            "mean_r2c": float(np.mean([s["r2c"] for s in summaries])),
            "solve_time_ms": summaries[0]["solve_time_ms"],
        })
        # Metrics first, then the checkpoint: a kill in between only repeats this unit's metrics line.
        checkpointer.save(index + 1, {"values": values})

    writer.close()
    checkpointer.close()
    records = []
    for index, (topology, solver) in enumerate(units):
        for rate_index, rate in enumerate(config.arrival_rates[topology]):
            record = {"topology": topology, "solver": solver, "arrival_rate": float(rate)}
            record.update({name: float(value) for name, value in zip(METRICS, values[index, rate_index])})
            record["accepted"] = int(record["accepted"])
            records.append(record)
    results = {
        "experiment": config.experiment,
        "num_requests": config.num_requests,
        "k_paths": config.k_paths,
        "max_hops": config.max_hops or None,
        "arrival_process": config.arrival_process,
        "records": records,
    }
    metrics_lib.write_results(workdir, results)
    _write_summary(workdir, config, records)
    return results
