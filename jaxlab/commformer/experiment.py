"""The `commformer` experiment: train CommFormer (or a baseline) on a SMAX map or MPE and evaluate it.

Outputs in the workdir: `results.json` (the final greedy evaluation, the time and env steps to the target
win rate, throughput, the learned graph), `metrics.jsonl` and TensorBoard events (one line per PPO update,
`eval/*` lines after evaluations), `graph.png` (the deterministic adjacency and the softmax of its logits),
`gate_rate.png` and `win_rate.png` (over training) and `checkpoints/` (after every chunk). A rerun with the
same workdir resumes after the last chunk and reaches the same final parameters and evaluations.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxlab.commformer import envs as envs_lib
from jaxlab.commformer import train as train_lib
from jaxlab.core import checkpoint as checkpoint_lib
from jaxlab.core import config as config_lib
from jaxlab.core import metrics as metrics_lib
from jaxlab.core import progress as progress_lib

# Columns of the evaluation history kept in checkpoints.
EVAL_COLUMNS = ("update", "env_steps", "elapsed_s", "win_rate", "episode_return", "gate_rate")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` naming the first invalid field of a `commformer` config."""
    config_lib.require_int(config, "seed", min=0)
    name = config_lib.require_choice(config, "env.name", envs_lib.SMAX_MAPS + envs_lib.MPE_SCENARIOS)
    continuous = config_lib.require_bool(config, "env.continuous_actions")
    if continuous and name in envs_lib.SMAX_MAPS:
        raise config_lib.ConfigError("env.continuous_actions", True, "False on SMAX maps (continuous actions "
                                     "are supported on MPE_simple_spread_v3)")

    kind = config_lib.require_choice(config, "model.kind", train_lib.MODEL_KINDS)
    embed_dim = config_lib.require_int(config, "model.embed_dim", min=1, max=4096)
    num_heads = config_lib.require_int(config, "model.num_heads", min=1, max=embed_dim)
    if kind == "commformer" and embed_dim % num_heads:
        raise config_lib.ConfigError("model.num_heads", num_heads, f"a divisor of model.embed_dim={embed_dim}")
    config_lib.require_int(config, "model.num_blocks", min=1, max=64)
    config_lib.require_bool(config, "model.share_actor")
    config_lib.require_bool(config, "model.relation_enhanced")

    config_lib.require_choice(config, "graph.mode", train_lib.GRAPH_MODES)
    config_lib.require_float(config, "graph.sparsity", gt=0.0, max=1.0)
    config_lib.require_int(config, "graph.warmup_updates", min=0)
    config_lib.require_float(config, "graph.alpha_lr", gt=0.0)
    config_lib.require_int(config, "graph.alpha_period", min=2)
    config_lib.require_float(config, "graph.gumbel_temperature", gt=0.0)
    config_lib.require_bool(config, "graph.post_stable")
    config_lib.require_float(config, "graph.post_stable_fraction", min=0.0, max=1.0)

    config_lib.require_bool(config, "gating.enabled")
    config_lib.require_float(config, "gating.cost", min=0.0)
    config_lib.require_float(config, "gating.temperature", gt=0.0)

    num_envs = config_lib.require_int(config, "ppo.num_envs", min=1)
    rollout_length = config_lib.require_int(config, "ppo.rollout_length", min=1)
    config_lib.require_int(config, "ppo.num_epochs", min=1)
    num_minibatches = config_lib.require_int(config, "ppo.num_minibatches", min=1)
    if (num_envs * rollout_length) % num_minibatches:
        raise config_lib.ConfigError("ppo.num_minibatches", num_minibatches,
                                     f"a divisor of ppo.num_envs * ppo.rollout_length = {num_envs * rollout_length}")
    for field in ("ppo.lr", "ppo.clip_eps", "ppo.max_grad_norm", "ppo.huber_delta"):
        config_lib.require_float(config, field, gt=0.0)
    for field in ("ppo.entropy_coef", "ppo.value_coef"):
        config_lib.require_float(config, field, min=0.0)
    config_lib.require_float(config, "ppo.gamma", min=0.0, max=1.0)
    config_lib.require_float(config, "ppo.gae_lambda", min=0.0, max=1.0)
    config_lib.require_float(config, "ppo.value_norm_beta", gt=0.0, lt=1.0)
    config_lib.require_bool(config, "ppo.active_masks")

    config_lib.require_int(config, "train.total_env_steps", min=1)
    config_lib.require_int(config, "train.updates_per_chunk", min=1)
    config_lib.require_int(config, "train.eval_every_chunks", min=1)
    config_lib.require_int(config, "train.eval_episodes", min=1)
    config_lib.require_float(config, "train.time_limit_minutes", min=0.0)
    config_lib.require_float(config, "train.target_win_rate", min=0.0, max=1.0)
    config_lib.require_bool(config, "train.fast_compile")


