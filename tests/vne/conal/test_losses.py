"""Return estimates and the Barlow Twins loss against plain NumPy loops."""

import numpy as np
import pytest

from jaxlab.vne.conal import losses


def _episodes(rng, steps=12, envs=3):
    costs = rng.normal(0.0, 0.05, size=(steps, envs)).astype(np.float32)
    dones = rng.random((steps, envs)) < 0.3
    last = rng.normal(0.0, 0.05, size=envs).astype(np.float32)
    return costs, dones, last


def test_reachability_return_matches_loop():
    costs, dones, last = _episodes(np.random.default_rng(0))
    got = np.asarray(losses.reachability_returns(costs, dones, last))
    expected = np.zeros_like(costs)
    for env in range(costs.shape[1]):
        following = last[env]
        for t in reversed(range(costs.shape[0])):
            following = costs[t, env] if dones[t, env] else max(costs[t, env], following)
            expected[t, env] = following
    np.testing.assert_allclose(got, expected, rtol=0, atol=0)


def test_reachability_return_is_max_not_sum():
    costs = np.array([[0.2], [-0.1], [0.5], [-0.3]], np.float32)
    dones = np.array([[False], [False], [False], [True]])
    got = np.asarray(losses.reachability_returns(costs, dones, np.zeros(1, np.float32)))[:, 0]
    np.testing.assert_allclose(got, [0.5, 0.5, 0.5, -0.3])


def test_cumulative_cost_return_matches_loop():
    costs, dones, last = _episodes(np.random.default_rng(1))
    got = np.asarray(losses.cumulative_cost_returns(costs, dones, last))
    expected = np.zeros_like(costs)
    for env in range(costs.shape[1]):
        following = last[env]
        for t in reversed(range(costs.shape[0])):
            following = max(costs[t, env], 0.0) + (0.0 if dones[t, env] else following)
            expected[t, env] = following
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_reward_advantages_match_loop():
    rng = np.random.default_rng(2)
    rewards = rng.random((10, 2)).astype(np.float32)
    values = rng.random((10, 2)).astype(np.float32)
    dones = rng.random((10, 2)) < 0.3
    last = rng.random(2).astype(np.float32)
    advantages, returns = losses.reward_advantages(rewards, values, dones, last, gamma=0.9, gae_lambda=0.8)
    expected = np.zeros_like(rewards)
    for env in range(2):
        next_value, next_advantage = last[env], 0.0
        for t in reversed(range(10)):
            keep = 0.0 if dones[t, env] else 1.0
            delta = rewards[t, env] + 0.9 * keep * next_value - values[t, env]
            next_advantage = delta + 0.9 * 0.8 * keep * next_advantage
            next_value = values[t, env]
            expected[t, env] = next_advantage
    np.testing.assert_allclose(np.asarray(advantages), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(returns), expected + values, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weight", [None, 0.05])
def test_barlow_twins_matches_numpy(weight):
    rng = np.random.default_rng(3)
    first = rng.normal(size=(40, 6)).astype(np.float32)
    second = (first + 0.5 * rng.normal(size=(40, 6))).astype(np.float32)
    z1 = (first - first.mean(0)) / (first.std(0, ddof=1) + 1e-5)
    z2 = (second - second.mean(0)) / (second.std(0, ddof=1) + 1e-5)
    c = z1.T @ z2 / 40
    w = 1.0 / 6 if weight is None else weight
    expected = sum((1 - c[i, i]) ** 2 for i in range(6)) + w * sum(
        c[i, j] ** 2 for i in range(6) for j in range(6) if i != j)
    got = float(losses.barlow_twins_loss(first, second, off_diagonal_weight=weight))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_barlow_twins_identical_views_near_zero_diagonal_term():
    first = np.random.default_rng(4).normal(size=(64, 4)).astype(np.float32)
    loss = float(losses.barlow_twins_loss(first, first, off_diagonal_weight=0.0))
    assert loss < 1e-3
