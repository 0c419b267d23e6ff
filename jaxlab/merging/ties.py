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
   fusion-bench's default, which also accepts the spelling "dis-sum") or the largest
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


class _TaskVectorLeaves:
    """Task vector leaves tau[t][l] computed where they are used, never stored.

    Inside `jax.jit`, XLA fuses each `tau(t, l)` (a subtraction, or nothing when
    the inputs already are task vectors) into the reduction or elementwise
    kernel that reads it. Ties then keeps no copy of the T task vectors besides
    its inputs, which matters at 8 x 88M parameters.
    """

    def __init__(self, models: Sequence[PyTree], pretrained: PyTree | None):
        self.treedef = jax.tree.structure(models[0])
        self.model_leaves = [jax.tree.leaves(model) for model in models]
        self.base_leaves = None if pretrained is None else jax.tree.leaves(pretrained)
        self.num_tasks = len(models)
        self.num_leaves = len(self.model_leaves[0])

    def tau(self, task: int, leaf: int, one: jax.Array | None = None) -> jax.Array:
        """Return tau[task][leaf]. Multiplying by `one`, an exact 1, makes it depend on a loop variable."""
        value = self.model_leaves[task][leaf]
        if one is not None:
            value = value * one.astype(value.dtype)
        return value if self.base_leaves is None else value - self.base_leaves[leaf]

    def unflatten(self, leaves: list[jax.Array]) -> PyTree:
        return jax.tree.unflatten(self.treedef, leaves)


def _magnitude_thresholds(vectors: _TaskVectorLeaves, keep_fraction: float) -> jax.Array:
    """Return, per task, the k-th smallest |tau| over all leaves, k = d - int(d * keep_fraction).

    Returns:
        [T] thresholds in the widest floating dtype of the leaves; 0 when k = 0.
    """
    leaves = vectors.model_leaves[0]
    num_entries = sum(int(np.size(leaf)) for leaf in leaves)
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

    def magnitude_bits(task: int, leaf: int, one: jax.Array) -> jax.Array:
        tau = vectors.tau(task, leaf, one).astype(dtype)
        return lax.bitcast_convert_type(jnp.abs(tau), bits_dtype)

    def count_at_most(bounds: jax.Array) -> jax.Array:
        # bounds <= bits(inf) < the all-ones pattern, so every entry of `ones` is exactly 1.
        # Because `ones` depends on the loop state, XLA cannot hoist |tau| out of the loop
        # into T task-vector-sized buffers.
        ones = (bounds != jnp.array(jnp.iinfo(bits_dtype).max, bits_dtype)).astype(dtype)
        counts = []
        for task in range(vectors.num_tasks):
            per_leaf = [jnp.sum(magnitude_bits(task, leaf, ones[task]) <= bounds[task], dtype=count_dtype)
                        for leaf in range(vectors.num_leaves)]
            counts.append(functools.reduce(jnp.add, per_leaf))
        return jnp.stack(counts)

    def bisect(_, interval):
        low, high = interval
        middle = low + (high - low) // 2
        enough = count_at_most(middle) >= rank
        return jnp.where(enough, low, middle + 1), jnp.where(enough, middle, high)

    # The k-th smallest is the smallest bit pattern b with #{|tau| <= b} >= k. The
    # interval [0, bits(inf)] halves each iteration, so one iteration per bit suffices.
    infinity_bits = lax.bitcast_convert_type(jnp.array(jnp.inf, dtype), bits_dtype)
    low = jnp.zeros((vectors.num_tasks,), bits_dtype)
    high = jnp.full((vectors.num_tasks,), infinity_bits, bits_dtype)
    num_iterations = 8 * jnp.dtype(bits_dtype).itemsize
    low, _ = lax.fori_loop(0, num_iterations, bisect, (low, high))
    return lax.bitcast_convert_type(low, dtype)


class _Trimmed:
    """Trimmed task vector leaves, recomputed from the task vectors on each use."""

    def __init__(self, vectors: _TaskVectorLeaves, thresholds: jax.Array | None):
        self.vectors = vectors
        self.thresholds = thresholds

    def leaf(self, task: int, leaf: int) -> jax.Array:
        tau = self.vectors.tau(task, leaf)
        if self.thresholds is None:
            return tau
        keep = jnp.abs(tau.astype(self.thresholds.dtype)) >= self.thresholds[task]
        return jnp.where(keep, tau, jnp.zeros_like(tau))


def _elect_sign(trimmed: _Trimmed) -> list[jax.Array]:
    num_tasks = trimmed.vectors.num_tasks
    signs = [
        jnp.sign(functools.reduce(jnp.add, [trimmed.leaf(task, leaf) for task in range(num_tasks)]))
        for leaf in range(trimmed.vectors.num_leaves)
    ]
    # Zero sums take the majority sign of the whole flattened vector, as fusion-bench does.
    majority = jnp.sign(functools.reduce(jnp.add, [jnp.sum(sign) for sign in signs]))
    return [jnp.where(sign == 0, majority.astype(sign.dtype), sign) for sign in signs]


