"""Tests of the image_experts experiment: end-to-end run, cache, resume and the frozen heads."""

import json
import shutil
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.core import cache
from jaxlab.core import config as config_lib
from jaxlab.core import tree as tree_lib
from jaxlab.models import classification, experts

CONFIG_PATH = Path(__file__).resolve().parents[2] / "configs" / "models" / "image_experts.py"


def tiny_config():
    """Two tasks whose labels a small tower learns in a few dozen steps (hue and grating direction)."""
    config = config_lib.load_config_file(CONFIG_PATH, "quick")
    config.data.tasks = ("colours", "orientation")
    config.data.num_train = 160
    config.data.num_test = 100
    config.model.hidden_size = 16
    config.model.intermediate_size = 32
    config.model.num_layers = 1
    config.model.num_heads = 2
    config.model.projection_dim = 16
    config.pretrain.steps = 5
    config.pretrain.batch_size = 32
    config.pretrain.warmup_steps = 1
    config.probe.steps = 30
    config.finetune.epochs = 4
    config.finetune.batch_size = 16
    config.finetune.learning_rate = 3e-3
    config.finetune.seeds = (0, 1)
    config.eval_batch_size = 100
    config.checkpoint_every = 2
    config.log_every = 5
    return config


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One run of the tiny config: its cache root, workdir and summary."""
    root = tmp_path_factory.mktemp("cache")
    workdir = tmp_path_factory.mktemp("run")
    patcher = pytest.MonkeyPatch()
    patcher.setenv(cache.ENV_VAR, str(root))
    summary = experts.run(tiny_config(), str(workdir))
    yield root, workdir, summary
    patcher.undo()


def test_run_writes_results(built):
    _, workdir, summary = built
    results = json.loads((workdir / "results.json").read_text())
    assert results["tasks"] == ["colours", "orientation"]
    assert set(results["expert_accuracy"]) == {"0", "1"}
    assert 0.0 <= results["individual_average"] <= 1.0
    assert results["individual_average"] == pytest.approx(summary["individual_average"])
    table = (workdir / "results.md").read_text()
    assert "| Individual |" in table
    assert "| Base + linear probe |" in table
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps), "metric steps of consecutive stages must increase"
    leftover = list((workdir / "checkpoints").iterdir())
    assert leftover == [], "checkpoints of cached stages must be deleted"


def test_experts_beat_linear_probe_on_own_task(built):
    # Fine-tuning the tower must improve on the frozen base with the same head, on every task and seed.
    _, _, summary = built
    for seed, accuracy in summary["expert_accuracy"].items():
        for task, value in accuracy.items():
            assert value > summary["base_probe_accuracy"][task], (seed, task)


def test_experts_differ_from_base_and_each_other(built):
    root, _, _ = built
    model, base, heads, expert_params = experts.load_experts(tiny_config(), 0, root=root)
    assert len(heads) == len(expert_params) == 2
    for expert in expert_params:
        chex.assert_trees_all_equal_shapes_and_dtypes(base, expert)
        assert float(tree_lib.tree_norm(tree_lib.tree_sub(expert, base))) > 1e-3
    assert float(tree_lib.tree_norm(tree_lib.tree_sub(expert_params[0], expert_params[1]))) > 1e-3
    _, _, _, seed_1 = experts.load_experts(tiny_config(), 1, root=root)
    assert float(tree_lib.tree_norm(tree_lib.tree_sub(seed_1[0], expert_params[0]))) > 1e-6


def test_cache_reused_without_training(built, monkeypatch):
    root, _, summary = built

    def fail(*args, **kwargs):
        raise AssertionError("training ran although the cache holds the models")

    monkeypatch.setattr(experts, "pretrain", fail)
    monkeypatch.setattr(experts, "finetune", fail)
    config = tiny_config()
    model, base, heads, expert_params = experts.load_experts(config, 0, root=root)
    task = experts.load_tasks(config)[0]
    accuracy = classification.accuracy(model, expert_params[0], heads[0], task.test_images, task.test_labels)
    assert accuracy == pytest.approx(summary["expert_accuracy"]["0"]["colours"])


def test_unknown_finetune_seed_rejected(built):
    root, _, _ = built
    with pytest.raises(ValueError, match="finetune_seed=7"):
        experts.load_experts(tiny_config(), 7, root=root)


def test_corrupted_cache_rejected(built, tmp_path):
    root, _, _ = built
    copy = tmp_path / "cache"
    shutil.copytree(root, copy)
    config = tiny_config()
    directory = cache.artifact_dir(experts.experts_spec(config, 0), copy)
    victim = sorted(directory.glob("*.npy"))[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(cache.CacheError, match="corrupt"):
        experts.load_experts(config, 0, root=copy)


def test_cache_key_follows_config(built):
    config = tiny_config()
    other = tiny_config()
    other.finetune.learning_rate = 1e-3
    assert experts.base_spec(config).key == experts.base_spec(other).key
    assert experts.experts_spec(config, 0).key != experts.experts_spec(other, 0).key
    other.pretrain.steps = 6
    assert experts.base_spec(config).key != experts.base_spec(other).key


def test_pretrain_resume_gives_identical_params(built, tmp_path):
    config = tiny_config()
    model = experts.CLIPVisionModel(experts.vision_config(config))
    tasks = experts.load_tasks(config)
    checkpoints = tmp_path / "pretrain"
    uninterrupted, _ = experts.pretrain(config, model, tasks, checkpoints)
    # max_to_keep=2 keeps steps 4 and 5; removing 5 leaves the state of a run killed after step 4.
    assert sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) == [4, 5]
    shutil.rmtree(checkpoints / "5")
    resumed, _ = experts.pretrain(config, model, tasks, checkpoints)
    for (path, a), (_, b) in zip(tree_lib.tree_flatten_with_paths(uninterrupted)[0],
                                 tree_lib.tree_flatten_with_paths(resumed)[0]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=path)


def test_frozen_head_optimizer_leaves_head_unchanged():
    settings = experts.OptimizerSettings(learning_rate=0.1, weight_decay=0.5, warmup_steps=0, total_steps=10,
                                         max_grad_norm=1.0)
    optimizer = experts.make_frozen_head_optimizer(settings)
    params = {"tower": {"w": jnp.ones((3, 2))}, "head": classification.init_head(4, 3)}
    params["head"]["kernel"] = params["head"]["kernel"] + 1.0
    state = optimizer.init(params)
    updated = params
    for step in range(3):
        grads = jax.tree.map(lambda x: jnp.full_like(x, step + 1.0), params)
        updates, state = optimizer.update(grads, state, updated)
        updated = jax.tree.map(lambda p, u: p + u, updated, updates)
    np.testing.assert_array_equal(updated["head"]["kernel"], params["head"]["kernel"])
    np.testing.assert_array_equal(updated["head"]["bias"], params["head"]["bias"])
    assert not np.allclose(updated["tower"]["w"], params["tower"]["w"])


def test_linear_probe_separates_features():
    # Features that are one-hot per class make a linear probe exact.
    model_features = np.eye(4, dtype=np.float32)[np.arange(40) % 4]
    labels = np.arange(40) % 4
    head = experts._fit_head(jnp.asarray(model_features), jnp.asarray(labels), classification.init_head(4, 4),
                             steps=50, l2=1e-4)
    predictions = np.argmax(np.asarray(classification.head_logits(head, model_features)), axis=-1)
    np.testing.assert_array_equal(predictions, labels)


@pytest.mark.parametrize("variant", ["", "quick", "paper"])
def test_config_variants_validate(variant):
    config = config_lib.load_config_file(CONFIG_PATH, variant)
    experts.validate(config)
    assert config.experiment == "image_experts"
    assert len(config.finetune.seeds) == 3


def test_unknown_variant_rejected():
    with pytest.raises(ValueError, match="unknown variant"):
        config_lib.load_config_file(CONFIG_PATH, "huge")


@pytest.mark.parametrize("field, value", [
    ("model.patch_size", 5),
    ("model.num_heads", 3),
    ("data.tasks", ("digits", "digits")),
    ("data.tasks", ("no_such_task",)),
    ("finetune.seeds", (0, -1)),
    ("finetune.batch_size", 10_000),
    ("pretrain.warmup_steps", 3000),
    ("pretrain.temperature", 0.0),
    ("pretrain.min_crop_area", 1.5),
    ("pretrain.source_weight", -1.0),
    ("finetune.warmup_fraction", 1.0),
])
def test_validate_rejects_bad_field(field, value):
    config = config_lib.load_config_file(CONFIG_PATH, "")
    parent, _, leaf = field.rpartition(".")
    config[parent][leaf] = value
    with pytest.raises(config_lib.ConfigError) as error:
        experts.validate(config)
    assert error.value.field == field


def test_validate_rejects_pretraining_without_objective():
    config = config_lib.load_config_file(CONFIG_PATH, "")
    for name in experts.PRETRAIN_OBJECTIVES:
        config.pretrain[f"{name}_weight"] = 0.0
    with pytest.raises(config_lib.ConfigError, match="at least one of pretrain.contrastive_weight, pretrain.source_weight"):
        experts.validate(config)


def test_contrastive_loss_matches_numpy():
    features = jax.random.normal(jax.random.key(0), (2, 6, 4))
    features = features / jnp.linalg.norm(features, axis=-1, keepdims=True)
    loss, accuracy = experts.contrastive_loss(features[0], features[1], temperature=0.5)

    # NT-Xent written out: row i of the 12 stacked features has its pair at (i + 6) mod 12.
    stacked = np.concatenate([np.asarray(features[0]), np.asarray(features[1])]).astype(np.float64)
    similarities = stacked @ stacked.T / 0.5
    expected, hits = [], []
    for i in range(12):
        others = [j for j in range(12) if j != i]
        pair = (i + 6) % 12
        expected.append(-similarities[i, pair] + np.log(np.sum(np.exp(similarities[i, others]))))
        hits.append(max(others, key=lambda j: similarities[i, j]) == pair)
    np.testing.assert_allclose(float(loss), np.mean(expected), rtol=1e-5)
    assert float(accuracy) == pytest.approx(np.mean(hits))

    # Views that equal each other and are orthogonal to every other image are found with a small loss.
    one_hot = jnp.eye(4)
    loss, accuracy = experts.contrastive_loss(one_hot, one_hot, temperature=0.1)
    assert float(accuracy) == 1.0
    assert float(loss) < 1e-3


def test_augment_views_crops_and_jitters(monkeypatch):
    # Each image is one flat colour, so every crop of it is flat and only the jitter changes it.
    colours = np.array([[40, 120, 200], [250, 10, 90], [128, 128, 128]], np.uint8)
    flat = jnp.asarray(np.broadcast_to(colours[:, None, None, :], (3, 32, 32, 3)))
    views = experts.augment_views(jax.random.key(1), flat, min_crop_area=0.5)
    assert views.dtype == jnp.uint8
    assert views.shape == flat.shape
    views = np.asarray(views, np.int32)
    assert np.all(views.std(axis=(1, 2)) == 0)
    # Brightness and contrast jitter move the colour.
    assert not np.array_equal(views[:, 0, 0], colours)

    gradient = np.broadcast_to(np.arange(0, 256, 8, dtype=np.uint8)[None, None, :, None], (4, 32, 32, 3))
    first = experts.augment_views(jax.random.key(2), jnp.asarray(gradient), min_crop_area=0.5)
    again = experts.augment_views(jax.random.key(2), jnp.asarray(gradient), min_crop_area=0.5)
    other = experts.augment_views(jax.random.key(3), jnp.asarray(gradient), min_crop_area=0.5)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    with pytest.raises(ValueError, match="min_crop_area=0"):
        experts.augment_views(jax.random.key(2), jnp.asarray(gradient), min_crop_area=0)
    assert not np.array_equal(np.asarray(first), np.asarray(other))

    # Without jitter, a crop resized back to 32 pixels only stretches the ramp: the mean difference of
    # neighbouring columns shrinks from 8 to 8 times the crop's width fraction, in [MIN_CROP_SIDE, 1].
    monkeypatch.setattr(experts, "VIEW_JITTER", 0.0)
    cropped = experts.augment_views(jax.random.key(2), jnp.asarray(gradient), min_crop_area=0.5)
    width_fraction = np.diff(np.asarray(cropped, np.float64)[:, 0, :, 0], axis=1).mean(axis=1) / 8
    assert np.all(width_fraction > 0.95 * experts.MIN_CROP_SIDE)
    assert np.all(width_fraction < 1.02)
    assert np.any(width_fraction < 0.95)


def test_preprocess_resizes_and_rejects_floats():
    images = np.full((2, 32, 32, 3), 255, np.uint8)
    pixels = classification.preprocess_images(jnp.asarray(images), 64)
    assert pixels.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(np.asarray(pixels), 1.0, atol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        classification.preprocess_images(jnp.zeros((2, 32, 32, 3)), 32)
