"""OPT decoder-only language model in Flax with Hugging Face's `OPTForCausalLM` layout.

OPT (Zhang et al. 2022, "OPT: Open Pre-trained Transformer Language Models")
is a GPT-style decoder: token embeddings (optionally projected to the model
width), learned position embeddings, a stack of causal self-attention layers
and a language-model head tied to the token embedding.

The module tree mirrors `transformers.OPTForCausalLM`: the parameters of
`model.decoder.layers.2.self_attn.q_proj.weight` sit at
`params["model"]["decoder"]["layers_2"]["self_attn"]["q_proj"]["kernel"]`
(see `jaxlab.models.hf` for the naming rules). The tied `lm_head.weight` has
no parameter of its own: the head multiplies by `embed_tokens`' table.

Extension points, both called as `factory(config, layer_index)` and
returning an unbound Flax module:

* `hook_factory`: every layer applies `hook(layer_output, layer_input)` to
  its output; the hook's parameters live under the layer's `output_hook`.
* `mlp_factory`: the module replaces fc1, the activation and fc2. It maps
  [batch, tokens, hidden_size] to the same shape, after `final_layer_norm`
  in pre-LayerNorm layers and before the residual sum. Its parameters live
  under the layer's `mlp` entry, and the layer has no `fc1` or `fc2`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.models import activations
from jaxlab.models.attention import token_batch_shape

# OPT's position table has two extra rows: position p reads row p + 2, and
# padding tokens (position -1) read row 1. The offset comes from fairseq.
POSITION_OFFSET = 2


@dataclasses.dataclass(frozen=True)
class OPTConfig:
    """Shape of an OPT decoder; the fields carry Hugging Face's names."""

    vocab_size: int = 50272
    hidden_size: int = 768
    num_hidden_layers: int = 12
    ffn_dim: int = 3072  # Width of the feed-forward block (fc1 output).
    num_attention_heads: int = 12  # Must divide hidden_size.
    max_position_embeddings: int = 2048  # Maximum input length, in tokens.
    # Width of the token embedding and of the LM head's input; None means
    # hidden_size. When it differs, project_in and project_out map between widths.
    word_embed_proj_dim: Optional[int] = None
    # True: pre-LayerNorm layers and a final LayerNorm (every OPT size except
    # 350m). False: post-LayerNorm layers and no final LayerNorm (OPT-350m).
    do_layer_norm_before: bool = True
    activation_function: str = "relu"
    enable_bias: bool = True  # Biases of the attention and feed-forward projections.
    layer_norm_elementwise_affine: bool = True  # LayerNorms with scale and bias.
    dropout: float = 0.1  # Applied only when called with deterministic=False.
    attention_dropout: float = 0.0
    pad_token_id: int = 1
    bos_token_id: int = 2
    eos_token_id: int = 2

    def __post_init__(self):
        if self.word_embed_proj_dim is None:
            object.__setattr__(self, "word_embed_proj_dim", self.hidden_size)
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "ffn_dim",
                     "num_attention_heads", "max_position_embeddings", "word_embed_proj_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"invalid OPTConfig.{name}={value!r}; expected an int >= 1")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"invalid OPTConfig: num_attention_heads={self.num_attention_heads} "
                             f"does not divide hidden_size={self.hidden_size}")
        for name in ("do_layer_norm_before", "enable_bias", "layer_norm_elementwise_affine"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"invalid OPTConfig.{name}={getattr(self, name)!r}; expected a bool")
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"invalid OPTConfig.{name}={value!r}; expected a float in [0, 1)")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ValueError(f"invalid OPTConfig.{name}={value!r}; expected a token id in "
                                 f"[0, vocab_size={self.vocab_size})")
        activations.get_activation(self.activation_function)


# Shapes of the facebook/opt-* checkpoints (their config.json files).
OPT_125M = OPTConfig()
OPT_350M = OPTConfig(hidden_size=1024, num_hidden_layers=24, ffn_dim=4096, num_attention_heads=16,
                     word_embed_proj_dim=512, do_layer_norm_before=False)
