"""The multi-task merging results table on the offline image suite (experiment `merging_table`).

For every fine-tuning seed of the `image_experts` experiment, the experts' towers
are merged by each method and the merged tower is scored on every task with
that task's frozen linear head. Only the tower (the backbone) is merged, as in
the papers (Task Arithmetic, Ties-Merging, AdaMerging), where each task keeps
its own classification head. The rows are:

- Individual: each expert on its own task;
- Weight Averaging, Fisher Merging (empirical diagonal Fisher on training
  images), RegMean (Gram matrices of every Dense layer's inputs on training
  images), Task Arithmetic and Ties-Merging, whose lambda is the candidate of
  a grid with the best average accuracy on a labelled validation split, as in
  the Task Arithmetic (Ilharco et al., ICLR 2023) and Ties-Merging (Yadav et
  al., NeurIPS 2023) papers;
- Task-wise and Layer-wise AdaMerging: coefficients learned by entropy
  minimisation on unlabelled test batches (Yang et al., ICLR 2024).

Accuracies are reported per seed and as mean and standard error over the
seeds. The per-seed accuracies of finished methods are stored in
`WORKDIR/method_results.json`, so a restarted run skips them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxlab import merging
from jaxlab.core import config as config_lib
from jaxlab.core import metrics as metrics_lib
from jaxlab.data import images as images_lib
from jaxlab.merging import evaluation
from jaxlab.models import classification
from jaxlab.models import experts as experts_lib

PyTree = Any
EXPERIMENT = "merging_table"
METHODS = ("Individual", "Weight Averaging", "Fisher Merging", "RegMean", "Task Arithmetic", "Ties-Merging",
           "Task-wise AdaMerging", "Layer-wise AdaMerging")
# The ordering of average accuracies that the run checks, as (better method, worse method, strict comparison).
PAPER_ORDERING = (("Individual", "Layer-wise AdaMerging", True),
                  ("Layer-wise AdaMerging", "Ties-Merging", True),
                  ("Ties-Merging", "Task Arithmetic", False),
                  ("Task Arithmetic", "Weight Averaging", True))
METHOD_RESULTS_FILE = "method_results.json"
# fold_in indices of the per-purpose keys under config.seed.
_KEY_FISHER, _KEY_REGMEAN, _KEY_ADAMERGING = 0, 1, 2


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` naming the first invalid field of a `merging_table` config."""
    config_lib.require_int(config, "seed", min=0)
    config_lib.require(config, "experts", lambda value: isinstance(value, ml_collections.ConfigDict),
                       "an image_experts config (configs/models/image_experts.py)")
    try:
        experts_lib.validate(config.experts)
    except config_lib.ConfigError as error:
        raise config_lib.ConfigError(f"experts.{error.field}", error.value, error.allowed) from error
    config_lib.require(
        config, "methods",
        lambda value: (isinstance(value, (list, tuple)) and len(value) >= 1
                       and all(name in METHODS for name in value) and len(set(value)) == len(value)),
        f"a non-empty list of distinct method names from {list(METHODS)}")

    # One lambda fixes it. With more, the validation split chooses among them.
    for field in ("task_arithmetic.scaling_grid", "ties.scaling_grid"):
        config_lib.require_list_of(config, field, float, min_len=1, gt=0.0)
    config_lib.require_float(config, "ties.keep_fraction", gt=0.0, max=1.0)
    config_lib.require_int(config, "validation.num_examples", min=1)

    num_train = config.experts.data.num_train
    config_lib.require_int(config, "fisher.num_examples", min=1, max=num_train)
    config_lib.require_int(config, "fisher.batch_size", min=1)
    regmean_batch = config_lib.require_int(config, "regmean.batch_size", min=1)
    config_lib.require(
        config, "regmean.num_examples",
        lambda value: (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= num_train
                       and value % regmean_batch == 0),
        f"an int in [1, experts.data.num_train={num_train}] that is a multiple of regmean.batch_size={regmean_batch}")
    config_lib.require_float(config, "regmean.alpha", min=0.0, max=1.0)

    config_lib.require_int(config, "adamerging.steps", min=1)
    config_lib.require_int(config, "adamerging.batch_size", min=1, max=config.experts.data.num_test)
    config_lib.require_float(config, "adamerging.learning_rate", gt=0.0)
    config_lib.require_float(config, "adamerging.init_value", min=0.0, max=1.0)
    config_lib.require_bool(config, "adamerging.clamp")
    config_lib.require_int(config, "eval_batch_size", min=1)


