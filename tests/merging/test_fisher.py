"""Diagonal Fisher and Fisher merging against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import merging

from tests.merging.conftest import flatten


def _regression_data(num_examples=37, num_features=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, num_features)).astype(np.float32)
    y = rng.normal(size=num_examples).astype(np.float32)
    params = {"w": jnp.asarray(rng.normal(size=num_features), jnp.float32), "b": jnp.asarray(0.3, jnp.float32)}
    return x, y, params


def test_gaussian_regression_closed_form():
    # log p(y | x) = -(y - w.x - b)^2 / 2, so the per-example gradient is r * (x, 1) with r = y - w.x - b.
    x, y, params = _regression_data()

    def log_likelihood(p, example):
        inputs, target = example
        return -0.5 * (target - inputs @ p["w"] - p["b"]) ** 2

    fisher = merging.diagonal_fisher(log_likelihood, params, (jnp.asarray(x), jnp.asarray(y)), batch_size=8)
    residual = y - x @ np.asarray(params["w"]) - float(params["b"])
    np.testing.assert_allclose(fisher["w"], np.mean(residual[:, None] ** 2 * x ** 2, axis=0), rtol=1e-5)
    np.testing.assert_allclose(fisher["b"], np.mean(residual ** 2), rtol=1e-5)


def test_softmax_regression_empirical_fisher():
    # For logits = x W, d log softmax(logits)[y] / dW = x (onehot(y) - p)^T.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    labels = rng.integers(0, 4, size=20)
    params = {"W": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
    log_likelihood = merging.categorical_log_likelihood(lambda p, inputs: inputs @ p["W"])
    fisher = merging.diagonal_fisher(log_likelihood, params, (jnp.asarray(x), jnp.asarray(labels)), batch_size=6)
    logits = x @ np.asarray(params["W"])
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    residual = np.eye(4)[labels] - probabilities
    expected = np.mean((x[:, :, None] * residual[:, None, :]) ** 2, axis=0)
    np.testing.assert_allclose(fisher["W"], expected, rtol=1e-4, atol=1e-7)


def _numpy_fisher_merge(models, fishers, normalize, epsilon=1e-6):
    thetas = np.stack([flatten(m) for m in models])
    f = np.stack([flatten(m) for m in fishers])
    scaling = np.full(len(models), 1.0 / len(models))
    if normalize:
        inverse = 1.0 / (np.linalg.norm(f, axis=1) + epsilon)
        scaling = scaling * inverse / inverse.sum()
    weights = scaling[:, None] * (f + epsilon)
    return (weights * thetas).sum(0) / weights.sum(0)


@pytest.mark.parametrize("normalize", [True, False])
def test_merge_formula(models, normalize):
    _, finetuned = models
    rng = np.random.default_rng(2)
    fishers = [jax.tree.map(lambda x: jnp.asarray(rng.exponential(size=x.shape) * (i + 1), jnp.float32), m)
               for i, m in enumerate(finetuned)]
    merged = merging.fisher_merging(finetuned, fishers, normalize=normalize)
    np.testing.assert_allclose(flatten(merged), _numpy_fisher_merge(finetuned, fishers, normalize), rtol=1e-5)


def test_equal_fishers_give_average(models):
    _, finetuned = models
    fishers = [jax.tree.map(jnp.ones_like, finetuned[0])] * 3
    merged = merging.fisher_merging(finetuned, fishers)
    np.testing.assert_allclose(flatten(merged), flatten(merging.weight_average(finetuned)), atol=1e-6)


def test_zero_fisher_entry_follows_other_model():
    models = [{"w": jnp.array([1.0, 1.0])}, {"w": jnp.array([3.0, 3.0])}]
    fishers = [{"w": jnp.array([0.0, 1.0])}, {"w": jnp.array([1.0, 1.0])}]
    merged = merging.fisher_merging(models, fishers, normalize=False)
    np.testing.assert_allclose(merged["w"], [3.0 - 2e-6, 2.0], rtol=1e-5)


def test_negative_fisher_rejected(models):
    _, finetuned = models
    fishers = [jax.tree.map(lambda x: -jnp.ones_like(x), m) for m in finetuned]
    with pytest.raises(ValueError, match="negative"):
        merging.fisher_merging(finetuned, fishers)


def test_fisher_count_checked(models):
    _, finetuned = models
    with pytest.raises(ValueError, match="3 models but 1 Fisher"):
        merging.fisher_merging(finetuned, finetuned[:1])
