"""Task vectors, weight averaging and Task Arithmetic against NumPy on the flattened leaves."""

import jax
import numpy as np
import pytest

from jaxlab import merging

from tests.merging.conftest import flatten


def test_task_vectors_are_differences(models):
    pretrained, finetuned = models
    vectors = merging.task_vectors(pretrained, finetuned)
    for vector, model in zip(vectors, finetuned):
        np.testing.assert_allclose(flatten(vector), flatten(model) - flatten(pretrained), atol=1e-6)


def test_apply_task_vectors_inverts(models):
    pretrained, finetuned = models
    restored = merging.apply_task_vectors(pretrained, merging.task_vectors(pretrained, finetuned))
    for model, original in zip(restored, finetuned):
        np.testing.assert_allclose(flatten(model), flatten(original), atol=1e-6)


def test_weight_average_is_mean(models):
    _, finetuned = models
    expected = np.mean([flatten(model) for model in finetuned], axis=0)
    np.testing.assert_allclose(flatten(merging.weight_average(finetuned)), expected, atol=1e-6)


def test_weight_average_custom_weights(models):
    _, finetuned = models
    weights = np.array([0.5, 0.3, 0.2])
    expected = sum(w * flatten(model) for w, model in zip(weights, finetuned))
    np.testing.assert_allclose(flatten(merging.weight_average(finetuned, weights)), expected, atol=1e-6)


@pytest.mark.parametrize("scaling", [0.3, 1.0, np.array([0.1, 0.2, 0.7])])
def test_task_arithmetic_formula(models, scaling):
    pretrained, finetuned = models
    base = flatten(pretrained)
    coefficients = np.broadcast_to(scaling, (3,))
    expected = base + sum(c * (flatten(model) - base) for c, model in zip(coefficients, finetuned))
    merged = merging.task_arithmetic(pretrained, finetuned, scaling)
    np.testing.assert_allclose(flatten(merged), expected, atol=1e-5)


def test_task_arithmetic_at_one_over_t_is_average(models):
    pretrained, finetuned = models
    merged = merging.task_arithmetic(pretrained, finetuned, 1 / 3)
    np.testing.assert_allclose(flatten(merged), flatten(merging.weight_average(finetuned)), atol=1e-5)


def test_scaling_shape_checked(models):
    pretrained, finetuned = models
    with pytest.raises(ValueError, match="scaling has shape \\(2,\\), but there are 3 models"):
        merging.task_arithmetic(pretrained, finetuned, np.array([0.1, 0.2]))


def test_task_arithmetic_jits_with_traced_scaling(models):
    pretrained, finetuned = models
    merged = jax.jit(merging.task_arithmetic)(pretrained, finetuned, 0.4)
    np.testing.assert_allclose(flatten(merged), flatten(merging.task_arithmetic(pretrained, finetuned, 0.4)),
                               atol=1e-6)
