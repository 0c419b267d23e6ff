"""Fisher merging with a diagonal Fisher (Matena and Raffel, "Merging Models with Fisher-Weighted
Averaging", NeurIPS 2022).

theta* = sum_i c_i F_i theta_i / sum_i c_i F_i elementwise, where F_i is the
diagonal Fisher of model i, estimated as the mean over examples of the squared
per-example gradient of a log-likelihood.

Merging follows fusion-bench 0.2.33 (`method/fisher_merging/fisher_merging.py`,
`merging_with_fisher_weights`): every Fisher gets `min_fisher` (1e-6) added,
and with `normalize=True` model i is weighted by c_i = s_i * (1/(||F_i|| + 1e-6))
/ sum_j (1/(||F_j|| + 1e-6)), where ||F_i|| is the L2 norm of F_i over all its
entries and s_i = 1/T by default.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.merging import checks

PyTree = Any


def categorical_log_likelihood(logits_fn: Callable[[PyTree, Any], jax.Array]) -> Callable[[PyTree, Any], jax.Array]:
    """Build log p(y | x) of the observed label, for the empirical Fisher.

    Args:
        logits_fn: logits_fn(params, inputs) -> [batch, classes] logits for a batch.

    Returns:
        A function (params, (inputs, label)) -> scalar, for one unbatched example.
    """

    def log_likelihood(params: PyTree, example: tuple[Any, jax.Array]) -> jax.Array:
        inputs, label = example
        logits = logits_fn(params, jax.tree.map(lambda x: x[None], inputs))[0]
        return jax.nn.log_softmax(logits)[label]

    return log_likelihood


def fusion_bench_fisher_objective(logits_fn: Callable[[PyTree, Any], jax.Array]) -> Callable[[PyTree, Any], jax.Array]:
    """Build the objective whose squared gradient fusion-bench 0.2.33 uses as the Fisher.

    fusion-bench squares the gradient of sum_c sqrt(p_c) log p_c, with sqrt(p_c)
    held constant, summed over a batch. With one example per batch this equals
    the per-example squared gradient of the objective returned here. With larger
    batches fusion-bench squares a batch sum, which is not a per-example Fisher.

    Args:
        logits_fn: logits_fn(params, inputs) -> [batch, classes] logits for a batch.

    Returns:
        A function (params, inputs) -> scalar, for one unbatched example.
    """

    def objective(params: PyTree, inputs: Any) -> jax.Array:
        logits = logits_fn(params, jax.tree.map(lambda x: x[None], inputs))[0]
        log_probabilities = jax.nn.log_softmax(logits)
        weights = jax.lax.stop_gradient(jnp.sqrt(jnp.exp(log_probabilities)))
        return jnp.sum(weights * log_probabilities)

    return objective


@functools.partial(jax.jit, static_argnames=("log_likelihood_fn", "batch_size", "num_examples"))
def _diagonal_fisher(log_likelihood_fn, params, examples, batch_size: int, num_examples: int) -> PyTree:
    num_batches = -(-num_examples // batch_size)
    padding = num_batches * batch_size - num_examples

    def to_batches(leaf: jax.Array) -> jax.Array:
        padded = jnp.concatenate([leaf, jnp.zeros((padding,) + leaf.shape[1:], leaf.dtype)])
        return padded.reshape((num_batches, batch_size) + leaf.shape[1:])

    batches = jax.tree.map(to_batches, examples)
    # Padded rows get weight 0, so every batch has the same static shape.
    weights = (jnp.arange(num_batches * batch_size) < num_examples).reshape(num_batches, batch_size)
    per_example_grad = jax.vmap(jax.grad(log_likelihood_fn), in_axes=(None, 0))

    def accumulate(total: PyTree, batch_and_weights):
        batch, batch_weights = batch_and_weights
        grads = per_example_grad(params, batch)
        squared = jax.tree.map(
            lambda g: jnp.tensordot(batch_weights.astype(g.dtype), jnp.square(g), axes=1), grads
        )
        return jax.tree.map(jnp.add, total, squared), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    total, _ = jax.lax.scan(accumulate, zeros, (batches, weights))
    return jax.tree.map(lambda x: x / num_examples, total)


def diagonal_fisher(
    log_likelihood_fn: Callable[[PyTree, Any], jax.Array],
    params: PyTree,
    examples: PyTree,
    *,
    batch_size: int = 32,
) -> PyTree:
    """Estimate the diagonal Fisher, F = mean_n (d log p(example_n) / d params)^2.

    Per-example gradients come from `vmap(grad(log_likelihood_fn))` over batches
    of `batch_size` examples inside a `lax.scan`; the last batch is padded and
    the padding is given zero weight.

    Args:
        log_likelihood_fn: (params, example) -> scalar log-likelihood of one
            unbatched example, e.g. from `categorical_log_likelihood`.
        params: the model's parameter tree.
        examples: a pytree of arrays with a leading example axis [N, ...].
        batch_size: examples per vmapped batch; memory grows with batch_size gradients.

    Returns:
        A tree shaped like `params` with the Fisher diagonal (float, >= 0).
    """
    checks.check_parameter_trees([params], ["params"])
    example_leaves = jax.tree.leaves(examples)
    if not example_leaves:
        raise ValueError("examples has no array leaves; pass arrays with a leading example axis.")
    num_examples = int(np.shape(example_leaves[0])[0]) if np.ndim(example_leaves[0]) else 0
    for leaf in example_leaves:
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] != num_examples:
            raise ValueError(
                f"examples leaves have leading sizes {[np.shape(x)[:1] for x in example_leaves]}; every "
                "leaf needs the same leading example axis."
            )
    if num_examples == 0:
        raise ValueError("examples is empty; the Fisher needs at least one example.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; pass a positive int.")
    batch_size = min(batch_size, num_examples)
    return _diagonal_fisher(log_likelihood_fn, params, examples, batch_size, num_examples)


@functools.partial(jax.jit, static_argnames=("normalize",))
def _fisher_merge(models, fishers, scaling, normalize: bool, min_fisher) -> PyTree:
    if normalize:
        norms = jnp.stack([
            jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(fisher)))
            for fisher in fishers
        ])
        inverse_norms = 1.0 / (norms + min_fisher)
        scaling = scaling * inverse_norms / jnp.sum(inverse_norms)

    def merge_leaf(*leaves):
        num_models = len(leaves) // 2
        params, fisher_leaves = leaves[:num_models], leaves[num_models:]
        numerator = jnp.zeros_like(params[0])
        denominator = jnp.zeros_like(params[0])
        for i in range(num_models):
            weight = scaling[i].astype(params[i].dtype) * (fisher_leaves[i] + min_fisher)
            numerator = numerator + weight * params[i]
            denominator = denominator + weight
        return numerator / denominator

    return jax.tree.map(merge_leaf, *models, *fishers)


def fisher_merging(
    finetuned: Sequence[PyTree],
    fishers: Sequence[PyTree],
    *,
    scaling_coefficients: Any = None,
    normalize: bool = True,
    min_fisher: float = 1e-6,
) -> PyTree:
    """Merge by Fisher-weighted averaging, theta* = sum_i c_i F_i theta_i / sum_i c_i F_i.

    Args:
        finetuned: T parameter trees.
        fishers: T diagonal Fisher trees shaped like the parameters (`diagonal_fisher`).
        scaling_coefficients: s_i, a [T] array; 1/T each by default.
        normalize: divide model i's weight by the L2 norm of F_i, as
            fusion-bench's `normalize_fisher_weight: true` does (see module docstring).
        min_fisher: added to every Fisher entry so that denominators stay
            positive (fusion-bench `minimal_fisher_weight`).
    """
    checks.check_models(None, finetuned)
    if len(fishers) != len(finetuned):
        raise ValueError(f"Got {len(finetuned)} models but {len(fishers)} Fisher trees; pass one per model.")
    checks.check_parameter_trees(
        [finetuned[0], *fishers], ["finetuned[0]"] + [f"fishers[{i}]" for i in range(len(fishers))]
    )
    for index, fisher in enumerate(fishers):
        for leaf in jax.tree.leaves(fisher):
            if not isinstance(leaf, jax.core.Tracer) and bool(jnp.any(leaf < 0)):
                raise ValueError(f"fishers[{index}] has negative entries; a diagonal Fisher is >= 0.")
    num_models = len(finetuned)
    if scaling_coefficients is None:
        scaling = jnp.full((num_models,), 1.0 / num_models)
    else:
        scaling = jnp.asarray(scaling_coefficients)
        if scaling.shape != (num_models,):
            raise ValueError(f"scaling_coefficients has shape {scaling.shape}; pass one value per model "
                             f"({num_models}).")
    return _fisher_merge(list(finetuned), list(fishers), scaling, normalize, min_fisher)