def _config_digest(config: ml_collections.ConfigDict) -> str:
    """Return a digest of every config field that changes the accuracies (all but the method list)."""
    fields = config.to_dict()
    del fields["methods"]
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _MethodCache:
    """Per-seed accuracies of finished methods in WORKDIR/method_results.json, keyed by the config digest."""

    def __init__(self, workdir: str, digest: str):
        self.path = os.path.join(workdir, METHOD_RESULTS_FILE)
        self.digest = digest
        self.results: dict[str, dict[str, dict[str, float]]] = {}
        if not os.path.exists(self.path):
            return
        try:
            with open(self.path) as file:
                stored = json.load(file)
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{self.path} is not valid JSON ({error}); delete it to recompute every method.") from error
        if stored.get("config_digest") != digest:
            logging.warning("%s was written for another config (digest %s, now %s); recomputing every method.",
                            self.path, stored.get("config_digest"), digest)
            return
        self.results = stored["results"]

    def get(self, seed: int, method: str) -> dict[str, float] | None:
        return self.results.get(str(seed), {}).get(method)

    def put(self, seed: int, method: str, accuracies: dict[str, float]) -> None:
        self.results.setdefault(str(seed), {})[method] = accuracies
        temporary = self.path + ".tmp"
        with open(temporary, "w") as file:
            json.dump({"config_digest": self.digest, "results": self.results}, file, indent=2, sort_keys=True)
        os.replace(temporary, self.path)


def _evaluation_tasks(model, heads, splits) -> list[evaluation.EvaluationTask]:
    """Return one EvaluationTask per task: the tower with that task's frozen head on one labelled split.

    `splits` contains one (task name, images, labels) triple per task, in the order of `heads`.
    """
    return [evaluation.EvaluationTask(name=name, logits_fn=functools.partial(_task_logits, model, head),
                                      inputs=images, labels=labels)
            for (name, images, labels), head in zip(splits, heads)]


def _task_logits(model, head, params, images):
    return classification.classifier_logits(model, params, head, images)


def _sample_indices(key: jax.Array, num_examples: int, count: int) -> np.ndarray:
    """Return `count` distinct example indices drawn without replacement."""
    return np.asarray(jax.random.choice(key, num_examples, (count,), replace=False))


def _fisher_merge(config, model, heads, experts, tasks, key) -> PyTree:
    fishers = []
    for index, (task, head, expert) in enumerate(zip(tasks, heads, experts)):
        rows = _sample_indices(jax.random.fold_in(key, index), len(task.train_labels), config.fisher.num_examples)
        log_likelihood = merging.categorical_log_likelihood(functools.partial(_task_logits, model, head))
        examples = (jnp.asarray(task.train_images[rows]), jnp.asarray(task.train_labels[rows]))
        fishers.append(merging.diagonal_fisher(log_likelihood, expert, examples, batch_size=config.fisher.batch_size))
    return merging.fisher_merging(experts, fishers)


def _regmean_merge(config, model, experts, tasks, key) -> PyTree:
    inputs_fn = merging.flax_dense_inputs(model)
    image_size = config.experts.model.image_size
    grams = []
    for index, (task, expert) in enumerate(zip(tasks, experts)):
        rows = _sample_indices(jax.random.fold_in(key, index), len(task.train_labels), config.regmean.num_examples)
        pixels = classification.preprocess_images(jnp.asarray(task.train_images[rows]), image_size)
        batches = pixels.reshape((-1, config.regmean.batch_size) + pixels.shape[1:])
        grams.append(merging.gram_matrices(inputs_fn, expert, batches))
    return merging.regmean_merging(experts, grams, alpha=config.regmean.alpha)


def _adamerging_merge(config, model, heads, base_params, experts, tasks, key, granularity):
    """Fit AdaMerging coefficients on unlabelled test batches; return (merged tower, metrics)."""
    settings = config.adamerging
    vectors = merging.task_vectors(base_params, experts)

    def logits_fn(params, task_index, images):
        return classification.classifier_logits(model, params, heads[task_index], images)

    problem = merging.adamerging(base_params, vectors, logits_fn, granularity=granularity,
                                 init_value=settings.init_value, optimizer=optax.adam(settings.learning_rate),
                                 clamp=settings.clamp)

    # One [steps, batch, 32, 32, 3] stack of unlabelled test images per task; labels are never read.
    batches = []
    for index, task in enumerate(tasks):
        task_key = jax.random.fold_in(key, index)
        rows = jax.random.randint(task_key, (settings.steps, settings.batch_size), 0, len(task.test_images))
        batches.append(jnp.asarray(task.test_images)[rows])

    state, step_metrics = jax.jit(merging.fit_adamerging, static_argnums=0)(problem, problem.init(), tuple(batches))
    loss = np.asarray(step_metrics["loss"])
    coefficients = np.asarray(problem.coefficients(state))
    metrics = {"entropy_first_step": float(loss[0]), "entropy_last_step": float(loss[-1]),
               "coefficient_mean": float(coefficients.mean()), "coefficient_min": float(coefficients.min()),
               "coefficient_max": float(coefficients.max())}
    logging.info("%s-wise AdaMerging: summed entropy %.4f -> %.4f over %d steps; coefficients in [%.3f, %.3f].",
                 granularity, loss[0], loss[-1], settings.steps, coefficients.min(), coefficients.max())
    return problem.merge(state), metrics


