"""BERT encoder in Flax with Hugging Face's `BertModel` layout.

The module tree mirrors `transformers.BertModel`: the parameters of
`encoder.layer.2.attention.self.query.weight` sit at
`params["encoder"]["layer_2"]["attention"]["self"]["query"]["kernel"]`
(see `jaxlab.models.hf` for the naming rules and the conversion).

Extension points, both called as `factory(config, layer_index)` and
returning an unbound Flax module:

* `hook_factory`: every layer applies `hook(layer_output, layer_input)` to
  its output; the hook's parameters live under the layer's `output_hook`.
* `mlp_factory`: the module replaces intermediate.dense, the activation and
  output.dense. It maps the attention block's output [batch, tokens, hidden]
  to the same shape, before dropout, the residual sum and output.LayerNorm.
  Its parameters live under the layer's `mlp` entry, and the layer keeps
  `output.LayerNorm` but has no `intermediate` or `output.dense`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.models import activations
from jaxlab.models.attention import dot_product_attention, split_heads, token_batch_shape


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Shape of a BERT encoder; the fields carry Hugging Face's names."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12  # Must divide hidden_size.
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512  # Maximum input length, in tokens.
    type_vocab_size: int = 2  # Number of segment (token type) ids.
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1  # Applied only when called with deterministic=False.
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0
    add_pooling_layer: bool = True  # Whether the model has the tanh pooler on [CLS].

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"invalid BertConfig.{name}={value!r}; expected an int >= 1")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"invalid BertConfig: num_attention_heads={self.num_attention_heads} "
                             f"does not divide hidden_size={self.hidden_size}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"invalid BertConfig.{name}={value!r}; expected a float in [0, 1)")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"invalid BertConfig.layer_norm_eps={self.layer_norm_eps!r}; "
                             "expected a float > 0")
        activations.get_activation(self.hidden_act)


# sentence-transformers/all-MiniLM-L6-v2 (from nreimers/MiniLM-L6-H384-uncased).
MINILM_L6 = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                       intermediate_size=1536)
# Tests and smoke runs.
TINY = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=64)


@flax.struct.dataclass
class BertOutput:
    """Outputs of `BertModel`, named as in transformers.

    Attributes:
      last_hidden_state: float [batch, tokens, hidden_size], the last layer's output.
      hidden_states: tuple of num_hidden_layers + 1 such arrays: the embedding
        output, then each layer's output.
      pooler_output: float [batch, hidden_size], tanh(dense(first token)); None
        when the config has no pooling layer.
    """

    last_hidden_state: jax.Array
    hidden_states: tuple[jax.Array, ...]
    pooler_output: Optional[jax.Array]


# factory(config, layer_index) -> unbound module. A hook module is called as
# hook(layer_output, layer_input) and returns the new layer output; an MLP
# module maps [batch, tokens, hidden] to the same shape.
HookFactory = Callable[[BertConfig, int], nn.Module]
MLPFactory = Callable[[BertConfig, int], nn.Module]


def layer_norm(eps: float, name: Optional[str] = None) -> nn.LayerNorm:
    """LayerNorm that computes the variance as PyTorch does (mean of squared deviations)."""
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class BertEmbeddings(nn.Module):
    """Sum of word, position and token type embeddings, then LayerNorm and dropout."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, token_type_ids, position_ids, deterministic: bool) -> jax.Array:
        config = self.config
        init = nn.initializers.normal(0.02)
        words = nn.Embed(config.vocab_size, config.hidden_size, embedding_init=init,
                         name="word_embeddings")(input_ids)
        positions = nn.Embed(config.max_position_embeddings, config.hidden_size, embedding_init=init,
                             name="position_embeddings")(position_ids)
        token_types = nn.Embed(config.type_vocab_size, config.hidden_size, embedding_init=init,
                               name="token_type_embeddings")(token_type_ids)
        embeddings = layer_norm(config.layer_norm_eps, name="LayerNorm")(words + positions + token_types)
        return nn.Dropout(config.hidden_dropout_prob)(embeddings, deterministic=deterministic)


class BertSelfAttention(nn.Module):
    """Multi-head self-attention projections named query, key and value."""

    config: BertConfig

    @nn.compact
    def __call__(self, hidden_states, key_mask, deterministic: bool) -> jax.Array:
        config = self.config
        heads = config.num_attention_heads
        query = split_heads(nn.Dense(config.hidden_size, name="query")(hidden_states), heads)
        key = split_heads(nn.Dense(config.hidden_size, name="key")(hidden_states), heads)
        value = split_heads(nn.Dense(config.hidden_size, name="value")(hidden_states), heads)
        if deterministic or config.attention_probs_dropout_prob == 0:
            attended, _ = dot_product_attention(query, key, value, key_mask)
            return attended
        # Training: drop attention weights, as BertSelfAttention does.
        _, weights = dot_product_attention(query, key, value, key_mask)
        weights = nn.Dropout(config.attention_probs_dropout_prob)(weights, deterministic=False)
        attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
        return attended.reshape(hidden_states.shape)


