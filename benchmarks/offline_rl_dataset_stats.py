"""Statistics and collection speed of the scripted Meta-World datasets, recorded in docs/offline_rl_data.md.

Runs the `offline_rl_collect_metaworld` experiment with a variant of configs/offline_rl/collect_metaworld.py
(shards already in the cache are read, not collected again), then times `VectorEnv` collection separately:
one batch of expert episodes per task name, policy and environment together. It checks the acceptance
bar, an expert success rate of at least 90% per task name, and replaces the section between
`<!-- BEGIN metaworld_stats -->` and `<!-- END metaworld_stats -->` of the output file.

Run:
  nice -n 10 python benchmarks/offline_rl_dataset_stats.py [--variant cpu] [--workdir runs/mw_stats]
      [--output docs/offline_rl_data.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time

from absl import logging

from jaxlab.core import config as config_lib
from jaxlab.core import machine
from jaxlab.core import metrics
from jaxlab.offline_rl import collect_metaworld
from jaxlab.offline_rl import dataset
from jaxlab.offline_rl import metaworld_data

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CONFIG_PATH = os.path.join(ROOT, "configs", "offline_rl", "collect_metaworld.py")
SECTION = "metaworld_stats"
MIN_EXPERT_SUCCESS = 0.9


def time_collection(task_name: str, num_envs: int, episodes: int, seed: int) -> float:
    """Return environment steps per second of `collect_episodes` for expert episodes on goal task 0."""
    vector_env = metaworld_data.VectorEnv(task_name, 0, num_envs, seed)
    start = time.perf_counter()
    metaworld_data.collect_episodes(vector_env, "expert", episodes, seed)
    return episodes * vector_env.max_episode_steps / (time.perf_counter() - start)


def _stats_table(records: list[dict]) -> str:
    lines = ["| task | noise level | action noise | goal tasks | episodes | return mean | return std | success rate |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for record in records:
        noise = "uniform actions" if record["noise_std"] is None else f"Gaussian, std {record['noise_std']:g}"
        lines.append(f"| {record['task_name']} | {record['noise']} | {noise} | {record['goal_tasks']} | "
                     f"{record['episodes']} | {record['return_mean']:.1f} | {record['return_std']:.1f} | "
                     f"{record['success_rate']:.1%} |")
    return "\n".join(lines)


def _split_table(shards: list[dict], task_names: list[str], noises: list[str]) -> str:
    """Return the success rate per task name, noise level and split (train or test goals)."""
    lines = ["| task | noise level | train success | test success |", "| --- | --- | --- | --- |"]
    for name in task_names:
        for noise in noises:
            cells = []
            for split in dataset.SPLITS:
                chosen = [s for s in shards if s["task_name"] == name and s["noise"] == noise and s["split"] == split]
                episodes = sum(s["episodes"] for s in chosen)
                successes = sum(s["success_rate"] * s["episodes"] for s in chosen)
                cells.append(f"{successes / episodes:.1%}" if episodes else "-")
            lines.append(f"| {name} | {noise} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="cpu", help="variant of configs/offline_rl/collect_metaworld.py")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "offline_rl_dataset_stats"),
                        help="workdir of the collection run (results.json, results.md, metrics.jsonl, benchmark.json)")
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "offline_rl_data.md"),
                        help="Markdown file whose metaworld_stats section is replaced")
    parser.add_argument("--speed_envs", type=int, default=4, help="VectorEnv width of the speed measurement")
    args = parser.parse_args()
    logging.set_verbosity(logging.INFO)

    config = config_lib.load_config_file(CONFIG_PATH, args.variant)
    collect_metaworld.validate(config)
    plan = [metaworld_data.shard_spec(name, index, noise, config.episodes, config.seed,
                                      episode_steps=config.episode_steps)
            for name in config.task_names for index in collect_metaworld.selected_task_indices(config, name)
            for noise in config.noise_levels]
    cached = sum(dataset.shard_exists(spec) for spec in plan)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    results = collect_metaworld.run(config, args.workdir)
    run_seconds = time.perf_counter() - start
    speeds = {name: time_collection(name, args.speed_envs, args.speed_envs, config.seed)
              for name in config.task_names}
    load_after = os.getloadavg()[0]

    failures = [r for r in results["records"] if r["noise"] == "expert" and r["success_rate"] < MIN_EXPERT_SUCCESS]
    command = " ".join(shlex.quote(arg) for arg in [os.path.relpath(sys.argv[0])] + sys.argv[1:])
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    collected = len(plan) - cached
    speed_lines = "\n".join(f"| {name} | {speeds[name]:.0f} |" for name in config.task_names)
    acceptance = ("met" if not failures else
                  "NOT met for " + ", ".join(f"{r['task_name']} ({r['success_rate']:.1%})" for r in failures))
    text = f"""Command: `nice -n 10 python {command}` (config variant `{args.variant or 'default'}`)

Machine: {machine.describe_machine()}. The cores were shared with other jobs: load average
{load_before:.1f} at the start and {load_after:.1f} at the end.

Date: {date}

Collection: {len(plan)} shards of {config.episodes} episodes of {config.episode_steps} steps,
{collected} collected by this run and {cached} read from the cache, in {run_seconds:.0f} s.

{_stats_table(results["records"])}

Success rate by split:

{_split_table(results["shards"], list(config.task_names), list(config.noise_levels))}

Acceptance (expert success rate >= {MIN_EXPERT_SUCCESS:.0%} for every task name): {acceptance}.

Collection speed, expert episodes on goal task 0 with a {args.speed_envs}-env `VectorEnv`, scripted policy and
noise included (environment steps per second, one process):

| task | steps/s |
| --- | --- |
{speed_lines}
"""
    metrics.replace_marked_section(args.output, SECTION, text)
    # A separate file, because the experiment's results.json must stay the same on every rerun.
    with open(os.path.join(args.workdir, "benchmark.json"), "w") as record:
        json.dump({"collection_seconds": run_seconds, "shards_collected": collected, "shards_cached": cached,
                   "steps_per_second": speeds, "load_average": [load_before, load_after]}, record, indent=2)
    logging.info("Wrote the %s section of %s; acceptance %s.", SECTION, args.output, acceptance)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