def _select_scaling(merge_fn, grid, validation_tasks, batch_size) -> tuple[PyTree, dict[str, Any]]:
    """Merge with each lambda of `grid` and keep the tower with the best average validation accuracy.

    Returns:
        The tower and {"scaling": the chosen lambda, "validation_average": {lambda: average accuracy}}.
        A grid of one lambda returns its tower without evaluating it.
    """
    if len(grid) == 1:
        return merge_fn(grid[0]), {"scaling": float(grid[0])}
    best_tower, best_scaling, averages = None, None, {}
    for scaling in grid:
        tower = merge_fn(scaling)
        averages[str(scaling)] = evaluation.evaluate(tower, validation_tasks,
                                                     batch_size=batch_size)[evaluation.AVERAGE_COLUMN]
        # An equal average keeps the earlier lambda, the smaller one in an increasing grid.
        if best_scaling is None or averages[str(scaling)] > averages[str(best_scaling)]:
            best_tower, best_scaling = tower, scaling
    logging.info("Lambda %s chosen on the validation split (average accuracy by lambda: %s).", best_scaling, averages)
    return best_tower, {"scaling": float(best_scaling), "validation_average": averages}


def _merged_tower(method, config, model, heads, base_params, experts, tasks, key, validation_tasks):
    """Return (the tower `method` produces, extra metrics); Individual returns the list of experts."""
    if method == "Individual":
        return list(experts), {}
    if method == "Weight Averaging":
        return merging.weight_average(experts), {}
    if method == "Fisher Merging":
        return _fisher_merge(config, model, heads, experts, tasks, jax.random.fold_in(key, _KEY_FISHER)), {}
    if method == "RegMean":
        return _regmean_merge(config, model, experts, tasks, jax.random.fold_in(key, _KEY_REGMEAN)), {}
    if method == "Task Arithmetic":
        return _select_scaling(
            lambda scaling: merging.task_arithmetic(base_params, experts, scaling=scaling),
            config.task_arithmetic.scaling_grid, validation_tasks, config.eval_batch_size)
    if method == "Ties-Merging":
        return _select_scaling(
            lambda scaling: merging.ties_merging(base_params, experts, scaling=scaling,
                                                 keep_fraction=config.ties.keep_fraction, merge="sum"),
            config.ties.scaling_grid, validation_tasks, config.eval_batch_size)
    granularity = {"Task-wise AdaMerging": "task", "Layer-wise AdaMerging": "layer"}[method]
    return _adamerging_merge(config, model, heads, base_params, experts, tasks,
                             jax.random.fold_in(key, _KEY_ADAMERGING), granularity)


