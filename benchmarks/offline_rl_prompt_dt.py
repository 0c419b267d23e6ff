"""Prompt-DT against the multi-task Decision Transformer without prompt, over seeds, recorded in docs/offline_rl.md.

Runs the `prompt_dt` experiment with one variant of configs/offline_rl/prompt_dt.py for each seed, once with
`model.use_prompt=True` and once with False (everything else equal), and reports the held-out success rate
(Meta-World) and return as the mean +- standard error over seeds. A run whose workdir already contains
results.json is read, not rerun; an interrupted one resumes from its checkpoint. The table replaces the
text between `<!-- BEGIN prompt_dt_<variant> -->` and `<!-- END prompt_dt_<variant> -->` of the output.

Run:
  nice -n 10 python benchmarks/offline_rl_prompt_dt.py --variant=metaworld_reach_cpu [--seeds=0,1,2]
      [--workdir=runs/offline_rl_prompt_dt] [--output=docs/offline_rl.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys

import numpy as np
from absl import logging

from jaxlab.core import config as config_lib
from jaxlab.core import machine
from jaxlab.core import metrics as metrics_lib
from jaxlab.offline_rl import prompt_dt

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CONFIG_PATH = os.path.join(ROOT, "configs", "offline_rl", "prompt_dt.py")
METHODS = (("Prompt-DT", True), ("DT without prompt", False))


def run_one(variant: str, seed: int, use_prompt: bool, workdir: str) -> dict:
    """Return the results of one run, running (or resuming) it unless its results.json exists."""
    results_path = os.path.join(workdir, "results.json")
    if os.path.exists(results_path):
        with open(results_path) as file:
            return json.load(file)
    config = config_lib.load_config_file(CONFIG_PATH, variant)
    config.seed = seed
    config.model.use_prompt = use_prompt
    prompt_dt.validate(config)
    return prompt_dt.run(config, workdir)


def mean_stderr(values: list[float], decimals: int) -> str:
    """Format the mean ± standard error (sample standard deviation / sqrt(n)) of `values`."""
    values = np.asarray(values, np.float64)
    stderr = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{values.mean():.{decimals}f} ± {stderr:.{decimals}f}"


def table(records: dict[str, list[dict]]) -> str:
    first = next(iter(records.values()))[0]
    has_success = "success_rate" in first["test"]
    tasks = sorted(first["test"]["tasks"], key=int)
    header = ["method", "seeds"] + (["success rate"] if has_success else []) + ["return"]
    header += [f"task {task} {'success' if has_success else 'return'}" for task in tasks]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for method, runs in records.items():
        cells = [method, str(len(runs))]
        if has_success:
            cells.append(mean_stderr([run["test"]["success_rate"] for run in runs], 2))
        cells.append(mean_stderr([run["test"]["return_mean"] for run in runs], 0))
        key, decimals = ("success_rate", 2) if has_success else ("return_mean", 0)
        cells += [mean_stderr([run["test"]["tasks"][task][key] for run in runs], decimals) for task in tasks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="metaworld_reach_cpu", help="variant of configs/offline_rl/prompt_dt.py")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--workdir", default=os.path.join("runs", "offline_rl_prompt_dt"),
                        help="parent of one workdir per method and seed")
    parser.add_argument("--output", default=os.path.join("docs", "offline_rl.md"),
                        help="Markdown file with the section markers; '' prints only")
    args = parser.parse_args()
    logging.set_verbosity(logging.INFO)
    seeds = [int(seed) for seed in args.seeds.split(",")]

    records = {}
    for method, use_prompt in METHODS:
        records[method] = [
            run_one(args.variant, seed, use_prompt,
                    os.path.join(args.workdir, args.variant, f"{'prompt' if use_prompt else 'no_prompt'}_seed{seed}"))
            for seed in seeds]
    first = records[METHODS[0][0]][0]
    text = "\n".join([
        table(records),
        "",
        f"Held-out tasks {first['test_tasks']} of `{first['env']}`. Training tasks {first['train_tasks']}. "
        f"Goal hidden from the DT: {first['hide_goal']}. Each cell is the mean ± standard error over seeds "
        f"{seeds}, and a task's cell uses each seed's mean over that task's episodes.",
        "",
        f"Command: `{shlex.join(['nice', '-n', '10', 'python', 'benchmarks/offline_rl_prompt_dt.py'] + sys.argv[1:])}`",
        f"Machine: {machine.describe_machine()}, shared with other jobs.",
        f"Date: {datetime.date.today().isoformat()}.",
    ])
    print(text)
    if args.output:
        metrics_lib.replace_marked_section(args.output, f"prompt_dt_{args.variant}", text)
        print(f"Wrote the prompt_dt_{args.variant} section of {args.output}.")


if __name__ == "__main__":
    main()
