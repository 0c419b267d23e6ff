"""The `vne_conal` experiment: train CONAL (or an ablation, or PPO-GAT) online, then evaluate it strictly.

Training runs on one substrate (`train_topology`, resources drawn from the seed) until the streams have
drawn `epochs * requests_per_epoch` requests. Evaluation embeds test traces (one per test seed) on every
topology of `eval.topologies` with the trained policy and with the GRC and NRM baselines, and reports the
mean and standard error over test seeds. Substrates and traces are drawn as `vne_baselines` draws them, so
test seed s gives the same substrate and trace as a `vne_baselines` run with seed s.

Outputs in the workdir: `results.json`, `results.md`, `metrics.jsonl` and TensorBoard events (one line
per logged update), `checkpoints/` (the whole training state). A rerun resumes from the last checkpoint
and continues with the same random draws, so it ends with the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import os
import time
import zlib
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxlab.core import checkpoint as checkpoint_lib
from jaxlab.core import config as config_lib
from jaxlab.core import machine
from jaxlab.core import metrics as metrics_lib
from jaxlab.core import progress as progress_lib
from jaxlab.vne import embedding as embedding_lib
from jaxlab.vne import env as env_lib
from jaxlab.vne import requests as requests_lib
from jaxlab.vne import simulation
from jaxlab.vne import substrate as substrate_lib
from jaxlab.vne.conal import cmdp
from jaxlab.vne.conal import evaluate
from jaxlab.vne.conal import train

METHODS = ("conal", "ppo_gat")
BASELINES = ("grc_rank", "nrm_rank")
METRICS = ("acceptance_rate", "lrc", "lar", "r2c", "solve_time_ms")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` naming the first invalid field of a `vne_conal` config."""
    topologies = sorted(substrate_lib.BUILTIN_TOPOLOGIES)
    config_lib.require_int(config, "seed", min=0)
    config_lib.require_choice(config, "method", METHODS)
    for flag in ("hetero_graph", "path_contrast", "reachability", "adaptive_budget"):
        config_lib.require_bool(config, f"ablation.{flag}")
    config_lib.require_choice(config, "train_topology", topologies)
    config_lib.require_float(config, "train_arrival_rate", gt=0.0)
    max_nodes = config_lib.require_int(config, "max_nodes", min=1, max=64)
    config_lib.require_int(config, "min_nodes", min=1, max=max_nodes)
    config_lib.require_float(config, "mean_lifetime", gt=0.0)
    config_lib.require_int(config, "k_paths", min=1, max=64)
    config_lib.require_int(config, "max_hops", min=0)

    config_lib.require_int(config, "model.hidden", min=1)
    config_lib.require_int(config, "model.num_layers", min=1)

    config_lib.require_int(config, "train.epochs", min=1)
    config_lib.require_int(config, "train.requests_per_epoch", min=1)
    config_lib.require_int(config, "train.num_envs", min=1)
    steps = config_lib.require_int(config, "train.rollout_steps", min=1)
    envs = config.train.num_envs
    config_lib.require_int(config, "train.num_minibatches", min=1)
    config_lib.require_int(config, "train.minibatch_size", min=2)
    config_lib.require_int(config, "train.contrast_states", min=1, max=config.train.minibatch_size)
    config_lib.require_int(config, "train.greedy_capacity", min=1, max=steps * envs)
    config_lib.require_int(config, "train.greedy_sync_every", min=1)
    config_lib.require_int(config, "train.max_active", min=1)
    config_lib.require_float(config, "train.gamma", min=0.0, max=1.0)
    config_lib.require_float(config, "train.gae_lambda", min=0.0, max=1.0)
    config_lib.require_float(config, "train.clip_epsilon", gt=0.0, lt=1.0)
    for field in ("learning_rate", "multiplier_learning_rate", "contrast_learning_rate", "max_grad_norm"):
        config_lib.require_float(config, f"train.{field}", gt=0.0)
    for field in ("weight_decay", "value_coef", "cost_value_coef", "entropy_coef", "contrast_coef"):
        config_lib.require_float(config, f"train.{field}", min=0.0)
    config_lib.require_int(config, "train.log_every", min=1)
    config_lib.require_int(config, "train.checkpoint_every", min=1)

    eval_topologies = config_lib.require_list_of(config, "eval.topologies", str, min_len=1, choices=topologies)
    if len(set(eval_topologies)) != len(eval_topologies):
        raise config_lib.ConfigError("eval.topologies", tuple(eval_topologies), "a list without repeated topologies")
    for topology in eval_topologies:
        config_lib.require_float(config, f"eval.arrival_rates.{topology}", gt=0.0)
    seeds = config_lib.require_list_of(config, "eval.test_seeds", int, min_len=1, min=0)
    if len(set(seeds)) != len(seeds):
        raise config_lib.ConfigError("eval.test_seeds", tuple(seeds), "a list of distinct seeds")
    config_lib.require_int(config, "eval.num_requests", min=1, max=1_000_000)
    config_lib.require_choice(config, "eval.arrival_process", requests_lib.ARRIVAL_PROCESSES)
    baselines = config_lib.require_list_of(config, "eval.baselines", str, choices=embedding_lib.SOLVERS)
    if len(set(baselines)) != len(baselines):
        raise config_lib.ConfigError("eval.baselines", tuple(baselines), "a list without repeated solvers")


