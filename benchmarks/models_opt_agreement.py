"""Largest differences between jaxlab's OPT and transformers' OPTForCausalLM.

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python benchmarks/models_opt_agreement.py

Builds small random OPT models in transformers (weights N(0, 0.2)), saves them
with save_pretrained and loads them with jaxlab.models.hf.load_hf. For a
batch of 8 rows of 32 tokens with 1 to 32 real tokens, padded on the left and
then on the right, it reports the maximum absolute difference over the logits
and every hidden state. Eager attention is compared at all positions and
SDPA, transformers' default, at real tokens only, because the two treat
padding queries (which see no key) differently. A last row exports random
jaxlab params with save_hf and compares the logits of the copy that
transformers loads. Prints a markdown record for docs/models.md; needs torch
and transformers.
"""

import datetime
import sys
import tempfile

import jax
import numpy as np
import torch
import transformers
from absl import app

from jaxlab.core.machine import describe_machine
from jaxlab.models import hf, opt

BATCH, TOKENS = 8, 32
FIELDS = dict(vocab_size=512, hidden_size=64, num_hidden_layers=4, ffn_dim=256, num_attention_heads=4,
              max_position_embeddings=64)
CONFIGS = {
    "pre-LayerNorm (OPT-125m layout)": FIELDS,
    "word_embed_proj_dim 32 (project_in/out)": {**FIELDS, "word_embed_proj_dim": 32},
    "post-LayerNorm, projected (OPT-350m layout)": {**FIELDS, "word_embed_proj_dim": 32,
                                                    "do_layer_norm_before": False},
}


def randomize(model, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def padded_batch(side, seed=0):
    """Token ids int64 [BATCH, TOKENS] and the mask of 1..TOKENS real tokens per row, padded on `side`."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, TOKENS + 1, size=(BATCH, 1))
    lengths[0] = TOKENS
    positions = np.arange(TOKENS)[None]
    mask = positions < lengths if side == "right" else positions >= TOKENS - lengths
    input_ids = np.where(mask, rng.integers(3, FIELDS["vocab_size"], size=(BATCH, TOKENS)), 1)
    return input_ids.astype(np.int64), mask.astype(np.int64)


def max_difference(output, expected, mask=None):
    """Return the maximum |jaxlab - transformers| over logits and hidden states, at rows of `mask`."""
    pairs = list(zip(output.hidden_states, expected.hidden_states))
    pairs.append((output.logits, expected.logits))
    keep = slice(None) if mask is None else mask.astype(bool)
    return max(float(np.abs(np.asarray(a)[keep] - b.numpy()[keep]).max()) for a, b in pairs)


def reference_outputs(reference, implementation, input_ids, mask):
    reference.set_attn_implementation(implementation)
    with torch.no_grad():
        return reference(torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask),
                         output_hidden_states=True)


def import_differences(fields, seed):
    """Return {(implementation, side): max difference} for a checkpoint made by transformers."""
    reference = randomize(transformers.OPTForCausalLM(transformers.OPTConfig(**fields)), seed)
    with tempfile.TemporaryDirectory() as directory:
        reference.save_pretrained(directory)
        module, params = hf.load_hf(directory)
    apply = jax.jit(module.apply)
    differences = {}
    for side in ("left", "right"):
        input_ids, mask = padded_batch(side)
        output = apply({"params": params}, input_ids, mask)
        differences["eager", side] = max_difference(
            output, reference_outputs(reference, "eager", input_ids, mask))
        differences["sdpa", side] = max_difference(
            output, reference_outputs(reference, "sdpa", input_ids, mask), mask)
    return differences


def export_difference(fields):
    """Return the maximum logit difference after save_hf and OPTForCausalLM.from_pretrained."""
    config = opt.OPTConfig(**fields)
    module = opt.OPTForCausalLM(config)
    params = module.init_params(jax.random.key(0))
    input_ids, mask = padded_batch("left", seed=1)
    with tempfile.TemporaryDirectory() as directory:
        hf.save_hf(directory, config, params)
        reference, info = transformers.OPTForCausalLM.from_pretrained(directory, output_loading_info=True)
    problems = {name: keys for name, keys in info.items() if keys}
    if problems:
        raise RuntimeError(f"transformers reported {problems} when loading the export")
    output = module.apply({"params": params}, input_ids, mask)
    return max_difference(output, reference_outputs(reference.eval(), "sdpa", input_ids, mask), mask)


def main(argv):
    del argv
    rows = []
    for seed, (label, fields) in enumerate(CONFIGS.items()):
        differences = import_differences(fields, seed)
        rows.append((label, *(differences[key] for key in [("eager", "left"), ("eager", "right"),
                                                            ("sdpa", "left"), ("sdpa", "right")])))
    export = export_difference(CONFIGS["word_embed_proj_dim 32 (project_in/out)"])

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Command: `HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python {' '.join(sys.argv)}`  ")
    print(f"Date: {date}  ")
    print(f"Machine: {describe_machine()}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}\n")
    print("| OPT config (float32, 4 layers, width 64) | eager, left pad | eager, right pad "
          "| SDPA, left pad, real tokens | SDPA, right pad, real tokens |")
    print("|---|---|---|---|---|")
    for label, *values in rows:
        print(f"| {label} | " + " | ".join(f"{value:.1e}" for value in values) + " |")
    print(f"\nExport (save_hf, then transformers' from_pretrained with no missing or unexpected keys), "
          f"projected config, left padding, real tokens: {export:.1e}")


if __name__ == "__main__":
    app.run(main)
