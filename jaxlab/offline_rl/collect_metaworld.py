"""The `offline_rl_collect_metaworld` experiment: scripted Meta-World ML1 shards for offline meta-RL.

For every task name, selected goal task and noise level, the experiment collects the shard
`metaworld_data.shard_spec(name, index, noise, episodes, seed)` into the jaxlab cache (`$JAXLAB_DATA`).
Shards already in the cache are skipped, so a killed run resumes where it stopped, and runs with other
workdirs reuse the same shards. With `num_workers` > 1, spawned processes collect one goal task each, so
shards appear out of order, but the outputs do not depend on the number of workers.

Outputs in the workdir: `results.json` (statistics per task name and noise level, and per shard),
`results.md` (the first table) and `metrics.jsonl` (one step per shard, ordered by task name, goal task
and noise level). Episode returns, standard deviations and success rates pool all episodes of the
selected goal tasks, and an episode counts as a success when `info["success"]` is True at any step.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from jaxlab.core import config as config_lib
from jaxlab.core import metrics as metrics_lib
from jaxlab.core import progress as progress_lib
from jaxlab.offline_rl import dataset
from jaxlab.offline_rl import metaworld_data

TASK_SELECTIONS = ("train", "test", "all")
MAX_EPISODES = 10_000
MAX_WORKERS = 256


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` naming the first invalid field of an `offline_rl_collect_metaworld` config."""
    config_lib.require_int(config, "seed", min=0)
    names = config_lib.require_list_of(config, "task_names", str, min_len=1)
    for position, name in enumerate(names):
        try:
            metaworld_data.check_task_name(name)
        except ValueError as error:
            raise config_lib.ConfigError(f"task_names[{position}]", name,
                                         f"a Meta-World v3 task name with a scripted policy ({error})") from None
    if len(set(names)) != len(names):
        raise config_lib.ConfigError("task_names", tuple(names), "a list without repeated task names")
    noises = config_lib.require_list_of(config, "noise_levels", str, min_len=1,
                                        choices=tuple(metaworld_data.NOISE_LEVELS))
    if len(set(noises)) != len(noises):
        raise config_lib.ConfigError("noise_levels", tuple(noises), "a list without repeated noise levels")
    config_lib.require_int(config, "episodes", min=1, max=MAX_EPISODES)
    config_lib.require_choice(config, "tasks", TASK_SELECTIONS)
    config_lib.require_int(config, "max_tasks", min=0, max=metaworld_data.NUM_GOAL_TASKS)
    config_lib.require_int(config, "episode_steps", min=1, max=metaworld_data.MAX_EPISODE_STEPS)
    config_lib.require_int(config, "num_workers", min=1, max=MAX_WORKERS)


def selected_task_indices(config: ml_collections.ConfigDict, task_name: str) -> tuple[int, ...]:
    """Return the goal task indices that `config.tasks` and `config.max_tasks` select, in increasing order."""
    train, test = metaworld_data.task_split(task_name)
    indices = {"train": train, "test": test, "all": tuple(sorted(train + test))}[config.tasks]
    return indices[:config.max_tasks] if config.max_tasks else indices


def _shard_plan(config: ml_collections.ConfigDict) -> list[tuple[str, int, str]]:
    return [(name, index, noise)
            for name in config.task_names
            for index in selected_task_indices(config, name)
            for noise in config.noise_levels]