def stable_seed(seed: int, *labels: str) -> list[int]:
    """NumPy seed entropy from a seed and labels (CRC32), the same derivation as the `vne_baselines` experiment."""
    return [seed] + [zlib.crc32(label.encode()) for label in labels]


def train_config(config: ml_collections.ConfigDict) -> train.TrainConfig:
    """Translate the experiment config into the static `train.TrainConfig`."""
    constrained = config.method == "conal"
    settings = config.train
    stream = cmdp.StreamConfig(arrival_rate=float(config.train_arrival_rate), mean_lifetime=float(config.mean_lifetime),
                               requests_per_epoch=settings.requests_per_epoch, max_active=settings.max_active,
                               max_nodes=config.max_nodes, tolerant=constrained)
    return train.TrainConfig(
        hidden=config.model.hidden, num_layers=config.model.num_layers, num_envs=settings.num_envs,
        rollout_steps=settings.rollout_steps, num_minibatches=settings.num_minibatches,
        minibatch_size=settings.minibatch_size, contrast_states=settings.contrast_states,
        greedy_capacity=settings.greedy_capacity, greedy_sync_every=settings.greedy_sync_every,
        gamma=float(settings.gamma), gae_lambda=float(settings.gae_lambda), clip_epsilon=float(settings.clip_epsilon),
        learning_rate=float(settings.learning_rate), multiplier_learning_rate=float(settings.multiplier_learning_rate),
        contrast_learning_rate=float(settings.contrast_learning_rate), max_grad_norm=float(settings.max_grad_norm),
        weight_decay=float(settings.weight_decay), value_coef=float(settings.value_coef),
        cost_value_coef=float(settings.cost_value_coef), entropy_coef=float(settings.entropy_coef),
        contrast_coef=float(settings.contrast_coef),
        hetero_graph=config.ablation.hetero_graph,
        path_contrast=constrained and config.ablation.path_contrast,
        constrained=constrained,
        reachability=config.ablation.reachability,
        adaptive_budget=config.ablation.adaptive_budget,
        stream=stream,
    )


def build_substrate(config: ml_collections.ConfigDict, topology: str, seed: int):
    """Load a built-in topology with resources drawn from (seed, topology) and its candidate paths."""
    substrate = substrate_lib.load_builtin(topology, np.random.default_rng(stable_seed(seed, topology)))
    paths = substrate_lib.candidate_paths(substrate, config.k_paths, config.max_hops or None)
    arrays = embedding_lib.substrate_arrays(substrate, paths)
    params = env_lib.make_params(arrays, min_nodes=config.min_nodes, max_nodes=config.max_nodes)
    return substrate, params


def test_traces(config: ml_collections.ConfigDict, topology: str, max_substrate_nodes: int):
    """One test trace per test seed at the topology's evaluation arrival rate."""
    rate = float(config.eval.arrival_rates[topology])
    traces = []
    for seed in config.eval.test_seeds:
        trace = requests_lib.generate_trace(
            stable_seed(seed, topology, f"{rate:g}"), rate, num_requests=config.eval.num_requests,
            min_nodes=config.min_nodes, max_nodes=config.max_nodes, mean_lifetime=config.mean_lifetime,
            arrival_process=config.eval.arrival_process)
        requests_lib.validate_trace(trace, max_substrate_nodes=max_substrate_nodes)
        traces.append(trace)
    return traces


def _finished_requests(state: train.TrainState) -> int:
    # Every stream has drawn its current request but not finished it yet.
    return int(np.asarray(state.streams.drawn).sum()) - int(state.streams.drawn.shape[0])


