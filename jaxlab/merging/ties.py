"""Ties-Merging: trim, elect sign, disjoint merge (Yadav et al., NeurIPS 2023).

The steps follow fusion-bench 0.2.33 (`method/ties_merging/ties_merging_utils.py`):

1. Trim: each task vector, flattened over all its leaves, keeps the entries
   whose magnitude is at least its k-th smallest magnitude, with
   k = d - int(d * keep_fraction) for d entries. This keeps int(d * keep_fraction) + 1
   entries when magnitudes are distinct, and every tied entry.
2. Elect: gamma = sign(sum_i trimmed_i) per entry. Entries where that sum is 0
   take the majority sign, sign(sum of gamma over all entries of the tree).
3. Disjoint merge over the entries whose sign agrees with gamma: their mean
   ("mean", the paper's rule, zeros not counted), their sum ("sum",
   fusion-bench's default and the AdaMerging code's "dis-sum") or the largest
   magnitude with sign gamma ("max").

The magnitude threshold is found by bisection on the bit patterns of |tau|
(non-negative floats sort like their unsigned-integer bits), which needs one
pass over the task vectors per bit instead of a sort.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlab.merging import checks

PyTree = Any
MERGE_FUNCTIONS = ("mean", "sum", "max")

_UNSIGNED_OF_WIDTH = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}


def _check_keep_fraction(keep_fraction: float) -> float:
    if not isinstance(keep_fraction, (int, float)) or not 0.0 < keep_fraction <= 1.0:
        raise ValueError(
            f"keep_fraction={keep_fraction!r} is invalid; pass the fraction of entries to keep, "
            "in (0, 1]. fusion-bench's `threshold: 20` (percent) is keep_fraction=0.2."
        )
    return float(keep_fraction)


def _check_merge(merge: str) -> None:
    if merge not in MERGE_FUNCTIONS:
        raise ValueError(f"merge={merge!r} is invalid; use one of {MERGE_FUNCTIONS}.")


def _stack(vectors: Sequence[PyTree]) -> PyTree:
    """Stack T trees into one tree whose leaves have a leading task axis of size T."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *vectors)


def _unstack(stacked: PyTree, num_tasks: int) -> list[PyTree]:
    return [jax.tree.map(lambda leaf, i=i: leaf[i], stacked) for i in range(num_tasks)]


def _magnitude_thresholds(stacked: PyTree, keep_fraction: float) -> jax.Array:
    """Return, per task, the k-th smallest |tau| over all leaves, k = d - int(d * keep_fraction).

    Args:
        stacked: task vectors with a leading task axis [T, ...] on every leaf.
        keep_fraction: the fraction of entries to keep, a Python float.

    Returns:
        [T] thresholds in the widest floating dtype of the leaves; 0 when k = 0.
    """
    leaves = jax.tree.leaves(stacked)
    num_tasks = leaves[0].shape[0]
    num_entries = sum(int(np.prod(leaf.shape[1:])) for leaf in leaves)
    rank = num_entries - int(num_entries * keep_fraction)
    count_dtype = jnp.int64 if jax.config.jax_enable_x64 else jnp.int32
    if num_entries >= np.iinfo(count_dtype).max:
        raise ValueError(
            f"Ties trimming counts {num_entries} entries per task, more than {count_dtype.__name__} "
            "holds. Enable 64-bit mode with jax.config.update('jax_enable_x64', True)."
        )

    # Compare |tau| in the widest float dtype, so that mixed-precision trees share one threshold.
    dtype = jnp.result_type(*leaves)
    bits_dtype = _UNSIGNED_OF_WIDTH[jnp.dtype(dtype).itemsize]
    magnitude_bits = [
        lax.bitcast_convert_type(jnp.abs(leaf.astype(dtype)).reshape(num_tasks, -1), bits_dtype)
        for leaf in leaves
    ]
    infinity_bits = lax.bitcast_convert_type(jnp.array(jnp.inf, dtype), bits_dtype)

    def count_at_most(bound: jax.Array) -> jax.Array:
        counts = [jnp.sum(bits <= bound[:, None], axis=1, dtype=count_dtype) for bits in magnitude_bits]
        return functools.reduce(jnp.add, counts)

    def bisect(_, interval):
        low, high = interval
        middle = low + (high - low) // 2
        enough = count_at_most(middle) >= rank
        return jnp.where(enough, low, middle + 1), jnp.where(enough, middle, high)

    # The k-th smallest is the smallest bit pattern b with #{|tau| <= b} >= k. The
    # interval [0, bits(inf)] halves each iteration, so one iteration per bit suffices.
    low = jnp.zeros((num_tasks,), bits_dtype)
    high = jnp.full((num_tasks,), infinity_bits, bits_dtype)
    num_iterations = 8 * jnp.dtype(bits_dtype).itemsize
    low, _ = lax.fori_loop(0, num_iterations, bisect, (low, high))
    return lax.bitcast_convert_type(low, dtype)


