"""The prompt classifier on a tiny random OPT with a tiny byte-level BPE tokenizer trained here."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab.models import opt
from jaxlab.zo import prompt_lm

tokenizers = pytest.importorskip("tokenizers", reason="the prompt classifier needs tokenizers "
                                 "(pip install tokenizers)")

CORPUS = ["the movie was great fun", "the plot was terrible", "It was great", "It was terrible",
          "a great cast and a terrible script", "This is about animals and plants"] * 20
TEXTS = ["the movie was fun", "a terrible plot", "great"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """Byte-level BPE as in GPT-2/OPT, with OPT's special tokens at ids 0-3, saved and reloaded."""
    model = tokenizers.models.BPE()
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=120, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                             show_progress=False)
    tokenizer.train_from_iterator(CORPUS, trainer)
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tokenizer.save(str(path))
    return prompt_lm.load_tokenizer(path)


@pytest.fixture(scope="module")
def params():
    return opt.OPTForCausalLM(opt.TINY).init_params(jax.random.key(0))


@pytest.fixture(scope="module")
def classifier(tokenizer):
    return prompt_lm.PromptClassifier(opt.OPTForCausalLM(opt.TINY), tokenizer, prompt_lm.SST2_TEMPLATE,
                                      max_length=16)


def test_tokenize_pads_left_after_bos(classifier, tokenizer):
    tokens = classifier.tokenize(TEXTS)

    prompt_ids = tokenizer.encode("great It was", add_special_tokens=False).ids
    row = tokens["input_ids"][2]
    length = len(prompt_ids) + 1
    np.testing.assert_array_equal(row[-length:], [opt.TINY.bos_token_id] + prompt_ids)
    np.testing.assert_array_equal(row[:-length], opt.TINY.pad_token_id)
    np.testing.assert_array_equal(tokens["attention_mask"][2], np.arange(16) >= 16 - length)
    assert tokens["input_ids"].dtype == np.int32


def test_logits_equal_gathered_lm_logits(classifier, tokenizer, params):
    tokens = classifier.tokenize(TEXTS)

    actual = classifier.logits(params, tokens)
    lm_logits = opt.OPTForCausalLM(opt.TINY).apply({"params": params}, tokens["input_ids"],
                                                   tokens["attention_mask"]).logits
    label_ids = [tokenizer.token_to_id("Ġterrible"), tokenizer.token_to_id("Ġgreat")]
    expected = np.asarray(lm_logits)[:, -1][:, label_ids]

    assert actual.shape == (3, 2)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)


def test_padding_leaves_logits_unchanged(classifier, tokenizer, params):
    longer = prompt_lm.PromptClassifier(classifier.model, tokenizer, prompt_lm.SST2_TEMPLATE, max_length=24)
    tokens = classifier.tokenize(TEXTS)
    # The same rows moved to the right end: padding after the prompt.
    right_padded = {name: np.stack([np.roll(row, int(mask.sum()))
                                    for row, mask in zip(array, tokens["attention_mask"])])
                    for name, array in tokens.items()}

    reference = classifier.logits(params, tokens)

    np.testing.assert_allclose(longer.logits(params, longer.tokenize(TEXTS)), reference, rtol=0, atol=1e-5)
    np.testing.assert_allclose(classifier.logits(params, right_padded), reference, rtol=0, atol=1e-5)
    single = classifier.logits(params, classifier.tokenize(TEXTS[1:2]))
    np.testing.assert_allclose(single, reference[1:2], rtol=0, atol=1e-5)


def test_all_padding_row_is_finite(classifier, params):
    tokens = classifier.tokenize(TEXTS[:1])
    # Batch filler as jaxlab.zo.classifier.accuracy appends it: zero ids and an all-zero mask.
    filled = {name: np.concatenate([array, np.zeros_like(array)]) for name, array in tokens.items()}

    logits = classifier.logits(params, filled)

    assert np.all(np.isfinite(logits))
    np.testing.assert_allclose(logits[:1], classifier.logits(params, tokens), rtol=0, atol=1e-5)


