"""Decision Transformer with an optional trajectory prompt (Prompt-DT), in Flax.

Decision Transformer (Chen et al. 2021, "Decision Transformer: Reinforcement
Learning via Sequence Modeling") models a trajectory as the token sequence
(R_1, s_1, a_1, R_2, s_2, a_2, ...) of returns-to-go, states and actions with a
causal GPT-2, and reads the action a_t off the hidden state of token s_t.
Prompt-DT (Xu et al. 2022, "Prompting Decision Transformer for Few-Shot Policy
Generalization") prepends a short segment of an expert trajectory of the same
task, embedded by its own layers, so that one model can tell the tasks apart.

The layout follows the authors' PyTorch code (kzl/decision-transformer and
mxu34/prompt-dt). A learned timestep embedding is added to each of the three
token embeddings. The sequence tokens pass through a LayerNorm before the
transformer, but the prompt tokens do not. The GPT-2 has no position
embedding, pre-LN blocks, dropout on the embeddings, the attention weights and
the residual branches, and a final LayerNorm. Attention is causal over the
whole token list [prompt, sequence], so every sequence token attends to the
prompt. Padding is on the left (short histories during evaluation, segments
that start near the end of an episode during training). A key mask removes
it, so padded tokens never reach a valid token.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),  # GPT-2's "gelu_new".
    "relu": jax.nn.relu,  # The default of the Decision Transformer and Prompt-DT scripts.
}

# GPT-2's initializer for every Dense and Embed kernel.
_INIT = nn.initializers.normal(stddev=0.02)


class Segment(NamedTuple):
    """A batch of left-padded trajectory segments of `L` steps.

    Attributes:
        observations: [B, L, obs_dim] float32, normalized states.
        actions: [B, L, act_dim] float32.
        returns_to_go: [B, L] float32, already divided by the return scale.
        timesteps: [B, L] int32, the step index of each entry within its episode.
        mask: [B, L] bool, True on valid steps and False on padding.
    """

    observations: jax.Array
    actions: jax.Array
    returns_to_go: jax.Array
    timesteps: jax.Array
    mask: jax.Array


@dataclasses.dataclass(frozen=True)
class DTConfig:
    """Sizes of a Decision Transformer.

    Attributes:
        obs_dim: observation size.
        act_dim: action size; actions are predicted in [-1, 1] through tanh.
        hidden_size: embedding width (the GPT-2 `n_embd`).
        num_layers: transformer blocks.
        num_heads: attention heads; must divide `hidden_size`.
        context_length: K, the steps of history in the model's input.
        prompt_length: steps of the trajectory prompt.
        max_timestep: rows of the timestep embeddings; larger timesteps are clipped to the last row.
        dropout: dropout rate of the embeddings, attention weights and residual branches.
        activation: MLP activation, a key of `ACTIVATIONS`.
        use_prompt: False builds the multi-task DT without prompt layers; it ignores any prompt passed in.
    """

    obs_dim: int
    act_dim: int
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 1
    context_length: int = 20
    prompt_length: int = 5
    max_timestep: int = 1000
    dropout: float = 0.1
    activation: str = "gelu"
    use_prompt: bool = True

    def __post_init__(self):
        for name in ("obs_dim", "act_dim", "hidden_size", "num_layers", "num_heads", "context_length",
                     "prompt_length", "max_timestep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DTConfig.{name}={value!r} must be an int >= 1.")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"DTConfig.hidden_size={self.hidden_size} is not divisible by "
                             f"num_heads={self.num_heads}; pick a divisor of hidden_size.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"DTConfig.dropout={self.dropout!r} must lie in [0, 1).")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"DTConfig.activation={self.activation!r} is not one of {sorted(ACTIVATIONS)}.")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention under a [B, T, T] boolean mask (True: the query may attend to the key)."""

    config: DTConfig

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
        batch, tokens, hidden = x.shape
        heads = self.config.num_heads
        qkv = nn.Dense(3 * hidden, kernel_init=_INIT, name="c_attn")(x)
        query, key, value = jnp.split(qkv.reshape(batch, tokens, 3, heads, hidden // heads), 3, axis=2)
        query, key, value = query[:, :, 0], key[:, :, 0], value[:, :, 0]
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key) * (hidden // heads) ** -0.5
        # The dtype's minimum instead of -inf keeps rows with no visible key (left padding before the
        # first valid token) finite. Their outputs are masked out of the loss and never attended to.
        logits = jnp.where(attention_mask[:, None], logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        weights = nn.Dropout(self.config.dropout)(weights, deterministic=deterministic)
        merged = jnp.einsum("bhqk,bkhd->bqhd", weights, value).reshape(batch, tokens, hidden)
        output = nn.Dense(hidden, kernel_init=_INIT, name="c_proj")(merged)
        return nn.Dropout(self.config.dropout)(output, deterministic=deterministic)


class Block(nn.Module):
    """A pre-LN GPT-2 block: x + attn(ln_1(x)), then x + mlp(ln_2(x)) with a 4x hidden MLP."""

    config: DTConfig

    @nn.compact
    def __call__(self, x: jax.Array, attention_mask: jax.Array, deterministic: bool) -> jax.Array:
        hidden = self.config.hidden_size
        x = x + CausalSelfAttention(self.config, name="attn")(
            nn.LayerNorm(epsilon=1e-5, name="ln_1")(x), attention_mask, deterministic)
        h = nn.LayerNorm(epsilon=1e-5, name="ln_2")(x)
        h = nn.Dense(4 * hidden, kernel_init=_INIT, name="c_fc")(h)
        h = ACTIVATIONS[self.config.activation](h)
        h = nn.Dense(hidden, kernel_init=_INIT, name="c_proj")(h)
        return x + nn.Dropout(self.config.dropout)(h, deterministic=deterministic)


class TrajectoryEmbedding(nn.Module):
    """Embeds a segment as interleaved (R_t, s_t, a_t) tokens [B, 3L, hidden] with a [B, 3L] key mask."""

    config: DTConfig

    @nn.compact
    def __call__(self, segment: Segment) -> tuple[jax.Array, jax.Array]:
        hidden = self.config.hidden_size
        timesteps = jnp.clip(segment.timesteps, 0, self.config.max_timestep - 1)
        time = nn.Embed(self.config.max_timestep, hidden, embedding_init=_INIT, name="timestep")(timesteps)
        returns = nn.Dense(hidden, kernel_init=_INIT, name="return")(segment.returns_to_go[..., None])
        states = nn.Dense(hidden, kernel_init=_INIT, name="state")(segment.observations)
        actions = nn.Dense(hidden, kernel_init=_INIT, name="action")(segment.actions)
        tokens = jnp.stack([returns + time, states + time, actions + time], axis=2)
        batch, length = segment.mask.shape
        key_mask = jnp.repeat(segment.mask, 3, axis=1)
        return tokens.reshape(batch, 3 * length, hidden), key_mask


class DecisionTransformer(nn.Module):
    """Predicts a_t in [-1, 1] from the token of s_t, for every step of a segment.

    Call with a `Segment` of `context_length` steps and, when `config.use_prompt`,
    a prompt `Segment` of `prompt_length` steps; returns actions [B, K, act_dim].
    """

    config: DTConfig

    @nn.compact
    def __call__(self, segment: Segment, prompt: Segment | None = None,
                 deterministic: bool = True) -> jax.Array:
        config = self.config
        batch, length = segment.mask.shape
        tokens, key_mask = TrajectoryEmbedding(config, name="embed")(segment)
        tokens = nn.LayerNorm(epsilon=1e-5, name="embed_ln")(tokens)
        if config.use_prompt:
            if prompt is None:
                raise ValueError("this DecisionTransformer has use_prompt=True, so it needs a prompt Segment; "
                                 "pass one or build the model with use_prompt=False.")
            prompt_tokens, prompt_mask = TrajectoryEmbedding(config, name="prompt_embed")(prompt)
            tokens = jnp.concatenate([prompt_tokens, tokens], axis=1)
            key_mask = jnp.concatenate([prompt_mask, key_mask], axis=1)

        total = tokens.shape[1]
        causal = jnp.tril(jnp.ones((total, total), bool))
        attention_mask = causal[None] & key_mask[:, None, :]

        x = nn.Dropout(config.dropout)(tokens, deterministic=deterministic)
        for index in range(config.num_layers):
            x = Block(config, name=f"h_{index}")(x, attention_mask, deterministic)
        x = nn.LayerNorm(epsilon=1e-5, name="ln_f")(x)

        # The last 3K tokens are the sequence; index 1 of each (R, s, a) triple is the state token.
        state_hidden = x[:, -3 * length:].reshape(batch, length, 3, config.hidden_size)[:, :, 1]
        return jnp.tanh(nn.Dense(config.act_dim, kernel_init=_INIT, name="predict_action")(state_hidden))


def action_loss(predicted: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean squared action error over valid steps ([B, L, act_dim] actions, [B, L] mask)."""
    weights = mask.astype(predicted.dtype)[..., None]
    squared = jnp.square(predicted - target) * weights
    valid_entries = jnp.maximum(weights.sum() * predicted.shape[-1], 1.0)
    return squared.sum() / valid_entries


def empty_segment(batch: int, length: int, obs_dim: int, act_dim: int) -> Segment:
    """Create an all-padding segment, the start of every evaluation context buffer."""
    return Segment(observations=jnp.zeros((batch, length, obs_dim), jnp.float32),
                   actions=jnp.zeros((batch, length, act_dim), jnp.float32),
                   returns_to_go=jnp.zeros((batch, length), jnp.float32),
                   timesteps=jnp.zeros((batch, length), jnp.int32),
                   mask=jnp.zeros((batch, length), bool))


def init_params(config: DTConfig, key: jax.Array) -> dict:
    """Initialize the parameters of `DecisionTransformer(config)` on dummy inputs."""
    segment = empty_segment(1, config.context_length, config.obs_dim, config.act_dim)
    prompt = empty_segment(1, config.prompt_length, config.obs_dim, config.act_dim) if config.use_prompt else None
    return DecisionTransformer(config).init(key, segment, prompt)["params"]