def _plot_graph(path: str, adjacency: np.ndarray, alpha: np.ndarray, title: str) -> None:
    """Draw the deterministic adjacency and the row softmax of the off-diagonal logits side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    num_agents = adjacency.shape[0]
    logits = np.where(np.eye(num_agents, dtype=bool), -np.inf, alpha)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)

    figure = Figure(figsize=(9.0, 4.2), dpi=120)
    FigureCanvasAgg(figure)
    for index, (matrix, label) in enumerate([(adjacency, "adjacency A (1: i receives from j)"),
                                            (probabilities, "softmax of logits alpha (per row)")]):
        axes = figure.add_subplot(1, 2, index + 1)
        image = axes.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
        axes.set_xlabel("sender j")
        axes.set_ylabel("receiver i")
        axes.set_title(label, fontsize=9)
        axes.set_xticks(range(num_agents))
        axes.set_yticks(range(num_agents))
        figure.colorbar(image, ax=axes, fraction=0.046)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)


def _write_plots(workdir: str, config, trainer, state, evals: np.ndarray) -> None:
    adjacency = np.asarray(trainer.graph(state.params, state.update))
    alpha = np.asarray(state.params["alpha"])
    _plot_graph(os.path.join(workdir, "graph.png"), adjacency, alpha,
                f"{config.env.name}: {config.model.kind}, graph {config.graph.mode}, k = {trainer.num_links}")

    done = evals[~np.isnan(evals[:, 0])]
    env_steps, gate_rates = metrics_lib.read_metric_series(workdir, "env_steps", "gate_rate")
    series = [{"x": env_steps, "y": gate_rates, "label": "rollout (sampled gates)"}]
    if len(done):
        series.append({"x": done[:, 1], "y": done[:, 5], "label": "test (deterministic gates)"})
    metrics_lib.plot_lines(os.path.join(workdir, "gate_rate.png"), series, xlabel="environment steps",
                           ylabel="fraction of alive agent-steps that receive", title=f"Gate rate on {config.env.name}")
    env_steps, win_rates = metrics_lib.read_metric_series(workdir, "env_steps", "win_rate")
    series = [{"x": env_steps, "y": win_rates, "label": "rollout episodes"}]
    if len(done):
        series.append({"x": done[:, 1], "y": done[:, 3], "label": "test (greedy)"})
    metrics_lib.plot_lines(os.path.join(workdir, "win_rate.png"), series, xlabel="environment steps",
                           ylabel="win rate", title=f"Win rate on {config.env.name}")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train in jitted chunks with evaluation and checkpoints between them; resume from `workdir`."""
    trainer = train_lib.make_train(config)
    root_key = jax.random.key(config.seed)
    initial = _checkpoint_template(trainer, root_key)
    state, evals, elapsed_s = initial["state"], initial["evals"], 0.0
    eval_key = jax.random.fold_in(root_key, 1)

    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=2)
    chunks_done = checkpointer.latest_step() or 0
    if chunks_done:
        restored = checkpointer.restore(initial)
        state, evals, elapsed_s = restored["state"], np.asarray(restored["evals"]).copy(), float(
            restored["elapsed_s"])
        logging.info("Resumed from checkpoint after chunk %d (%d PPO updates, %.1f minutes of training).",
                     chunks_done, int(state.update), elapsed_s / 60)
    writer = metrics_lib.MetricWriter(workdir, resume_from_step=int(state.update) - 1 if chunks_done else None)

    time_limit_s = config.train.time_limit_minutes * 60.0
    steps_per_update = trainer.env_steps_per_update
    timed_steps, timed_seconds = 0, 0.0
    bar = progress_lib.progress(trainer.num_chunks, desc=f"commformer {config.env.name}", unit="chunk",
                                initial=chunks_done)
    for chunk in range(chunks_done, trainer.num_chunks):
        if time_limit_s > 0 and elapsed_s >= time_limit_s:  # A rerun of a run that stopped on its time limit.
            break
        start = time.perf_counter()
        state, metrics = trainer.train_chunk(state)
        metrics = jax.device_get(metrics)
        seconds = time.perf_counter() - start
        if chunk > chunks_done:  # The first chunk of a process includes compilation.
            timed_steps += config.train.updates_per_chunk * steps_per_update
            timed_seconds += seconds

        first_update = int(state.update) - config.train.updates_per_chunk
        for offset in range(config.train.updates_per_chunk):
            update = first_update + offset
            scalars = {name: float(values[offset]) for name, values in metrics.items()}
            scalars["env_steps"] = (update + 1) * steps_per_update
            if not all(math.isfinite(v) for v in scalars.values()):
                raise FloatingPointError(f"non-finite training metrics at PPO update {update}: {scalars}; "
                                         "lower ppo.lr or check the environment's rewards")
            writer.write_scalars(update, scalars)

        last = chunk == trainer.num_chunks - 1
        out_of_time = time_limit_s > 0 and elapsed_s + seconds >= time_limit_s
        if (chunk + 1) % config.train.eval_every_chunks == 0 or last or out_of_time:
            result = jax.device_get(trainer.evaluate(state.params, state.update, jax.random.fold_in(eval_key, chunk)))
            # Wall-clock time of training and evaluation, compilation included, up to this evaluation.
            elapsed_s += time.perf_counter() - start
            evals[chunk] = [int(state.update), int(state.update) * steps_per_update, elapsed_s, result["win_rate"],
                            result["episode_return"], result["gate_rate"]]
            writer.write_scalars(int(state.update) - 1, {f"eval/{k}": float(v) for k, v in result.items()})
            logging.info("Update %d (%d env steps, %.1f min): test win rate %.3f, return %.3f, gate rate %.3f.",
                         int(state.update), int(state.update) * steps_per_update, elapsed_s / 60,
                         result["win_rate"], result["episode_return"], result["gate_rate"])
        else:
            elapsed_s += time.perf_counter() - start
        writer.flush()
        # Metrics first, then the checkpoint: a kill in between only repeats this chunk's metrics lines.
        checkpointer.save(chunk + 1, {"state": state, "evals": evals, "elapsed_s": np.asarray(elapsed_s)})
        bar.update(1)
        if out_of_time:
            logging.info("Stopping after %.1f minutes (train.time_limit_minutes=%g).", elapsed_s / 60,
                         config.train.time_limit_minutes)
            break
    bar.close()
    writer.close()
    checkpointer.close()

    results = _summarize(config, trainer, state, evals, elapsed_s, timed_steps, timed_seconds)
    metrics_lib.write_results(workdir, results)
    _write_plots(workdir, config, trainer, state, evals)
    return results