def _summarise(per_seed: dict[str, dict[str, dict[str, float]]], seeds: Sequence[int], methods: Sequence[str],
               columns: Sequence[str]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Return {method: {'mean': {column: ...}, 'stderr': {column: ...}}} over the seeds.

    The standard error is std (ddof 1) / sqrt(number of seeds), and None with one seed.
    """
    summary = {}
    for method in methods:
        values = np.array([[per_seed[str(seed)][method][column] for column in columns] for seed in seeds])
        mean = values.mean(axis=0)
        stderr = values.std(axis=0, ddof=1) / np.sqrt(len(seeds)) if len(seeds) > 1 else [None] * len(columns)
        summary[method] = {"mean": dict(zip(columns, map(float, mean))),
                           "stderr": dict(zip(columns, [None if s is None else float(s) for s in stderr]))}
    return summary


def check_paper_ordering(averages: dict[str, float]) -> dict[str, Any]:
    """Compare average accuracies with Individual > Layer-wise AdaMerging > Ties-Merging >= Task Arithmetic > WA.

    Returns {'holds': bool or None, 'comparisons': [...]}; 'holds' is None when a
    method of the ordering was not run.
    """
    comparisons = []
    for better, worse, strict in PAPER_ORDERING:
        if better not in averages or worse not in averages:
            comparisons.append({"better": better, "worse": worse, "holds": None})
            continue
        holds = averages[better] > averages[worse] if strict else averages[better] >= averages[worse]
        comparisons.append({"better": better, "worse": worse, "strict": strict, "holds": bool(holds)})
    flags = [c["holds"] for c in comparisons]
    return {"holds": None if None in flags else all(flags), "comparisons": comparisons}


def _write_table(path: str, summary, methods: Sequence[str], task_names: Sequence[str], seeds: Sequence[int]) -> None:
    ordered = [name for name in evaluation.PAPER_ROWS if name in methods]
    columns = [*task_names, evaluation.AVERAGE_COLUMN]
    rows = []
    for method in ordered:
        row = {evaluation.METHOD_COLUMN: method}
        for column in columns:
            mean, stderr = summary[method]["mean"][column], summary[method]["stderr"][column]
            row[column] = f"{100 * mean:.1f}" if stderr is None else f"{100 * mean:.1f} ± {100 * stderr:.1f}"
        rows.append(row)
    spread = "mean ± standard error over" if len(seeds) > 1 else "one run, fine-tuning"
    title = f"Test accuracy (%) of the merged towers with per-task frozen heads; {spread} seeds {list(seeds)}"
    metrics_lib.write_markdown_table(path, rows, [evaluation.METHOD_COLUMN, *columns], title=title)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Evaluate every method of `config.methods` for every fine-tuning seed; write results.json and results.md."""
    validate(config)
    os.makedirs(workdir, exist_ok=True)
    methods = [name for name in METHODS if name in config.methods]
    seeds = list(config.experts.finetune.seeds)
    task_names = list(config.experts.data.tasks)
    columns = [*task_names, evaluation.AVERAGE_COLUMN]
    cache = _MethodCache(workdir, _config_digest(config))
    tasks = experts_lib.load_tasks(config.experts)

    per_seed: dict[str, dict[str, dict[str, float]]] = {}
    method_metrics: dict[str, dict[str, dict[str, float]]] = {}
    seconds: dict[str, dict[str, float]] = {}
    eval_tasks = validation_tasks = None
    for seed in seeds:
        model, base_params, heads, experts = experts_lib.load_experts(config.experts, finetune_seed=seed)
        if eval_tasks is None:
            # The heads belong to the base, which every seed shares, so one set of jitted scorers serves all seeds.
            eval_tasks = _evaluation_tasks(
                model, heads, [(task.name, task.test_images, task.test_labels) for task in tasks])
            # The validation split is drawn apart from the train and test splits.
            validation_tasks = _evaluation_tasks(model, heads, [
                (name, *images_lib.generate_split(name, "validation", config.validation.num_examples,
                                                  config.experts.data.suite_seed))
                for name in task_names])
        key = jax.random.fold_in(jax.random.key(config.seed), seed)
        per_seed[str(seed)], method_metrics[str(seed)], seconds[str(seed)] = {}, {}, {}

        for method in methods:
            cached = cache.get(seed, method)
            if cached is not None:
                logging.info("Seed %d, %s: read from %s.", seed, method, cache.path)
                per_seed[str(seed)][method] = cached["accuracy"]
                method_metrics[str(seed)][method] = cached["metrics"]
                seconds[str(seed)][method] = cached["seconds"]
                continue

            start = time.perf_counter()
            tower, extra = _merged_tower(method, config, model, heads, base_params, experts, tasks, key,
                                         validation_tasks)
            accuracy = evaluation.evaluate(tower, eval_tasks, batch_size=config.eval_batch_size)
            elapsed = time.perf_counter() - start
            logging.info("Seed %d, %s: average accuracy %.4f (%.1f s).", seed, method,
                         accuracy[evaluation.AVERAGE_COLUMN], elapsed)
            cache.put(seed, method, {"accuracy": accuracy, "metrics": extra, "seconds": elapsed})
            per_seed[str(seed)][method] = accuracy
            method_metrics[str(seed)][method] = extra
            seconds[str(seed)][method] = elapsed

    summary = _summarise(per_seed, seeds, methods, columns)
    averages = {method: summary[method]["mean"][evaluation.AVERAGE_COLUMN] for method in methods}
    ordering = check_paper_ordering(averages)
    results = {
        "tasks": task_names,
        "finetune_seeds": seeds,
        "methods": methods,
        "accuracy_per_seed": per_seed,
        "accuracy_mean": {method: summary[method]["mean"] for method in methods},
        "accuracy_stderr": {method: summary[method]["stderr"] for method in methods},
        "paper_ordering": ordering,
        "method_metrics": method_metrics,
        "method_seconds": seconds,
        "experts_base_cache_key": experts_lib.base_spec(config.experts).key,
    }
    metrics_lib.write_results(workdir, results)
    _write_table(os.path.join(workdir, "results.md"), summary, methods, task_names, seeds)
    logging.info("Paper ordering Individual > Layer-wise AdaMerging > Ties >= TA > WA holds: %s.", ordering["holds"])
    return results
