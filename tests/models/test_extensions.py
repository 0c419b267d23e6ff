"""Extension points: replacing each layer's MLP and hooking each layer's output."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.models import activations, bert, clip

COEFFICIENTS = (0.3, 0.5, -0.2)


class TaskVectorMLP(nn.Module):
    """CLIP MLP whose weights are base + sum_k c_k * task_vector_k, as a merge would build them."""

    config: clip.CLIPVisionConfig
    coefficients: tuple

    def merged(self, name, shape):
        init = nn.initializers.normal(0.3)
        base = self.param(f"{name}_base", init, shape)
        task_vectors = self.param(f"{name}_task_vectors", init, (len(self.coefficients),) + shape)
        return base + jnp.tensordot(jnp.asarray(self.coefficients), task_vectors, axes=1)

    @nn.compact
    def __call__(self, x):
        width, hidden = self.config.hidden_size, self.config.intermediate_size
        x = x @ self.merged("fc1_kernel", (width, hidden)) + self.merged("fc1_bias", (hidden,))
        x = activations.quick_gelu(x)
        return x @ self.merged("fc2_kernel", (hidden, width)) + self.merged("fc2_bias", (width,))


class LowRankAdapter(nn.Module):
    """Hook x <- x - up(relu(down(x))), with `up` starting at zero so the hook starts as identity."""

    rank: int = 4
    up_init: nn.initializers.Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, layer_output, layer_input):
        del layer_input
        width = layer_output.shape[-1]
        down = nn.Dense(self.rank, use_bias=False, name="down")(layer_output)
        return layer_output - nn.Dense(width, use_bias=False, kernel_init=self.up_init,
                                       name="up")(nn.relu(down))


class ParallelBranch(nn.Module):
    """Hook adding a linear branch of the layer input to the layer output."""

    @nn.compact
    def __call__(self, layer_output, layer_input):
        return layer_output + nn.Dense(layer_output.shape[-1], name="branch")(layer_input)


def pixels():
    return jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)


def standard_params_from_merged(params):
    """Replace every TaskVectorMLP's parameters by the merged fc1/fc2 of the standard MLP."""
    params = jax.tree_util.tree_map(lambda x: x, params)
    coefficients = jnp.asarray(COEFFICIENTS)
    for layer in params["vision_model"]["encoder"].values():
        mlp = layer["mlp"]
        merged = {name: mlp[f"{name}_base"] + jnp.tensordot(coefficients, mlp[f"{name}_task_vectors"], axes=1)
                  for name in ("fc1_kernel", "fc1_bias", "fc2_kernel", "fc2_bias")}
        layer["mlp"] = {"fc1": {"kernel": merged["fc1_kernel"], "bias": merged["fc1_bias"]},
                        "fc2": {"kernel": merged["fc2_kernel"], "bias": merged["fc2_bias"]}}
    return params


def test_mlp_factory_replaces_every_layer():
    model = clip.CLIPVisionModel(clip.TINY, mlp_factory=lambda config, index: TaskVectorMLP(config, COEFFICIENTS))
    params = model.init_params(jax.random.key(0))

    output = model.apply({"params": params}, pixels())
    standard = clip.CLIPVisionModel(clip.TINY).apply({"params": standard_params_from_merged(params)}, pixels())

    for index in range(clip.TINY.num_hidden_layers):
        chex.assert_shape(params["vision_model"]["encoder"][f"layers_{index}"]["mlp"]["fc1_kernel_task_vectors"],
                          (3, 32, 64))
    chex.assert_trees_all_close(output, standard, atol=1e-5)


def test_mlp_factory_receives_layer_index():
    seen = []

    def factory(config, layer_index):
        seen.append(layer_index)
        return clip.standard_mlp(config, layer_index)

    clip.CLIPVisionModel(clip.TINY, mlp_factory=factory).init_params(jax.random.key(0))

    assert sorted(set(seen)) == [0, 1]