def train_policy(config: ml_collections.ConfigDict, workdir: str, env_params: env_lib.EnvParams,
                 settings: train.TrainConfig) -> tuple[train.TrainState, dict[str, Any]]:
    """Train until the streams have finished epochs * requests_per_epoch requests, resuming from checkpoints."""
    root_key = jax.random.key(config.seed)
    state = train.init_train_state(root_key, settings, env_params)
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
    latest = checkpointer.latest_step()
    if latest is not None:
        state = checkpointer.restore(state, step=latest)
        logging.info("Resumed training from update %d.", latest)
    writer = metrics_lib.MetricWriter(workdir, resume_from_step=latest)
    train_step = train.make_train_step(settings, root_key)

    target = config.train.epochs * config.train.requests_per_epoch
    steps_per_update = settings.num_envs * settings.rollout_steps
    finished = _finished_requests(state)
    started = time.perf_counter()
    first_update = int(state.update)
    compile_seconds = 0.0
    with progress_lib.progress(target, desc="train", unit="request", initial=min(finished, target)) as bar:
        while finished < target:
            update_started = time.perf_counter()
            state, metrics = train_step(state, env_params)
            update = int(state.update)
            if update == first_update + 1:
                jax.block_until_ready(state)
                compile_seconds = time.perf_counter() - update_started
            now = _finished_requests(state)
            bar.update(min(now, target) - min(finished, target))
            finished = now
            if update % config.train.log_every == 0 or finished >= target:
                metrics = {name: float(value) for name, value in jax.device_get(metrics).items()}
                if not np.isfinite(metrics["reward_loss"]):
                    raise FloatingPointError(f"training diverged at update {update}: reward loss is "
                                             f"{metrics['reward_loss']}; lower train.learning_rate")
                metrics["requests"] = finished
                writer.write_scalars(update, metrics)
                bar.set_postfix(acceptance=f"{metrics['acceptance']:.3f}", refresh=False)
            if update % config.train.checkpoint_every == 0 or finished >= target:
                # Metrics first, then the checkpoint: a kill in between only repeats these metrics lines.
                checkpointer.save(update, state)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - started
    writer.close()
    checkpointer.close()
    updates_run = int(state.update) - first_update
    timed_updates = max(updates_run - 1, 0)
    summary = {
        "updates": int(state.update),
        "requests": finished,
        "env_steps": int(state.update) * steps_per_update,
        "train_seconds_this_run": seconds,
        "env_steps_per_s": (timed_updates * steps_per_update / max(seconds - compile_seconds, 1e-9)
                            if timed_updates else None),
    }
    return state, summary


def _aggregate(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """Mean and standard error (sample std / sqrt(n); 0 for one trace) of each metric over traces."""
    out = {}
    for name in METRICS:
        values = np.array([s[name] for s in summaries], np.float64)
        out[name] = float(values.mean())
        out[f"{name}_se"] = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return out


def evaluate_policy(config: ml_collections.ConfigDict, settings: train.TrainConfig, params) -> list[dict[str, Any]]:
    """Evaluate the policy and the baselines on every evaluation topology; one record per topology and solver."""
    network = train.make_network(settings)
    records = []
    for topology in config.eval.topologies:
        substrate, env_params = build_substrate(config, topology, config.seed)
        traces = test_traces(config, topology, substrate.num_nodes)
        summaries, lowest = evaluate.run_traces(network, params, env_params, traces, settings.hetero_graph)
        violations = sum(value < 0 for value in lowest)
        if violations:
            raise RuntimeError(f"strict inference broke a capacity on {violations} {topology} traces "
                                 f"(smallest free resource {min(lowest)}); this is a bug in the environment")
        label = _variant_name(config)
        record = {"topology": topology, "solver": label, "traces": len(traces), "violations": violations,
                  "arrival_rate": float(config.eval.arrival_rates[topology])}
        record.update(_aggregate(summaries))
        records.append(record)
        logging.info("%s %s: acceptance %.3f +- %.3f, LRC %.3f", topology, label, record["acceptance_rate"],
                     record["acceptance_rate_se"], record["lrc"])
        for solver in config.eval.baselines:
            summaries, _ = simulation.run_traces(solver, env_params.substrate, traces, config.seed)
            record = {"topology": topology, "solver": solver, "traces": len(traces), "violations": 0,
                      "arrival_rate": float(config.eval.arrival_rates[topology])}
            record.update(_aggregate(summaries))
            records.append(record)
            logging.info("%s %s: acceptance %.3f +- %.3f, LRC %.3f", topology, solver, record["acceptance_rate"],
                         record["acceptance_rate_se"], record["lrc"])
    return records


def _variant_name(config: ml_collections.ConfigDict) -> str:
    if config.method == "ppo_gat":
        return "ppo_gat"
    off = [name for name, flag in (("wo_ha", config.ablation.hetero_graph), ("wo_pc", config.ablation.path_contrast),
                                   ("wo_reach", config.ablation.reachability),
                                   ("wo_arb", config.ablation.adaptive_budget)) if not flag]
    return "conal" + ("_" + "_".join(off) if off else "")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train, evaluate on the test traces and write results.json and results.md."""
    settings = train_config(config)
    _, env_params = build_substrate(config, config.train_topology, config.seed)
    state, training = train_policy(config, workdir, env_params, settings)
    records = evaluate_policy(config, settings, state.params)
    results = {
        "experiment": config.experiment,
        "variant": _variant_name(config),
        "train_topology": config.train_topology,
        "train_arrival_rate": config.train_arrival_rate,
        "training": training,
        "machine": machine.describe_machine(),
        "records": records,
    }
    metrics_lib.write_results(workdir, results)
    rows = []
    for record in records:
        row = {"topology": record["topology"], "solver": record["solver"], "rate": record["arrival_rate"]}
        for name in METRICS:
            row[name] = f"{record[name]:.4g} ± {record[name + '_se']:.2g}"
        row["violations"] = record["violations"]
        rows.append(row)
    title = (f"CONAL ({_variant_name(config)}), trained on {config.train_topology} at rate "
             f"{config.train_arrival_rate:g}; mean ± standard error over {len(config.eval.test_seeds)} test traces")
    metrics_lib.write_markdown_table(os.path.join(workdir, "results.md"), rows,
                                     ["topology", "solver", "rate", *METRICS, "violations"], title=title)
    return results
