"""jaxlab's OPT: config checks, masking, extension points, checkpoints and parity with transformers."""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxlab.models import hf, opt

TOLERANCE = 1e-5
FIELDS = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
              max_position_embeddings=64)
# Standard pre-LayerNorm, a narrower embedding with project_in/out, and OPT-350m's post-LayerNorm layout.
PARITY_CONFIGS = {
    "pre_norm": FIELDS,
    "projected": {**FIELDS, "word_embed_proj_dim": 16},
    "post_norm": {**FIELDS, "word_embed_proj_dim": 16, "do_layer_norm_before": False},
}


def import_transformers():
    torch = pytest.importorskip("torch", reason="the parity tests need torch (pip install torch)")
    transformers = pytest.importorskip(
        "transformers", reason="the parity tests need transformers (pip install transformers)")
    return torch, transformers


def randomize(model, torch, seed):
    """Give every parameter N(0, 0.2) values, so LayerNorms and biases are not trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def padded_batch(side):
    """Token ids int64 [4, 9] and a mask with rows of 9, 6, 3 and 1 real tokens, padded on `side`."""
    rng = np.random.default_rng(0)
    input_ids = rng.integers(3, 128, size=(4, 9)).astype(np.int64)
    lengths = np.array([9, 6, 3, 1])
    positions = np.arange(9)[None]
    if side == "right":
        attention_mask = positions < lengths[:, None]
    else:
        attention_mask = positions >= 9 - lengths[:, None]
    input_ids = np.where(attention_mask, input_ids, 1)
    return input_ids, attention_mask.astype(np.int64)


@pytest.fixture(scope="module")
def tiny_params():
    return opt.OPTForCausalLM(opt.TINY).init_params(jax.random.key(0))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="num_attention_heads=5 does not divide hidden_size=32"):
        opt.OPTConfig(**{**FIELDS, "num_attention_heads": 5})
    with pytest.raises(ValueError, match=r"OPTConfig.ffn_dim=0; expected an int >= 1"):
        opt.OPTConfig(**{**FIELDS, "ffn_dim": 0})
    with pytest.raises(ValueError, match="unsupported hidden_act 'swish'"):
        opt.OPTConfig(**{**FIELDS, "activation_function": "swish"})
    with pytest.raises(ValueError, match=r"OPTConfig.pad_token_id=128; expected a token id"):
        opt.OPTConfig(**{**FIELDS, "pad_token_id": 128})
    with pytest.raises(ValueError, match=r"OPTConfig.dropout=1.0"):
        opt.OPTConfig(**{**FIELDS, "dropout": 1.0})


def test_config_defaults_projection_width():
    assert opt.OPTConfig(**FIELDS).word_embed_proj_dim == 32
    assert opt.OPT_350M.word_embed_proj_dim == 512


def test_positions_skip_padding():
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])

    positions = opt.position_ids_from_mask(mask)

    np.testing.assert_array_equal(positions, [[-1, -1, 0, 1, 2], [0, 1, 2, -1, -1]])


def test_causal_mask_blocks_future_and_padding():
    mask = opt.causal_attention_mask(jnp.array([[0, 1, 1]]))[0, 0]

    np.testing.assert_array_equal(mask, [[False, False, False], [False, True, False],
                                         [False, True, True]])


def test_left_padding_keeps_logits(tiny_params):
    module = opt.OPTForCausalLM(opt.TINY)
    input_ids = jnp.array([[5, 6, 7, 8]])
    padded_ids = jnp.array([[1, 1, 5, 6, 7, 8]])
    padded_mask = jnp.array([[0, 0, 1, 1, 1, 1]])

    unpadded = module.apply({"params": tiny_params}, input_ids).logits
    padded = module.apply({"params": tiny_params}, padded_ids, padded_mask).logits

    np.testing.assert_allclose(padded[:, 2:], unpadded, rtol=0, atol=1e-5)


def test_later_tokens_do_not_change_earlier_logits(tiny_params):
    module = opt.OPTForCausalLM(opt.TINY)
    first = module.apply({"params": tiny_params}, jnp.array([[5, 6, 7, 8]])).logits
    second = module.apply({"params": tiny_params}, jnp.array([[5, 6, 9, 10]])).logits

    np.testing.assert_allclose(first[:, :2], second[:, :2], rtol=0, atol=1e-6)
    assert not np.allclose(first[:, 2:], second[:, 2:])


def test_output_shapes_and_skipped_logits():
    config = opt.OPTConfig(**PARITY_CONFIGS["projected"])
    module = opt.OPTForCausalLM(config)
    params = module.init_params(jax.random.key(1))
    input_ids = jnp.ones((2, 5), jnp.int32)

    output = module.apply({"params": params}, input_ids)
    without_logits = module.apply({"params": params}, input_ids, compute_logits=False)

    chex.assert_shape(output.logits, (2, 5, 128))
    chex.assert_shape(output.last_hidden_state, (2, 5, 16))
    assert len(output.hidden_states) == 3
    chex.assert_shape(output.hidden_states[:-1], (2, 5, 32))
    assert without_logits.logits is None
    np.testing.assert_allclose(output.logits, without_logits.last_hidden_state
                               @ opt.token_embedding(params).T, rtol=0, atol=1e-5)


def test_rejects_too_long_input(tiny_params):
    module = opt.OPTForCausalLM(opt.TINY)
    with pytest.raises(ValueError, match="65 tokens but max_position_embeddings is 64"):
        module.apply({"params": tiny_params}, jnp.ones((1, 65), jnp.int32))


class ScaledMLP(nn.Module):
    """A standard OPT MLP whose output is multiplied by a learned scalar."""

    config: opt.OPTConfig

    @nn.compact
    def __call__(self, hidden_states):
        scale = self.param("scale", nn.initializers.ones, ())
        return scale * opt.OPTMLP(self.config, name="block")(hidden_states)


class ZeroHook(nn.Module):
    """Replace the layer output by its input plus a learned offset initialised at zero."""

    @nn.compact
    def __call__(self, layer_output, layer_input):
        return layer_input + self.param("offset", nn.initializers.zeros, (layer_output.shape[-1],))


def test_mlp_factory_replaces_feed_forward(tiny_params):
    module = opt.OPTForCausalLM(opt.TINY, mlp_factory=lambda config, index: ScaledMLP(config))
    params = module.init_params(jax.random.key(2))
    layer = params["model"]["decoder"]["layers_1"]
    assert "fc1" not in layer
    assert "fc2" not in layer
    # Copying fc1/fc2 into the replacement with scale 1 reproduces the standard model.
    for index in range(opt.TINY.num_hidden_layers):
        standard = tiny_params["model"]["decoder"][f"layers_{index}"]
        replaced = {name: value for name, value in standard.items() if name not in ("fc1", "fc2")}
        replaced["mlp"] = {"scale": jnp.ones(()), "block": {"fc1": standard["fc1"], "fc2": standard["fc2"]}}
        params["model"]["decoder"][f"layers_{index}"] = replaced
    for name in ("embed_tokens", "embed_positions", "final_layer_norm"):
        params["model"]["decoder"][name] = tiny_params["model"]["decoder"][name]
    input_ids = jnp.array([[3, 4, 5, 6]])

    actual = module.apply({"params": params}, input_ids).logits
    expected = opt.OPTForCausalLM(opt.TINY).apply({"params": tiny_params}, input_ids).logits

    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)


def test_hook_factory_sees_layer_input(tiny_params):
    module = opt.OPTForCausalLM(opt.TINY, hook_factory=lambda config, index: ZeroHook())
    params = module.init_params(jax.random.key(3))
    assert set(params["model"]["decoder"]["layers_0"]["output_hook"]) == {"offset"}

    output = module.apply({"params": params}, jnp.array([[3, 4, 5]]))

    # Each hook returns its layer's input, so layer 1's input equals the embedding output.
    np.testing.assert_allclose(output.hidden_states[1], output.hidden_states[0], rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(PARITY_CONFIGS))
def test_names_round_trip(name):
    for path in hf.parameter_shapes(opt.OPTConfig(**PARITY_CONFIGS[name])):
        assert hf.hf_name_to_path(hf.path_to_hf_name(path)) == path, path


def test_save_then_load_round_trips(tmp_path, tiny_params):
    hf.save_hf(tmp_path, opt.TINY, tiny_params)
    module, loaded = hf.load_hf(tmp_path, config=opt.TINY)

    assert module.config == opt.TINY
    chex.assert_trees_all_equal(loaded, tiny_params)
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")


def test_load_rejects_untied_head(tmp_path, tiny_params):
    hf.save_hf(tmp_path, opt.TINY, tiny_params)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.decoder.embed_tokens.weight"] + 1.0
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})

    with pytest.raises(hf.CheckpointError, match="lm_head.weight differs from model.decoder.embed_tokens"):
        hf.load_hf(tmp_path)


def test_load_accepts_tied_head_copy(tmp_path, tiny_params):
    hf.save_hf(tmp_path, opt.TINY, tiny_params)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.decoder.embed_tokens.weight"].copy()
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})

    _, loaded = hf.load_hf(tmp_path)

    chex.assert_trees_all_equal(loaded, tiny_params)


def test_load_rejects_config_mismatch_and_options(tmp_path, tiny_params):
    hf.save_hf(tmp_path, opt.TINY, tiny_params)
    expected = dataclasses.replace(opt.TINY, ffn_dim=128)
    with pytest.raises(hf.CheckpointError, match="ffn_dim: expected 128, found 64"):
        hf.load_hf(tmp_path, config=expected)

    config = hf.config_to_hf(opt.TINY)
    for name, value in [("tie_word_embeddings", False), ("_remove_final_layer_norm", True)]:
        with pytest.raises(hf.CheckpointError, match=f"{name}={value!r}.*not supported"):
            hf.config_from_hf({**config, name: value}, set(), "checkpoint")


def test_load_names_missing_tensor(tmp_path, tiny_params):
    hf.save_hf(tmp_path, opt.TINY, tiny_params)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.decoder.layers.1.fc2.bias"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})

    with pytest.raises(hf.CheckpointError, match=r"missing parameter model\.decoder\.layers\.1\.fc2\.bias"):
        hf.load_hf(tmp_path)


def reference_outputs(reference, torch, input_ids, attention_mask):
    with torch.no_grad():
        return reference(torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask),
                         output_hidden_states=True)


def assert_outputs_match(output, expected, token_mask=None):
    """Compare logits and every hidden state, at all positions or where `token_mask` is True."""
    select = (lambda array: np.asarray(array)) if token_mask is None else (
        lambda array: np.asarray(array)[token_mask.astype(bool)])
    assert len(output.hidden_states) == len(expected.hidden_states)
    for index, (actual, want) in enumerate(zip(output.hidden_states, expected.hidden_states)):
        np.testing.assert_allclose(select(actual), select(want.numpy()), rtol=0, atol=TOLERANCE,
                                   err_msg=f"hidden_states[{index}]")
    np.testing.assert_allclose(select(output.logits), select(expected.logits.numpy()), rtol=0,
                               atol=TOLERANCE, err_msg="logits")


@pytest.mark.parametrize("name", sorted(PARITY_CONFIGS))
def test_matches_transformers(tmp_path, name):
    torch, transformers = import_transformers()
    hf_config = transformers.OPTConfig(**PARITY_CONFIGS[name], attn_implementation="eager")
    reference = randomize(transformers.OPTForCausalLM(hf_config), torch, seed=len(name))
    reference.save_pretrained(tmp_path)

    module, params = hf.load_hf(tmp_path, config=opt.OPTConfig(**PARITY_CONFIGS[name]))
    apply = jax.jit(module.apply)
    for side in ("left", "right"):
        input_ids, attention_mask = padded_batch(side)
        output = apply({"params": params}, input_ids, attention_mask)
        # Eager attention matches everywhere, padding queries included.
        reference.set_attn_implementation("eager")
        assert_outputs_match(output, reference_outputs(reference, torch, input_ids, attention_mask))
        # SDPA, transformers' default, treats queries with no visible key differently,
        # so only real tokens are compared.
        reference.set_attn_implementation("sdpa")
        assert_outputs_match(output, reference_outputs(reference, torch, input_ids, attention_mask),
                             token_mask=attention_mask)


def test_opt_model_checkpoint_loads(tmp_path):
    torch, transformers = import_transformers()
    config = transformers.OPTConfig(**PARITY_CONFIGS["projected"])
    reference = randomize(transformers.OPTModel(config), torch, seed=5)
    reference.save_pretrained(tmp_path)
    assert all(name.startswith("decoder.") for name in load_file(tmp_path / "model.safetensors"))

    module, params = hf.load_hf(tmp_path)
    input_ids, attention_mask = padded_batch("left")
    output = module.apply({"params": params}, input_ids, attention_mask)
    with torch.no_grad():
        expected = reference(torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))

    real = attention_mask.astype(bool)
    np.testing.assert_allclose(np.asarray(output.last_hidden_state)[real],
                               expected.last_hidden_state.numpy()[real], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("name", ["pre_norm", "post_norm"])
def test_export_loads_in_transformers(tmp_path, name):
    torch, transformers = import_transformers()
    config = opt.OPTConfig(**PARITY_CONFIGS[name])
    module = opt.OPTForCausalLM(config)
    params = module.init_params(jax.random.key(4))
    hf.save_hf(tmp_path, config, params)

    reference, info = transformers.OPTForCausalLM.from_pretrained(tmp_path, output_loading_info=True)

    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    input_ids, attention_mask = padded_batch("left")
    output = module.apply({"params": params}, input_ids, attention_mask)
    assert_outputs_match(output, reference_outputs(reference.eval(), torch, input_ids, attention_mask),
                         token_mask=attention_mask)


@pytest.mark.parametrize("config", [opt.OPT_125M, opt.OPT_350M, opt.OPT_1_3B, opt.OPT_13B],
                         ids=["125m", "350m", "1_3b", "13b"])
def test_full_size_layouts_match_transformers(config):
    torch, transformers = import_transformers()
    # Built on the meta device: names and shapes only, no memory or init time.
    with torch.device("meta"):
        reference = transformers.OPTForCausalLM(transformers.OPTConfig(**hf.config_to_hf(config)))
    expected = {name: tuple(tensor.shape) for name, tensor in reference.state_dict().items()
                if name != "lm_head.weight"}

    actual = {hf.path_to_hf_name(path): tuple(hf.to_torch_layout(path, np.empty(shape)).shape)
              for path, shape in hf.parameter_shapes(config).items()}

    assert sorted(actual) == sorted(expected)
    assert actual == expected
