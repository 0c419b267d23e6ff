"""jaxlab's CLIP and BERT against transformers' PyTorch models on tiny random weights."""

import numpy as np
import pytest

from jaxlab.models import bert, clip, hf

torch = pytest.importorskip("torch", reason="the parity tests need torch (pip install torch)")
transformers = pytest.importorskip(
    "transformers", reason="the parity tests need transformers (pip install transformers)")

TOLERANCE = 1e-5
CLIP_FIELDS = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   image_size=32, patch_size=8, projection_dim=16)
BERT_FIELDS = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=64, max_position_embeddings=64)


def randomize(model, seed):
    """Give every parameter N(0, 0.2) values, so LayerNorms and biases are not trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def images(batch=3):
    return np.random.default_rng(0).normal(size=(batch, 3, 32, 32)).astype(np.float32)


def token_batch():
    rng = np.random.default_rng(1)
    input_ids = rng.integers(1, 100, size=(3, 7)).astype(np.int64)
    attention_mask = np.ones((3, 7), np.int64)
    attention_mask[1, 5:] = 0
    attention_mask[2, 2:] = 0
    token_type_ids = np.zeros((3, 7), np.int64)
    token_type_ids[0, 4:] = 1
    return input_ids, attention_mask, token_type_ids


def assert_close(actual, expected, name):
    np.testing.assert_allclose(np.asarray(actual), expected.detach().numpy(), rtol=0,
                               atol=TOLERANCE, err_msg=name)


@pytest.mark.parametrize("with_projection", [True, False])
def test_clip_matches_transformers(tmp_path, with_projection):
    config = transformers.CLIPVisionConfig(**CLIP_FIELDS)
    model_class = (transformers.CLIPVisionModelWithProjection if with_projection
                   else transformers.CLIPVisionModel)
    reference = randomize(model_class(config), seed=0)
    reference.save_pretrained(tmp_path)

    module, params = hf.load_hf(tmp_path)
    pixels = images()
    output = module.apply({"params": params}, pixels.transpose(0, 2, 3, 1))
    with torch.no_grad():
        expected = reference(torch.from_numpy(pixels), output_hidden_states=True)

    assert module.config.projection_dim == (16 if with_projection else None)
    assert len(output.hidden_states) == len(expected.hidden_states) == 3
    for index, (actual, want) in enumerate(zip(output.hidden_states, expected.hidden_states)):
        assert_close(actual, want, f"hidden_states[{index}]")
    assert_close(output.last_hidden_state, expected.last_hidden_state, "last_hidden_state")
    if with_projection:
        assert_close(output.image_embeds, expected.image_embeds, "image_embeds")
    else:
        assert_close(output.pooler_output, expected.pooler_output, "pooler_output")


def test_clip_model_checkpoint_loads_vision_tower(tmp_path):
    config = transformers.CLIPConfig(
        vision_config=transformers.CLIPVisionConfig(**CLIP_FIELDS).to_dict(),
        text_config=dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        projection_dim=16)
    reference = randomize(transformers.CLIPModel(config), seed=1)
    reference.save_pretrained(tmp_path)

    module, params = hf.load_clip_vision(tmp_path, config=clip.TINY)
    pixels = images()
    output = module.apply({"params": params}, pixels.transpose(0, 2, 3, 1))
    with torch.no_grad():
        pooled = reference.vision_model(pixel_values=torch.from_numpy(pixels)).pooler_output
        expected = reference.visual_projection(pooled)

    assert_close(output.image_embeds, expected, "image_embeds")


@pytest.mark.parametrize("with_pooler", [True, False])
def test_bert_matches_transformers(tmp_path, with_pooler):
    config = transformers.BertConfig(**BERT_FIELDS)
    reference = randomize(transformers.BertModel(config, add_pooling_layer=with_pooler), seed=2)
    reference.save_pretrained(tmp_path)

    module, params = hf.load_hf(tmp_path)
    input_ids, attention_mask, token_type_ids = token_batch()
    output = module.apply({"params": params}, input_ids, attention_mask, token_type_ids)
    with torch.no_grad():
        expected = reference(torch.from_numpy(input_ids), torch.from_numpy(attention_mask),
                             torch.from_numpy(token_type_ids), output_hidden_states=True)

    assert module.config.add_pooling_layer is with_pooler
    assert len(output.hidden_states) == len(expected.hidden_states) == 3
    for index, (actual, want) in enumerate(zip(output.hidden_states, expected.hidden_states)):
        assert_close(actual, want, f"hidden_states[{index}]")
    if with_pooler:
        assert_close(output.pooler_output, expected.pooler_output, "pooler_output")
    else:
        assert output.pooler_output is None


def test_bert_task_model_loads_encoder(tmp_path):
    config = transformers.BertConfig(**BERT_FIELDS)
    reference = randomize(transformers.BertForMaskedLM(config), seed=3)
    reference.save_pretrained(tmp_path)

    module, params = hf.load_hf(tmp_path)
    input_ids, attention_mask, token_type_ids = token_batch()
    output = module.apply({"params": params}, input_ids, attention_mask, token_type_ids)
    with torch.no_grad():
        expected = reference.bert(torch.from_numpy(input_ids), torch.from_numpy(attention_mask),
                                  torch.from_numpy(token_type_ids))

    assert module.config.add_pooling_layer is False
    assert_close(output.last_hidden_state, expected.last_hidden_state, "last_hidden_state")


@pytest.mark.parametrize("config", [clip.TINY, clip.CLIPVisionConfig(**{**CLIP_FIELDS,
                                                                         "projection_dim": None})],
                         ids=["with_projection", "without_projection"])
def test_clip_export_loads_in_transformers(tmp_path, config):
    import jax

    module = clip.CLIPVisionModel(config)
    params = module.init_params(jax.random.key(0))
    hf.save_hf(tmp_path, config, params)
    model_class = (transformers.CLIPVisionModelWithProjection if config.projection_dim
                   else transformers.CLIPVisionModel)
    reference, info = model_class.from_pretrained(tmp_path, output_loading_info=True)

    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    pixels = images()
    output = module.apply({"params": params}, pixels.transpose(0, 2, 3, 1))
    with torch.no_grad():
        expected = reference.eval()(torch.from_numpy(pixels))
    if config.projection_dim:
        assert_close(output.image_embeds, expected.image_embeds, "image_embeds")
    else:
        assert_close(output.pooler_output, expected.pooler_output, "pooler_output")


def test_bert_export_loads_in_transformers(tmp_path):
    import jax

    module = bert.BertModel(bert.TINY)
    params = module.init_params(jax.random.key(0))
    hf.save_hf(tmp_path, bert.TINY, params)
    reference, info = transformers.BertModel.from_pretrained(tmp_path, output_loading_info=True)

    assert not info["missing_keys"]
    assert not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    input_ids, attention_mask, token_type_ids = token_batch()
    output = module.apply({"params": params}, input_ids, attention_mask, token_type_ids)
    with torch.no_grad():
        expected = reference.eval()(torch.from_numpy(input_ids), torch.from_numpy(attention_mask),
                                    torch.from_numpy(token_type_ids))
    assert_close(output.last_hidden_state, expected.last_hidden_state, "last_hidden_state")
    assert_close(output.pooler_output, expected.pooler_output, "pooler_output")


@pytest.mark.parametrize("config", [clip.VIT_B_32, clip.VIT_L_14, bert.MINILM_L6],
                         ids=["vit_b_32", "vit_l_14", "minilm_l6"])
def test_full_size_layouts_match_transformers(config):
    # Built on the meta device: names and shapes only, no memory or init time.
    hf_config = hf.config_to_hf(config)
    with torch.device("meta"):
        if isinstance(config, clip.CLIPVisionConfig):
            reference = transformers.CLIPVisionModelWithProjection(
                transformers.CLIPVisionConfig(**hf_config))
        else:
            reference = transformers.BertModel(transformers.BertConfig(**hf_config))
    expected = {name: tuple(tensor.shape) for name, tensor in reference.state_dict().items()
                if not name.endswith("position_ids")}

    actual = {hf.path_to_hf_name(path): tuple(hf.to_torch_layout(path, np.empty(shape)).shape)
              for path, shape in hf.parameter_shapes(config).items()}

    assert sorted(actual) == sorted(expected)
    assert actual == expected


def test_normalize_pixels_matches_image_processor():
    processor = transformers.CLIPImageProcessor()
    image = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    expected = processor(images=[image], do_resize=False, do_center_crop=False,
                         return_tensors="np")["pixel_values"]

    actual = clip.normalize_pixels(image[None])

    np.testing.assert_allclose(np.asarray(actual), expected.transpose(0, 2, 3, 1), rtol=0, atol=1e-6)
