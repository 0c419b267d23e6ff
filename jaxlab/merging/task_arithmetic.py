"""Task vectors, weight averaging and Task Arithmetic.

A task vector is the change fine-tuning made to the pretrained parameters,
tau_i = theta_i - theta_0 (Ilharco et al., "Editing Models with Task
Arithmetic", ICLR 2023). All functions take and return parameter pytrees of
floating-point arrays and can be called inside `jax.jit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxlab.merging import checks

PyTree = Any


def task_vectors(pretrained: PyTree, finetuned: Sequence[PyTree]) -> list[PyTree]:
    """Return tau_i = finetuned[i] - pretrained for every fine-tuned tree."""
    checks.check_models(pretrained, finetuned)
    return _subtract_each(list(finetuned), pretrained)


def apply_task_vectors(pretrained: PyTree, vectors: Sequence[PyTree]) -> list[PyTree]:
    """Return theta_i = pretrained + tau_i for every task vector; the inverse of `task_vectors`."""
    checks.check_models(pretrained, vectors)
    return _add_each(list(vectors), pretrained)


@jax.jit
def _weighted_sum(trees: Sequence[PyTree], weights: jax.Array) -> PyTree:
    """Return sum_i weights[i] * trees[i], leaf by leaf, in each leaf's dtype."""

    def combine(*leaves: jax.Array) -> jax.Array:
        total = weights[0].astype(leaves[0].dtype) * leaves[0]
        for i, leaf in enumerate(leaves[1:], start=1):
            total = total + weights[i].astype(leaf.dtype) * leaf
        return total

    return jax.tree.map(combine, *trees)


@jax.jit
def _subtract_each(models: list[PyTree], pretrained: PyTree) -> list[PyTree]:
    return [jax.tree.map(jnp.subtract, model, pretrained) for model in models]


@jax.jit
def _add_each(vectors: list[PyTree], pretrained: PyTree) -> list[PyTree]:
    return [jax.tree.map(jnp.add, pretrained, vector) for vector in vectors]


@jax.jit
def _add_weighted_sum(pretrained: PyTree, vectors: list[PyTree], coefficients: jax.Array) -> PyTree:
    return jax.tree.map(jnp.add, pretrained, _weighted_sum(vectors, coefficients))


@jax.jit
def _task_arithmetic(pretrained: PyTree, finetuned: list[PyTree], coefficients: jax.Array) -> PyTree:
    return _add_weighted_sum(pretrained, _subtract_each(finetuned, pretrained), coefficients)


def _as_weights(weights: Any, num_models: int, name: str) -> jax.Array:
    weights = jnp.asarray(weights)
    if weights.ndim == 0:
        return jnp.broadcast_to(weights, (num_models,))
    if weights.shape != (num_models,):
        raise ValueError(
            f"{name} has shape {weights.shape}, but there are {num_models} models. "
            f"Pass a scalar or one value per model."
        )
    return weights


def weight_average(models: Sequence[PyTree], weights: Any = None) -> PyTree:
    """Average parameter trees, theta = sum_i w_i theta_i with w_i = 1/T by default.

    With the uniform default this equals theta_0 + (1/T) sum_i tau_i for any
    pretrained theta_0, and matches fusion-bench's `simple_average`.

    Args:
        models: T parameter trees of the same structure, shapes and dtypes.
        weights: optional scalar or [T] array of weights (not renormalised).
    """
    checks.check_models(None, models)
    if weights is None:
        weights = jnp.full((len(models),), 1.0 / len(models))
    return _weighted_sum(models, _as_weights(weights, len(models), "weights"))


def task_arithmetic(pretrained: PyTree, finetuned: Sequence[PyTree], scaling: Any = 0.3) -> PyTree:
    """Merge by Task Arithmetic, theta = theta_0 + lambda * sum_i tau_i.

    Args:
        pretrained: the common base parameters theta_0.
        finetuned: T fine-tuned parameter trees theta_i.
        scaling: lambda, a scalar, or a [T] array for one coefficient per task
            (the task-wise merge that AdaMerging learns). 0.3 is the value of
            fusion-bench's `task_arithmetic.yaml`.
    """
    checks.check_models(pretrained, finetuned)
    coefficients = _as_weights(scaling, len(finetuned), "scaling")
    return _task_arithmetic(pretrained, list(finetuned), coefficients)


def merge_task_vectors(pretrained: PyTree, vectors: Sequence[PyTree], scaling: Any = 1.0) -> PyTree:
    """Return theta_0 + sum_i lambda_i tau_i for a scalar lambda or a [T] array of them."""
    checks.check_models(pretrained, vectors)
    coefficients = _as_weights(scaling, len(vectors), "scaling")
    return _add_weighted_sum(pretrained, list(vectors), coefficients)
