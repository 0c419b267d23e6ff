"""Scaled dot-product attention and token-input checks shared by the CLIP, BERT and OPT models."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_batch_shape(input_ids: jax.Array, max_position_embeddings: int) -> tuple[int, int]:
    """Return (batch, tokens) of int token ids, raising ValueError for another rank or too many tokens."""
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}; expected [batch, tokens]")
    batch, tokens = input_ids.shape
    if tokens > max_position_embeddings:
        raise ValueError(f"input_ids has {tokens} tokens but max_position_embeddings is "
                         f"{max_position_embeddings}; truncate the inputs")
    return batch, tokens


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
    """Reshape [batch, tokens, hidden] to [batch, tokens, heads, hidden // heads]."""
    batch, tokens, hidden = x.shape
    return x.reshape(batch, tokens, num_heads, hidden // num_heads)


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                          key_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Attend with softmax(q k^T / sqrt(head_dim)) v over heads.

    Args:
      query, key, value: [batch, tokens, heads, head_dim].
      key_mask: optional bool [batch, tokens]; False marks padding keys that no
        query may attend to.

    Returns:
      The merged heads [batch, tokens, heads * head_dim] and the attention
      weights [batch, heads, query tokens, key tokens].
    """
    head_dim = query.shape[-1]
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key) * head_dim**-0.5
    if key_mask is not None:
        # The dtype's minimum instead of -inf keeps an all-padding row finite,
        # as in transformers' additive masks.
        logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    merged = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    batch, tokens, heads, _ = merged.shape
    return merged.reshape(batch, tokens, heads * head_dim), weights
