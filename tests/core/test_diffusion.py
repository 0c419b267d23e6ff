"""Tests for jaxlab.core.diffusion against closed forms.

Gaussian data N(mu, var) has a closed-form optimal denoiser: with x_t = a x_0 + b eps,
a = sqrt(alpha_bar_t) and b = sqrt(1 - alpha_bar_t), E[eps | x_t] = b (x_t - a mu) / (a^2 var + b^2).
With it, every sampler step is an affine map, so the exact mean and variance of a DDPM sample
follow from a float64 recursion that the Monte Carlo moments must match.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab.core import diffusion
from jaxlab.core.nn import MLPDenoiser

MU, VAR = 0.7, 0.25


def gaussian_eps_fn(schedule, mu=MU, var=VAR):
    """Return the optimal epsilon predictor for data N(mu, var) in the samplers' apply_fn form.

    A condition, when given, replaces mu per example: mu = condition broadcast over x.
    """

    def apply_fn(params, x, t, condition):
        del params
        a = schedule.sqrt_alpha_bars[t].reshape((-1,) + (1,) * (x.ndim - 1))
        b = schedule.sqrt_one_minus_alpha_bars[t].reshape((-1,) + (1,) * (x.ndim - 1))
        mean = mu if condition is None else condition.reshape((-1,) + (1,) * (x.ndim - 1))
        return b * (x - a * mean) / (a**2 * var + b**2)

    return apply_fn


def exact_ddpm_moments(schedule, mu=MU, var=VAR):
    """Mean and variance of a DDPM sample under the optimal Gaussian denoiser, in float64."""
    betas = np.asarray(schedule.betas, np.float64)
    alpha_bars = np.cumprod(1.0 - betas)
    alpha_bars_prev = np.concatenate([[1.0], alpha_bars[:-1]])
    mean, variance = 0.0, 1.0
    for t in range(len(betas) - 1, -1, -1):
        a, b = np.sqrt(alpha_bars[t]), np.sqrt(1.0 - alpha_bars[t])
        k = b / (a**2 * var + b**2)
        coef_x0 = betas[t] * np.sqrt(alpha_bars_prev[t]) / (1.0 - alpha_bars[t])
        coef_xt = (1.0 - alpha_bars_prev[t]) * np.sqrt(1.0 - betas[t]) / (1.0 - alpha_bars[t])
        # x0_hat = ((1 - b k) x + a b k mu) / a, so x_{t-1} = slope x + offset + sigma z.
        slope = coef_x0 * (1.0 - b * k) / a + coef_xt
        offset = coef_x0 * b * k * mu
        sigma2 = betas[t] * (1.0 - alpha_bars_prev[t]) / (1.0 - alpha_bars[t])
        mean, variance = slope * mean + offset, slope**2 * variance + sigma2
    return mean, variance


@pytest.fixture(scope="module")
def cosine100():
    return diffusion.make_schedule("cosine", 100)


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------


def test_linear_betas_endpoints():
    betas = diffusion.linear_betas(1000)
    np.testing.assert_allclose([betas[0], betas[-1]], [1e-4, 0.02], rtol=1e-12)
    scaled = diffusion.linear_betas(200)
    np.testing.assert_allclose([scaled[0], scaled[-1]], [5e-4, 0.1], rtol=1e-12)
    explicit = diffusion.linear_betas(10, 0.01, 0.02)
    np.testing.assert_allclose(explicit, np.linspace(0.01, 0.02, 10))


def test_cosine_alpha_bars_closed_form():
    num_steps = 200
    schedule = diffusion.make_schedule("cosine", num_steps)
    alpha_bars = np.asarray(schedule.alpha_bars, np.float64)
    betas = np.asarray(schedule.betas, np.float64)
    unclipped = betas < 0.999
    # Only the last step reaches the clip (its beta would be exactly 1).
    assert unclipped.sum() == num_steps - 1
    s = 0.008
    f = np.cos((np.arange(1, num_steps + 1) / num_steps + s) / (1 + s) * np.pi / 2) ** 2
    f0 = np.cos(s / (1 + s) * np.pi / 2) ** 2
    np.testing.assert_allclose(alpha_bars[unclipped], (f / f0)[unclipped], rtol=2e-5, atol=1e-9)
    assert alpha_bars[0] > 0.9997
    assert alpha_bars[-1] < 1e-6


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_monotone_and_consistent(kind):
    schedule = diffusion.make_schedule(kind, 50)
    betas = np.asarray(schedule.betas, np.float64)
    alpha_bars = np.asarray(schedule.alpha_bars, np.float64)
    assert schedule.num_steps == 50
    assert np.all(np.diff(alpha_bars) < 0)
    assert np.all((betas > 0) & (betas < 1))
    np.testing.assert_allclose(schedule.alphas, 1 - betas, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(alpha_bars, np.cumprod(1 - betas), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(schedule.alpha_bars_prev[1:], alpha_bars[:-1], rtol=1e-6)
    assert schedule.alpha_bars_prev[0] == 1.0
    assert schedule.posterior_variance[0] == 0.0
    t = 17
    expected = betas[t] * (1 - alpha_bars[t - 1]) / (1 - alpha_bars[t])
    np.testing.assert_allclose(schedule.posterior_variance[t], expected, rtol=1e-5)


def test_schedule_is_a_pytree():
    schedule = diffusion.make_schedule("cosine", 8)
    assert len(jax.tree.leaves(schedule)) == 9
    doubled = jax.jit(lambda s: jax.tree.map(lambda x: 2 * x, s))(schedule)
    np.testing.assert_allclose(doubled.betas, 2 * schedule.betas)


@pytest.mark.parametrize("make, match", [
    (lambda: diffusion.make_schedule("quadratic", 10), "unknown"),
    (lambda: diffusion.linear_betas(0), "num_steps=0"),
    (lambda: diffusion.linear_betas(True), "num_steps=True"),
    (lambda: diffusion.linear_betas(10, 0.2, 0.1), "beta_start=0.2"),
    (lambda: diffusion.linear_betas(10, 0.1, 1.0), "beta_end=1.0"),
    (lambda: diffusion.cosine_betas(10, s=-0.1), "s=-0.1"),
    (lambda: diffusion.cosine_betas(10, max_beta=1.0), "max_beta=1.0"),
    (lambda: diffusion.schedule_from_betas([0.1, 1.0]), r"betas\[1\]=1.0"),
    (lambda: diffusion.schedule_from_betas([0.1, np.nan]), r"betas\[1\]=nan"),
    (lambda: diffusion.schedule_from_betas(np.full((2, 2), 0.1)), "1-D"),
    (lambda: diffusion.schedule_from_betas([]), "non-empty"),
])
def test_schedule_argument_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ---------------------------------------------------------------------------------------------
# Forward process and the loss
# ---------------------------------------------------------------------------------------------


def test_q_sample_monte_carlo_moments(cosine100):
    x0 = jnp.array([-2.0, 0.5, 1.5])
    t = jnp.array([0, 40, 99])
    draws = 100_000
    noise = jax.random.normal(jax.random.key(0), (draws, 3))
    x_t = jax.vmap(lambda n: diffusion.q_sample(cosine100, x0, t, n))(noise)
    alpha_bars = np.asarray(cosine100.alpha_bars)[np.asarray(t)]
    expected_mean = np.sqrt(alpha_bars) * np.asarray(x0)
    expected_var = 1 - alpha_bars
    standard_error = np.sqrt(expected_var / draws)
    assert np.all(np.abs(np.mean(x_t, axis=0) - expected_mean) < 5 * standard_error)
    # The sample variance's relative standard error is sqrt(2 / draws), about 0.45%.
    np.testing.assert_allclose(np.var(x_t, axis=0), expected_var, rtol=0.025)


@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
def test_prediction_conversions_invert(cosine100, prediction):
    keys = jax.random.split(jax.random.key(1), 2)
    x0 = jax.random.normal(keys[0], (4, 6, 3))
    noise = jax.random.normal(keys[1], (4, 6, 3))
    t = jnp.array([0, 10, 50, 98])
    x_t = diffusion.q_sample(cosine100, x0, t, noise)
    output = noise if prediction == "epsilon" else x0
    eps, x0_hat = diffusion.eps_and_x0(cosine100, prediction, output, x_t, t)
    np.testing.assert_allclose(eps, noise, atol=2e-4)
    np.testing.assert_allclose(x0_hat, x0, atol=2e-4)
    _, clipped = diffusion.eps_and_x0(cosine100, prediction, output, x_t, t, clip_x0=0.5)
    assert float(jnp.max(jnp.abs(clipped))) <= 0.5


@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
def test_loss_zero_for_oracle(cosine100, prediction):
    x0 = jax.random.normal(jax.random.key(2), (16, 4, 2))

    def oracle(params, x_t, t, condition, key):
        # Knowing x0, the noise follows from x_t exactly.
        if prediction == "x0":
            return x0
        return diffusion.predict_eps_from_x0(cosine100, x_t, t, x0)

    loss = diffusion.diffusion_loss(oracle, None, x0, None, jax.random.key(3), schedule=cosine100,
                                    prediction=prediction)
    assert float(loss) < 1e-6


def test_loss_weighted_mean(cosine100):
    x0 = jax.random.normal(jax.random.key(4), (8, 5, 3))
    zeros = lambda params, x_t, t, condition, key: jnp.zeros_like(x_t)
    weights = (jnp.arange(5) < 2).astype(jnp.float32)[None, :, None] * jnp.array([1.0, 2.0, 0.0])
    loss = diffusion.diffusion_loss(zeros, None, x0, None, jax.random.key(5), schedule=cosine100,
                                    prediction="x0", weights=weights)
    w = np.broadcast_to(np.asarray(weights), x0.shape)
    expected = np.sum(w * np.asarray(x0) ** 2) / np.sum(w)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    unweighted = diffusion.diffusion_loss(zeros, None, x0, None, jax.random.key(5), schedule=cosine100,
                                          prediction="x0")
    np.testing.assert_allclose(unweighted, np.mean(np.asarray(x0) ** 2), rtol=1e-5)


def test_loss_condition_dropout_rate(cosine100):
    batch = 20_000
    x0 = jnp.zeros((batch, 1, 1))
    condition = jnp.ones((batch, 1))

    def echo_condition(params, x_t, t, condition, key):
        return condition.reshape(x_t.shape)

    def loss(params, null_condition):
        return diffusion.diffusion_loss(echo_condition, params, x0, condition, jax.random.key(6),
                                        schedule=cosine100, prediction="x0", condition_drop_prob=0.25,
                                        null_condition=null_condition)

    # Target x0 = 0, so each kept example adds 1 and each dropped one adds null^2.
    kept_fraction = float(loss(None, None))
    assert abs(kept_fraction - 0.75) < 0.015
    learned = {"null": jnp.array([3.0])}
    value, grads = jax.value_and_grad(loss)(learned, lambda params: params["null"])
    np.testing.assert_allclose(value, kept_fraction + (1 - kept_fraction) * 9.0, rtol=1e-5)
    # d/d null of mean(dropped * null^2) = 2 * 3 * dropped fraction.
    np.testing.assert_allclose(grads["null"], [6.0 * (1 - kept_fraction)], rtol=1e-5)


def test_loss_inpaint_and_argument_errors(cosine100):
    x0 = jnp.ones((4, 3, 2))
    mask = jnp.zeros((1, 3, 2), bool).at[:, 0, :].set(True)
    inpaint = diffusion.make_inpaint_fn(jnp.full((4, 3, 2), 7.0), mask)
    seen = []

    def record(params, x_t, t, condition, key):
        seen.append(x_t)
        return jnp.zeros_like(x_t)

    diffusion.diffusion_loss(record, None, x0, None, jax.random.key(7), schedule=cosine100,
                             inpaint=inpaint)
    np.testing.assert_array_equal(seen[0][:, 0, :], 7.0)
    assert not np.any(np.asarray(seen[0][:, 1:, :]) == 7.0)
    with pytest.raises(ValueError, match="prediction='v'"):
        diffusion.diffusion_loss(record, None, x0, None, jax.random.key(7), schedule=cosine100,
                                 prediction="v")
    with pytest.raises(ValueError, match="condition_drop_prob=1.0"):
        diffusion.diffusion_loss(record, None, x0, jnp.ones((4, 1)), jax.random.key(7),
                                 schedule=cosine100, condition_drop_prob=1.0)
    with pytest.raises(ValueError, match="does not broadcast"):
        diffusion.diffusion_loss(record, None, x0, jnp.ones((4, 2)), jax.random.key(7),
                                 schedule=cosine100, condition_drop_prob=0.5,
                                 null_condition=jnp.zeros(3))
    wrong_shape = lambda params, x_t, t, condition, key: x_t[:, :1]
    with pytest.raises(ValueError, match="returned shape"):
        diffusion.diffusion_loss(wrong_shape, None, x0, None, jax.random.key(7), schedule=cosine100)


# ---------------------------------------------------------------------------------------------
# Samplers with the optimal Gaussian denoiser
# ---------------------------------------------------------------------------------------------


def test_ddpm_reproduces_gaussian_moments(cosine100):
    apply_fn = gaussian_eps_fn(cosine100)
    sample = jax.jit(lambda key: diffusion.ddpm_sample(apply_fn, None, key, (4096, 4, 2),
                                                       schedule=cosine100))
    x = np.asarray(sample(jax.random.key(8)), np.float64).ravel()
    exact_mean, exact_var = exact_ddpm_moments(cosine100)
    draws = x.size
    assert abs(x.mean() - exact_mean) < 5 * np.sqrt(exact_var / draws)
    np.testing.assert_allclose(x.var(), exact_var, rtol=5 * np.sqrt(2 / draws))
    # The sampler's posterior variance beta_tilde underestimates the true reverse-step variance
    # by a discretization error that shrinks with T: the sample variance is 7% below the data's
    # with 100 cosine steps and 4% below with Decision Diffuser's 200.
    assert abs(exact_mean - MU) < 0.01
    assert abs(exact_var - VAR) < 0.08 * VAR
    mean_200, var_200 = exact_ddpm_moments(diffusion.make_schedule("cosine", 200))
    assert abs(mean_200 - MU) < 0.01
    assert abs(var_200 - VAR) < 0.05 * VAR


def test_ddim_eta0_deterministic(cosine100):
    apply_fn = gaussian_eps_fn(cosine100)
    x_T = jax.random.normal(jax.random.key(9), (64, 3, 2))
    sample = jax.jit(lambda key, eta: diffusion.ddim_sample(apply_fn, None, key, schedule=cosine100,
                                                            stride=10, eta=eta, x_T=x_T))
    first = sample(jax.random.key(10), 0.0)
    second = sample(jax.random.key(11), 0.0)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(sample(jax.random.key(10), 1.0), sample(jax.random.key(11), 1.0))


def test_ddim_eta1_stride1_equals_ddpm(cosine100):
    apply_fn = gaussian_eps_fn(cosine100)
    key = jax.random.key(12)
    ddpm = diffusion.ddpm_sample(apply_fn, None, key, (32, 2, 2), schedule=cosine100)
    ddim = diffusion.ddim_sample(apply_fn, None, key, (32, 2, 2), schedule=cosine100, eta=1.0)
    np.testing.assert_allclose(ddim, ddpm, atol=2e-4)


def test_ddim_timesteps_stride_20():
    leading, leading_prev = diffusion.ddim_timesteps(200, 20, "leading")
    np.testing.assert_array_equal(leading, np.arange(180, -1, -20))
    np.testing.assert_array_equal(leading_prev, np.concatenate([np.arange(160, -1, -20), [-1]]))
    trailing, trailing_prev = diffusion.ddim_timesteps(200, 20, "trailing")
    np.testing.assert_array_equal(trailing, np.arange(199, 0, -20))
    np.testing.assert_array_equal(trailing_prev, np.concatenate([np.arange(179, 0, -20), [-1]]))
    with pytest.raises(ValueError, match="stride=0"):
        diffusion.ddim_timesteps(200, 0)
    with pytest.raises(ValueError, match="stride=201"):
        diffusion.ddim_timesteps(200, 201)
    with pytest.raises(ValueError, match="spacing='middle'"):
        diffusion.ddim_timesteps(200, 20, "middle")


def test_ddim_inversion_roundtrip(cosine100):
    apply_fn = gaussian_eps_fn(cosine100)
    x0 = MU + np.sqrt(VAR) * jax.random.normal(jax.random.key(13), (128, 4, 2))

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def roundtrip_error(stride, iterations):
        x_T = diffusion.ddim_invert(apply_fn, None, x0, schedule=cosine100, stride=stride,
                                    fixed_point_iterations=iterations)
        regenerated = diffusion.ddim_sample(apply_fn, None, jax.random.key(14), schedule=cosine100,
                                            stride=stride, x_T=x_T)
        return jnp.max(jnp.abs(regenerated - x0)), jnp.std(x_T)

    plain_error, plain_std = roundtrip_error(1, 0)
    strided_error, _ = roundtrip_error(10, 0)
    refined_error, refined_std = roundtrip_error(10, 10)
    assert plain_error < 0.1
    assert strided_error > plain_error
    assert refined_error < 1e-3
    # Inverted data should look like the sampler's starting noise.
    assert abs(plain_std - 1.0) < 0.05
    assert abs(refined_std - 1.0) < 0.2


# ---------------------------------------------------------------------------------------------
# Guidance and inpainting
# ---------------------------------------------------------------------------------------------


def _condition_dependent_fn(params, x, t, condition):
    # Nonlinear in the condition, so guidance differs from feeding a blended condition.
    scale = 1.0 if condition is None else jnp.tanh(condition).reshape(-1, 1, 1)
    return 0.3 * x * scale + 0.01 * t.reshape(-1, 1, 1) + params


def test_guidance_scale_endpoints(cosine100):
    x = jax.random.normal(jax.random.key(15), (6, 4, 2))
    t = jnp.arange(6)
    condition = jnp.linspace(-2.0, 2.0, 6)[:, None]
    null = jnp.array([0.5])
    params = jnp.float32(0.1)
    conditional = _condition_dependent_fn(params, x, t, condition)
    unconditional = _condition_dependent_fn(params, x, t, jnp.broadcast_to(null, condition.shape))

    def guided(w):
        return diffusion.guided_output(_condition_dependent_fn, params, x, t, condition, w, null)

    np.testing.assert_allclose(guided(0.0), unconditional, atol=1e-6)
    np.testing.assert_allclose(guided(1.0), conditional, atol=1e-6)
    np.testing.assert_allclose(guided(1.2), unconditional + 1.2 * (conditional - unconditional),
                               atol=1e-6)
    np.testing.assert_array_equal(
        diffusion.guided_output(_condition_dependent_fn, params, x, t, condition, None, null),
        conditional)


def test_guided_ddim_endpoints(cosine100):
    apply_fn = gaussian_eps_fn(cosine100)
    condition = jnp.array([[-1.0], [2.0]])
    x_T = jax.random.normal(jax.random.key(16), (2, 3, 1))
    sample = functools.partial(diffusion.ddim_sample, apply_fn, None, jax.random.key(17),
                               schedule=cosine100, stride=10, null_condition=jnp.zeros(1), x_T=x_T)
    guided = jax.jit(lambda w: sample(condition=condition, guidance_scale=w))
    unguided = jax.jit(lambda c: sample(condition=c))

    np.testing.assert_allclose(guided(1.0), unguided(condition), atol=1e-5)
    np.testing.assert_allclose(guided(0.0), unguided(jnp.zeros((2, 1))), atol=1e-5)
    # Guidance past 1 extrapolates away from the null mean 0 (the data means are -1 and 2).
    strong = np.asarray(guided(3.0))
    plain = np.asarray(guided(1.0))
    assert np.all(strong[0] < plain[0])
    assert np.all(strong[1] > plain[1])


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_inpainting_keeps_known_entries(cosine100, sampler):
    # Two channels with correlation rho: the optimal denoiser for N(0, [[1, rho], [rho, 1]]).
    rho = 0.9
    covariance = jnp.array([[1.0, rho], [rho, 1.0]])

    def correlated_eps(params, x, t, condition):
        a = cosine100.sqrt_alpha_bars[t][:, None, None]
        b = cosine100.sqrt_one_minus_alpha_bars[t][:, None, None]
        # E[eps | x_t] = b (a^2 C + b^2 I)^-1 x_t, per batch element.
        marginal = a[..., None] ** 2 * covariance + b[..., None] ** 2 * jnp.eye(2)
        return b * jnp.einsum("bij,bhj->bhi", jnp.linalg.inv(marginal[:, 0]), x)

    batch = 2000
    known = jnp.zeros((batch, 1, 2)).at[..., 0].set(1.5)
    mask = jnp.array([True, False])
    inpaint = diffusion.make_inpaint_fn(known, mask)
    if sampler == "ddpm":
        run = functools.partial(diffusion.ddpm_sample, schedule=cosine100)
    else:
        run = functools.partial(diffusion.ddim_sample, schedule=cosine100, stride=5, eta=1.0)
    conditioned = run(correlated_eps, None, jax.random.key(18), (batch, 1, 2), inpaint=inpaint)
    np.testing.assert_array_equal(conditioned[..., 0], 1.5)
    # Writing the clean value into x_t pulls the other channel, whose unconditional mean is 0,
    # towards E[x_1 | x_0 = 1.5] = rho * 1.5.
    assert float(jnp.mean(conditioned[..., 1])) > 0.5
    if sampler == "ddpm":
        free = run(correlated_eps, None, jax.random.key(18), (batch, 1, 2))
        assert abs(float(jnp.mean(free[..., 1]))) < 0.1


def test_sampler_argument_errors(cosine100):
    apply_fn = gaussian_eps_fn(cosine100)
    with pytest.raises(ValueError, match="shape is None"):
        diffusion.ddpm_sample(apply_fn, None, jax.random.key(0), schedule=cosine100)
    with pytest.raises(ValueError, match="disagrees"):
        diffusion.ddim_sample(apply_fn, None, jax.random.key(0), (2, 3), schedule=cosine100,
                              x_T=jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="fixed_point_iterations=-1"):
        diffusion.ddim_invert(apply_fn, None, jnp.zeros((2, 3)), schedule=cosine100,
                              fixed_point_iterations=-1)


def test_samplers_vmap_over_keys(cosine100):
    apply_fn = gaussian_eps_fn(cosine100)
    sample = jax.jit(jax.vmap(lambda key: diffusion.ddim_sample(
        apply_fn, None, key, (3, 2), schedule=cosine100, stride=20, eta=0.5)))
    keys = jax.random.split(jax.random.key(19), 4)
    batched = sample(keys)
    assert batched.shape == (4, 3, 2)
    single = diffusion.ddim_sample(apply_fn, None, keys[2], (3, 2), schedule=cosine100, stride=20,
                                   eta=0.5)
    np.testing.assert_allclose(batched[2], single, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# A trained MLP denoiser on a two-component Gaussian mixture
# ---------------------------------------------------------------------------------------------

# 0.25 N(-1.5, 0.5^2) + 0.75 N(1.5, 0.5^2): mean 0.75, variance 0.25 + 1.5^2 (1 - 0.5^2) = 1.9375.
MIXTURE_WEIGHT, MIXTURE_OFFSET, MIXTURE_STD = 0.75, 1.5, 0.5
MIXTURE_MEAN = MIXTURE_OFFSET * (2 * MIXTURE_WEIGHT - 1)
MIXTURE_VAR = MIXTURE_STD**2 + MIXTURE_OFFSET**2 * (1 - (2 * MIXTURE_WEIGHT - 1) ** 2)


def sample_mixture(key, n):
    """Return n mixture draws [n, 1, 1] and their component labels (1 = the heavier mode) [n, 1]."""
    label_key, noise_key = jax.random.split(key)
    labels = jax.random.bernoulli(label_key, MIXTURE_WEIGHT, (n,)).astype(jnp.float32)
    x = (2 * labels - 1) * MIXTURE_OFFSET + MIXTURE_STD * jax.random.normal(noise_key, (n,))
    return x.reshape(n, 1, 1), labels[:, None]


def train_mixture_denoiser(*, width, steps, batch, num_steps, learning_rate, condition_drop_prob=None):
    """Train an MLP denoiser with Adam in one jitted scan; return (model, params, schedule).

    With `condition_drop_prob`, the network is conditioned on the component label and trained
    with classifier-free condition dropout (null condition -1, outside the labels' range).
    """
    conditional = condition_drop_prob is not None
    schedule = diffusion.make_schedule("cosine", num_steps)
    model = MLPDenoiser(hidden_dims=(width,) * 3, embedding_dim=16, condition_dim=int(conditional))
    init_condition = jnp.zeros((1, 1)) if conditional else None
    params = model.init(jax.random.key(0), jnp.zeros((1, 1, 1)), jnp.zeros((1,), jnp.int32),
                        init_condition)
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05))

    def train_apply(params, x, t, condition, key):
        return model.apply(params, x, t, condition, train=True)

    def step(carry, key):
        params, opt_state = carry
        data_key, loss_key = jax.random.split(key)
        x0, labels = sample_mixture(data_key, batch)
        loss, grads = jax.value_and_grad(diffusion.diffusion_loss, argnums=1)(
            train_apply, params, x0, labels if conditional else None, loss_key, schedule=schedule,
            condition_drop_prob=condition_drop_prob or 0.0, null_condition=-1.0)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    @jax.jit
    def train(params, key):
        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)),
                                           jax.random.split(key, steps))
        return params, losses

    params, losses = train(params, jax.random.key(1))
    assert float(jnp.mean(losses[-50:])) < float(jnp.mean(losses[:50]))
    return model, params, schedule


def check_mixture_samples(x, weight_tolerance, mean_tolerance, var_rtol):
    x = np.asarray(x, np.float64).ravel()
    assert abs(np.mean(x > 0) - MIXTURE_WEIGHT) < weight_tolerance
    assert abs(x.mean() - MIXTURE_MEAN) < mean_tolerance
    assert abs(x.var() - MIXTURE_VAR) < var_rtol * MIXTURE_VAR
    # The data put 0.8% of their mass in |x| < 0.3, between the modes.
    assert np.mean(np.abs(x) < 0.3) < 0.05


def test_mlp_learns_gaussian_mixture_quick():
    # A small budget (600 Adam steps, width 32, 30 diffusion steps) and loose tolerances; the
    # slow variant below trains longer and checks tighter.
    model, params, schedule = train_mixture_denoiser(width=32, steps=600, batch=256, num_steps=30,
                                                     learning_rate=5e-3)
    apply_fn = lambda p, x, t, c: model.apply(p, x, t, c)
    x = jax.jit(lambda key: diffusion.ddpm_sample(apply_fn, params, key, (4000, 1, 1),
                                                  schedule=schedule))(jax.random.key(2))
    check_mixture_samples(x, weight_tolerance=0.05, mean_tolerance=0.2, var_rtol=0.15)


@pytest.mark.slow
def test_mlp_learns_gaussian_mixture():
    model, params, schedule = train_mixture_denoiser(width=64, steps=1500, batch=512, num_steps=50,
                                                     learning_rate=3e-3)
    apply_fn = lambda p, x, t, c: model.apply(p, x, t, c)
    x = diffusion.ddpm_sample(apply_fn, params, jax.random.key(2), (8000, 1, 1), schedule=schedule)
    check_mixture_samples(x, weight_tolerance=0.03, mean_tolerance=0.1, var_rtol=0.1)


@pytest.mark.slow
def test_guidance_selects_mixture_component():
    model, params, schedule = train_mixture_denoiser(width=64, steps=1500, batch=512, num_steps=50,
                                                     learning_rate=3e-3, condition_drop_prob=0.25)
    apply_fn = lambda p, x, t, c: model.apply(p, x, t, c)
    n = 4000

    def sample(label, guidance_scale):
        condition = jnp.full((n, 1), label)
        return np.asarray(diffusion.ddpm_sample(
            apply_fn, params, jax.random.key(3), (n, 1, 1), schedule=schedule, condition=condition,
            guidance_scale=guidance_scale, null_condition=-1.0)).ravel()

    assert np.mean(sample(1.0, 1.0) > 0) > 0.95
    assert np.mean(sample(0.0, 1.0) < 0) > 0.95
    # w = 0 is the unconditional model, which must recover the mixture weights.
    assert abs(np.mean(sample(1.0, 0.0) > 0) - MIXTURE_WEIGHT) < 0.05
    # Guidance 1.2, Decision Diffuser's scale, still lands in the requested component.
    assert np.mean(sample(0.0, 1.2) < 0) > 0.95
