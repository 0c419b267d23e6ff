"""Every merge gives the same result inside jax.jit as outside it."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import merging

from tests.merging.conftest import flatten


def _fishers(finetuned):
    return [jax.tree.map(lambda x, i=i: jnp.abs(x) * (i + 1), model) for i, model in enumerate(finetuned)]


def _grams(finetuned):
    eye = jnp.eye(4) + 0.1
    return [{"encoder/layers_0/mlp/fc1/kernel": eye * (i + 1)} for i in range(len(finetuned))]


def _masks(finetuned):
    return [jax.tree.map(lambda x: jnp.arange(x.size).reshape(x.shape) % 3 != 0, model) for model in finetuned]


MERGES = {
    "weight_average": lambda pretrained, finetuned: merging.weight_average(finetuned),
    "task_arithmetic": lambda pretrained, finetuned: merging.task_arithmetic(pretrained, finetuned, 0.3),
    "ties_merging": lambda pretrained, finetuned: merging.ties_merging(pretrained, finetuned, merge="mean"),
    "dare_task_arithmetic": lambda pretrained, finetuned: merging.dare_task_arithmetic(
        pretrained, finetuned, masks=_masks(finetuned)),
    "dare_ties_merging": lambda pretrained, finetuned: merging.dare_ties_merging(
        pretrained, finetuned, key=jax.random.key(0)),
    "fisher_merging": lambda pretrained, finetuned: merging.fisher_merging(finetuned, _fishers(finetuned)),
    "regmean_merging": lambda pretrained, finetuned: merging.regmean_merging(finetuned, _grams(finetuned)),
}


@pytest.mark.parametrize("name", sorted(MERGES))
def test_jit_matches_eager(models, name):
    pretrained, finetuned = models
    merge = MERGES[name]
    eager = merge(pretrained, finetuned)
    jitted = jax.jit(merge)(pretrained, finetuned)
    np.testing.assert_allclose(flatten(jitted), flatten(eager), rtol=1e-5, atol=1e-6)


def test_diagonal_fisher_jits():
    params = {"w": jnp.array([0.5, -1.0])}
    x = jnp.arange(10.0).reshape(5, 2)
    log_likelihood = lambda p, example: -0.5 * jnp.sum(example * p["w"]) ** 2
    fisher = functools.partial(merging.diagonal_fisher, log_likelihood, batch_size=2)
    np.testing.assert_allclose(jax.jit(fisher)(params, x)["w"], fisher(params, x)["w"], rtol=1e-6)