def _checkpoint_template(trainer, root_key: jax.Array) -> dict[str, Any]:
    """Return the checkpointed tree of a new run: train state, evaluation table (NaN rows) and elapsed seconds."""
    return {"state": trainer.init(jax.random.fold_in(root_key, 0)),
            "evals": np.full((trainer.num_chunks, len(EVAL_COLUMNS)), np.nan), "elapsed_s": np.zeros(())}


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, episodes: int | None = None,
                        key: jax.Array | None = None) -> dict[str, float]:
    """Evaluate the last checkpoint in `workdir` greedily: win rate, episode return and gate rate.

    Args:
        config: the config the run was trained with (it fixes the shapes of the checkpoint).
        workdir: the workdir of the run, which contains `checkpoints/`.
        episodes: test episodes, run in parallel; None keeps `train.eval_episodes`. More episodes give a
            finer estimate than the evaluations during training (standard error sqrt(p(1-p)/episodes)).
        key: a JAX PRNG key for the episodes (typed, or a legacy uint32[2] jax.Array); None uses
            fold_in(key(seed), 2), which training's evaluations never use.

    Returns:
        {"win_rate", "episode_return", "gate_rate"}: the fraction of episodes won, the mean episode return
        and the fraction of alive agents' steps with an open gate (1.0 without gating).

    Raises:
        FileNotFoundError: `workdir` contains no checkpoint.
        ValueError: `episodes` is not a positive int, or `key` is not a PRNG key.
    """
    if episodes is not None:
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
            raise ValueError(f"invalid episodes={episodes!r}: expected a positive int, or None for the config's "
                             "train.eval_episodes")
        config = ml_collections.ConfigDict(config.to_dict())
        config.train.eval_episodes = episodes
        validate(config)
    if isinstance(key, jax.Array) and key.dtype == np.uint32 and key.shape == (2,):
        key = jax.random.wrap_key_data(key)  # A legacy jax.random.PRNGKey.
    if key is not None and not (isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
                                and key.shape == ()):
        raise ValueError(f"invalid key={key!r}: expected one PRNG key from jax.random.key(seed), or None")
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    missing = FileNotFoundError(f"no checkpoint in {checkpoint_dir}; train the run first (experiment.run) or "
                                "pass the workdir of a trained run")
    if not os.path.isdir(checkpoint_dir):  # Checked first: the Checkpointer would create the directory.
        raise missing
    checkpointer = checkpoint_lib.Checkpointer(checkpoint_dir, max_to_keep=2)
    if checkpointer.latest_step() is None:
        checkpointer.close()
        raise missing
    trainer = train_lib.make_train(config)
    root_key = jax.random.key(config.seed)
    state = checkpointer.restore(_checkpoint_template(trainer, root_key))["state"]
    checkpointer.close()

    key = jax.random.fold_in(root_key, 2) if key is None else key
    result = jax.device_get(trainer.evaluate(state.params, state.update, key))
    return {name: float(value) for name, value in result.items()}


