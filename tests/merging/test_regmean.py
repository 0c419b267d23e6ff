"""RegMean against least squares on linear models, and Gram collection from flax modules."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import merging


def _linear_inputs(params, x):
    return {"dense/kernel": x}


def _tasks(num_tasks=3, num_examples=40, num_features=4, num_outputs=2, seed=0):
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(num_tasks):
        x = rng.normal(loc=rng.normal(size=num_features), size=(num_examples, num_features))
        true_weights = rng.normal(size=(num_features, num_outputs))
        xs.append(x)
        ys.append(x @ true_weights + 0.1 * rng.normal(size=(num_examples, num_outputs)))
    return xs, ys


def _experts(xs, ys):
    experts = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        kernel = np.linalg.lstsq(x, y, rcond=None)[0]
        experts.append({"dense": {"kernel": jnp.asarray(kernel, jnp.float32),
                                  "bias": jnp.full((y.shape[1],), float(i), jnp.float32)}})
    return experts


def _grams(experts, xs, batch_size=8):
    return [merging.gram_matrices(_linear_inputs, expert,
                                  jnp.asarray(x, jnp.float32).reshape(-1, batch_size, x.shape[-1]))
            for expert, x in zip(experts, xs)]


def test_gram_is_mean_outer_product():
    xs, ys = _tasks(num_tasks=1)
    grams = _grams(_experts(xs, ys), xs)
    np.testing.assert_allclose(grams[0]["dense/kernel"], xs[0].T @ xs[0] / len(xs[0]), rtol=1e-5)


def test_alpha_one_is_pooled_least_squares():
    xs, ys = _tasks()
    experts = _experts(xs, ys)
    merged = merging.regmean_merging(experts, _grams(experts, xs), alpha=1.0)
    pooled = np.linalg.lstsq(np.concatenate(xs), np.concatenate(ys), rcond=None)[0]
    np.testing.assert_allclose(merged["dense"]["kernel"], pooled, rtol=1e-4, atol=1e-4)
    # Non-linear leaves (the biases 0, 1, 2) are averaged.
    np.testing.assert_allclose(merged["dense"]["bias"], [1.0, 1.0])


def test_alpha_zero_is_diagonal_weighting():
    xs, ys = _tasks()
    experts = _experts(xs, ys)
    grams = _grams(experts, xs)
    merged = merging.regmean_merging(experts, grams, alpha=0.0)
    diagonals = np.stack([np.diag(np.asarray(g["dense/kernel"])) for g in grams])
    kernels = np.stack([np.asarray(e["dense"]["kernel"]) for e in experts])
    expected = (diagonals[:, :, None] * kernels).sum(0) / diagonals.sum(0)[:, None]
    np.testing.assert_allclose(merged["dense"]["kernel"], expected, rtol=1e-5)


def test_out_in_layout_matches_in_out():
    xs, ys = _tasks()
    experts = _experts(xs, ys)
    grams = _grams(experts, xs)
    transposed = [{"dense": {"kernel": e["dense"]["kernel"].T, "bias": e["dense"]["bias"]}} for e in experts]
    expected = merging.regmean_merging(experts, grams, alpha=0.9)
    merged = merging.regmean_merging(transposed, grams, alpha=0.9, kernel_layout="out_in")
    np.testing.assert_allclose(merged["dense"]["kernel"].T, expected["dense"]["kernel"], rtol=1e-5)


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(5, name="fc1")(x))
        return nn.Dense(3, name="fc2")(h)


def test_flax_dense_inputs():
    module = _MLP()
    x = jax.random.normal(jax.random.key(0), (12, 4))
    params = module.init(jax.random.key(1), x)["params"]
    grams = merging.gram_matrices(merging.flax_dense_inputs(module), params, x.reshape(3, 4, 4))
    hidden = np.asarray(jax.nn.relu(x @ params["fc1"]["kernel"] + params["fc1"]["bias"]))
    assert set(grams) == {"fc1/kernel", "fc2/kernel"}
    np.testing.assert_allclose(grams["fc1/kernel"], np.asarray(x).T @ np.asarray(x) / 12, rtol=1e-5)
    np.testing.assert_allclose(grams["fc2/kernel"], hidden.T @ hidden / 12, rtol=1e-4, atol=1e-6)


def test_linear_pattern_without_gram_rejected():
    xs, ys = _tasks()
    experts = _experts(xs, ys)
    with pytest.raises(ValueError, match="'dense/bias' is selected as a linear kernel but has no Gram"):
        merging.regmean_merging(experts, _grams(experts, xs), linear=r"dense/")


def test_gram_shape_checked():
    xs, ys = _tasks()
    experts = _experts(xs, ys)
    grams = _grams(experts, xs)
    grams[2] = {"dense/kernel": jnp.eye(3)}
    with pytest.raises(ValueError, match="grams\\[2\\]\\['dense/kernel'\\] has shape \\(3, 3\\)"):
        merging.regmean_merging(experts, grams)


def test_unknown_gram_path_rejected():
    xs, ys = _tasks()
    experts = _experts(xs, ys)
    grams = [{"Dense_0/kernel": g["dense/kernel"]} for g in _grams(experts, xs)]
    with pytest.raises(ValueError, match="'Dense_0/kernel', which is not a parameter path"):
        merging.regmean_merging(experts, grams)
