"""CLIP vision transformer in Flax with Hugging Face's module layout.

The module tree mirrors `transformers.CLIPVisionModelWithProjection`: the
parameters of `vision_model.encoder.layers.3.mlp.fc1.weight` sit at
`params["vision_model"]["encoder"]["layers_3"]["mlp"]["fc1"]["kernel"]`
(see `jaxlab.models.hf` for the naming rules and the conversion).

Images are NHWC float arrays, [batch, image_size, image_size, num_channels],
already normalised the way the checkpoint expects; `normalize_pixels` does
this for OpenAI CLIP.

Extension points: every encoder layer builds its MLP with `mlp_factory` and,
when `hook_factory` is given, applies a hook module to its output. Both
factories are called as `factory(config, layer_index)` and return an unbound
Flax module, whose parameters then live under the layer's `mlp` and
`output_hook` entries.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.models import activations
from jaxlab.models.attention import dot_product_attention, split_heads


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """Shape of a CLIP vision tower; the fields carry Hugging Face's names.

    `projection_dim=None` builds the tower without `visual_projection`
    (`CLIPVisionModel`); an int adds the bias-free projection to that width
    (`CLIPVisionModelWithProjection`).
    """

    image_size: int = 224  # Pixels per side of the square input image.
    patch_size: int = 32  # Pixels per side of a patch; image_size must be a multiple.
    num_channels: int = 3
    hidden_size: int = 768
    intermediate_size: int = 3072  # Width of the MLP's hidden layer.
    num_hidden_layers: int = 12
    num_attention_heads: int = 12  # Must divide hidden_size.
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    projection_dim: Optional[int] = 512

    def __post_init__(self):
        for name in ("image_size", "patch_size", "num_channels", "hidden_size", "intermediate_size",
                     "num_hidden_layers", "num_attention_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"invalid CLIPVisionConfig.{name}={value!r}; expected an int >= 1")
        if self.image_size % self.patch_size:
            raise ValueError(f"invalid CLIPVisionConfig: image_size={self.image_size} is not a "
                             f"multiple of patch_size={self.patch_size}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"invalid CLIPVisionConfig: num_attention_heads={self.num_attention_heads} "
                             f"does not divide hidden_size={self.hidden_size}")
        if self.projection_dim is not None and (not isinstance(self.projection_dim, int)
                                                or self.projection_dim < 1):
            raise ValueError(f"invalid CLIPVisionConfig.projection_dim={self.projection_dim!r}; "
                             "expected an int >= 1 or None")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"invalid CLIPVisionConfig.layer_norm_eps={self.layer_norm_eps!r}; "
                             "expected a float > 0")
        activations.get_activation(self.hidden_act)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_positions(self) -> int:
        """Tokens per image: the class token plus one per patch."""
        return self.num_patches + 1


# The towers of openai/clip-vit-base-patch32, clip-vit-base-patch16 and
# clip-vit-large-patch14, as given by their config.json files.
VIT_B_32 = CLIPVisionConfig()
VIT_B_16 = CLIPVisionConfig(patch_size=16)
VIT_L_14 = CLIPVisionConfig(patch_size=14, hidden_size=1024, intermediate_size=4096,
                            num_hidden_layers=24, num_attention_heads=16, projection_dim=768)
# Tests and smoke runs: 16 patches of 8x8 pixels, two layers, width 32.
TINY = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                        num_hidden_layers=2, num_attention_heads=4, projection_dim=16)


# Per-channel RGB statistics of OpenAI CLIP's training images, as in
# transformers' CLIPImageProcessor (image_mean, image_std).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize_pixels(images: jax.Array) -> jax.Array:
    """Map uint8 RGB images [..., 3] in 0..255 to the float32 model input.

    Equals CLIPImageProcessor's rescale (1/255) and normalisation. Resizing
    and center cropping to image_size are left to the input pipeline.
    """
    images = jnp.asarray(images, jnp.float32) / 255.0
    return (images - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


@flax.struct.dataclass
class CLIPVisionOutput:
    """Outputs of `CLIPVisionModel`, named as in transformers.

    Attributes:
      last_hidden_state: float [batch, num_positions, hidden_size], the last
        layer's output before post_layernorm; token 0 is the class token.
      hidden_states: tuple of num_hidden_layers + 1 such arrays: the
        pre_layrnorm output that enters layer 0, then each layer's output.
      pooler_output: float [batch, hidden_size], post_layernorm of the class token.
      image_embeds: float [batch, projection_dim], visual_projection of
        pooler_output; None when the config has no projection.
    """

    last_hidden_state: jax.Array
    hidden_states: tuple[jax.Array, ...]
    pooler_output: jax.Array
    image_embeds: Optional[jax.Array]


def layer_norm(eps: float, name: Optional[str] = None) -> nn.LayerNorm:
    """LayerNorm that computes the variance as PyTorch does (mean of squared deviations)."""
    # Flax's default E[x^2] - E[x]^2 loses precision when the mean is large.
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class CLIPMLP(nn.Module):
    """fc1 -> activation -> fc2, the feed-forward block of a CLIP layer."""

    hidden_size: int
    intermediate_size: int
    hidden_act: str = "quick_gelu"

    @nn.compact
    def __call__(self, hidden_states: jax.Array) -> jax.Array:
        hidden_states = nn.Dense(self.intermediate_size, name="fc1")(hidden_states)
        hidden_states = activations.get_activation(self.hidden_act)(hidden_states)
        return nn.Dense(self.hidden_size, name="fc2")(hidden_states)


def standard_mlp(config: CLIPVisionConfig, layer_index: int) -> nn.Module:
    """Build the pretrained checkpoints' MLP; the default `mlp_factory`."""
    del layer_index  # Every layer has the same MLP.
    return CLIPMLP(config.hidden_size, config.intermediate_size, config.hidden_act)