def _trim(stacked: PyTree, keep_fraction: float) -> PyTree:
    thresholds = _magnitude_thresholds(stacked, keep_fraction)

    def trim_leaf(leaf: jax.Array) -> jax.Array:
        threshold = thresholds.reshape((-1,) + (1,) * (leaf.ndim - 1))
        keep = jnp.abs(leaf.astype(thresholds.dtype)) >= threshold
        return jnp.where(keep, leaf, jnp.zeros_like(leaf))

    return jax.tree.map(trim_leaf, stacked)


def _elect_sign(stacked_trimmed: PyTree) -> PyTree:
    signs = jax.tree.map(lambda leaf: jnp.sign(jnp.sum(leaf, axis=0)), stacked_trimmed)
    # Zero sums take the majority sign of the whole flattened vector, as fusion-bench does.
    sign_total = functools.reduce(jnp.add, [jnp.sum(sign) for sign in jax.tree.leaves(signs)])
    majority = jnp.sign(sign_total)
    return jax.tree.map(lambda sign: jnp.where(sign == 0, majority.astype(sign.dtype), sign), signs)


def _agreeing_entries(stacked_trimmed: PyTree, signs: PyTree) -> PyTree:
    def select(leaf: jax.Array, sign: jax.Array) -> jax.Array:
        agrees = jnp.where(sign[None] > 0, leaf > 0, leaf < 0)
        return jnp.where(agrees, leaf, jnp.zeros_like(leaf))

    return jax.tree.map(select, stacked_trimmed, signs)


def _disjoint_merge(stacked_trimmed: PyTree, signs: PyTree, merge: str) -> PyTree:
    selected = _agreeing_entries(stacked_trimmed, signs)

    def aggregate(leaf: jax.Array, sign: jax.Array) -> jax.Array:
        if merge == "sum":
            return jnp.sum(leaf, axis=0)
        if merge == "mean":
            count = jnp.sum(leaf != 0, axis=0).astype(leaf.dtype)
            return jnp.sum(leaf, axis=0) / jnp.maximum(count, 1)
        return jnp.max(jnp.abs(leaf), axis=0) * sign

    return jax.tree.map(aggregate, selected, signs)


@functools.partial(jax.jit, static_argnames=("keep_fraction",))
def _trim_jit(vectors: list[PyTree], keep_fraction: float) -> list[PyTree]:
    return _unstack(_trim(_stack(vectors), keep_fraction), len(vectors))


@functools.partial(jax.jit, static_argnames=("keep_fraction", "merge"))
def _ties_task_vector(vectors: list[PyTree], keep_fraction: float, merge: str) -> PyTree:
    trimmed = _trim(_stack(vectors), keep_fraction)
    return _disjoint_merge(trimmed, _elect_sign(trimmed), merge)


@functools.partial(jax.jit, static_argnames=("keep_fraction",))
def _selected_jit(vectors: list[PyTree], keep_fraction: float) -> list[PyTree]:
    trimmed = _trim(_stack(vectors), keep_fraction)
    return _unstack(_agreeing_entries(trimmed, _elect_sign(trimmed)), len(vectors))


