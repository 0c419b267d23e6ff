"""DARE masks, rescaling and merges."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import merging

from tests.merging.conftest import flatten


def test_expectation_equals_task_vector():
    tau = {"w": jnp.linspace(-1.0, 1.0, 64).reshape(8, 8), "b": jnp.arange(1.0, 5.0)}
    num_draws = 4000
    keys = jax.random.split(jax.random.key(0), num_draws)
    masks = jax.vmap(lambda key: merging.dare_masks(key, tau, 1, drop_rate=0.5)[0])(keys)
    dropped = jax.vmap(lambda mask: merging.dare_drop([tau], [mask], 0.5)[0])(masks)
    mean = flatten(jax.tree.map(lambda x: x.mean(axis=0), dropped))
    # Each entry is tau * Bernoulli(0.5) / 0.5, standard deviation |tau| / sqrt(num_draws).
    np.testing.assert_allclose(mean, flatten(tau), atol=4 * np.abs(flatten(tau)).max() / np.sqrt(num_draws))


def test_drop_fraction():
    template = {"w": jnp.zeros((100, 100))}
    mask = merging.dare_masks(jax.random.key(1), template, 1, drop_rate=0.9)[0]
    assert abs(float(jnp.mean(mask["w"])) - 0.1) < 0.01


def test_given_mask_and_rescale(models):
    pretrained, finetuned = models
    vectors = merging.task_vectors(pretrained, finetuned)
    masks = [jax.tree.map(lambda x: jnp.arange(x.size).reshape(x.shape) % 2 == 0, v) for v in vectors]
    merged = merging.dare_task_arithmetic(pretrained, finetuned, masks=masks, drop_rate=0.5, scaling=0.3)
    keep = flatten(masks[0]).astype(bool)
    expected = flatten(pretrained) + 0.3 * sum(np.where(keep, flatten(v), 0.0) / 0.5 for v in vectors)
    np.testing.assert_allclose(flatten(merged), expected, atol=1e-5)


def test_no_rescale(models):
    pretrained, finetuned = models
    vectors = merging.task_vectors(pretrained, finetuned)
    masks = [jax.tree.map(lambda x: jnp.ones(x.shape, bool), v) for v in vectors]
    dropped = merging.dare_drop(vectors, masks, 0.3, rescale=False)
    np.testing.assert_allclose(flatten(dropped[1]), flatten(vectors[1]))


def test_include_only_kernels(models):
    pretrained, finetuned = models
    vectors = merging.task_vectors(pretrained, finetuned)
    masks = [jax.tree.map(lambda x: jnp.zeros(x.shape, bool), v) for v in vectors]
    dropped = merging.dare_drop(vectors, masks, 0.5, include=r"kernel$")
    np.testing.assert_array_equal(dropped[0]["attention"]["qkv"]["kernel"], 0.0)
    np.testing.assert_allclose(dropped[0]["head"], vectors[0]["head"])


def test_dare_ties_matches_ties_on_dropped(models):
    pretrained, finetuned = models
    key = jax.random.key(3)
    masks = merging.dare_masks(key, pretrained, len(finetuned), 0.5)
    dropped = merging.dare_drop(merging.task_vectors(pretrained, finetuned), masks, 0.5)
    expected = flatten(pretrained) + 0.5 * flatten(merging.ties_merge_task_vectors(dropped, 0.2, "sum"))
    merged = merging.dare_ties_merging(pretrained, finetuned, key=key, drop_rate=0.5, scaling=0.5)
    np.testing.assert_allclose(flatten(merged), expected, atol=1e-5)


def test_key_or_masks_required(models):
    pretrained, finetuned = models
    with pytest.raises(ValueError, match="exactly one of key"):
        merging.dare_task_arithmetic(pretrained, finetuned)


@pytest.mark.parametrize("drop_rate", [-0.1, 1.0])
def test_invalid_drop_rate(models, drop_rate):
    pretrained, finetuned = models
    with pytest.raises(ValueError, match="drop_rate"):
        merging.dare_task_arithmetic(pretrained, finetuned, key=jax.random.key(0), drop_rate=drop_rate)


def test_mask_shape_checked(models):
    pretrained, finetuned = models
    masks = [jax.tree.map(lambda x: jnp.ones(x.shape, bool), m) for m in finetuned]
    masks[1]["head"] = jnp.ones((4,), bool)
    with pytest.raises(ValueError, match="masks\\[1\\] at 'head' has shape \\(4,\\)"):
        merging.dare_task_arithmetic(pretrained, finetuned, masks=masks)


def test_key_path_uses_dare_masks(models):
    pretrained, finetuned = models
    key = jax.random.key(7)
    masks = merging.dare_masks(key, pretrained, len(finetuned), 0.3)
    from_key = merging.dare_task_arithmetic(pretrained, finetuned, key=key, drop_rate=0.3, include=r"kernel$")
    from_masks = merging.dare_task_arithmetic(pretrained, finetuned, masks=masks, drop_rate=0.3, include=r"kernel$")
    np.testing.assert_allclose(flatten(from_key), flatten(from_masks), atol=1e-6)
    np.testing.assert_allclose(from_key["head"], merging.task_arithmetic(pretrained, finetuned, 0.3)["head"],
                               atol=1e-6)