# factory(config, layer_index) -> unbound module. An MLP module maps
# [batch, tokens, hidden] to the same shape; a hook module is called as
# hook(layer_output, layer_input) and returns the new layer output.
MLPFactory = Callable[[CLIPVisionConfig, int], nn.Module]
HookFactory = Callable[[CLIPVisionConfig, int], nn.Module]


class CLIPAttention(nn.Module):
    """Multi-head self-attention with q_proj, k_proj, v_proj and out_proj."""

    hidden_size: int
    num_heads: int

    @nn.compact
    def __call__(self, hidden_states: jax.Array) -> jax.Array:
        query = split_heads(nn.Dense(self.hidden_size, name="q_proj")(hidden_states), self.num_heads)
        key = split_heads(nn.Dense(self.hidden_size, name="k_proj")(hidden_states), self.num_heads)
        value = split_heads(nn.Dense(self.hidden_size, name="v_proj")(hidden_states), self.num_heads)
        attended, _ = dot_product_attention(query, key, value)
        return nn.Dense(self.hidden_size, name="out_proj")(attended)


class CLIPEncoderLayer(nn.Module):
    """Pre-LayerNorm residual block: x + attn(ln1(x)), then x + mlp(ln2(x)), then the hook."""

    config: CLIPVisionConfig
    layer_index: int
    mlp_factory: MLPFactory = standard_mlp
    hook_factory: Optional[HookFactory] = None

    def setup(self):
        self.layer_norm1 = layer_norm(self.config.layer_norm_eps)
        self.self_attn = CLIPAttention(self.config.hidden_size, self.config.num_attention_heads)
        self.layer_norm2 = layer_norm(self.config.layer_norm_eps)
        self.mlp = self.mlp_factory(self.config, self.layer_index)
        if self.hook_factory is not None:
            self.output_hook = self.hook_factory(self.config, self.layer_index)

    def __call__(self, hidden_states: jax.Array) -> jax.Array:
        layer_input = hidden_states
        hidden_states = hidden_states + self.self_attn(self.layer_norm1(hidden_states))
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        if self.hook_factory is not None:
            hidden_states = self.output_hook(hidden_states, layer_input)
        return hidden_states