def test_loss_is_cross_entropy(classifier, params):
    tokens = classifier.tokenize(TEXTS)
    labels = jnp.array([1, 0, 1])

    loss = jax.jit(classifier.loss)(params, tokens, labels)
    expected = optax.softmax_cross_entropy_with_integer_labels(classifier.logits(params, tokens), labels)

    np.testing.assert_allclose(loss, expected.mean(), rtol=1e-6)


def test_long_prompt_keeps_template_end(tokenizer):
    classifier = prompt_lm.PromptClassifier(opt.OPTForCausalLM(opt.TINY), tokenizer, prompt_lm.SST2_TEMPLATE,
                                            max_length=5)
    tokens = classifier.tokenize(["the movie was great fun and the plot was terrible"])

    tail = tokenizer.encode(" It was", add_special_tokens=False).ids
    row = tokens["input_ids"][0]
    assert row[0] == opt.TINY.bos_token_id
    np.testing.assert_array_equal(row[-len(tail):], tail)
    np.testing.assert_array_equal(tokens["attention_mask"][0], 1)


def test_rejects_multi_token_label_word(tokenizer):
    template = prompt_lm.PromptTemplate("{text} It was", (" terrible", " xylophone"))

    with pytest.raises(ValueError, match=r"label word ' xylophone' is \d+ tokens"):
        prompt_lm.PromptClassifier(opt.OPTForCausalLM(opt.TINY), tokenizer, template, max_length=16)


def test_rejects_bad_arguments(tokenizer):
    model = opt.OPTForCausalLM(opt.TINY)
    with pytest.raises(ValueError, match="invalid max_length=65"):
        prompt_lm.PromptClassifier(model, tokenizer, prompt_lm.SST2_TEMPLATE, max_length=65)
    small = opt.OPTForCausalLM(dataclasses.replace(opt.TINY, vocab_size=64))
    with pytest.raises(ValueError, match=r"the tokenizer has \d+ tokens but the model's vocab_size is 64"):
        prompt_lm.PromptClassifier(small, tokenizer, prompt_lm.SST2_TEMPLATE, max_length=16)


def test_template_validation():
    with pytest.raises(ValueError, match="expected exactly one"):
        prompt_lm.PromptTemplate("It was", (" bad", " good"))
    with pytest.raises(ValueError, match="must be distinct"):
        prompt_lm.PromptTemplate("{text} It was", (" good", " good"))
    with pytest.raises(ValueError, match="at least two classes"):
        prompt_lm.PromptTemplate("{text} It was", (" good",))
    with pytest.raises(ValueError, match="non-blank"):
        prompt_lm.PromptTemplate("{text} It was", (" good", " "))


def test_gloss_template_words():
    template = prompt_lm.gloss_template(("noun.animal", "noun.plant", "adverb"))

    assert template.format(" a living organism\n") == "a living organism This is about"
    assert template.label_words == (" animal", " plant", " adverb")
    with pytest.raises(ValueError, match="got 1 label words for 2 classes"):
        prompt_lm.gloss_template(("noun.animal", "noun.plant"), label_words=[" x"])


def test_gloss_classifier_runs(tokenizer, params):
    template = prompt_lm.gloss_template(("noun.animal", "noun.plant"), label_words=[" animals", " plants"])
    classifier = prompt_lm.PromptClassifier(opt.OPTForCausalLM(opt.TINY), tokenizer, template, max_length=16)

    logits = classifier.logits(params, classifier.tokenize(["a great plant", "the animal"]))

    assert logits.shape == (2, 2)
    assert np.all(np.isfinite(logits))


def test_load_tokenizer_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json not found"):
        prompt_lm.load_tokenizer(tmp_path / "tokenizer.json")
