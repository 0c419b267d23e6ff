"""Parameter naming, checkpoint round trips and the errors for bad checkpoints."""

import json

import chex
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxlab.models import bert, clip, hf


@pytest.fixture(scope="module")
def clip_params():
    return clip.CLIPVisionModel(clip.TINY).init_params(jax.random.key(0))


@pytest.fixture(scope="module")
def bert_params():
    return bert.BertModel(bert.TINY).init_params(jax.random.key(1))


def rewrite_tensors(directory, edit):
    """Apply `edit` to the checkpoint's {name: tensor} dict and write it back."""
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("config", [clip.TINY, bert.TINY, clip.VIT_L_14], ids=["clip", "bert", "vit_l_14"])
def test_names_round_trip(config):
    for path in hf.parameter_shapes(config):
        name = hf.path_to_hf_name(path)
        assert hf.hf_name_to_path(name) == path, name


def test_names_follow_documented_rules():
    assert hf.hf_name_to_path("vision_model.encoder.layers.0.mlp.fc1.weight") == (
        "vision_model", "encoder", "layers_0", "mlp", "fc1", "kernel")
    assert hf.hf_name_to_path("encoder.layer.11.output.LayerNorm.weight") == (
        "encoder", "layer_11", "output", "LayerNorm", "scale")
    assert hf.hf_name_to_path("embeddings.word_embeddings.weight") == (
        "embeddings", "word_embeddings", "embedding")
    assert hf.path_to_hf_name(("vision_model", "embeddings", "class_embedding")) == (
        "vision_model.embeddings.class_embedding")


def test_layouts_are_inverse():
    rng = np.random.default_rng(0)
    for shape, leaf in [((3, 5), "kernel"), ((8, 8, 3, 4), "kernel"), ((7,), "bias"), ((9, 4), "embedding")]:
        array = rng.normal(size=shape)
        round_trip = hf.to_flax_layout(("x", leaf), hf.to_torch_layout(("x", leaf), array))
        np.testing.assert_array_equal(round_trip, array)
    # PyTorch conv weight [out, in, h, w] -> Flax [h, w, in, out].
    assert hf.to_flax_layout(("conv", "kernel"), np.zeros((4, 3, 8, 7))).shape == (8, 7, 3, 4)


@pytest.mark.parametrize("which", ["clip", "bert"])
def test_save_then_load_round_trips(tmp_path, which, clip_params, bert_params):
    config, params = (clip.TINY, clip_params) if which == "clip" else (bert.TINY, bert_params)

    hf.save_hf(tmp_path, config, params)
    module, loaded = hf.load_hf(tmp_path, config=config)

    assert module.config == config
    chex.assert_trees_all_equal(loaded, params)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_save_to_an_existing_file_names_the_path(tmp_path, bert_params):
    existing = tmp_path / "model.bin"
    existing.write_bytes(b"keep me")

    with pytest.raises(ValueError, match="model.bin is an existing file"):
        hf.save_hf(existing, bert.TINY, bert_params)
    assert existing.read_bytes() == b"keep me"


def test_load_rejects_other_architecture(tmp_path, bert_params):
    hf.save_hf(tmp_path, bert.TINY, bert_params)

    with pytest.raises(hf.CheckpointError, match="expected a CLIPVisionConfig checkpoint, found a BertConfig"):
        hf.load_hf(tmp_path, config=clip.TINY)
    with pytest.raises(hf.CheckpointError, match="expected a CLIP checkpoint.*found model_type 'bert'"):
        hf.load_clip_vision(tmp_path)


def test_load_rejects_config_mismatch(tmp_path, clip_params):
    hf.save_hf(tmp_path, clip.TINY, clip_params)

    with pytest.raises(hf.CheckpointError) as error:
        hf.load_hf(tmp_path, config=clip.VIT_B_32)
    message = str(error.value)
    assert "hidden_size: expected 768, found 32" in message
    assert "patch_size: expected 32, found 8" in message


def test_load_rejects_unknown_model_type(tmp_path, clip_params):
    hf.save_hf(tmp_path, clip.TINY, clip_params)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "gpt2"
    (tmp_path / "config.json").write_text(json.dumps(config))

    with pytest.raises(hf.CheckpointError, match="unsupported model_type 'gpt2'"):
        hf.load_hf(tmp_path)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop("vision_model.encoder.layers.1.mlp.fc2.bias"),
     "missing parameter vision_model.encoder.layers.1.mlp.fc2.bias"),
    (lambda t: t.update({"vision_model.encoder.layers.2.mlp.fc1.bias": np.zeros(64, np.float32)}),
     "unexpected parameter vision_model.encoder.layers.2.mlp.fc1.bias"),
    (lambda t: t.update({"vision_model.encoder.layers.0.self_attn.q_proj.weight":
                         np.zeros((32, 16), np.float32)}),
     r"parameter vision_model.encoder.layers.0.self_attn.q_proj.weight has shape \(32, 16\)"),
    (lambda t: t["vision_model.pre_layrnorm.weight"].__setitem__(3, np.nan),
     "parameter vision_model.pre_layrnorm.weight contains NaN"),
    (lambda t: t.update({"vision_model.pre_layrnorm.bias": np.zeros(32, np.int32)}),
     "parameter vision_model.pre_layrnorm.bias has dtype int32"),
], ids=["missing", "unexpected", "misshaped", "nan", "integer"])
def test_load_names_first_bad_tensor(tmp_path, clip_params, edit, message):
    hf.save_hf(tmp_path, clip.TINY, clip_params)
    rewrite_tensors(tmp_path, edit)

    with pytest.raises(hf.CheckpointError, match=message):
        hf.load_hf(tmp_path)


