"""The `offline_rl_collect_brax` experiment: train or load a PPO expert, evaluate it, collect per-task shards.

Steps:

1. Train the goal-conditioned PPO expert of `config.expert` in
   `workdir/expert` (resumable), or load it from the jaxlab cache.
2. Evaluate it with its mean action on every task (`config.expert.eval_episodes`
   episodes each) and store the returns in `workdir/expert_eval.json`.
3. For each noise level and task, collect `config.episodes` episodes into a
   dataset shard (`dataset.save_shard`). Shards already in the cache are
   loaded and skipped, so a killed run resumes where it stopped.
4. Write `results.json`: the training summary, the expert's per-task returns
   (means over train and test tasks) and per-shard return statistics.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
from absl import logging

from jaxlab.core import config as config_lib
from jaxlab.core import metrics as metrics_lib
from jaxlab.core import progress as progress_lib
from jaxlab.offline_rl import brax_tasks
from jaxlab.offline_rl import dataset
from jaxlab.offline_rl import ppo_expert

EVAL_FILE = "expert_eval.json"


def validate(config: Any) -> None:
    """Raise `ConfigError` for the first invalid field the run reads."""
    config_lib.require_int(config, "seed", min=0)
    task = config_lib.require_choice(config, "task", brax_tasks.TASK_NAMES)
    config_lib.require(config, "expert.task", lambda value: value == task,
                       f"the same task family as task={task!r}")
    ppo_expert.validate_expert_config(config, prefix="expert.")
    config_lib.require_list_of(config, "noise_levels", str, min_len=1, choices=sorted(ppo_expert.NOISE_LEVELS))
    config_lib.require_list_of(config, "tasks", int, min=0, max=brax_tasks.num_tasks(task) - 1)
    config_lib.require_int(config, "episodes", min=1)
    config_lib.require_str(config, "data_root", nonempty=False)


def _task_indices(config: Any) -> list[int]:
    return list(config.tasks) if config.tasks else list(range(brax_tasks.num_tasks(config.task)))


def _expert_evaluation(expert: ppo_expert.Expert, config: Any, workdir: str) -> dict[str, Any]:
    """Evaluate the expert on every task, or read the stored evaluation of the same expert."""
    path = os.path.join(workdir, EVAL_FILE)
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        if stored.get("expert_key") == expert.key and stored.get("episodes") == config.expert.eval_episodes:
            logging.info("Read the expert evaluation from %s.", path)
            return stored
    start = time.monotonic()
    returns = ppo_expert.evaluate_expert(expert, config.expert.eval_episodes, config.seed)
    train, test = brax_tasks.task_split(config.task)
    per_task = returns.mean(axis=1)
    evaluation = {
        "expert_key": expert.key,
        "episodes": config.expert.eval_episodes,
        "per_task_return": [float(value) for value in per_task],
        "train_return_mean": float(per_task[list(train)].mean()),
        "test_return_mean": float(per_task[list(test)].mean()),
        "seconds": time.monotonic() - start,
    }
    with open(path + ".tmp", "w") as f:
        json.dump(evaluation, f, indent=1)
    os.replace(path + ".tmp", path)  # A killed run leaves the old file or none, never a partial one.
    logging.info("Expert mean-action return: %.2f on train tasks, %.2f on test tasks.",
                 evaluation["train_return_mean"], evaluation["test_return_mean"])
    return evaluation


def run(config: Any, workdir: str) -> dict[str, Any]:
    validate(config)
    os.makedirs(workdir, exist_ok=True)
    root = config.data_root or None
    expert = ppo_expert.load_or_train_expert(config.expert, root=root, workdir=os.path.join(workdir, "expert"))
    evaluation = _expert_evaluation(expert, config, workdir)

    tasks = _task_indices(config)
    shards: dict[str, dict[str, Any]] = {}
    collected_steps, collect_seconds = 0, 0.0
    bar = progress_lib.progress(len(tasks) * len(config.noise_levels), desc=f"collect {config.task}",
                                unit="shard")
    for noise in config.noise_levels:
        per_task = {}
        for task_index in tasks:
            spec = brax_tasks.shard_spec(config.task, task_index, noise, config.episodes, config.seed,
                                         expert_key=expert.key, backend=expert.env.backend)
            existed = dataset.shard_exists(spec, root)
            start = time.monotonic()
            arrays = brax_tasks.collect_task(config.task, task_index, noise, config.episodes, config.seed,
                                             root=root, expert=expert)
            if not existed:
                collect_seconds += time.monotonic() - start
                collected_steps += config.episodes * expert.env.episode_length
            per_task[str(task_index)] = {**dataset.shard_statistics(arrays), "split": spec.split,
                                         "mean_length": float(arrays["lengths"].mean())}
            bar.update(1)
            bar.set_postfix(noise=noise, ret=f"{per_task[str(task_index)]['return_mean']:.1f}")
        shards[noise] = per_task
    bar.close()

    results = {
        "env": brax_tasks.env_id(config.task),
        "backend": expert.env.backend,
        "expert_key": expert.key,
        "expert_training": expert.summary,
        "expert_eval": {key: value for key, value in evaluation.items() if key != "expert_key"},
        "episodes_per_shard": config.episodes,
        "noise_levels": {noise: ppo_expert.NOISE_LEVELS[noise] for noise in config.noise_levels},
        "shards": shards,
        "dataset_return_mean": {
            noise: float(np.mean([stats["return_mean"] for stats in per_task.values()]))
            for noise, per_task in shards.items()},
        # Counts only shards built by this run; cached shards took no time.
        "collect_env_steps_per_s": collected_steps / collect_seconds if collect_seconds else None,
    }
    metrics_lib.write_results(workdir, results)
    return results
