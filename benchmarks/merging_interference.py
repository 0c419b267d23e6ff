"""How much of each expert's gain survives when the eight task vectors are added (one fine-tuning seed).

For a base built with `configs/models/image_experts.py` plus overrides, this builds (or reads from the
cache) the base and the experts of one fine-tuning seed and measures on each task, with that task's frozen
head:

- the base, the expert (Individual) and the base plus 0.3 times the task's own vector (own 0.3);
- Weight Averaging, Task Arithmetic at several lambdas and Ties-Merging at lambda 0.3;
- the mean cosine similarity between different tasks' vectors and their mean norm relative to the base.

"own 0.3 - TA 0.3" is the accuracy that the other seven vectors take away from a task: the interference
that Ties-Merging and AdaMerging try to reduce. The merging papers' ordering needs it to be small.

Each setting is one labelled run whose results are kept in --workdir; --write_doc rewrites the
"interference" section of docs/experts.md from every run there.

Run:
  python benchmarks/merging_interference.py --label contrastive --write_doc
  python benchmarks/merging_interference.py --label rotation_source --write_doc \
      --override pretrain.contrastive_weight=0 --override pretrain.rotation_weight=1 \
      --override pretrain.steps=300 --override pretrain.warmup_steps=30
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import sys
import time

import numpy as np
from absl import logging

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from jaxlab import merging  # noqa: E402
from jaxlab.core import config as config_lib  # noqa: E402
from jaxlab.core import machine  # noqa: E402
from jaxlab.core import metrics as metrics_lib  # noqa: E402
from jaxlab.core import tree as tree_lib  # noqa: E402
from jaxlab.models import classification, experts  # noqa: E402

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "..", "configs", "models", "image_experts.py")
DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "experts.md")
TA_SCALINGS = (0.1, 0.2, 0.3, 0.5)
OWN_SCALING = 0.3
TIES_SCALING = 0.3
TIES_KEEP_FRACTION = 0.2


def build_config(variant: str, overrides: list[tuple[str, object]], finetune_seed: int):
    """Return the validated `image_experts` config with the overrides and the one fine-tuning seed."""
    config = config_lib.load_config_file(CONFIG_FILE, variant)
    for field, value in overrides:
        config_lib.set_field(config, field, value)
    config.finetune.seeds = (finetune_seed,)
    experts.validate(config)
    return config


def measure(config, finetune_seed: int) -> dict:
    """Build or read the base and experts, then return the accuracies and task-vector statistics."""
    started = time.time()
    model, base, heads, expert_params = experts.load_experts(config, finetune_seed)
    build_seconds = time.time() - started
    tasks = experts.load_tasks(config)

    def accuracies(params) -> list[float]:
        """Return the per-task test accuracy of one tower on every task, or of tower i on task i for a list."""
        towers = params if isinstance(params, list) else [params] * len(tasks)
        return [classification.accuracy(model, tower, head, task.test_images, task.test_labels,
                                        config.eval_batch_size)
                for tower, head, task in zip(towers, heads, tasks)]

    rows = {"Base + linear probe": accuracies(base), "Individual": accuracies(expert_params)}
    vectors = merging.task_vectors(base, expert_params)
    rows[f"own {OWN_SCALING}"] = accuracies(
        [merging.merge_task_vectors(base, [vector], OWN_SCALING) for vector in vectors])
    rows["Weight Averaging"] = accuracies(merging.weight_average(expert_params))
    for scaling in TA_SCALINGS:
        rows[f"Task Arithmetic {scaling}"] = accuracies(merging.task_arithmetic(base, expert_params, scaling=scaling))
    rows[f"Ties-Merging {TIES_SCALING}"] = accuracies(merging.ties_merging(
        base, expert_params, scaling=TIES_SCALING, keep_fraction=TIES_KEEP_FRACTION, merge="sum"))

    norms = [float(tree_lib.tree_norm(vector)) for vector in vectors]
    cosines = [float(tree_lib.tree_dot(vectors[i], vectors[j])) / (norms[i] * norms[j])
               for i, j in itertools.combinations(range(len(vectors)), 2)]
    return {
        "task_names": [task.name for task in tasks],
        "accuracy": rows,
        "mean_accuracy": {name: float(np.mean(values)) for name, values in rows.items()},
        "mean_off_diagonal_cosine": float(np.mean(cosines)),
        "mean_relative_norm": float(np.mean(norms) / tree_lib.tree_norm(base)),
        "build_seconds": build_seconds,
    }


def doc_section(records: dict[str, dict]) -> str:
    """Return the Markdown table of every labelled run, one column per label, and the runs' commands."""
    labels = sorted(records)
    names = list(records[labels[0]]["result"]["mean_accuracy"])
    num_tasks = len(records[labels[0]]["result"]["task_names"])
    lines = [f"Mean test accuracy (%) over the {num_tasks} tasks, one fine-tuning seed. "
             "Each column is one run of `benchmarks/merging_interference.py`.", "",
             "| | " + " | ".join(labels) + " |", "| --- |" + " --- |" * len(labels)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(
            f"{100 * records[label]['result']['mean_accuracy'][name]:.1f}" for label in labels) + " |")
    means = [records[label]["result"]["mean_accuracy"] for label in labels]
    lines.append(f"| own {OWN_SCALING} - Task Arithmetic {OWN_SCALING} | " + " | ".join(
        f"{100 * (mean[f'own {OWN_SCALING}'] - mean[f'Task Arithmetic {OWN_SCALING}']):.1f}"
        for mean in means) + " |")
    lines.append("| mean cosine between task vectors | " + " | ".join(
        f"{records[label]['result']['mean_off_diagonal_cosine']:.3f}" for label in labels) + " |")
    lines.append("| mean norm of a task vector / norm of the base | " + " | ".join(
        f"{records[label]['result']['mean_relative_norm']:.3f}" for label in labels) + " |")
    lines += ["", "Runs:", ""]
    for label in labels:
        record = records[label]
        overrides = " ".join(f"--override {field}={json.dumps(value)}" for field, value in record["overrides"])
        lines.append(f"- `{label}`: `python benchmarks/merging_interference.py --label {label}"
                     f"{' --variant ' + record['variant'] if record['variant'] else ''}"
                     f" --finetune_seed {record['finetune_seed']}{' ' + overrides if overrides else ''}`; "
                     f"{record['date']} on {record['machine']}; "
                     + (f"base and experts built in {record['result']['build_seconds'] / 60:.1f} minutes."
                        if record['result']['build_seconds'] >= 60 else "base and experts read from the cache."))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--label", required=True, help="name of this setting (a rerun with the same label replaces it)")
    parser.add_argument("--variant", default="", help="variant of configs/models/image_experts.py")
    parser.add_argument("--override", action="append", default=[],
                        help="FIELD=VALUE applied to the config, repeatable (e.g. pretrain.steps=300)")
    parser.add_argument("--finetune_seed", type=int, default=0, help="the one fine-tuning seed to build")
    parser.add_argument("--workdir", default="runs/merging_interference", help="where each label's results go")
    parser.add_argument("--write_doc", action="store_true",
                        help="rewrite the 'interference' section of docs/experts.md from every run in --workdir")
    args = parser.parse_args()
    logging.set_verbosity(logging.INFO)
    if not args.label.replace("_", "").replace("-", "").isalnum():
        parser.error(f"--label {args.label!r}: use letters, digits, '_' and '-' only")
    if args.finetune_seed < 0:
        parser.error(f"--finetune_seed {args.finetune_seed} must be >= 0")
    try:
        overrides = [config_lib.parse_override(text) for text in args.override]
        config = build_config(args.variant, overrides, args.finetune_seed)
    except (ValueError, TypeError, config_lib.ConfigError) as error:
        # ml_collections raises TypeError for a value of the wrong type, e.g. pretrain.steps=abc.
        parser.error(str(error))

    result = measure(config, args.finetune_seed)
    record = {"variant": args.variant, "overrides": overrides, "finetune_seed": args.finetune_seed,
              "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
              "machine": machine.describe_machine(), "result": result}
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, f"{args.label}.json"), "w") as file:
        json.dump(record, file, indent=2)
    for name, values in result["accuracy"].items():
        print(f"{name:<24}" + " ".join(f"{100 * value:5.1f}" for value in values) + f" | {100 * np.mean(values):5.1f}")

    if args.write_doc:
        records = {}
        for file_name in sorted(os.listdir(args.workdir)):
            if file_name.endswith(".json"):
                with open(os.path.join(args.workdir, file_name)) as file:
                    records[file_name[:-len(".json")]] = json.load(file)
        metrics_lib.replace_marked_section(DOC, "interference", doc_section(records))


if __name__ == "__main__":
    main()
