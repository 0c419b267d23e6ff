"""Test accuracy of LeZO against MeZO on all-MiniLM-L6-v2 at the same number of forward passes.

Every (optimizer, seed) pair is one run of the `zo_finetune` experiment with configs/zo/finetune.py and the
overrides below, so the numbers come from the same code path a launcher run takes. A seed fixes the task's
examples, the data order and the perturbations. Both optimizers see the same examples and batches for a
given seed, so the table also reports the paired difference LeZO - MeZO. A run is named
`optimizer[:learning_rate]`, so one table can hold an optimizer at several learning rates. Runs resume from
their workdirs, and finished runs are read back instead of rerun.

Run:
  python benchmarks/zo_accuracy.py --runs mezo,lezo,mezo:1e-3 --num_steps 1000 --seeds 0,1,2 --write_doc
  python benchmarks/zo_accuracy.py --head_init class_names --runs mezo,lezo,mezo:1e-3,lezo:1e-2 --write_doc

--head_init prototypes starts from the nearest-centroid head of the training set. class_names starts
from the zero-shot head at the embeddings of the class names, as MeZO starts from a zero-shot prompt.
Each writes its own section of docs/zo.md.

The default --frozen_pattern tunes only biases, LayerNorm parameters and the head, because zeroth-order
steps improve those within a CPU budget. Pass --frozen_pattern '' to tune every parameter.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import numpy as np
from absl import logging

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from jaxlab.core import config as config_lib  # noqa: E402
from jaxlab.core import machine  # noqa: E402
from jaxlab.core import metrics as metrics_lib  # noqa: E402
from jaxlab.zo import experiment  # noqa: E402

CONFIG_FILE = os.path.join(os.path.dirname(__file__), "..", "configs", "zo", "finetune.py")
DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "zo.md")
HEAD_STARTS = {"prototypes": "class prototypes", "class_names": "class-name embeddings (zero-shot)"}
LABELS = {"mezo": "MeZO", "lezo": "LeZO", "sparse_mezo": "Sparse-MeZO", "adamw": "AdamW (first order)"}


def parse_run(spec: str, default_learning_rate: float) -> tuple[str, float]:
    """Split a run name `optimizer[:learning_rate]` into the optimizer and its learning rate."""
    method, _, rate = spec.partition(":")
    if method not in LABELS or method == "adamw":
        raise ValueError(f"invalid run {spec!r}: the optimizer must be one of mezo, lezo, sparse_mezo")
    try:
        return method, float(rate) if rate else default_learning_rate
    except ValueError:
        raise ValueError(f"invalid run {spec!r}: expected optimizer:learning_rate, e.g. mezo:1e-3") from None


def run_label(method: str, learning_rate: float) -> str:
    return f"{LABELS[method]}, lr {learning_rate:g}"


def run_config(args, method: str, learning_rate: float, seed: int):
    """Return the `zo_finetune` config of one run."""
    config = config_lib.load_config_file(CONFIG_FILE, "" if method == "lezo" else method)
    config.seed = seed
    config.task.name = args.task
    config.num_steps = args.num_steps
    config.eval_every = args.eval_every
    config.checkpoint_every = args.eval_every
    config.model.frozen_pattern = args.frozen_pattern
    config.model.head_init = args.head_init
    config.optimizer.learning_rate = learning_rate
    config.optimizer.epsilon = args.epsilon
    experiment.validate(config)
    return config


def _mean_and_error(values) -> str:
    values = np.asarray(values, float)
    if len(values) < 2:
        return f"{100 * values.mean():.1f}"
    return f"{100 * values.mean():.1f} ± {100 * values.std(ddof=1) / np.sqrt(len(values)):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--runs", default="mezo,lezo",
                        help="comma-separated optimizer[:learning_rate] with optimizer mezo, lezo or sparse_mezo")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (3 or more for an error bar)")
    parser.add_argument("--task", default="noun_concrete", help="a key of jaxlab.data.text.TEXT_TASKS")
    parser.add_argument("--num_steps", type=int, default=1000, help="steps per run; each costs two forward passes")
    parser.add_argument("--eval_every", type=int, default=250, help="steps between test-accuracy evaluations")
    parser.add_argument("--learning_rate", type=float, default=3e-3, help="for runs that name none")
    parser.add_argument("--epsilon", type=float, default=1e-3, help="SPSA perturbation scale")
    parser.add_argument("--frozen_pattern", default="embeddings|^encoder/.*/kernel$",
                        help="regex of parameter paths kept fixed ('' tunes all)")
    parser.add_argument("--head_init", default="prototypes", choices=experiment.HEAD_INITS,
                        help="starting head: class prototypes, or zero-shot at the class-name embeddings")
    parser.add_argument("--workdir", default="runs/zo_accuracy", help="root of the run directories; runs resume")
    parser.add_argument("--write_doc", action="store_true",
                        help="replace the head_init's section of docs/zo.md ('accuracy' or 'accuracy_class_names')")
    args = parser.parse_args()
    logging.set_verbosity(logging.INFO)
    if args.num_steps < 1:
        parser.error(f"--num_steps {args.num_steps} must be at least 1")
    if not 0 < args.eval_every <= args.num_steps:
        parser.error(f"--eval_every {args.eval_every} must lie in [1, --num_steps {args.num_steps}]")

    try:
        runs = [parse_run(spec, args.learning_rate) for spec in args.runs.split(",")]
    except ValueError as error:
        parser.error(f"--runs: {error}")
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected comma-separated non-negative integers, e.g. 0,1,2")

    # Build and check every run's config first, so a bad value fails before hours of training.
    configs = {}
    for method, learning_rate in runs:
        for seed in seeds:
            try:
                configs[method, learning_rate, seed] = run_config(args, method, learning_rate, seed)
            except config_lib.ConfigError as error:
                parser.error(f"run {run_label(method, learning_rate)}, seed {seed}: {error}")

    started = datetime.datetime.now(datetime.timezone.utc)
    results = {}
    for (method, learning_rate, seed), config in configs.items():
        workdir = os.path.join(args.workdir, args.task, args.head_init, f"{method}_lr{learning_rate:g}", f"seed{seed}")
        path = os.path.join(workdir, metrics_lib.RESULTS_FILE)
        if not os.path.exists(path):
            logging.info("Running %s, seed %d, in %s.", run_label(method, learning_rate), seed, workdir)
            experiment.run(config, workdir)
        with open(path) as file:
            results[method, learning_rate, seed] = json.load(file)

    first = results[(*runs[0], seeds[0])]
    eval_steps = first["accuracy_curve"]["step"]
    lines = [
        f"Measured {started:%Y-%m-%d %H:%M} UTC on {machine.describe_machine()}.",
        "",
        "```sh",
        f"python benchmarks/zo_accuracy.py --runs {args.runs} --seeds {args.seeds} --task {args.task} "
        f"--num_steps {args.num_steps} --eval_every {args.eval_every} --learning_rate {args.learning_rate:g} "
        f"--epsilon {args.epsilon:g} --frozen_pattern '{args.frozen_pattern}' --head_init {args.head_init} --write_doc",
        "```",
        "",
        f"Task `{args.task}` ({first['num_classes']} classes), all-MiniLM-L6-v2 with a cosine head at the "
        f"{HEAD_STARTS[args.head_init]}, {first['trainable_parameters']:,} tuned parameters (frozen: "
        f"`{args.frozen_pattern or 'none'}`), batch 16, epsilon {args.epsilon:g}, {args.num_steps} steps = "
        f"{2 * args.num_steps} forward passes per run. Test accuracy in %, mean ± standard error over seeds.",
        "",
        "| run | start | " + " | ".join(f"step {step}" for step in eval_steps) + " | final | mean step (s) |",
        "|---|---|" + "---|" * len(eval_steps) + "---|---|",
    ]
    for method, learning_rate in runs:
        seed_results = [results[method, learning_rate, seed] for seed in seeds]
        curve = np.asarray([r["accuracy_curve"]["test_accuracy"] for r in seed_results])
        lines.append(" | ".join(
            [f"| {run_label(method, learning_rate)}", _mean_and_error([r["initial_test_accuracy"] for r in seed_results])]
            + [_mean_and_error(curve[:, i]) for i in range(curve.shape[1])]
            + [_mean_and_error([r["final_test_accuracy"] for r in seed_results]),
               f"{np.mean([r['mean_step_time_s'] for r in seed_results]):.2f} |"]))

    lines += ["", "Per seed, start → final (%):", ""]
    for seed in seeds:
        lines.append(f"- seed {seed}: " + "; ".join(
            f"{run_label(*run)} {100 * results[(*run, seed)]['initial_test_accuracy']:.1f} → "
            f"{100 * results[(*run, seed)]['final_test_accuracy']:.1f}" for run in runs))

    # Paired by seed: the runs of one seed share the task's examples and the batch order.
    lines.append("")
    references = [run for run in runs if run[0] == "mezo"]
    for run in runs:
        final = np.asarray([results[(*run, s)]["final_test_accuracy"] for s in seeds])
        start = np.asarray([results[(*run, s)]["initial_test_accuracy"] for s in seeds])
        lines.append(f"- {run_label(*run)}: gain over the start {_mean_and_error(final - start)} points.")
        if run[0] == "mezo":
            continue
        for reference in references:
            reference_final = np.asarray([results[(*reference, s)]["final_test_accuracy"] for s in seeds])
            lines.append(f"- {run_label(*run)} minus {run_label(*reference)}: "
                         f"{_mean_and_error(final - reference_final)} points.")
    lines.append(f"\nLoad average when the table was written: {os.getloadavg()[0]:.1f} on "
                 f"{os.cpu_count()} cores; step times under load are longer than in zo_speed.md.")

    record = "\n".join(lines)
    print(record)
    if args.write_doc:
        section = "accuracy" if args.head_init == "prototypes" else f"accuracy_{args.head_init}"
        metrics_lib.replace_marked_section(DOC, section, record)


if __name__ == "__main__":
    main()
