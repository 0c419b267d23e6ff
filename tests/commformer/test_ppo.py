"""GAE, value normalisation and PPO losses against direct computations."""

import chex
import jax.numpy as jnp
import numpy as np

from jaxlab.commformer import ppo


def _gae_loop(rewards, values, dones, last_values, gamma, lam):
    steps = len(rewards)
    advantages = np.zeros_like(rewards)
    next_advantage = np.zeros_like(last_values)
    for t in reversed(range(steps)):
        next_value = last_values if t == steps - 1 else values[t + 1]
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        next_advantage = delta + gamma * lam * not_done * next_advantage
        advantages[t] = next_advantage
    return advantages, advantages + values


def test_gae_matches_python_loop():
    rng = np.random.default_rng(0)
    steps, envs, agents = 23, 4, 3
    rewards = rng.normal(size=(steps, envs, agents)).astype(np.float32)
    values = rng.normal(size=(steps, envs, agents)).astype(np.float32)
    dones = (rng.uniform(size=(steps, envs, 1)) < 0.15).astype(np.float32)
    last_values = rng.normal(size=(envs, agents)).astype(np.float32)

    advantages, returns = ppo.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(dones),
                                  jnp.asarray(last_values), 0.99, 0.95)
    expected_advantages, expected_returns = _gae_loop(rewards, values, np.broadcast_to(dones, rewards.shape),
                                                      last_values, 0.99, 0.95)
    np.testing.assert_allclose(advantages, expected_advantages, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(returns, expected_returns, rtol=1e-5, atol=1e-5)


def test_gae_with_lambda_one_is_discounted_return():
    rewards = jnp.array([1.0, 2.0, 3.0])[:, None]
    values = jnp.zeros((3, 1))
    dones = jnp.array([0.0, 1.0, 0.0])[:, None]
    _, returns = ppo.gae(rewards, values, dones, jnp.array([10.0]), gamma=0.5, gae_lambda=1.0)
    np.testing.assert_allclose(returns[:, 0], [1.0 + 0.5 * 2.0, 2.0, 3.0 + 0.5 * 10.0])


def test_value_norm_tracks_statistics_and_inverts():
    rng = np.random.default_rng(1)
    state = ppo.value_norm_init()
    for _ in range(200):
        state = ppo.value_norm_update(state, jnp.asarray(rng.normal(3.0, 2.0, size=512)), beta=0.99)
    x = jnp.array([-1.0, 0.0, 5.0])
    np.testing.assert_allclose(ppo.denormalize(state, ppo.normalize(state, x)), x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ppo.denormalize(state, 0.0), 3.0, atol=0.05)
    np.testing.assert_allclose(ppo.denormalize(state, 1.0) - ppo.denormalize(state, 0.0), 2.0, atol=0.05)


def test_clipped_losses_against_formulas():
    log_probs = jnp.log(jnp.array([1.5, 0.5, 1.0]))
    old_log_probs = jnp.zeros(3)
    advantages = jnp.array([1.0, -1.0, 2.0])
    loss, clip_fraction = ppo.clipped_policy_loss(log_probs, old_log_probs, advantages, 0.2)
    # min(r A, clip(r) A): 1.2 * 1, min(-0.5, -0.8) = -0.8, 1.0 * 2.
    np.testing.assert_allclose(loss, -(1.2 - 0.8 + 2.0) / 3, rtol=1e-6)
    np.testing.assert_allclose(clip_fraction, 2 / 3, rtol=1e-6)

    values, old_values, targets = jnp.array([1.0, 0.0]), jnp.array([0.0, 0.0]), jnp.array([0.0, 20.0])
    value_loss = ppo.clipped_value_loss(values, old_values, targets, clip_eps=0.2, huber_delta=10.0)
    # Sample 0: max(huber(-1), huber(-0.2)) = 0.5; sample 1: huber(20) = 10 * (20 - 5) = 150.
    np.testing.assert_allclose(value_loss, (0.5 + 150.0) / 2, rtol=1e-6)


def test_active_masks_restrict_losses_to_active_samples():
    log_probs = jnp.log(jnp.array([1.5, 0.5, 1.0, 3.0]))
    advantages = jnp.array([1.0, -1.0, 2.0, 100.0])
    active = jnp.array([1.0, 1.0, 1.0, 0.0])
    masked = ppo.clipped_policy_loss(log_probs, jnp.zeros(4), advantages, 0.2, active)
    chex.assert_trees_all_close(masked, ppo.clipped_policy_loss(log_probs[:3], jnp.zeros(3), advantages[:3], 0.2),
                                rtol=1e-6)

    values, targets = jnp.array([1.0, 0.0, 7.0]), jnp.array([0.0, 20.0, -50.0])
    np.testing.assert_allclose(
        ppo.clipped_value_loss(values, jnp.zeros(3), targets, 0.2, 10.0, jnp.array([1.0, 1.0, 0.0])),
        ppo.clipped_value_loss(values[:2], jnp.zeros(2), targets[:2], 0.2, 10.0), rtol=1e-6)
    np.testing.assert_allclose(ppo.masked_mean(values, jnp.zeros(3)), 0.0)

    normalized = ppo.normalize_advantages(advantages, active)
    np.testing.assert_allclose(normalized[:3].mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(normalized[:3].std(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ppo.normalize_advantages(advantages), (advantages - advantages.mean())
                               / (advantages.std() + 1e-8), rtol=1e-6)
    np.testing.assert_array_equal(ppo.normalize_advantages(advantages, jnp.zeros_like(advantages)), advantages)
    np.testing.assert_array_equal(normalized[3], advantages[3])
    single_active_normalized = ppo.normalize_advantages(advantages, jnp.array([0.0, 1.0, 0.0, 0.0]))
    np.testing.assert_array_equal(single_active_normalized, jnp.array([1.0, 0.0, 2.0, 100.0]))


def test_masked_categorical_ignores_unavailable_actions():
    head = jnp.array([[0.0, 5.0, 1.0]])
    avail = jnp.array([[1.0, 0.0, 1.0]])
    expected = -np.log1p(np.exp(1.0))
    np.testing.assert_allclose(ppo.categorical_log_prob(head, avail, jnp.array([0])), [expected], rtol=1e-6)
    p = 1 / (1 + np.exp(1.0))
    np.testing.assert_allclose(ppo.categorical_entropy(head, avail),
                               [-(p * np.log(p) + (1 - p) * np.log(1 - p))], rtol=1e-5)


def test_normal_log_prob_and_entropy():
    mean, std = jnp.array([[0.0, 1.0]]), jnp.array([0.5, 2.0])
    actions = jnp.array([[0.5, -1.0]])
    expected = sum(-0.5 * ((a - m) / s) ** 2 - np.log(s * np.sqrt(2 * np.pi))
                   for a, m, s in zip([0.5, -1.0], [0.0, 1.0], [0.5, 2.0]))
    np.testing.assert_allclose(ppo.normal_log_prob(mean, std, actions), [expected], rtol=1e-6)
    expected_entropy = sum(0.5 * np.log(2 * np.pi * np.e * s**2) for s in [0.5, 2.0])
    np.testing.assert_allclose(ppo.normal_entropy(std, (3,)), [expected_entropy] * 3, rtol=1e-6)