def test_load_ignores_position_ids_buffer(tmp_path, bert_params):
    hf.save_hf(tmp_path, bert.TINY, bert_params)
    rewrite_tensors(tmp_path, lambda t: t.update(
        {"embeddings.position_ids": np.arange(64, dtype=np.int64)[None]}))

    _, loaded = hf.load_hf(tmp_path)

    chex.assert_trees_all_equal(loaded, bert_params)


def test_load_without_safetensors_explains_conversion(tmp_path, clip_params):
    hf.save_hf(tmp_path, clip.TINY, clip_params)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")

    with pytest.raises(hf.CheckpointError, match="only PyTorch pickles"):
        hf.load_hf(tmp_path)


def test_save_rejects_bad_params(tmp_path, clip_params):
    extra = jax.tree_util.tree_map(lambda x: x, clip_params)
    extra["vision_model"]["encoder"]["layers_0"]["output_hook"] = {"kernel": np.zeros((2, 2))}
    with pytest.raises(hf.CheckpointError, match="unexpected entry vision_model/encoder/layers_0/output_hook/kernel"):
        hf.save_hf(tmp_path, clip.TINY, extra)

    poisoned = jax.tree_util.tree_map(lambda x: x, clip_params)
    poisoned["visual_projection"]["kernel"] = poisoned["visual_projection"]["kernel"].at[0, 0].set(np.inf)
    with pytest.raises(hf.CheckpointError, match=r"visual_projection/kernel \(visual_projection.weight\) contains NaN"):
        hf.save_hf(tmp_path, clip.TINY, poisoned)
    assert not (tmp_path / "model.safetensors").exists()


def write_cache(cache, repo_id, commit, params, with_ref=True):
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    hf.save_hf(repo_dir / "snapshots" / commit, clip.TINY, params)
    if with_ref:
        (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / "main").write_text(commit)


def test_clip_loads_from_cache_layout(tmp_path, clip_params):
    write_cache(tmp_path, "openai/clip-vit-base-patch32", "0123abcd", clip_params)

    module, loaded = hf.load_clip_vision("openai/clip-vit-base-patch32", cache_dir=tmp_path,
                                         config=clip.TINY)

    assert module.config == clip.TINY
    chex.assert_trees_all_equal(loaded, clip_params)


def test_clip_cache_uses_hf_home(tmp_path, monkeypatch, clip_params):
    write_cache(tmp_path / "hub", "openai/clip-vit-large-patch14", "feed", clip_params, with_ref=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))

    _, loaded = hf.load_clip_vision("openai/clip-vit-large-patch14", config=clip.TINY)

    chex.assert_trees_all_equal(loaded, clip_params)


def test_clip_cache_rejects_wrong_size(tmp_path, clip_params):
    # A tiny tower cached under the ViT-B/32 name must not pass for ViT-B/32.
    write_cache(tmp_path, "openai/clip-vit-base-patch32", "0123abcd", clip_params)

    with pytest.raises(hf.CheckpointError, match="num_hidden_layers: expected 12, found 2"):
        hf.load_clip_vision("openai/clip-vit-base-patch32", cache_dir=tmp_path)


def test_clip_cache_missing_repo_is_reported(tmp_path):
    with pytest.raises(hf.CheckpointError, match="not in the Hugging Face cache.*huggingface-cli download"):
        hf.load_clip_vision("openai/clip-vit-base-patch32", cache_dir=tmp_path)


def test_clip_cache_ambiguous_snapshots_need_revision(tmp_path, clip_params):
    write_cache(tmp_path, "openai/clip-vit-base-patch32", "aaaa", clip_params, with_ref=False)
    write_cache(tmp_path, "openai/clip-vit-base-patch32", "bbbb", clip_params, with_ref=False)

    with pytest.raises(hf.CheckpointError, match=r"snapshots: \['aaaa', 'bbbb'\]"):
        hf.load_clip_vision("openai/clip-vit-base-patch32", cache_dir=tmp_path, config=clip.TINY)
    _, loaded = hf.load_clip_vision("openai/clip-vit-base-patch32", cache_dir=tmp_path,
                                    revision="bbbb", config=clip.TINY)
    chex.assert_trees_all_equal(loaded, clip_params)


def test_clip_model_config_dict_overrides(tmp_path, clip_params):
    # An older CLIPModel config.json: `vision_config` with default sizes and
    # the real sizes in `vision_config_dict`.
    hf.save_hf(tmp_path, clip.TINY, clip_params)
    tiny = json.loads((tmp_path / "config.json").read_text())
    sizes = {name: tiny[name] for name in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                           "num_attention_heads", "image_size", "patch_size")}
    config = {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": 16,
              "vision_config": {"hidden_size": 768, "patch_size": 32}, "vision_config_dict": sizes}
    (tmp_path / "config.json").write_text(json.dumps(config))
    rewrite_tensors(tmp_path, lambda t: t.update({"logit_scale": np.ones((), np.float32),
                                                  "text_projection.weight": np.ones((16, 8), np.float32)}))

    module, loaded = hf.load_clip_vision(tmp_path)

    assert module.config == clip.TINY
    chex.assert_trees_all_equal(loaded, clip_params)


def test_truncated_safetensors_and_file_path_are_rejected(tmp_path):
    from jaxlab.models import bert, hf

    module = bert.BertModel(bert.TINY)
    checkpoint = hf.save_hf(tmp_path / "ckpt", bert.TINY, module.init_params(jax.random.key(0)))
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5])
    with pytest.raises(hf.CheckpointError, match="not a readable safetensors file"):
        hf.load_hf(checkpoint)
    with pytest.raises(hf.CheckpointError, match="is a file"):
        hf.load_hf(weights)
