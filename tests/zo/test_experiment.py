"""End-to-end tests of the zo_finetune experiment on a random tiny BERT: outputs, resume and validation."""

import json
from pathlib import Path

import pytest

from jaxlab.core import config as config_lib
from jaxlab.core import registry
from jaxlab.data import text as text_lib
from jaxlab.zo import experiment

CONFIG_PATH = Path(__file__).resolve().parents[2] / "configs" / "zo" / "finetune.py"

pytestmark = pytest.mark.skipif(not (text_lib.wordnet_dir() / "data.noun").is_file(),
                                reason="WordNet database files not found; install Debian's wordnet-base")


def _tiny_config(optimizer="lezo"):
    config = config_lib.load_config_file(CONFIG_PATH, "quick")
    config.optimizer.name = optimizer
    config.task.name = "adjective_vs_adverb"
    config.num_steps = 12
    config.eval_every = 6
    config.checkpoint_every = 6
    return config


@pytest.fixture(autouse=True)
def _data_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("JAXLAB_DATA", str(tmp_path_factory.getbasetemp() / "jaxlab_data"))


def test_every_variant_validates():
    for variant in ("", "mezo", "sparse_mezo", "adamw", "quick"):
        experiment.validate(config_lib.load_config_file(CONFIG_PATH, variant))
    assert registry.get_experiment("zo_finetune").run is experiment.run


@pytest.mark.parametrize("field,value", [
    ("optimizer.name", "sgd"),
    ("optimizer.active_fraction", 0.0),
    ("optimizer.epsilon", -1e-3),
    ("task.name", "sst2"),
    ("batch_size", 10_000),
    ("model.max_length", 1),
    ("model.frozen_pattern", "[unclosed"),
    ("model.label_words", (" animal", " plant")),  # OPT-only fields on a BERT model.
    ("model.checkpoint_dir", "/tmp"),
    ("model.head_init", "random"),
])
def test_validate_rejects_bad_values(field, value):
    config = _tiny_config()
    parent, _, leaf = field.rpartition(".")
    setattr(config_lib.get_field(config, parent) if parent else config, leaf, value)
    with pytest.raises(config_lib.ConfigError, match=field.replace(".", r"\.")):
        experiment.validate(config)


@pytest.mark.parametrize("optimizer", ["lezo", "adamw"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, optimizer):
    config = _tiny_config(optimizer)
    experiment.validate(config)
    reference = experiment.run(config, str(tmp_path / "reference"))
    assert reference["forward_passes"] == 24
    assert reference["accuracy_curve"]["step"] == [6, 12]
    assert 0.0 <= reference["final_test_accuracy"] <= 1.0

    # Stop after the first checkpoint, then run again to the end in the same workdir.
    interrupted = tmp_path / "interrupted"
    config.num_steps = 6
    experiment.run(config, str(interrupted))
    config.num_steps = 12
    resumed = experiment.run(config, str(interrupted))

    keys = ("final_test_accuracy", "accuracy_curve", "initial_test_accuracy", "trainable_parameters")
    assert {k: resumed[k] for k in keys} == {k: reference[k] for k in keys}
    metric_steps = [json.loads(line)["step"] for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert metric_steps == list(range(1, 13))


@pytest.mark.parametrize("head_init", ["prototypes", "class_names"])
def test_head_starts_at_the_configured_embeddings(head_init):
    import numpy as np

    from jaxlab.zo import classifier

    config = _tiny_config()
    config.model.head_init = head_init
    task = text_lib.load_text_task(config.task.name, train_per_class=config.task.train_per_class,
                                   test_per_class=config.task.test_per_class, seed=config.seed)
    model, params, tokenize = experiment.build_model(config, task)
    if head_init == "class_names":
        texts, labels = ["adjective", "adverb"], np.arange(2)
    else:
        texts, labels = task.train_texts, np.asarray(task.train_labels)
    embeddings = classifier.embed_all(model, params["encoder"], tokenize(texts), batch_size=8)
    expected = np.stack([embeddings[labels == c].mean(axis=0) for c in range(2)], axis=1)
    expected *= classifier.PROTOTYPE_SCALE / np.linalg.norm(expected, axis=0, keepdims=True)
    np.testing.assert_allclose(params["head"]["kernel"], expected, rtol=1e-5, atol=1e-6)


def test_frozen_pattern_splits_and_merges():
    from jaxlab.zo import classifier

    params = {"encoder": {"embeddings": {"word": 1.0}, "encoder": {"layer_0": {"w": 2.0}}}, "head": {"b": 3.0}}
    trainable, frozen = classifier.split_trainable(params, "embeddings")
    assert frozen == {"encoder": {"embeddings": {"word": 1.0}}}
    assert trainable == {"encoder": {"encoder": {"layer_0": {"w": 2.0}}}, "head": {"b": 3.0}}
    assert classifier.merge_trainable(trainable, frozen) == params
    with pytest.raises(ValueError, match="freezes every parameter"):
        classifier.split_trainable(params, ".")


def test_opt_prompt_model_runs_from_local_checkpoint(tmp_path):
    tokenizers = pytest.importorskip("tokenizers", reason="the OPT prompt classifier reads tokenizer.json")
    import jax

    from jaxlab.models import hf, opt

    # A tiny OPT checkpoint with a byte-level BPE tokenizer trained here, offline, on text that makes both
    # label words single tokens.
    checkpoint = tmp_path / "tiny_opt"
    hf.save_hf(checkpoint, opt.TINY, opt.OPTForCausalLM(opt.TINY).init_params(jax.random.key(0)))
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=opt.TINY.vocab_size,
                                             special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False)
    tokenizer.train_from_iterator(["This is about adjective", "This is about adverb"] * 50, trainer)
    tokenizer.save(str(checkpoint / "tokenizer.json"))

    config = _tiny_config("lezo")
    config.model.name = "opt"
    config.model.checkpoint_dir = str(checkpoint)
    config.model.label_words = (" adjective", " adverb")
    experiment.validate(config)
    results = experiment.run(config, str(tmp_path / "run"))
    assert results["model"] == "opt"
    assert results["accuracy_curve"]["step"] == [6, 12]


def test_opt_needs_checkpoint_dir(tmp_path):
    config = _tiny_config()
    config.model.name = "opt"
    with pytest.raises(config_lib.ConfigError, match="model.checkpoint_dir"):
        experiment.validate(config)

    config.model.checkpoint_dir = str(tmp_path)  # A directory without the checkpoint files.
    with pytest.raises(config_lib.ConfigError, match="model.checkpoint_dir"):
        experiment.validate(config)


@pytest.mark.parametrize("field,value", [
    ("label_words", (" one",)),  # One word for a two-class task.
    ("head_init", "class_names"),  # OPT has no classification head.
])
def test_opt_rejects_bad_model_fields(tmp_path, field, value):
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (tmp_path / name).write_text("{}")
    config = _tiny_config()
    config.model.name = "opt"
    config.model.checkpoint_dir = str(tmp_path)
    setattr(config.model, field, value)
    with pytest.raises(config_lib.ConfigError, match=f"model.{field}"):
        experiment.validate(config)
