"""PPO pieces shared by CommFormer and the baselines: action distributions, GAE, value normalisation, losses.

The choices follow MAPPO (Yu et al., "The Surprising Effectiveness of PPO in Cooperative Multi-Agent
Games", 2022): GAE (Schulman et al., 2016), a running normaliser of value targets with debiasing, and the
clipped value loss with a Huber penalty.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

# Logit given to unavailable actions; finite so that log-probabilities of masked actions stay finite.
_UNAVAILABLE_LOGIT = -1e10


# ---------------------------------------------------------------------------------------------------------
# Action distributions. `head` is the decoder output of one agent or a batch of agents.


def masked_logits(head: jax.Array, avail: jax.Array) -> jax.Array:
    return jnp.where(avail > 0, head, _UNAVAILABLE_LOGIT)


def categorical_log_prob(head: jax.Array, avail: jax.Array, actions: jax.Array) -> jax.Array:
    log_probs = jax.nn.log_softmax(masked_logits(head, avail), axis=-1)
    return jnp.take_along_axis(log_probs, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]


def categorical_entropy(head: jax.Array, avail: jax.Array) -> jax.Array:
    log_probs = jax.nn.log_softmax(masked_logits(head, avail), axis=-1)
    return -jnp.sum(jnp.where(avail > 0, jnp.exp(log_probs) * log_probs, 0.0), axis=-1)


def normal_log_prob(mean: jax.Array, std: jax.Array, actions: jax.Array) -> jax.Array:
    z = (actions - mean) / std
    return jnp.sum(-0.5 * z**2 - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def normal_entropy(std: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jnp.broadcast_to(jnp.sum(0.5 + 0.5 * jnp.log(2 * jnp.pi) + jnp.log(std)), shape)


# ---------------------------------------------------------------------------------------------------------
# Advantages.


def gae(rewards: jax.Array, values: jax.Array, dones: jax.Array, last_values: jax.Array, gamma: float,
        gae_lambda: float) -> tuple[jax.Array, jax.Array]:
    """Return (advantages, returns) by generalised advantage estimation, both shaped like `rewards`.

    Args:
      rewards: [T, ...] reward of step t.
      values: [T, ...] value estimate of the state at step t.
      dones: [T, ...] 1 if the episode ended at step t, so step t + 1 starts a new episode (broadcast
        against `rewards`).
      last_values: [...] value of the state after the last step.
      gamma: discount factor.
      gae_lambda: the GAE lambda.
    """
    dones = jnp.broadcast_to(dones, rewards.shape).astype(rewards.dtype)

    def backward(carry, step):
        next_advantage, next_value = carry
        reward, value, done = step
        not_done = 1.0 - done
        delta = reward + gamma * next_value * not_done - value
        advantage = delta + gamma * gae_lambda * not_done * next_advantage
        return (advantage, value), advantage

    _, advantages = jax.lax.scan(backward, (jnp.zeros_like(last_values), last_values), (rewards, values, dones),
                                 reverse=True)
    return advantages, advantages + values


# ---------------------------------------------------------------------------------------------------------
# Value normalisation.


class ValueNormState(NamedTuple):
    """Running statistics of value targets (exponential moving averages with a debiasing term).

    Fields: `mean` and `mean_square` float32 [] (the biased moving averages of x and x^2) and `debiasing`
    float32 [] (the moving average of 1, which turns them into unbiased estimates).
    """

    mean: jax.Array
    mean_square: jax.Array
    debiasing: jax.Array


def value_norm_init() -> ValueNormState:
    zero = jnp.zeros((), jnp.float32)
    return ValueNormState(zero, zero, zero)


def value_norm_update(state: ValueNormState, targets: jax.Array, beta: float) -> ValueNormState:
    """Fold a batch of unnormalised targets into the running statistics with weight 1 - beta."""
    return ValueNormState(
        beta * state.mean + (1 - beta) * jnp.mean(targets),
        beta * state.mean_square + (1 - beta) * jnp.mean(targets**2),
        beta * state.debiasing + (1 - beta),
    )


def _mean_and_std(state: ValueNormState) -> tuple[jax.Array, jax.Array]:
    debiasing = jnp.maximum(state.debiasing, 1e-5)
    mean = state.mean / debiasing
    variance = jnp.maximum(state.mean_square / debiasing - mean**2, 1e-2)
    return mean, jnp.sqrt(variance)


def normalize(state: ValueNormState, x: jax.Array) -> jax.Array:
    mean, std = _mean_and_std(state)
    return (x - mean) / std


def denormalize(state: ValueNormState, x: jax.Array) -> jax.Array:
    mean, std = _mean_and_std(state)
    return x * std + mean


# ---------------------------------------------------------------------------------------------------------
# Losses.


def huber(x: jax.Array, delta: float) -> jax.Array:
    absolute = jnp.abs(x)
    return jnp.where(absolute <= delta, 0.5 * x**2, delta * (absolute - 0.5 * delta))


def masked_mean(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Return the mean of `x` over the entries where the 0/1 `mask` is 1, or over all entries when it is None.

    An all-zero mask gives 0. Masked-out entries must be finite, because they enter as x * 0.
    """
    if mask is None:
        return jnp.mean(x)
    mask = jnp.broadcast_to(mask, x.shape)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def normalize_advantages(advantages: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Standardise advantages with the mean and standard deviation of the entries where the 0/1 `mask` is 1.

    Only those entries change. Masked-out ones are returned as they are, because the losses ignore them, so
    an all-zero mask returns the advantages unchanged. Without a mask every entry is standardised.
    """
    mean = masked_mean(advantages, mask)
    std = jnp.sqrt(masked_mean((advantages - mean) ** 2, mask))
    normalized = (advantages - mean) / (std + 1e-8)
    if mask is None:
        return normalized
    # With a single active entry the std is 0, so standardising the masked-out entries would scale them by 1e8.
    return jnp.where(jnp.broadcast_to(mask, advantages.shape) > 0, normalized, advantages)


def clipped_value_loss(values: jax.Array, old_values: jax.Array, targets: jax.Array, clip_eps: float,
                       huber_delta: float, mask: jax.Array | None = None) -> jax.Array:
    """MAPPO's value loss: the larger Huber loss of the raw and the clipped prediction (all normalised).

    `mask` (1 for active agents, MAPPO's active masks) restricts the mean to those samples.
    """
    clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    return masked_mean(jnp.maximum(huber(targets - values, huber_delta), huber(targets - clipped, huber_delta)),
                       mask)


def clipped_policy_loss(log_probs: jax.Array, old_log_probs: jax.Array, advantages: jax.Array,
                        clip_eps: float, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Return the PPO clipped surrogate loss and the fraction of samples where clipping was active.

    `mask` (1 for active agents, MAPPO's active masks) restricts both means to those samples.
    """
    ratio = jnp.exp(log_probs - old_log_probs)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    clip_fraction = masked_mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32), mask)
    return -masked_mean(jnp.minimum(unclipped, clipped), mask), clip_fraction