OPT_1_3B = OPTConfig(hidden_size=2048, num_hidden_layers=24, ffn_dim=8192, num_attention_heads=32)
OPT_13B = OPTConfig(hidden_size=5120, num_hidden_layers=40, ffn_dim=20480, num_attention_heads=40)
# Tests and smoke runs.
TINY = OPTConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                 num_attention_heads=4, max_position_embeddings=64)


@flax.struct.dataclass
class OPTCausalLMOutput:
    """Outputs of `OPTForCausalLM`.

    Attributes:
      logits: float [batch, tokens, vocab_size], next-token logits; None when
        called with `compute_logits=False`.
      last_hidden_state: float [batch, tokens, word_embed_proj_dim], the LM
        head's input: the last layer's output after the final LayerNorm (when
        the config has one) and project_out (when the widths differ).
      hidden_states: tuple of num_hidden_layers + 1 arrays, as transformers'
        OPT returns them: the input of each layer [batch, tokens, hidden_size]
        (the embedding output, then the outputs of all layers but the last),
        then `last_hidden_state`. The last layer's raw output, before the
        final LayerNorm, is not returned.
    """

    logits: Optional[jax.Array]
    last_hidden_state: jax.Array
    hidden_states: tuple[jax.Array, ...]


# factory(config, layer_index) -> unbound module. A hook module is called as
# hook(layer_output, layer_input) and returns the new layer output; an MLP
# module maps [batch, tokens, hidden_size] to the same shape.
HookFactory = Callable[[OPTConfig, int], nn.Module]
MLPFactory = Callable[[OPTConfig, int], nn.Module]


def layer_norm(config: OPTConfig, name: Optional[str] = None) -> nn.LayerNorm:
    """LayerNorm with PyTorch's defaults (eps 1e-5, variance as the mean of squared deviations)."""
    affine = config.layer_norm_elementwise_affine
    return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, use_scale=affine, use_bias=affine,
                        name=name)


def position_ids_from_mask(attention_mask: jax.Array) -> jax.Array:
    """Return OPT's positions: 0, 1, ... over the real tokens of each row and -1 at padding.

    Positions count only unmasked tokens, so a left-padded row starts at
    position 0 on its first real token, as in transformers' OPT.
    """
    mask = attention_mask.astype(jnp.int32)
    return jnp.cumsum(mask, axis=1) * mask - 1


def causal_attention_mask(attention_mask: jax.Array) -> jax.Array:
    """Return bool [batch, 1, query, key]: True where the query may attend to the key.

    A query attends to itself and earlier keys that are not padding.
    """
    tokens = attention_mask.shape[1]
    causal = jnp.tril(jnp.ones((tokens, tokens), bool))
    return causal[None, None] & attention_mask.astype(bool)[:, None, None, :]


class OPTAttention(nn.Module):
    """Multi-head causal self-attention with projections q_proj, k_proj, v_proj and out_proj."""

    config: OPTConfig

    @nn.compact
    def __call__(self, hidden_states, mask, deterministic: bool) -> jax.Array:
        config = self.config
        batch, tokens, width = hidden_states.shape
        heads = config.num_attention_heads
        head_dim = width // heads

        def project(name):
            dense = nn.Dense(width, use_bias=config.enable_bias, name=name)
            return dense(hidden_states).reshape(batch, tokens, heads, head_dim)

        # transformers scales the query before the product; the same order keeps float32 parity.
        query = project("q_proj") * head_dim**-0.5
        key = project("k_proj")
        value = project("v_proj")
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key)
        # The dtype's minimum instead of -inf keeps the rows of padding queries,
        # which may attend to no key, finite (uniform weights), as transformers does.
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        weights = nn.Dropout(config.attention_dropout)(weights, deterministic=deterministic)
        attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value).reshape(batch, tokens, width)
        return nn.Dense(width, use_bias=config.enable_bias, name="out_proj")(attended)


