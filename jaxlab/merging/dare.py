"""DARE: drop and rescale task vectors before merging (Yu et al., "Language Models are
Super Mario: Absorbing Abilities from Homologous Models as a Free Lunch", ICML 2024).

Each entry of each task vector is kept with probability 1 - p and the kept
entries are divided by 1 - p, so the expected task vector is unchanged:
tau_tilde = (m * tau) / (1 - p) with m ~ Bernoulli(1 - p). The result then goes
through Task Arithmetic or Ties-Merging, as in fusion-bench 0.2.33
(`method/dare/task_arithmetic.py`, `method/dare/ties_merging.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxlab.core import tree as tree_lib
from jaxlab.merging import checks
from jaxlab.merging import task_arithmetic
from jaxlab.merging import ties

PyTree = Any


def _check_drop_rate(drop_rate: Any, rescale: bool) -> None:
    if isinstance(drop_rate, jax.core.Tracer):
        return
    rate = float(drop_rate)
    upper_ok = rate < 1.0 if rescale else rate <= 1.0
    if not (0.0 <= rate and upper_ok):
        allowed = "[0, 1)" if rescale else "[0, 1]"
        raise ValueError(
            f"drop_rate={rate} is invalid; pass the probability of dropping an entry, in {allowed} "
            "(rescaling divides by 1 - drop_rate)."
        )


def dare_masks(key: jax.Array, template: PyTree, num_tasks: int, drop_rate: Any) -> list[PyTree]:
    """Draw one keep-mask tree per task; an entry is kept (True) with probability 1 - drop_rate.

    Args:
        key: a PRNG key. Task t, leaf l (in leaf order) uses fold_in(fold_in(key, t), l).
        template: a parameter tree giving the leaf shapes.
        num_tasks: the number of masks to draw.
        drop_rate: p, the probability of dropping an entry.

    Returns:
        `num_tasks` trees of boolean arrays shaped like `template`.
    """
    _check_drop_rate(drop_rate, rescale=False)
    leaves, treedef = jax.tree.flatten(template)
    masks = []
    for task in range(num_tasks):
        task_key = jax.random.fold_in(key, task)
        # fusion-bench keeps an entry when a uniform draw is > p.
        mask_leaves = [
            jax.random.uniform(jax.random.fold_in(task_key, index), jnp.shape(leaf)) > drop_rate
            for index, leaf in enumerate(leaves)
        ]
        masks.append(jax.tree.unflatten(treedef, mask_leaves))
    return masks


def _include_flags(template: PyTree, include: str | Sequence[str] | None) -> list[bool]:
    if include is None:
        return [True] * len(jax.tree.leaves(template))
    return jax.tree.leaves(tree_lib.tree_path_mask(template, include))


def _check_masks(masks: Sequence[PyTree], template: PyTree, num_tasks: int) -> None:
    if len(masks) != num_tasks:
        raise ValueError(f"Got {len(masks)} masks for {num_tasks} task vectors; pass one mask tree per task.")
    reference_items = tree_lib.tree_flatten_with_paths(template)[0]
    for index, mask in enumerate(masks):
        mask_items = dict(tree_lib.tree_flatten_with_paths(mask)[0])
        for path, leaf in reference_items:
            if path not in mask_items:
                raise ValueError(f"Parameter '{path}' has no entry in masks[{index}]; pass a full mask tree.")
            mask_leaf = mask_items[path]
            if jnp.shape(mask_leaf) != jnp.shape(leaf) or jnp.result_type(mask_leaf) != jnp.bool_:
                raise ValueError(
                    f"masks[{index}] at '{path}' has shape {jnp.shape(mask_leaf)} and dtype "
                    f"{jnp.result_type(mask_leaf)}; expected a boolean array of shape {jnp.shape(leaf)}."
                )
        if len(mask_items) != len(reference_items):
            raise ValueError(f"masks[{index}] has {len(mask_items)} leaves but the parameters have "
                             f"{len(reference_items)}; pass a mask tree with the parameters' structure.")


@functools.partial(jax.jit, static_argnames=("include_flags", "rescale"))
def _drop(vectors: list[PyTree], masks: list[PyTree], drop_rate: Any, include_flags: tuple[bool, ...],
          rescale: bool) -> list[PyTree]:
    dropped = []
    for vector, mask in zip(vectors, masks):
        leaves, treedef = jax.tree.flatten(vector)
        mask_leaves = jax.tree.leaves(mask)
        new_leaves = []
        for leaf, keep, included in zip(leaves, mask_leaves, include_flags):
            if not included:
                new_leaves.append(leaf)
                continue
            kept = jnp.where(keep, leaf, jnp.zeros_like(leaf))
            if rescale:
                kept = kept / (1 - jnp.asarray(drop_rate, leaf.dtype))
            new_leaves.append(kept)
        dropped.append(jax.tree.unflatten(treedef, new_leaves))
    return dropped


def dare_drop(
    vectors: Sequence[PyTree],
    masks: Sequence[PyTree],
    drop_rate: Any,
    *,
    rescale: bool = True,
    include: str | Sequence[str] | None = None,
) -> list[PyTree]:
    """Apply keep-masks to task vectors and rescale the kept entries by 1 / (1 - drop_rate).

    Args:
        vectors: T task vectors.
        masks: T boolean trees shaped like the vectors, True where an entry is kept
            (from `dare_masks` or given).
        drop_rate: p, used for the rescaling.
        rescale: divide kept entries by 1 - p (fusion-bench `rescale: true`).
        include: regular expressions on leaf paths; only matching leaves are
            dropped and rescaled, the others pass unchanged (fusion-bench's
            `only_on_linear_weights` is include=r"kernel$" for flax Dense layers).
            None means every leaf.
    """
    _check_drop_rate(drop_rate, rescale)
    checks.check_models(None, vectors)
    _check_masks(masks, vectors[0], len(vectors))
    flags = tuple(_include_flags(vectors[0], include))
    return _drop(list(vectors), list(masks), drop_rate, flags, rescale)


def _checked_masks(pretrained, finetuned, key, masks, drop_rate, rescale):
    """Check the models and DARE arguments; return the given masks or draw them from `key`."""
    if (key is None) == (masks is None):
        raise ValueError("Pass exactly one of key (to draw DARE masks) and masks (to use given ones).")
    _check_drop_rate(drop_rate, rescale)
    checks.check_models(pretrained, finetuned)
    if masks is None:
        masks = dare_masks(key, pretrained, len(finetuned), drop_rate)
    return masks


def _dropped_task_vectors(pretrained, finetuned, key, masks, drop_rate, rescale, include):
    masks = _checked_masks(pretrained, finetuned, key, masks, drop_rate, rescale)
    vectors = task_arithmetic._subtract_each(list(finetuned), pretrained)
    return dare_drop(vectors, masks, drop_rate, rescale=rescale, include=include)


def dare_task_arithmetic(
    pretrained: PyTree,
    finetuned: Sequence[PyTree],
    *,
    key: jax.Array | None = None,
    masks: Sequence[PyTree] | None = None,
    drop_rate: Any = 0.5,
    scaling: Any = 0.3,
    rescale: bool = True,
    include: str | Sequence[str] | None = None,
) -> PyTree:
    """Merge by Task Arithmetic on DARE task vectors, theta_0 + lambda * sum_i tau_tilde_i.

    Defaults are fusion-bench's `dare/task_arithmetic.yaml` (p 0.5, lambda 0.3,
    rescale). Pass either `key` (masks drawn by `dare_masks`) or `masks`.
    """
    masks = _checked_masks(pretrained, finetuned, key, masks, drop_rate, rescale)
    _check_masks(masks, pretrained, len(finetuned))
    coefficients = task_arithmetic._as_weights(scaling, len(finetuned), "scaling")
    flags = tuple(_include_flags(pretrained, include))
    return _dare_task_arithmetic_jit(pretrained, list(finetuned), list(masks), drop_rate, coefficients, flags, rescale)


@functools.partial(jax.jit, static_argnames=("include_flags", "rescale"))
def _dare_task_arithmetic_jit(pretrained, finetuned, masks, drop_rate, coefficients, include_flags, rescale):
    """Fuse the subtraction, dropping and weighted sum, so no task vector is stored.

    The masks are drawn before, outside this function: drawing them inside made XLA's
    compile time grow past minutes for 8 x 200 leaves.
    """
    base_leaves, treedef = jax.tree.flatten(pretrained)
    model_leaves = [jax.tree.leaves(model) for model in finetuned]
    mask_leaves = [jax.tree.leaves(mask) for mask in masks]
    merged = []
    for index, (base, included) in enumerate(zip(base_leaves, include_flags)):
        total = jnp.zeros_like(base)
        for task, leaves in enumerate(model_leaves):
            tau = leaves[index] - base
            if included:
                keep = mask_leaves[task][index]
                tau = jnp.where(keep, tau, jnp.zeros_like(tau))
                if rescale:
                    tau = tau / (1 - jnp.asarray(drop_rate, tau.dtype))
            total = total + coefficients[task].astype(tau.dtype) * tau
        merged.append(base + total)
    return jax.tree.unflatten(treedef, merged)


def dare_ties_merging(
    pretrained: PyTree,
    finetuned: Sequence[PyTree],
    *,
    key: jax.Array | None = None,
    masks: Sequence[PyTree] | None = None,
    drop_rate: Any = 0.5,
    scaling: Any = 0.5,
    keep_fraction: float = 0.2,
    merge: str = "sum",
    rescale: bool = True,
    include: str | Sequence[str] | None = None,
) -> PyTree:
    """Merge by Ties-Merging on DARE task vectors.

    Defaults are fusion-bench's `dare/ties_merging.yaml` (p 0.5, lambda 0.5,
    threshold 20 %, merge "sum", rescale). Pass either `key` or `masks`.
    """
    # NOTE: unlike dare_task_arithmetic, this stores the T dropped task vectors and the masks
    # (about 1.25 models per expert in float32) before Ties runs.
    vectors = _dropped_task_vectors(pretrained, finetuned, key, masks, drop_rate, rescale, include)
    merged_vector = ties.ties_merge_task_vectors(vectors, keep_fraction, merge)
    return ties.add_scaled_jit(pretrained, merged_vector, jnp.asarray(scaling))