def _pooled_statistics(shards: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Pool all episodes of `shards` (equal lengths) and return `dataset.shard_statistics` of the union."""
    pooled = {name: np.concatenate([shard[name] for shard in shards])
              for name in ("rewards", "successes", "lengths")}
    return dataset.shard_statistics(pooled)


def _collect_missing(config: ml_collections.ConfigDict, plan: list[tuple[str, int, str]],
                     missing: list[bool]) -> None:
    """Collect the missing shards, in this process or in `config.num_workers` spawned processes."""
    groups: dict[tuple[str, int], list[str]] = {}
    for (name, index, noise), collect in zip(plan, missing):
        if collect:
            groups.setdefault((name, index), []).append(noise)
    shard_steps = config.episodes * config.episode_steps
    bar = progress_lib.progress(len(plan), desc="collect metaworld", unit="shard",
                                initial=len(plan) - sum(missing))

    def report(name: str, index: int, noise: str, seconds: float) -> None:
        steps_per_second = shard_steps / seconds
        bar.set_postfix(task=name, goal=index, noise=noise, steps_per_s=f"{steps_per_second:.0f}")
        bar.update(1)
        logging.info("Collected %s goal task %d, noise %s: %.1f s, %.0f steps/s per worker.", name, index, noise,
                     seconds, steps_per_second)

    with bar:
        if config.num_workers == 1:
            # One VectorEnv per task name, switched between goal tasks, saves building environments.
            vector_env = None
            for (name, index), noises in groups.items():
                if vector_env is None or vector_env.task_name != name:
                    vector_env = metaworld_data.VectorEnv(name, index, metaworld_data.collect_width(config.episodes),
                                                          config.seed, max_episode_steps=config.episode_steps)
                for noise in noises:
                    start = time.perf_counter()
                    metaworld_data.collect_task(name, index, noise, config.episodes, config.seed,
                                                episode_steps=config.episode_steps, vector_env=vector_env)
                    report(name, index, noise, time.perf_counter() - start)
            return

        # Spawned rather than forked workers, because forking a process that has started JAX's threads can
        # deadlock. Workers find the cache through the inherited $JAXLAB_DATA.
        pool = concurrent.futures.ProcessPoolExecutor(config.num_workers,
                                                      mp_context=multiprocessing.get_context("spawn"))
        try:
            futures = {pool.submit(metaworld_data.collect_goal_task, name, index, tuple(noises), config.episodes,
                                   config.seed, episode_steps=config.episode_steps): (name, index)
                       for (name, index), noises in groups.items()}
            for future in concurrent.futures.as_completed(futures):
                name, index = futures[future]
                for noise, seconds in future.result():
                    report(name, index, noise, seconds)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Collect every missing shard of the config, then write the statistics of all of them to `workdir`."""
    os.makedirs(workdir, exist_ok=True)
    plan = _shard_plan(config)
    specs = [metaworld_data.shard_spec(name, index, noise, config.episodes, config.seed,
                                       episode_steps=config.episode_steps) for name, index, noise in plan]
    missing = [not dataset.shard_exists(spec) for spec in specs]
    logging.info("Meta-World collection: %d shards, %d in the cache, %d to collect (%d episodes of %d steps "
                 "each, %d worker processes).", len(plan), len(plan) - sum(missing), sum(missing), config.episodes,
                 config.episode_steps, config.num_workers)
    _collect_missing(config, plan, missing)

    # Every run rewrites all metric lines, because shards collected by other runs have none in this workdir.
    writer = metrics_lib.MetricWriter(workdir, resume_from_step=-1)
    shard_records = []
    summaries: dict[tuple[str, str], list[dict[str, np.ndarray]]] = {}
    for step, ((name, index, noise), spec) in enumerate(zip(plan, specs)):
        shard = dataset.load_shard(spec)
        statistics = dataset.shard_statistics(shard)
        writer.write_scalars(step, {key: statistics[key] for key in ("return_mean", "return_std", "success_rate")})
        shard_records.append({"task_name": name, "task_index": index, "split": spec.split, "noise": noise,
                              **statistics})
        # Keep only the arrays the summary needs; observations of the default size take gigabytes.
        summaries.setdefault((name, noise), []).append(
            {key: shard[key] for key in ("rewards", "successes", "lengths")})
    writer.close()

    records = []
    for name in config.task_names:
        for noise in config.noise_levels:
            record = {"task_name": name, "noise": noise, "noise_std": metaworld_data.NOISE_LEVELS[noise],
                      "goal_tasks": len(summaries[(name, noise)])}
            record.update(_pooled_statistics(summaries[(name, noise)]))
            records.append(record)
    # JSON has no infinity, so the uniform-action level records its std as None.
    json_records = [{**record, "noise_std": None if np.isinf(record["noise_std"]) else record["noise_std"]}
                    for record in records]
    results = {
        "experiment": config.experiment,
        "seed": config.seed,
        "tasks": config.tasks,
        "episodes_per_shard": config.episodes,
        "episode_steps": config.episode_steps,
        "test_task_indices": list(metaworld_data.TEST_TASK_INDICES),
        "records": json_records,
        "shards": shard_records,
    }
    metrics_lib.write_results(workdir, results)
    table_rows = [{**record, "noise_std": "uniform" if np.isinf(record["noise_std"]) else record["noise_std"]}
                  for record in records]
    metrics_lib.write_markdown_table(
        os.path.join(workdir, "results.md"), table_rows,
        ["task_name", "noise", "noise_std", "goal_tasks", "episodes", "return_mean", "return_std", "success_rate"],
        title=(f"Meta-World scripted data: {config.tasks} goal tasks, {config.episodes} episodes of "
               f"{config.episode_steps} steps per goal task and noise level, seed {config.seed}"))
    return results