def ties_trim(vectors: Sequence[PyTree], keep_fraction: float = 0.2) -> list[PyTree]:
    """Zero all but the top `keep_fraction` magnitudes of each task vector (step 1).

    The top fraction is taken over each task vector flattened across all its
    leaves, not per leaf; see the module docstring for the exact tie rule.
    """
    checks.check_models(None, vectors)
    return _trim_jit(list(vectors), _check_keep_fraction(keep_fraction))


def ties_elect_sign(trimmed: Sequence[PyTree]) -> PyTree:
    """Return the elected sign gamma (+1 or -1 per entry; 0 only where every sum is 0) (step 2)."""
    checks.check_models(None, trimmed)
    return jax.jit(_elect_sign)(_stack(trimmed))


def ties_disjoint_merge(trimmed: Sequence[PyTree], signs: PyTree, merge: str = "mean") -> PyTree:
    """Aggregate the entries of the trimmed task vectors that agree with `signs` (step 3)."""
    _check_merge(merge)
    checks.check_models(signs, trimmed)
    return jax.jit(_disjoint_merge, static_argnums=2)(_stack(trimmed), signs, merge)


def ties_selected_task_vectors(vectors: Sequence[PyTree], keep_fraction: float = 0.2) -> list[PyTree]:
    """Return each task vector trimmed and restricted to entries that agree with the elected sign.

    Summing the result over tasks gives the "sum" Ties merge. AdaMerging++
    learns coefficients for these vectors (the AdaMerging reference code's
    `ties_merging_split`).
    """
    checks.check_models(None, vectors)
    return _selected_jit(list(vectors), _check_keep_fraction(keep_fraction))


def ties_merge_task_vectors(
    vectors: Sequence[PyTree], keep_fraction: float = 0.2, merge: str = "sum"
) -> PyTree:
    """Return the merged task vector of Ties-Merging (trim, elect, disjoint merge)."""
    _check_merge(merge)
    checks.check_models(None, vectors)
    return _ties_task_vector(list(vectors), _check_keep_fraction(keep_fraction), merge)


def ties_merging(
    pretrained: PyTree,
    finetuned: Sequence[PyTree],
    *,
    scaling: Any = 0.3,
    keep_fraction: float = 0.2,
    merge: str = "sum",
) -> PyTree:
    """Merge by Ties-Merging, theta = theta_0 + lambda * ties(tau_1, ..., tau_T).

    Args:
        pretrained: the common base parameters theta_0.
        finetuned: T fine-tuned parameter trees.
        scaling: lambda (fusion-bench `scaling_factor`, 0.3 in `ties_merging.yaml`).
        keep_fraction: fraction of entries kept per task vector (fusion-bench
            `threshold: 20` means 0.2).
        merge: "sum" (fusion-bench default), "mean" (the paper's disjoint mean)
            or "max".
    """
    _check_merge(merge)
    keep_fraction = _check_keep_fraction(keep_fraction)
    checks.check_models(pretrained, finetuned)
    return _ties_merging_jit(pretrained, list(finetuned), jnp.asarray(scaling), keep_fraction, merge)


def add_scaled(pretrained: PyTree, vector: PyTree, scaling: jax.Array) -> PyTree:
    """Return pretrained + scaling * vector leaf by leaf, in each leaf's dtype."""
    return jax.tree.map(lambda base, delta: base + scaling.astype(delta.dtype) * delta, pretrained, vector)


add_scaled_jit = jax.jit(add_scaled)


@functools.partial(jax.jit, static_argnames=("keep_fraction", "merge"))
def _ties_merging_jit(
    pretrained: PyTree, finetuned: list[PyTree], scaling: jax.Array, keep_fraction: float, merge: str
) -> PyTree:
    vectors = [jax.tree.map(jnp.subtract, model, pretrained) for model in finetuned]
    trimmed = _trim(_stack(vectors), keep_fraction)
    merged_vector = _disjoint_merge(trimmed, _elect_sign(trimmed), merge)
    return add_scaled(pretrained, merged_vector, scaling)