class OPTMLP(nn.Module):
    """fc1 -> activation -> fc2, OPT's feed-forward block (the default `mlp_factory` target)."""

    config: OPTConfig

    @nn.compact
    def __call__(self, hidden_states: jax.Array) -> jax.Array:
        config = self.config
        hidden_states = nn.Dense(config.ffn_dim, use_bias=config.enable_bias, name="fc1")(hidden_states)
        hidden_states = activations.get_activation(config.activation_function)(hidden_states)
        return nn.Dense(config.hidden_size, use_bias=config.enable_bias, name="fc2")(hidden_states)


class OPTDecoderLayer(nn.Module):
    """Attention and feed-forward blocks with residuals; LayerNorms before (or after) each block.

    With `do_layer_norm_before` the layer computes x + attn(LN1(x)), then
    x + mlp(LN2(x)). Without it (OPT-350m) it computes LN1(x + attn(x)),
    then LN2(x + mlp(x)). LN1 is `self_attn_layer_norm`, LN2 `final_layer_norm`.
    """

    config: OPTConfig
    layer_index: int
    hook_factory: Optional[HookFactory] = None
    mlp_factory: Optional[MLPFactory] = None

    def setup(self):
        config = self.config
        self.self_attn = OPTAttention(config)
        self.self_attn_layer_norm = layer_norm(config)
        self.final_layer_norm = layer_norm(config)
        self.dropout = nn.Dropout(config.dropout)
        if self.mlp_factory is None:
            # The default block's fc1 and fc2 sit directly under the layer, as in transformers.
            self.fc1 = nn.Dense(config.ffn_dim, use_bias=config.enable_bias)
            self.fc2 = nn.Dense(config.hidden_size, use_bias=config.enable_bias)
        else:
            self.mlp = self.mlp_factory(config, self.layer_index)
        if self.hook_factory is not None:
            self.output_hook = self.hook_factory(config, self.layer_index)

    def feed_forward(self, hidden_states: jax.Array) -> jax.Array:
        if self.mlp_factory is not None:
            return self.mlp(hidden_states)
        hidden_states = activations.get_activation(self.config.activation_function)(
            self.fc1(hidden_states))
        return self.fc2(hidden_states)

    def __call__(self, hidden_states, mask, deterministic: bool) -> jax.Array:
        pre_norm = self.config.do_layer_norm_before
        layer_input = hidden_states

        residual = hidden_states
        if pre_norm:
            hidden_states = self.self_attn_layer_norm(hidden_states)
        hidden_states = self.self_attn(hidden_states, mask, deterministic)
        hidden_states = residual + self.dropout(hidden_states, deterministic=deterministic)
        if not pre_norm:
            hidden_states = self.self_attn_layer_norm(hidden_states)

        residual = hidden_states
        if pre_norm:
            hidden_states = self.final_layer_norm(hidden_states)
        hidden_states = self.feed_forward(hidden_states)
        hidden_states = residual + self.dropout(hidden_states, deterministic=deterministic)
        if not pre_norm:
            hidden_states = self.final_layer_norm(hidden_states)

        if self.hook_factory is not None:
            hidden_states = self.output_hook(hidden_states, layer_input)
        return hidden_states