def test_zero_adapter_hook_is_identity():
    base = clip.CLIPVisionModel(clip.TINY)
    hooked = clip.CLIPVisionModel(clip.TINY, hook_factory=lambda config, index: LowRankAdapter())
    hooked_params = hooked.init_params(jax.random.key(0))
    base_params = jax.tree_util.tree_map(lambda x: x, hooked_params)
    for layer in base_params["vision_model"]["encoder"].values():
        del layer["output_hook"]

    chex.assert_trees_all_close(hooked.apply({"params": hooked_params}, pixels()),
                                base.apply({"params": base_params}, pixels()), atol=0)


def test_adapter_hook_changes_layer_output():
    hook = LowRankAdapter(up_init=nn.initializers.normal(1.0))
    hooked = clip.CLIPVisionModel(clip.TINY, hook_factory=lambda config, index: hook)
    params = hooked.init_params(jax.random.key(0))
    output = hooked.apply({"params": params}, pixels())

    # Layer 0 alone, without the hook, from the same input and weights.
    layer_params = dict(params["vision_model"]["encoder"]["layers_0"])
    hook_params = layer_params.pop("output_hook")
    layer = clip.CLIPEncoderLayer(clip.TINY, 0)
    unhooked = layer.apply({"params": layer_params}, output.hidden_states[0])
    expected = hook.apply({"params": hook_params}, unhooked, output.hidden_states[0])

    chex.assert_trees_all_close(output.hidden_states[1], expected, atol=1e-5)
    assert float(jnp.abs(expected - unhooked).max()) > 1e-2


def test_parallel_branch_hook_sees_layer_input():
    hooked = bert.BertModel(bert.TINY, hook_factory=lambda config, index: ParallelBranch())
    params = hooked.init_params(jax.random.key(0))
    input_ids = jnp.arange(12, dtype=jnp.int32).reshape(2, 6)
    output = hooked.apply({"params": params}, input_ids)

    layer_params = dict(params["encoder"]["layer_1"])
    branch_params = layer_params.pop("output_hook")
    mask = jnp.ones((2, 6), bool)
    unhooked = bert.BertLayer(bert.TINY, 1).apply({"params": layer_params}, output.hidden_states[1], mask, True)
    branch = nn.Dense(bert.TINY.hidden_size).apply({"params": branch_params["branch"]}, output.hidden_states[1])

    chex.assert_trees_all_close(output.hidden_states[2], unhooked + branch, atol=1e-5)


def test_clip_rejects_nchw_pixels():
    model = clip.CLIPVisionModel(clip.TINY)
    params = model.init_params(jax.random.key(0))

    with pytest.raises(ValueError, match=r"expected NHWC \[batch, 32, 32, 3\].*transpose\(0, 2, 3, 1\)"):
        model.apply({"params": params}, jnp.zeros((2, 3, 32, 32)))


@pytest.mark.parametrize("fields, message", [
    (dict(image_size=30), "image_size=30 is not a multiple of patch_size=8"),
    (dict(num_attention_heads=5), "num_attention_heads=5 does not divide hidden_size=32"),
    (dict(hidden_act="swish"), "unsupported hidden_act 'swish'"),
    (dict(projection_dim=0), "projection_dim=0"),
])
def test_clip_config_rejects_bad_values(fields, message):
    base = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=4, projection_dim=16)

    with pytest.raises(ValueError, match=message):
        clip.CLIPVisionConfig(**{**base, **fields})


def test_bert_rejects_too_long_input():
    model = bert.BertModel(bert.TINY)
    params = model.init_params(jax.random.key(0))

    with pytest.raises(ValueError, match="65 tokens but max_position_embeddings is 64"):
        model.apply({"params": params}, jnp.zeros((1, 65), jnp.int32))