class CLIPEncoder(nn.Module):
    """The stack of encoder layers; returns the input and every layer's output."""

    config: CLIPVisionConfig
    mlp_factory: MLPFactory = standard_mlp
    hook_factory: Optional[HookFactory] = None

    @nn.compact
    def __call__(self, hidden_states: jax.Array) -> tuple[jax.Array, ...]:
        all_hidden_states = [hidden_states]
        for index in range(self.config.num_hidden_layers):
            layer = CLIPEncoderLayer(self.config, index, self.mlp_factory, self.hook_factory,
                                     name=f"layers_{index}")
            hidden_states = layer(hidden_states)
            all_hidden_states.append(hidden_states)
        return tuple(all_hidden_states)


class CLIPVisionEmbeddings(nn.Module):
    """Bias-free patch convolution, class token and learned position embeddings."""

    config: CLIPVisionConfig

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        config = self.config
        patches = nn.Conv(config.hidden_size, kernel_size=(config.patch_size, config.patch_size),
                          strides=(config.patch_size, config.patch_size), padding="VALID",
                          use_bias=False, name="patch_embedding")(pixel_values)
        batch = patches.shape[0]
        # Row-major over the patch grid, the order of PyTorch's flatten(2) on NCHW.
        patches = patches.reshape(batch, config.num_patches, config.hidden_size)

        class_embedding = self.param("class_embedding",
                                     nn.initializers.normal(config.hidden_size**-0.5),
                                     (config.hidden_size,))
        class_tokens = jnp.broadcast_to(class_embedding.astype(patches.dtype),
                                        (batch, 1, config.hidden_size))
        embeddings = jnp.concatenate([class_tokens, patches], axis=1)

        position_embedding = nn.Embed(config.num_positions, config.hidden_size,
                                      embedding_init=nn.initializers.normal(0.02),
                                      name="position_embedding")
        return embeddings + position_embedding.embedding[None]


class CLIPVisionTransformer(nn.Module):
    """Embeddings, pre_layrnorm, encoder and post_layernorm of the class token."""

    config: CLIPVisionConfig
    mlp_factory: MLPFactory = standard_mlp
    hook_factory: Optional[HookFactory] = None

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> tuple[tuple[jax.Array, ...], jax.Array]:
        embeddings = CLIPVisionEmbeddings(self.config, name="embeddings")(pixel_values)
        # "layrnorm" is the checkpoints' spelling.
        embeddings = layer_norm(self.config.layer_norm_eps, name="pre_layrnorm")(embeddings)
        hidden_states = CLIPEncoder(self.config, self.mlp_factory, self.hook_factory,
                                    name="encoder")(embeddings)
        pooled = layer_norm(self.config.layer_norm_eps, name="post_layernorm")(hidden_states[-1][:, 0])
        return hidden_states, pooled


class CLIPVisionModel(nn.Module):
    """CLIP image tower; with `config.projection_dim` set it also projects the pooled output.

    Call it on NHWC pixels [batch, image_size, image_size, num_channels] to
    get a `CLIPVisionOutput`.
    """

    config: CLIPVisionConfig
    mlp_factory: MLPFactory = standard_mlp
    hook_factory: Optional[HookFactory] = None

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> CLIPVisionOutput:
        config = self.config
        expected = (config.image_size, config.image_size, config.num_channels)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values has shape {tuple(pixel_values.shape)}; expected NHWC [batch, "
                f"{expected[0]}, {expected[1]}, {expected[2]}]. Transpose PyTorch-style NCHW "
                "arrays with x.transpose(0, 2, 3, 1).")

        hidden_states, pooled = CLIPVisionTransformer(config, self.mlp_factory, self.hook_factory,
                                                      name="vision_model")(pixel_values)
        image_embeds = None
        if config.projection_dim is not None:
            image_embeds = nn.Dense(config.projection_dim, use_bias=False,
                                    name="visual_projection")(pooled)
        return CLIPVisionOutput(last_hidden_state=hidden_states[-1], hidden_states=hidden_states,
                                pooler_output=pooled, image_embeds=image_embeds)

    def init_params(self, key: jax.Array) -> dict:
        """Initialise random parameters (the {"params": ...} collection's contents)."""
        config = self.config
        pixels = jnp.zeros((1, config.image_size, config.image_size, config.num_channels), jnp.float32)
        return self.init(key, pixels)["params"]
