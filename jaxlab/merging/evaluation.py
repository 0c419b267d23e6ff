"""Per-task accuracy of merged models and the results table of the merging papers.

Models enter as an apply function and a parameter tree, so any model works:
`EvaluationTask.logits_fn(params, inputs)` returns the logits of that task (its
own head included) for a batch of inputs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.core import metrics

PyTree = Any
AVERAGE_COLUMN = "Avg"
METHOD_COLUMN = "Method"
# Row order of the results tables in the multi-task model-merging literature.
PAPER_ROWS = (
    "Individual",
    "Traditional MTL",
    "Weight Averaging",
    "Fisher Merging",
    "RegMean",
    "Task Arithmetic",
    "Ties-Merging",
    "Task-wise AdaMerging",
    "Layer-wise AdaMerging",
)


@dataclasses.dataclass(frozen=True)
class EvaluationTask:
    """One labelled test set and how to score a model on it.

    Attributes:
        name: the column name in results tables.
        logits_fn: logits_fn(params, inputs) -> [batch, classes] logits.
        inputs: a pytree of arrays with a leading example axis [N, ...].
        labels: int [N] class indices.
    """

    name: str
    logits_fn: Callable[[PyTree, Any], jax.Array]
    inputs: Any
    labels: Any


@functools.partial(jax.jit, static_argnames=("logits_fn",))
def _count_correct(logits_fn, params, inputs, labels, weights) -> jax.Array:
    predictions = jnp.argmax(logits_fn(params, inputs), axis=-1)
    return jnp.sum((predictions == labels) * weights)


def accuracy(task: EvaluationTask, params: PyTree, *, batch_size: int = 256) -> float:
    """Return the fraction of `task`'s examples whose argmax logit is the label.

    The last batch is padded to `batch_size` with zero-weight rows, so one
    compiled function serves every batch.
    """
    labels = np.asarray(task.labels)
    num_examples = labels.shape[0]
    if labels.ndim != 1 or num_examples == 0:
        raise ValueError(f"Task '{task.name}' has labels of shape {labels.shape}; pass a non-empty [N] array.")
    for leaf in jax.tree.leaves(task.inputs):
        if np.shape(leaf)[:1] != (num_examples,):
            raise ValueError(f"Task '{task.name}' has {num_examples} labels but inputs of shape "
                             f"{np.shape(leaf)}; inputs need the same leading example axis.")
    batch_size = min(batch_size, num_examples)
    correct = 0.0
    for start in range(0, num_examples, batch_size):
        stop = min(start + batch_size, num_examples)
        padding = batch_size - (stop - start)

        def pad(leaf, start=start, stop=stop, padding=padding):
            chunk = np.asarray(leaf[start:stop])
            return np.concatenate([chunk, np.zeros((padding,) + chunk.shape[1:], chunk.dtype)])

        weights = np.concatenate([np.ones(stop - start), np.zeros(padding)])
        correct += float(_count_correct(task.logits_fn, params, jax.tree.map(pad, task.inputs),
                                        pad(labels), weights))
    return correct / num_examples


def evaluate(params: PyTree | Sequence[PyTree], tasks: Sequence[EvaluationTask], *,
             batch_size: int = 256) -> dict[str, float]:
    """Return {task name: accuracy, 'Avg': mean accuracy} of one model on every task.

    Args:
        params: one parameter tree used for every task (a merged model), or a
            sequence with one tree per task (the individual experts).
        tasks: the evaluation tasks.
        batch_size: examples per forward pass.
    """
    if isinstance(params, (list, tuple)):
        if len(params) != len(tasks):
            raise ValueError(f"Got {len(params)} parameter trees for {len(tasks)} tasks; pass one tree, "
                             "or one per task.")
        per_task = list(params)
    else:
        per_task = [params] * len(tasks)
    names = [task.name for task in tasks]
    if len(set(names)) != len(names) or AVERAGE_COLUMN in names:
        raise ValueError(f"Task names {names} must be unique and differ from '{AVERAGE_COLUMN}'.")
    results = {task.name: accuracy(task, task_params, batch_size=batch_size)
               for task, task_params in zip(tasks, per_task)}
    results[AVERAGE_COLUMN] = float(np.mean([results[name] for name in names]))
    return results


def evaluate_methods(models: Mapping[str, PyTree | Sequence[PyTree]], tasks: Sequence[EvaluationTask], *,
                     batch_size: int = 256) -> dict[str, dict[str, float]]:
    """Evaluate several models, {method name: params}, as `evaluate` does for each."""
    return {method: evaluate(params, tasks, batch_size=batch_size) for method, params in models.items()}


def write_results_table(path: str, results: Mapping[str, Mapping[str, float]], task_names: Sequence[str], *,
                        title: str | None = None) -> None:
    """Write {method: {task: accuracy, 'Avg': ...}} as a Markdown table of accuracies in percent.

    Methods named in `PAPER_ROWS` come first in the papers' order, then the
    others in the order given; absent methods get no row. Columns are the
    tasks, then 'Avg'.
    """
    ordered = [name for name in PAPER_ROWS if name in results]
    ordered += [name for name in results if name not in PAPER_ROWS]
    rows = [{METHOD_COLUMN: method, **{column: 100.0 * float(value) for column, value in results[method].items()}}
            for method in ordered]
    columns = [METHOD_COLUMN, *task_names, AVERAGE_COLUMN]
    metrics.write_markdown_table(path, rows, columns, title=title, float_format=".1f")
