"""MLP and transformer denoisers with the U-Net's call signature.

Both take x [batch, horizon, channels], t (int) [batch] or a scalar and an optional condition
[batch, ...], and return an array of x's shape:
`__call__(x, t, condition=None, *, train=False)`. `train=True` turns on dropout, which then
needs a "dropout" PRNG stream (`model.apply(..., rngs={"dropout": key})`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.core.nn.unet1d import (batch_timesteps, check_trajectory, condition_input, mish,
                                   time_and_condition_embedding)


def _check_dropout_rate(rate: float) -> None:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout_rate={rate!r} is invalid; expected a value in [0, 1)")


class MLPDenoiser(nn.Module):
    """An MLP on the flattened trajectory concatenated with the time and condition embeddings.

    Attributes:
        hidden_dims: widths of the hidden Dense layers, each followed by Mish and dropout.
        embedding_dim: size of the time embedding and of the condition embedding.
        condition_dim: flattened condition size, 0 for an unconditional network. With
            condition_dim > 0, a None condition means the all-zeros condition.
        dropout_rate: dropout after each hidden layer when `train=True`.
    """

    hidden_dims: Sequence[int] = (256, 256, 256)
    embedding_dim: int = 64
    condition_dim: int = 0
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, condition: jax.Array | None = None, *,
                 train: bool = False) -> jax.Array:
        _check_dropout_rate(self.dropout_rate)
        batch, horizon, channels = check_trajectory(x)
        t = batch_timesteps(t, batch)
        condition = condition_input(condition, self.condition_dim, batch)
        embedding = time_and_condition_embedding(t, condition, self.embedding_dim)

        h = jnp.concatenate([x.reshape(batch, horizon * channels), embedding], axis=-1)
        for index, width in enumerate(self.hidden_dims):
            h = mish(nn.Dense(width, name=f"hidden_{index}")(h))
            h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
        out = nn.Dense(horizon * channels, name="output_dense")(h)
        return out.reshape(batch, horizon, channels)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm transformer block: self-attention and a GELU MLP, each residual."""

    num_heads: int
    mlp_ratio: int = 4
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, h: jax.Array, *, train: bool) -> jax.Array:
        width = h.shape[-1]
        attended = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dropout_rate=self.dropout_rate, deterministic=not train,
            name="attention")(nn.LayerNorm(name="attention_norm")(h))
        h = h + nn.Dropout(self.dropout_rate, deterministic=not train)(attended)
        m = nn.LayerNorm(name="mlp_norm")(h)
        m = nn.gelu(nn.Dense(self.mlp_ratio * width, name="mlp_dense_0")(m))
        m = nn.Dense(width, name="mlp_dense_1")(m)
        return h + nn.Dropout(self.dropout_rate, deterministic=not train)(m)


class TransformerDenoiser(nn.Module):
    """A transformer over the horizon, with the time and condition embeddings as extra tokens.

    The token sequence is [time, (condition,) x_1, ..., x_H], each x_i projected to `width`
    channels, plus a learned position embedding. Attention is bidirectional. The output reads
    the horizon tokens back to the input's channels. The position embedding is sized at
    initialisation, so the horizon is fixed by the `init` input.

    Attributes:
        width: token width (model dimension); must be divisible by `num_heads`.
        num_heads: attention heads per block.
        num_layers: transformer blocks.
        mlp_ratio: hidden width of each block's MLP relative to `width`.
        condition_dim: flattened condition size, 0 for an unconditional network. With
            condition_dim > 0, a None condition means the all-zeros condition.
        dropout_rate: attention and residual dropout when `train=True`.
    """

    width: int = 128
    num_heads: int = 4
    num_layers: int = 4
    mlp_ratio: int = 4
    condition_dim: int = 0
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, condition: jax.Array | None = None, *,
                 train: bool = False) -> jax.Array:
        _check_dropout_rate(self.dropout_rate)
        if self.width % self.num_heads:
            raise ValueError(
                f"width={self.width} is not divisible by num_heads={self.num_heads}; pick a width "
                "that is a multiple of the head count")
        batch, _, channels = check_trajectory(x)
        t = batch_timesteps(t, batch)
        condition = condition_input(condition, self.condition_dim, batch)

        embedding = time_and_condition_embedding(t, condition, self.width)
        # The concatenated embedding contains one width-sized vector per extra token.
        prefix = embedding.reshape(batch, -1, self.width)
        tokens = nn.Dense(self.width, name="input_dense")(x)
        h = jnp.concatenate([prefix, tokens], axis=1)
        if self.has_variable("params", "position_embedding"):
            initialised_tokens = self.get_variable("params", "position_embedding").shape[0]
            if initialised_tokens != h.shape[1]:
                raise ValueError(
                    f"this network was initialised for {initialised_tokens - prefix.shape[1]} "
                    f"horizon steps but received {x.shape[1]}; initialise it with the horizon it "
                    "will see")
        positions = self.param("position_embedding", nn.initializers.normal(0.02),
                               (h.shape[1], self.width))
        h = h + positions[None]

        for index in range(self.num_layers):
            h = TransformerBlock(self.num_heads, self.mlp_ratio, self.dropout_rate,
                                 name=f"block_{index}")(h, train=train)
        h = nn.LayerNorm(name="output_norm")(h[:, prefix.shape[1]:])
        return nn.Dense(channels, name="output_dense")(h)