class BertResidualOutput(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual); HF's BertSelfOutput and BertOutput.

    With `with_dense=False` the input goes straight to dropout, for layers
    whose MLP module replaces the dense projection.
    """

    config: BertConfig
    with_dense: bool = True

    @nn.compact
    def __call__(self, hidden_states, residual, deterministic: bool) -> jax.Array:
        if self.with_dense:
            hidden_states = nn.Dense(self.config.hidden_size, name="dense")(hidden_states)
        hidden_states = nn.Dropout(self.config.hidden_dropout_prob)(hidden_states,
                                                                   deterministic=deterministic)
        return layer_norm(self.config.layer_norm_eps, name="LayerNorm")(hidden_states + residual)


class BertAttention(nn.Module):
    """Self-attention (`self`) followed by its residual output block (`output`)."""

    config: BertConfig

    @nn.compact
    def __call__(self, hidden_states, key_mask, deterministic: bool) -> jax.Array:
        attended = BertSelfAttention(self.config, name="self")(hidden_states, key_mask, deterministic)
        return BertResidualOutput(self.config, name="output")(attended, hidden_states, deterministic)


class BertIntermediate(nn.Module):
    """dense -> activation, the first half of the feed-forward block."""

    config: BertConfig

    @nn.compact
    def __call__(self, hidden_states: jax.Array) -> jax.Array:
        hidden_states = nn.Dense(self.config.intermediate_size, name="dense")(hidden_states)
        return activations.get_activation(self.config.hidden_act)(hidden_states)


class BertLayer(nn.Module):
    """Post-LayerNorm block: attention, intermediate (or the MLP module), output, then the hook."""

    config: BertConfig
    layer_index: int
    hook_factory: Optional[HookFactory] = None
    mlp_factory: Optional[MLPFactory] = None

    def setup(self):
        config = self.config
        self.attention = BertAttention(config)
        if self.mlp_factory is None:
            self.intermediate = BertIntermediate(config)
            self.output = BertResidualOutput(config)
        else:
            self.mlp = self.mlp_factory(config, self.layer_index)
            self.output = BertResidualOutput(config, with_dense=False)
        if self.hook_factory is not None:
            self.output_hook = self.hook_factory(config, self.layer_index)

    def __call__(self, hidden_states, key_mask, deterministic: bool) -> jax.Array:
        layer_input = hidden_states
        attention_output = self.attention(hidden_states, key_mask, deterministic)
        if self.mlp_factory is None:
            # output.dense, inside self.output, finishes the standard MLP.
            intermediate = self.intermediate(attention_output)
            hidden_states = self.output(intermediate, attention_output, deterministic)
        else:
            mlp_output = self.mlp(attention_output)
            hidden_states = self.output(mlp_output, attention_output, deterministic)
        if self.hook_factory is not None:
            hidden_states = self.output_hook(hidden_states, layer_input)
        return hidden_states


class BertEncoder(nn.Module):
    """The stack of layers; returns the input and every layer's output."""

    config: BertConfig
    hook_factory: Optional[HookFactory] = None
    mlp_factory: Optional[MLPFactory] = None

    @nn.compact
    def __call__(self, hidden_states, key_mask, deterministic: bool) -> tuple[jax.Array, ...]:
        all_hidden_states = [hidden_states]
        for index in range(self.config.num_hidden_layers):
            layer = BertLayer(self.config, index, self.hook_factory, self.mlp_factory,
                              name=f"layer_{index}")
            hidden_states = layer(hidden_states, key_mask, deterministic)
            all_hidden_states.append(hidden_states)
        return tuple(all_hidden_states)


class BertPooler(nn.Module):
    """tanh(dense(hidden state of the first token))."""

    config: BertConfig

    @nn.compact
    def __call__(self, hidden_states: jax.Array) -> jax.Array:
        return jnp.tanh(nn.Dense(self.config.hidden_size, name="dense")(hidden_states[:, 0]))


class BertModel(nn.Module):
    """BERT encoder with optional pooler; call on int token ids [batch, tokens].

    Args of `__call__`:
      input_ids: int [batch, tokens].
      attention_mask: optional int or bool [batch, tokens], 1 for real tokens
        and 0 for padding; padding keys get no attention. Defaults to all ones.
      token_type_ids: optional int [batch, tokens]; defaults to zeros.
      position_ids: optional int [batch, tokens]; defaults to 0..tokens-1.
      deterministic: False enables dropout and needs a "dropout" rng.
    """

    config: BertConfig
    hook_factory: Optional[HookFactory] = None
    mlp_factory: Optional[MLPFactory] = None

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                 deterministic: bool = True) -> BertOutput:
        config = self.config
        batch, tokens = token_batch_shape(input_ids, config.max_position_embeddings)
        if attention_mask is None:
            attention_mask = jnp.ones((batch, tokens), jnp.int32)
        if token_type_ids is None:
            token_type_ids = jnp.zeros((batch, tokens), jnp.int32)
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(tokens), (batch, tokens))
        key_mask = attention_mask.astype(bool)

        hidden_states = BertEmbeddings(config, name="embeddings")(
            input_ids, token_type_ids, position_ids, deterministic)
        all_hidden_states = BertEncoder(config, self.hook_factory, self.mlp_factory, name="encoder")(
            hidden_states, key_mask, deterministic)

        pooled = None
        if config.add_pooling_layer:
            pooled = BertPooler(config, name="pooler")(all_hidden_states[-1])
        return BertOutput(last_hidden_state=all_hidden_states[-1], hidden_states=all_hidden_states,
                          pooler_output=pooled)

    def init_params(self, key: jax.Array, tokens: int = 8) -> dict:
        """Initialise random parameters (the {"params": ...} collection's contents)."""
        input_ids = jnp.zeros((1, tokens), jnp.int32)
        return self.init(key, input_ids)["params"]