class OPTDecoder(nn.Module):
    """Embeddings, the layer stack, the final LayerNorm and the optional width projections.

    Returns (last_hidden_state, hidden_states) as described in `OPTCausalLMOutput`.
    """

    config: OPTConfig
    hook_factory: Optional[HookFactory] = None
    mlp_factory: Optional[MLPFactory] = None

    def setup(self):
        config = self.config
        init = nn.initializers.normal(0.02)
        self.embed_tokens = nn.Embed(config.vocab_size, config.word_embed_proj_dim, embedding_init=init)
        self.embed_positions = nn.Embed(config.max_position_embeddings + POSITION_OFFSET,
                                        config.hidden_size, embedding_init=init)
        if config.word_embed_proj_dim != config.hidden_size:
            self.project_in = nn.Dense(config.hidden_size, use_bias=False)
            self.project_out = nn.Dense(config.word_embed_proj_dim, use_bias=False)
        # Flax names the list's modules layers_0, layers_1, ...
        self.layers = [OPTDecoderLayer(config, index, self.hook_factory, self.mlp_factory)
                       for index in range(config.num_hidden_layers)]
        if config.do_layer_norm_before:
            self.final_layer_norm = layer_norm(config)
        self.dropout = nn.Dropout(config.dropout)

    def __call__(self, input_ids, attention_mask, position_ids,
                 deterministic: bool) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        config = self.config
        projected = config.word_embed_proj_dim != config.hidden_size

        token_embeddings = self.embed_tokens(input_ids)
        if projected:
            token_embeddings = self.project_in(token_embeddings)
        hidden_states = token_embeddings + self.embed_positions(position_ids + POSITION_OFFSET)
        hidden_states = self.dropout(hidden_states, deterministic=deterministic)

        mask = causal_attention_mask(attention_mask)
        layer_inputs = []
        for layer in self.layers:
            layer_inputs.append(hidden_states)
            hidden_states = layer(hidden_states, mask, deterministic)

        if config.do_layer_norm_before:
            hidden_states = self.final_layer_norm(hidden_states)
        if projected:
            hidden_states = self.project_out(hidden_states)
        return hidden_states, tuple(layer_inputs) + (hidden_states,)


class OPTModel(nn.Module):
    """Wrapper that places the decoder under `decoder`, as transformers' OPTModel does."""

    config: OPTConfig
    hook_factory: Optional[HookFactory] = None
    mlp_factory: Optional[MLPFactory] = None

    def setup(self):
        self.decoder = OPTDecoder(self.config, self.hook_factory, self.mlp_factory)

    def __call__(self, input_ids, attention_mask, position_ids, deterministic: bool):
        return self.decoder(input_ids, attention_mask, position_ids, deterministic)


class OPTForCausalLM(nn.Module):
    """OPT decoder with the tied LM head; call on int token ids [batch, tokens].

    Args of `__call__`:
      input_ids: int [batch, tokens].
      attention_mask: optional int or bool [batch, tokens], 1 for real tokens
        and 0 for padding (left or right). Padding keys get no attention and
        positions count only real tokens. Defaults to all ones.
      position_ids: optional int [batch, tokens], positions before OPT's
        offset of 2; defaults to `position_ids_from_mask(attention_mask)`.
      deterministic: False enables dropout and needs a "dropout" rng.
      compute_logits: False skips the [batch, tokens, vocab_size] head, for
        callers that read a few vocabulary rows off `last_hidden_state`.
    """

    config: OPTConfig
    hook_factory: Optional[HookFactory] = None
    mlp_factory: Optional[MLPFactory] = None

    def setup(self):
        self.model = OPTModel(self.config, self.hook_factory, self.mlp_factory)

    def __call__(self, input_ids, attention_mask=None, position_ids=None, deterministic: bool = True,
                 compute_logits: bool = True) -> OPTCausalLMOutput:
        config = self.config
        batch, tokens = token_batch_shape(input_ids, config.max_position_embeddings)
        if attention_mask is None:
            attention_mask = jnp.ones((batch, tokens), jnp.int32)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; expected "
                             f"input_ids' shape {tuple(input_ids.shape)}")
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)

        last_hidden_state, hidden_states = self.model(input_ids, attention_mask, position_ids,
                                                      deterministic)
        logits = None
        if compute_logits:
            # lm_head is tied to the token embedding (tie_word_embeddings in every OPT checkpoint).
            logits = self.model.decoder.embed_tokens.attend(last_hidden_state)
        return OPTCausalLMOutput(logits=logits, last_hidden_state=last_hidden_state,
                                 hidden_states=hidden_states)

    def init_params(self, key: jax.Array, tokens: int = 8) -> dict:
        """Initialise random parameters (the {"params": ...} collection's contents)."""
        input_ids = jnp.zeros((1, min(tokens, self.config.max_position_embeddings)), jnp.int32)
        return self.init(key, input_ids)["params"]


def token_embedding(params: dict) -> jax.Array:
    """Return the token embedding table float [vocab_size, word_embed_proj_dim], also the LM head."""
    return params["model"]["decoder"]["embed_tokens"]["embedding"]