def _agreeing(trimmed: _Trimmed, signs: list[jax.Array], task: int, leaf: int) -> jax.Array:
    value = trimmed.leaf(task, leaf)
    agrees = jnp.where(signs[leaf] > 0, value > 0, value < 0)
    return jnp.where(agrees, value, jnp.zeros_like(value))


def _disjoint_merge(trimmed: _Trimmed, signs: list[jax.Array], merge: str) -> list[jax.Array]:
    merged = []
    for leaf in range(trimmed.vectors.num_leaves):
        selected = [_agreeing(trimmed, signs, task, leaf) for task in range(trimmed.vectors.num_tasks)]
        if merge == "sum":
            merged.append(functools.reduce(jnp.add, selected))
        elif merge == "mean":
            count = functools.reduce(jnp.add, [(value != 0).astype(value.dtype) for value in selected])
            merged.append(functools.reduce(jnp.add, selected) / jnp.maximum(count, 1))
        else:
            largest = functools.reduce(jnp.maximum, [jnp.abs(value) for value in selected])
            merged.append(largest * signs[leaf])
    return merged


def _trimmed(models: list[PyTree], pretrained: PyTree | None, keep_fraction: float) -> _Trimmed:
    vectors = _TaskVectorLeaves(models, pretrained)
    return _Trimmed(vectors, _magnitude_thresholds(vectors, keep_fraction))


@functools.partial(jax.jit, static_argnames=("keep_fraction",))
def _trim_jit(vectors: list[PyTree], keep_fraction: float) -> list[PyTree]:
    trimmed = _trimmed(vectors, None, keep_fraction)
    return [trimmed.vectors.unflatten([trimmed.leaf(task, leaf) for leaf in range(trimmed.vectors.num_leaves)])
            for task in range(trimmed.vectors.num_tasks)]


@jax.jit
def _elect_sign_jit(trimmed_vectors: list[PyTree]) -> PyTree:
    trimmed = _Trimmed(_TaskVectorLeaves(trimmed_vectors, None), None)
    return trimmed.vectors.unflatten(_elect_sign(trimmed))


@functools.partial(jax.jit, static_argnames=("merge",))
def _disjoint_merge_jit(trimmed_vectors: list[PyTree], signs: PyTree, merge: str) -> PyTree:
    trimmed = _Trimmed(_TaskVectorLeaves(trimmed_vectors, None), None)
    return trimmed.vectors.unflatten(_disjoint_merge(trimmed, jax.tree.leaves(signs), merge))


@functools.partial(jax.jit, static_argnames=("keep_fraction", "merge"))
def _ties_task_vector(vectors: list[PyTree], keep_fraction: float, merge: str) -> PyTree:
    trimmed = _trimmed(vectors, None, keep_fraction)
    return trimmed.vectors.unflatten(_disjoint_merge(trimmed, _elect_sign(trimmed), merge))


@functools.partial(jax.jit, static_argnames=("keep_fraction",))
def _selected_jit(vectors: list[PyTree], keep_fraction: float) -> list[PyTree]:
    trimmed = _trimmed(vectors, None, keep_fraction)
    signs = _elect_sign(trimmed)
    leaves = range(trimmed.vectors.num_leaves)
    return [trimmed.vectors.unflatten([_agreeing(trimmed, signs, task, leaf) for leaf in leaves])
            for task in range(trimmed.vectors.num_tasks)]


def ties_trim(vectors: Sequence[PyTree], keep_fraction: float = 0.2) -> list[PyTree]:
    """Zero all but the top `keep_fraction` magnitudes of each task vector (step 1).

    The top fraction is taken over each task vector flattened across all its
    leaves, not per leaf. The module docstring gives the exact tie rule.
    """
    checks.check_models(None, vectors)
    return _trim_jit(list(vectors), _check_keep_fraction(keep_fraction))


def ties_elect_sign(trimmed: Sequence[PyTree]) -> PyTree:
    """Return the elected sign gamma (+1 or -1 per entry; 0 only where every sum is 0) (step 2)."""
    checks.check_models(None, trimmed)
    return _elect_sign_jit(list(trimmed))


def ties_disjoint_merge(trimmed: Sequence[PyTree], signs: PyTree, merge: str = "mean") -> PyTree:
    """Aggregate the entries of the trimmed task vectors that agree with `signs` (step 3)."""
    _check_merge(merge)
    checks.check_models(signs, trimmed)
    return _disjoint_merge_jit(list(trimmed), signs, merge)


def ties_selected_task_vectors(vectors: Sequence[PyTree], keep_fraction: float = 0.2) -> list[PyTree]:
    """Return each task vector trimmed and restricted to entries that agree with the elected sign.

    Summing the result over tasks gives the "sum" Ties merge. AdaMerging++
    learns coefficients for these vectors. fusion-bench's `ties_merging_split`
    returns the same selected entries.
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
    trimmed = _trimmed(finetuned, pretrained, keep_fraction)
    merged_vector = trimmed.vectors.unflatten(_disjoint_merge(trimmed, _elect_sign(trimmed), merge))
    return add_scaled(pretrained, merged_vector, scaling)
