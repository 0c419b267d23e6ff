"""Ties-Merging on hand-computed examples and against a NumPy implementation of fusion-bench's rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import merging

from tests.merging.conftest import flatten


def _numpy_ties(vectors: np.ndarray, keep_fraction: float, merge: str) -> np.ndarray:
    """Ties on [T, d] flattened task vectors, written from the rule in fusion-bench 0.2.33's docs and code."""
    num_tasks, d = vectors.shape
    rank = d - int(d * keep_fraction)
    trimmed = np.zeros_like(vectors)
    for t in range(num_tasks):
        magnitudes = np.abs(vectors[t])
        threshold = np.sort(magnitudes)[rank - 1] if rank > 0 else 0.0
        trimmed[t] = np.where(magnitudes >= threshold, vectors[t], 0.0)
    sign = np.sign(trimmed.sum(axis=0))
    sign[sign == 0] = np.sign(sign.sum())
    agree = np.where(sign > 0, trimmed > 0, trimmed < 0)
    selected = np.where(agree, trimmed, 0.0)
    if merge == "sum":
        return selected.sum(axis=0)
    if merge == "mean":
        return selected.sum(axis=0) / np.maximum((selected != 0).sum(axis=0), 1)
    return np.abs(selected).max(axis=0) * sign


def test_hand_computed_example():
    # Two tasks, d = 5, keep_fraction 0.4: rank = 5 - 2 = 3, so each keeps the 3 largest magnitudes.
    tau_1 = {"w": jnp.array([4.0, -1.0, 0.5, -3.0, 2.0])}
    tau_2 = {"w": jnp.array([-2.0, 3.0, 0.1, -5.0, 0.2])}
    trimmed = merging.ties_trim([tau_1, tau_2], keep_fraction=0.4)
    np.testing.assert_array_equal(trimmed[0]["w"], [4.0, 0.0, 0.0, -3.0, 2.0])
    np.testing.assert_array_equal(trimmed[1]["w"], [-2.0, 3.0, 0.0, -5.0, 0.0])
    # Sums: [2, 3, 0, -8, 2]; the zero takes the majority sign of [1, 1, 0, -1, 1], which is +1.
    signs = merging.ties_elect_sign(trimmed)
    np.testing.assert_array_equal(signs["w"], [1.0, 1.0, 1.0, -1.0, 1.0])
    mean = merging.ties_disjoint_merge(trimmed, signs, "mean")
    np.testing.assert_allclose(mean["w"], [4.0, 3.0, 0.0, -4.0, 2.0])
    total = merging.ties_merge_task_vectors([tau_1, tau_2], keep_fraction=0.4, merge="sum")
    np.testing.assert_allclose(total["w"], [4.0, 3.0, 0.0, -8.0, 2.0])
    largest = merging.ties_merge_task_vectors([tau_1, tau_2], keep_fraction=0.4, merge="max")
    np.testing.assert_allclose(largest["w"], [4.0, 3.0, 0.0, -5.0, 2.0])


def test_trim_spans_all_leaves():
    # The threshold is global over the task vector: the small leaf 'b' loses everything.
    tau = {"a": jnp.array([10.0, -9.0, 8.0]), "b": jnp.array([0.1, -0.2])}
    trimmed = merging.ties_trim([tau], keep_fraction=0.4)
    np.testing.assert_array_equal(trimmed[0]["a"], [10.0, -9.0, 8.0])
    np.testing.assert_array_equal(trimmed[0]["b"], [0.0, 0.0])


def test_trim_keeps_ties():
    tau = {"w": jnp.array([1.0, 1.0, 1.0, 1.0])}
    np.testing.assert_array_equal(merging.ties_trim([tau], keep_fraction=0.25)[0]["w"], [1.0, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("merge", ["sum", "mean", "max"])
@pytest.mark.parametrize("keep_fraction", [0.2, 0.5, 1.0])
def test_matches_numpy(models, merge, keep_fraction):
    pretrained, finetuned = models
    vectors = merging.task_vectors(pretrained, finetuned)
    expected = _numpy_ties(np.stack([flatten(v) for v in vectors]), keep_fraction, merge)
    merged = merging.ties_merging(pretrained, finetuned, scaling=0.3, keep_fraction=keep_fraction, merge=merge)
    np.testing.assert_allclose(flatten(merged), flatten(pretrained) + 0.3 * expected, atol=1e-5)


def test_selected_vectors_sum_to_merge(models):
    pretrained, finetuned = models
    vectors = merging.task_vectors(pretrained, finetuned)
    selected = merging.ties_selected_task_vectors(vectors, keep_fraction=0.3)
    merged = merging.ties_merge_task_vectors(vectors, keep_fraction=0.3, merge="sum")
    np.testing.assert_allclose(sum(flatten(s) for s in selected), flatten(merged), atol=1e-6)


def test_bfloat16_threshold():
    # d = 4 and keep 0.5 give rank 2: every |tau| >= the 2nd smallest (0.5) stays.
    tau = {"w": jnp.array([0.5, -2.0, 1.0, 0.25], jnp.bfloat16)}
    np.testing.assert_array_equal(np.asarray(merging.ties_trim([tau], 0.5)[0]["w"], np.float32),
                                  [0.5, -2.0, 1.0, 0.0])


def test_jit(models):
    pretrained, finetuned = models
    merged = jax.jit(merging.ties_merging, static_argnames=("keep_fraction", "merge"))(
        pretrained, finetuned, keep_fraction=0.2, merge="mean")
    np.testing.assert_allclose(flatten(merged),
                               flatten(merging.ties_merging(pretrained, finetuned, merge="mean")), atol=1e-6)


@pytest.mark.parametrize("keep_fraction", [0.0, 1.5, 20])
def test_invalid_keep_fraction(models, keep_fraction):
    pretrained, finetuned = models
    with pytest.raises(ValueError, match="keep_fraction"):
        merging.ties_merging(pretrained, finetuned, keep_fraction=keep_fraction)


def test_invalid_merge(models):
    pretrained, finetuned = models
    with pytest.raises(ValueError, match="merge='median' is invalid"):
        merging.ties_merging(pretrained, finetuned, merge="median")
