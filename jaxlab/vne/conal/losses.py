"""Return estimates and the contrastive loss of CONAL."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def reward_advantages(rewards: jax.Array, values: jax.Array, dones: jax.Array, last_value: jax.Array,
                      gamma: float, gae_lambda: float) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation along time; returns (advantages, returns), float32 [T, ...].

    `dones[t]` marks that the episode ended with step t, so nothing is bootstrapped across it;
    `last_value` bootstraps the episode still running after the last step. gae_lambda = 1 gives Monte
    Carlo returns minus the value, as CONAL's reference code uses.
    """

    def backward(carry, inputs):
        next_value, next_advantage = carry
        reward, value, done = inputs
        keep = 1.0 - done.astype(jnp.float32)
        delta = reward + gamma * keep * next_value - value
        advantage = delta + gamma * gae_lambda * keep * next_advantage
        return (value, advantage), advantage

    init = (last_value, jnp.zeros_like(last_value))
    _, advantages = jax.lax.scan(backward, init, (rewards, values, dones), reverse=True)
    return advantages, advantages + values


def reachability_returns(costs: jax.Array, dones: jax.Array, last_value: jax.Array) -> jax.Array:
    """Reachability cost return C_t = max(c_t, C_{t+1}) within an episode, C_t = c_t at its last step.

    The largest future cost (a Hamilton-Jacobi reachability target, without discount) tells whether the
    episode will ever violate a constraint from step t on. `last_value` stands for C_T of the episode
    still running after the last step. Shapes: costs and dones [T, ...], last_value [...].
    """

    def backward(next_return, inputs):
        cost, done = inputs
        value = jnp.where(done, cost, jnp.maximum(cost, next_return))
        return value, value

    _, returns = jax.lax.scan(backward, last_value, (costs, dones), reverse=True)
    return returns


def cumulative_cost_returns(costs: jax.Array, dones: jax.Array, last_value: jax.Array) -> jax.Array:
    """Undiscounted sum of the positive costs to the episode end (the ablation without reachability)."""

    def backward(next_return, inputs):
        cost, done = inputs
        value = jnp.maximum(cost, 0.0) + jnp.where(done, 0.0, next_return)
        return value, value

    _, returns = jax.lax.scan(backward, last_value, (costs, dones), reverse=True)
    return returns


def barlow_twins_loss(first: jax.Array, second: jax.Array, off_diagonal_weight: float | None = None,
                      eps: float = 1e-5) -> jax.Array:
    """Barlow Twins redundancy-reduction loss (Zbontar et al., 2021) of two views [B, D].

    Each feature is standardised over the B rows (unbiased standard deviation), C = z1^T z2 / B, and the
    loss is sum_i (1 - C_ii)^2 + w sum_{i != j} C_ij^2 with w = 1 / D unless given.
    """
    rows, width = first.shape
    weight = 1.0 / width if off_diagonal_weight is None else off_diagonal_weight

    def standardise(z):
        return (z - z.mean(0)) / (z.std(0, ddof=1) + eps)

    correlation = standardise(first).T @ standardise(second) / rows
    diagonal = jnp.diagonal(correlation)
    off_diagonal = (correlation ** 2).sum() - (diagonal ** 2).sum()
    return ((1.0 - diagonal) ** 2).sum() + weight * off_diagonal