def test_clip_forward_compiles_once():
    model = clip.CLIPVisionModel(clip.TINY)
    params = model.init_params(jax.random.key(0))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def embed(params, images):
        return model.apply({"params": params}, images).image_embeds

    first = embed(params, pixels())
    second = embed(params, pixels() + 1.0)

    chex.assert_shape([first, second], (2, 16))
    assert bool(jnp.all(jnp.isfinite(second)))


def test_clip_forward_sharded_matches_single_device():
    from jaxlab.core import distributed

    mesh = distributed.make_mesh()
    model = clip.CLIPVisionModel(clip.TINY)
    params = model.init_params(jax.random.key(0))
    images = jnp.asarray(np.random.default_rng(1).normal(size=(len(mesh.devices.flat), 32, 32, 3)),
                         jnp.float32)
    embed = jax.jit(lambda params, images: model.apply({"params": params}, images).image_embeds)

    sharded = embed(jax.device_put(params, distributed.replicated_sharding(mesh)),
                    distributed.shard_batch(images, mesh))
    single = embed(params, images)

    assert sharded.sharding.is_equivalent_to(distributed.batch_sharding(mesh), sharded.ndim)
    chex.assert_trees_all_close(sharded, single, atol=1e-6)


def test_overlay_params_keeps_hook_entries():
    from jaxlab.models.params import overlay_params

    pretrained = clip.CLIPVisionModel(clip.TINY).init_params(jax.random.key(1))
    hooked = clip.CLIPVisionModel(clip.TINY, hook_factory=lambda config, index: LowRankAdapter())
    initial = hooked.init_params(jax.random.key(0))

    combined = overlay_params(initial, pretrained)

    layer = combined["vision_model"]["encoder"]["layers_1"]
    chex.assert_trees_all_equal(layer["output_hook"], initial["vision_model"]["encoder"]["layers_1"]["output_hook"])
    chex.assert_trees_all_equal(layer["mlp"], pretrained["vision_model"]["encoder"]["layers_1"]["mlp"])
    chex.assert_trees_all_close(hooked.apply({"params": combined}, pixels()),
                                clip.CLIPVisionModel(clip.TINY).apply({"params": pretrained}, pixels()), atol=0)


def test_overlay_params_names_mismatch():
    from jaxlab.models.params import overlay_params

    pretrained = clip.CLIPVisionModel(clip.TINY).init_params(jax.random.key(1))
    replaced = clip.CLIPVisionModel(clip.TINY, mlp_factory=lambda config, index: TaskVectorMLP(config, COEFFICIENTS))
    initial = replaced.init_params(jax.random.key(0))

    with pytest.raises(ValueError, match="pretrained entry vision_model/encoder/layers_0/mlp/fc1 has no counterpart"):
        overlay_params(initial, pretrained)


class BertStandardMLP(nn.Module):
    """intermediate.dense -> GELU -> output.dense as one replaceable module."""

    config: bert.BertConfig

    @nn.compact
    def __call__(self, x):
        x = activations.gelu_exact(nn.Dense(self.config.intermediate_size, name="up")(x))
        return nn.Dense(self.config.hidden_size, name="down")(x)


def test_bert_mlp_factory_replaces_feed_forward():
    standard = bert.BertModel(bert.TINY)
    params = standard.init_params(jax.random.key(0))
    replaced = bert.BertModel(bert.TINY, mlp_factory=lambda config, index: BertStandardMLP(config))
    moved = jax.tree_util.tree_map(lambda x: x, params)
    for layer in moved["encoder"].values():
        layer["mlp"] = {"up": layer.pop("intermediate")["dense"], "down": layer["output"].pop("dense")}
    input_ids = jnp.arange(12, dtype=jnp.int32).reshape(2, 6)

    replaced_output = replaced.apply({"params": moved}, input_ids)
    standard_output = standard.apply({"params": params}, input_ids)

    assert set(replaced.init_params(jax.random.key(1))["encoder"]["layer_0"]) == {"attention", "mlp", "output"}
    chex.assert_trees_all_close(replaced_output, standard_output, atol=1e-6)