def _summarize(config, trainer, state, evals, elapsed_s, timed_steps, timed_seconds) -> dict[str, Any]:
    done = evals[~np.isnan(evals[:, 0])]
    final = done[-1]
    reached = done[done[:, 3] >= config.train.target_win_rate]
    records = [dict(zip(EVAL_COLUMNS, row.tolist())) for row in done]
    return {
        "experiment": config.experiment,
        "env": config.env.name,
        "model": config.model.kind,
        "graph_mode": config.graph.mode,
        "sparsity": config.graph.sparsity,
        "num_links": trainer.num_links,
        "gating": bool(config.gating.enabled and config.model.kind == "commformer"),
        "num_agents": trainer.env.num_agents,
        "seed": config.seed,
        "updates": int(state.update),
        "env_steps": int(state.update) * trainer.env_steps_per_update,
        "train_minutes": elapsed_s / 60,
        "env_steps_per_s": timed_steps / timed_seconds if timed_seconds > 0 else None,
        "test_win_rate": float(final[3]),
        "test_episode_return": float(final[4]),
        "test_gate_rate": float(final[5]),
        "best_test_win_rate": float(done[:, 3].max()),
        "target_win_rate": config.train.target_win_rate,
        "env_steps_to_target": int(reached[0, 1]) if len(reached) else None,
        "minutes_to_target": float(reached[0, 2]) / 60 if len(reached) else None,
        "adjacency": np.asarray(trainer.graph(state.params, state.update)).tolist(),
        "alpha": np.asarray(state.params["alpha"]).tolist(),
        "evaluations": records,
    }
